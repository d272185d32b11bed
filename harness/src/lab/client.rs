//! The lab host as a client of its guests, over the virtual network through the harness's
//! own IP stack: what another machine on the lab network sees of a guest's services (port
//! open or closed, an HTTP answer), which no check from inside the guest shows.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_smoltcp::TcpStream;

use crate::net::host::IpHost;

/// How often a port is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// How long one connection attempt may take (a guest that drops SYNs never refuses).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The most of an HTTP answer that is read.
const MAX_RESPONSE: usize = 1 << 20;

/// Why a check from the lab host failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("lab host: {ip}:{port} was not {want} after {waited:.1?} (last try: {last})")]
    Port { ip: Ipv4Addr, port: u16, want: &'static str, waited: Duration, last: String },
    #[error("lab host: GET http://{ip}:{port}{path}: {why}")]
    Http { ip: Ipv4Addr, port: u16, path: String, why: String },
}

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// The lab host's client side; see [`crate::lab::Network::client`].
#[derive(Clone)]
pub struct HostClient {
    pub(super) host: Arc<IpHost>,
}

impl HostClient {
    /// One TCP connection from the lab host to `ip:port`.
    pub async fn connect(&self, ip: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
        let addr = SocketAddr::from((ip, port));
        match tokio::time::timeout(CONNECT_TIMEOUT, self.host.net().tcp_connect(addr)).await {
            Ok(stream) => stream,
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no answer in {CONNECT_TIMEOUT:?}"))),
        }
    }

    /// Wait until a TCP connect from the lab host to `ip:port` succeeds.
    pub async fn wait_for_open_port(&self, ip: Ipv4Addr, port: u16, timeout: Duration) -> Result<(), ClientError> {
        self.wait_port(ip, port, true, timeout).await
    }

    /// Wait until a TCP connect from the lab host to `ip:port` is refused or unanswered.
    pub async fn wait_for_closed_port(&self, ip: Ipv4Addr, port: u16, timeout: Duration) -> Result<(), ClientError> {
        self.wait_port(ip, port, false, timeout).await
    }

    async fn wait_port(&self, ip: Ipv4Addr, port: u16, open: bool, timeout: Duration) -> Result<(), ClientError> {
        let started = Instant::now();
        loop {
            let last = match self.connect(ip, port).await {
                Ok(_) if open => return Ok(()),
                Ok(_) => "connected".to_owned(),
                Err(_) if !open => return Ok(()),
                Err(e) => e.to_string(),
            };
            if started.elapsed() + RETRY > timeout {
                let want = if open { "open" } else { "closed" };
                return Err(ClientError::Port { ip, port, want, waited: started.elapsed(), last });
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// `GET path` over HTTP/1.0 from the lab host; the whole answer within `timeout`.
    pub async fn http_get(&self, ip: Ipv4Addr, port: u16, path: &str, timeout: Duration) -> Result<Response, ClientError> {
        let err = |why: String| ClientError::Http { ip, port, path: path.to_owned(), why };
        let exchange = async {
            let mut stream = self.connect(ip, port).await?;
            stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
            let mut answer = Vec::new();
            (&mut stream).take(MAX_RESPONSE as u64).read_to_end(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        let answer = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| err(format!("no whole answer in {timeout:?}")))?
            .map_err(|e| err(e.to_string()))?;
        parse_response(&answer).ok_or_else(|| err(format!("not an HTTP answer: {:?}", String::from_utf8_lossy(&answer[..answer.len().min(200)]))))
    }
}

/// Status and body of an HTTP/1.x answer read to its end.
fn parse_response(answer: &[u8]) -> Option<Response> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n").or_else(|| text.split_once("\n\n"))?;
    let status_line = head.lines().next()?;
    let mut words = status_line.split_whitespace();
    words.next().filter(|v| v.starts_with("HTTP/1."))?;
    let status = words.next()?.parse().ok()?;
    Some(Response { status, body: body.to_owned() })
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn an_answer_is_split_into_status_and_body() {
        let r = parse_response(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\ndatabase: ok\n").unwrap();
        assert_eq!(r, Response { status: 200, body: "database: ok\n".into() });
        assert_eq!(parse_response(b"HTTP/1.1 503 Busy\n\n").unwrap().status, 503);
        assert_eq!(parse_response(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_response(b"HTTP/1.0 abc\r\n\r\n"), None);
    }
}
