//! A read-only HTTP/1.1 server for network boot over HTTP (UEFI HTTP boot, iPXE): hyper 1.x
//! over any byte stream, the lab's userspace TCP streams among them. What it answers is
//! [`respond`] (pure); this module puts it on the wire and reports each response.
//!
//! Bounds: a request's head may be at most [`MAX_HEAD`] bytes and must arrive within
//! [`HEAD_TIMEOUT`]; a connection is kept alive between requests. File bodies are streamed
//! from disk in chunks, never read whole.

pub mod respond;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncRead, AsyncSeekExt, AsyncWrite};

pub use respond::{respond, Body, Plan};

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Mutex;

use crate::event::Sink;
use crate::net::host::IpHost;
use crate::services::tcp::{accept, Closed, Handler};
use crate::services::ServiceEvent;

/// Where the HTTP server listens on the lab network.
pub const HTTP_PORT: u16 = 80;
/// Most connections one client address may hold at once: a firmware or iPXE needs one or
/// two; a client past this has a new connection closed at once.
pub const CONNECTIONS_PER_CLIENT: usize = 8;
/// A connection with no traffic either way for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One response of the lab's HTTP server, for the lab's events.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HttpEvent {
    pub client: Ipv4Addr,
    #[serde(flatten)]
    pub served: Served,
    /// The switch port the client's connection came in on.
    pub switch_port: Option<crate::net::switch::PortId>,
}

/// What the HTTP server serves.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub ip: Ipv4Addr,
    /// Served directories, searched in order (TFTP's roots: the lab's boot tree).
    pub roots: Vec<PathBuf>,
    pub idle_timeout: Duration,
}

/// The HTTP server as a [`crate::services::LabService`]: a task on the lab host's TCP port 80.
pub struct HttpService(pub HttpConfig);

impl crate::services::LabService for HttpService {
    fn name(&self) -> &'static str {
        "http"
    }

    fn listens_on(&self) -> String {
        format!("TCP {}:{HTTP_PORT} (HTTP/1.1, GET and HEAD of the boot tree)", self.0.ip)
    }

    fn serve(&self, host: Arc<IpHost>, events: Arc<dyn Sink<ServiceEvent>>, _started: tokio::time::Instant) -> Option<futures::future::BoxFuture<'static, std::io::Result<()>>> {
        Some(Box::pin(serve_lab(host, self.0.clone(), events)))
    }
}

/// Serve the boot tree on the lab host's port 80 until the host goes away (or the task is
/// aborted: a server stop).
pub async fn serve_lab(host: Arc<IpHost>, config: HttpConfig, events: Arc<dyn Sink<ServiceEvent>>) -> std::io::Result<()> {
    let roots = Arc::new(config.roots.clone());
    let held: Arc<Mutex<HashMap<Ipv4Addr, usize>>> = Arc::default();
    let seen = host.clone();
    let handler: Handler = Arc::new(move |stream, peer| {
        let (roots, events, host, held) = (roots.clone(), events.clone(), seen.clone(), held.clone());
        Box::pin(async move {
            let SocketAddr::V4(client) = peer else { return };
            let ip = *client.ip();
            let full = {
                let mut held = held.lock().expect("http lock");
                let count = held.entry(ip).or_insert(0);
                let full = *count >= CONNECTIONS_PER_CLIENT;
                *count += usize::from(!full);
                full
            };
            if full {
                tracing::info!("http: {peer} holds {CONNECTIONS_PER_CLIENT} connections: closed a new one");
                return; // dropped: closed with a FIN (services::tcp::Lingering)
            }
            let release = held.clone();
            let _released = Closed(Some(Box::new(move || {
                let mut held = release.lock().expect("http lock");
                if let Some(count) = held.get_mut(&ip) {
                    *count -= 1;
                    if *count == 0 {
                        held.remove(&ip);
                    }
                }
            })));
            let switch_port = host.port_of(ip);
            let report: OnServed = Arc::new(move |served| events.publish(ServiceEvent::Http(HttpEvent { client: ip, served, switch_port })));
            if let Err(e) = serve(stream, roots, report).await {
                tracing::debug!("http: connection from {peer} ended: {e}");
            }
        })
    });
    accept(host, SocketAddr::from((config.ip, HTTP_PORT)), config.idle_timeout, handler).await
}

/// Most bytes of a request's line and headers (hyper's read buffer; its floor is 8 KiB).
pub const MAX_HEAD: usize = 16 * 1024;
/// How long a request's head may take to arrive.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from a file at a time.
const CHUNK: usize = 64 * 1024;

/// One response, for the lab's events: what was asked, the answer, and what was sent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Served {
    pub method: String,
    pub path: String,
    pub status: u16,
    /// Body bytes sent (fewer than planned when the client went away).
    pub bytes: u64,
    /// From the request to the body's last byte (or the client's leaving).
    pub millis: u64,
}

/// Called once a response is done.
pub type OnServed = Arc<dyn Fn(Served) + Send + Sync>;

type ResponseBody = BoxBody<Bytes, std::io::Error>;

/// Serve HTTP/1.1 on `stream` until the client closes it (keep-alive between requests),
/// the files from `roots`; each response is reported to `served`. A client's errors end
/// its connection only.
pub async fn serve<S>(stream: S, roots: Arc<Vec<PathBuf>>, served: OnServed) -> Result<(), hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let (roots, served) = (roots.clone(), served.clone());
        async move { Ok::<_, std::convert::Infallible>(answer(&roots, &request, served).await) }
    });
    hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .keep_alive(true)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await
}

async fn answer(roots: &[PathBuf], request: &hyper::Request<hyper::body::Incoming>, served: OnServed) -> hyper::Response<ResponseBody> {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let range = request.headers().get(hyper::header::RANGE).and_then(|r| r.to_str().ok());
    let plan = {
        let (roots, target, range, method) = (roots.to_vec(), request.uri().path().to_owned(), range.map(str::to_owned), method.clone());
        // The file system is asked in a blocking task: a slow disk holds no connection's I/O.
        tokio::task::spawn_blocking(move || respond(&roots, &method, &target, range.as_deref())).await.unwrap_or_else(|_| Plan {
            status: 500,
            headers: Vec::new(),
            body: Body::Empty,
            path: String::new(),
        })
    };
    let done = Done { served: Some((served, Served { method, path: plan.path.clone(), status: plan.status, bytes: 0, millis: 0 })), sent: Arc::new(AtomicU64::new(0)), started };
    let body: ResponseBody = match plan.body {
        Body::Empty => {
            drop(done);
            Empty::new().map_err(|never| match never {}).boxed()
        }
        Body::Text(text) => {
            done.sent.store(text.len() as u64, Ordering::Relaxed);
            drop(done);
            Full::new(Bytes::from(text)).map_err(|never| match never {}).boxed()
        }
        Body::File { path, start, len } => match open_at(&path, start).await {
            Ok(file) => {
                let sent = done.sent.clone();
                let chunks = tokio_util::io::ReaderStream::with_capacity(tokio::io::AsyncReadExt::take(file, len), CHUNK).map(move |chunk| {
                    // The guard lives as long as the stream: dropped at its end or when the
                    // client leaves, it reports what was sent.
                    let _guard = &done;
                    chunk.map(|bytes| {
                        sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                        Frame::data(bytes)
                    })
                });
                BodyExt::boxed(StreamBody::new(chunks))
            }
            Err(e) => {
                drop(done);
                let text = format!("{}: {e}\n", path.display());
                return hyper::Response::builder().status(500).body(Full::new(Bytes::from(text)).map_err(|never| match never {}).boxed()).expect("a valid response");
            }
        },
    };
    let mut response = hyper::Response::builder().status(plan.status);
    for (name, value) in &plan.headers {
        response = response.header(*name, value);
    }
    response.body(body).expect("a valid response")
}

async fn open_at(path: &std::path::Path, start: u64) -> std::io::Result<tokio::fs::File> {
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(std::io::SeekFrom::Start(start)).await?;
    Ok(file)
}

/// Reports a response once dropped: after its body's last byte, or when the client left.
struct Done {
    served: Option<(OnServed, Served)>,
    sent: Arc<AtomicU64>,
    started: Instant,
}

impl Drop for Done {
    fn drop(&mut self) {
        if let Some((report, served)) = self.served.take() {
            report(Served { bytes: self.sent.load(Ordering::Relaxed), millis: self.started.elapsed().as_millis() as u64, ..served });
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server on one end of an in-memory stream, the responses it reported.
    fn server(root: PathBuf) -> (tokio::io::DuplexStream, Arc<Mutex<Vec<Served>>>, tokio::task::JoinHandle<Result<(), hyper::Error>>) {
        let (client, server_end) = tokio::io::duplex(1 << 20);
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let task = tokio::spawn(serve(server_end, Arc::new(vec![root]), Arc::new(move |s| sink.lock().unwrap().push(s))));
        (client, log, task)
    }

    /// Read one response: its head, and a body of its Content-Length.
    async fn response(stream: &mut tokio::io::DuplexStream) -> (String, Vec<u8>) {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "the head ended early: {:?}", String::from_utf8_lossy(&buf));
            buf.push(byte[0]);
        }
        let head = String::from_utf8(buf).unwrap();
        let len: usize = head.lines().find_map(|l| l.to_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse().unwrap())).unwrap_or(0);
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await.unwrap();
        (head, body)
    }

    #[tokio::test]
    async fn requests_on_one_kept_alive_connection_get_whole_partial_and_refused_answers() {
        let dir = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("initrd"), &big).unwrap();
        let (mut client, log, task) = server(dir.path().to_owned());

        client.write_all(b"GET /initrd HTTP/1.1\r\nHost: 192.0.2.1\r\n\r\n").await.unwrap();
        let (head, body) = response(&mut client).await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert_eq!(body, big, "the whole file, in chunks");

        client.write_all(b"GET /initrd HTTP/1.1\r\nHost: 192.0.2.1\r\nRange: bytes=1000-1009\r\n\r\n").await.unwrap();
        let (head, body) = response(&mut client).await;
        assert!(head.starts_with("HTTP/1.1 206 Partial Content\r\n") && head.contains("content-range: bytes 1000-1009/300000"), "{head}");
        assert_eq!(body, &big[1000..1010]);

        client.write_all(b"GET /initrd HTTP/1.1\r\nHost: 192.0.2.1\r\nRange: bytes=300000-\r\n\r\n").await.unwrap();
        let (head, _) = response(&mut client).await;
        assert!(head.starts_with("HTTP/1.1 416 Range Not Satisfiable\r\n"), "{head}");

        client.write_all(b"DELETE /initrd HTTP/1.1\r\nHost: 192.0.2.1\r\n\r\n").await.unwrap();
        let (head, _) = response(&mut client).await;
        assert!(head.starts_with("HTTP/1.1 405 Method Not Allowed\r\n") && head.contains("allow: GET, HEAD"), "{head}");

        client.write_all(b"GET /nothing HTTP/1.1\r\nHost: 192.0.2.1\r\n\r\n").await.unwrap();
        let (head, body) = response(&mut client).await;
        assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
        assert!(String::from_utf8_lossy(&body).contains("/initrd"), "lists the root");

        client.write_all(b"HEAD /initrd HTTP/1.1\r\nHost: 192.0.2.1\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        let rest = String::from_utf8(rest).unwrap();
        assert!(rest.starts_with("HTTP/1.1 200 OK\r\n") && rest.contains("content-length: 300000") && rest.ends_with("\r\n\r\n"), "HEAD: headers, no body: {rest}");
        task.await.unwrap().unwrap();

        let log = log.lock().unwrap();
        let seen: Vec<(&str, &str, u16, u64)> = log.iter().map(|s| (s.method.as_str(), s.path.as_str(), s.status, s.bytes)).collect();
        assert_eq!(seen[0], ("GET", "/initrd", 200, 300_000));
        assert_eq!(seen[1], ("GET", "/initrd", 206, 10));
        assert_eq!((seen[2].2, seen[3].2, seen[4].2), (416, 405, 404));
        assert_eq!(seen[5], ("HEAD", "/initrd", 200, 0));
    }

    #[tokio::test]
    async fn a_client_that_leaves_mid_body_is_reported_with_what_it_got() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("initrd"), vec![7u8; 4 << 20]).unwrap();
        let (mut client, server_end) = tokio::io::duplex(8192);
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let task = tokio::spawn(serve(server_end, Arc::new(vec![dir.path().to_owned()]), Arc::new(move |s| sink.lock().unwrap().push(s))));
        client.write_all(b"GET /initrd HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
        let mut some = vec![0u8; 100_000];
        client.read_exact(&mut some).await.unwrap();
        drop(client);
        let _ = task.await.unwrap();
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 1, "{log:?}");
        assert!(log[0].bytes >= 90_000 && log[0].bytes < 4 << 20, "{:?}", log[0]);
    }

    #[tokio::test]
    async fn an_oversized_head_ends_that_connection_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        let (mut client, _, task) = server(dir.path().to_owned());
        let huge = format!("GET /f HTTP/1.1\r\nHost: a\r\nX-Fill: {}\r\n\r\n", "a".repeat(4 * MAX_HEAD));
        let _ = client.write_all(huge.as_bytes()).await;
        let mut rest = Vec::new();
        let _ = client.read_to_end(&mut rest).await;
        let text = String::from_utf8_lossy(&rest);
        assert!(text.is_empty() || text.starts_with("HTTP/1.1 431"), "{text}");
        assert!(task.await.unwrap().is_err(), "the connection ended with an error");
        // Another connection is served as before.
        let (mut again, _, task) = server(dir.path().to_owned());
        again.write_all(b"GET /f HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await.unwrap();
        let (head, body) = response(&mut again).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, b"x");
        drop(again);
        let _ = task.await;
    }
}
