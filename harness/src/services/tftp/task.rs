//! TFTP on the lab's IP host: port 69 takes requests, each transfer gets its own socket
//! (its transfer ID) and task.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_smoltcp::{Net, UdpSocket};

use super::wire::{code, Packet};
use super::{admit, resolve_in, Holder, Step, Transfer, TransferLimits, TransferOutcome};
use crate::net::host::IpHost;
use crate::event::Sink;
use crate::services::{recv_datagram, send_datagram, ServiceEvent};

/// How one transfer ended, for the lab's events.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TftpEvent {
    pub client: Ipv4Addr,
    pub file: String,
    pub outcome: TftpOutcome,
    pub bytes: u64,
    pub millis: u64,
    pub detail: String,
    /// The switch port the client's requests came in on.
    pub switch_port: Option<crate::net::switch::PortId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TftpOutcome {
    /// The whole file was acknowledged.
    Done,
    /// The client stopped the transfer (OVMF's `tsize` probe does).
    Aborted,
    /// Every block was sent and all but the last acknowledged: the client may have quit on
    /// its final ACK, which was lost ([`TransferOutcome::LastAckMissing`]).
    Unconfirmed,
    /// No root has the file.
    NotFound,
    /// Refused: a way out of the root (`..`, a symlink out), not a regular file, or a write.
    Refused,
    /// Timed out, or the server could not read the file or open a socket.
    Failed,
}

/// What the TFTP server serves and how.
#[derive(Debug, Clone)]
pub struct TftpConfig {
    pub ip: Ipv4Addr,
    /// Served directories, searched in order (see [`resolve_in`]).
    pub roots: Vec<PathBuf>,
    pub limits: TransferLimits,
    /// The lab's declared clients, which [`TransferLimits::reserved_for_declared`] slots
    /// are kept for.
    pub declared: Vec<Ipv4Addr>,
}

/// Serve read requests on port 69 until the stack goes away.
pub async fn serve(host: Arc<IpHost>, config: TftpConfig, events: Arc<dyn Sink<ServiceEvent>>, started: Instant) -> std::io::Result<()> {
    let socket = host.net().udp_bind(SocketAddr::from((config.ip, 69))).await?;
    let mut buf = vec![0u8; 2048];
    let transfers: Table = Arc::new(Mutex::new(HashMap::new()));
    let mut next_id = 0u64;
    loop {
        let (n, peer) = recv_datagram(&socket, &mut buf, "tftp").await?;
        match Packet::parse(&buf[..n]) {
            Ok(Packet::Rrq { filename, options, .. }) => {
                let now = Instant::now();
                let mut table = transfers.lock().expect("transfers lock");
                if let Some(running) = table.get(&peer) {
                    if retransmitted(running, &filename, now) {
                        tracing::info!("tftp: RRQ from {peer} for {filename} again: a retransmission of the running transfer");
                        continue;
                    }
                    // The client started over on the same port (a reset client's loader reuses
                    // its ports): the old transfer has no one at the other end any more.
                    let old = table.remove(&peer).expect("a running transfer");
                    if let Some(abort) = old.abort {
                        abort.abort();
                    }
                    let millis = now.duration_since(old.since).as_millis() as u64;
                    let detail = format!("superseded by a new request for {filename} from the same client port");
                    let event = TftpEvent { client: *peer.ip(), file: old.file, outcome: TftpOutcome::Aborted, bytes: 0, millis, detail, switch_port: None };
                    events.publish(ServiceEvent::Tftp(TftpEvent { switch_port: host.port_of(event.client), ..event }));
                }
                let running: Vec<Holder> = table.iter().map(|(p, r)| Holder { ip: *p.ip(), port: r.port }).collect();
                let port = host.port_of(*peer.ip());
                if let Err(refusal) = admit(&config.limits, &config.declared, &running, Holder { ip: *peer.ip(), port }) {
                    tracing::info!("tftp: RRQ from {peer} for {filename} ignored: {refusal}");
                    continue;
                }
                next_id += 1;
                let id = next_id;
                table.insert(peer, Running { id, file: filename.clone(), since: now, abort: None, port });
                drop(table);
                let slot = Slot { table: transfers.clone(), peer, id };
                let (host, config, events) = (host.clone(), config.clone(), events.clone());
                let task = tokio::spawn(async move {
                    let _slot = slot;
                    let (event, last_sent) = transfer(host.net(), &config, peer.into(), &filename, &options, started).await;
                    tracing::info!("tftp: {} {} {:?} {} bytes in {} ms {}", event.client, event.file, event.outcome, event.bytes, event.millis, event.detail);
                    // Published when the server decided, not after the linger: a client may
                    // act on the answer (GRUB draws its menu) before the linger ends.
                    events.publish(ServiceEvent::Tftp(TftpEvent { switch_port: host.port_of(event.client), ..event }));
                    if let Some(socket) = last_sent {
                        linger().await;
                        drop(socket);
                    }
                });
                if let Some(running) = transfers.lock().expect("transfers lock").get_mut(&peer).filter(|r| r.id == id) {
                    running.abort = Some(task.abort_handle());
                }
            }
            Ok(Packet::Wrq { filename }) => {
                let error = Packet::Error { code: code::ACCESS_VIOLATION, message: "read-only server".into() };
                send_datagram(&socket, &error.emit(), peer.into(), "tftp").await;
                let event = ended(*peer.ip(), &filename, TftpOutcome::Refused, "write request refused".into(), 0);
                events.publish(ServiceEvent::Tftp(TftpEvent { switch_port: host.port_of(event.client), ..event }));
            }
            Ok(other) => tracing::debug!("tftp: ignored {other:?} from {peer} on port 69"),
            Err(e) => tracing::info!("tftp: bad packet from {peer}: {e}"),
        }
    }
}

/// TFTP as a [`crate::services::LabService`]: a task on the lab host's UDP port 69.
pub struct TftpService(pub TftpConfig);

impl crate::services::LabService for TftpService {
    fn name(&self) -> &'static str {
        "tftp"
    }

    fn listens_on(&self) -> String {
        format!("UDP {}:69", self.0.ip)
    }

    fn serve(&self, host: Arc<IpHost>, events: Arc<dyn Sink<ServiceEvent>>, started: Instant) -> Option<futures::future::BoxFuture<'static, std::io::Result<()>>> {
        let config = self.0.clone();
        Some(Box::pin(serve(host, config, events, started)))
    }
}

/// A second RRQ for the same file from a client port within this long of the first is its
/// retransmission (the client has not seen our first packet yet), not a new request.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(2);

/// The running transfers, one per client port.
type Table = Arc<Mutex<HashMap<SocketAddrV4, Running>>>;

/// A running transfer: which one, of what, since when, and how to stop it.
struct Running {
    id: u64,
    /// The switch port its request came in on.
    port: Option<usize>,
    file: String,
    since: Instant,
    abort: Option<tokio::task::AbortHandle>,
}

/// Whether an RRQ for `file` at `now` repeats the running transfer's own request.
fn retransmitted(running: &Running, file: &str, now: Instant) -> bool {
    running.file == file && now.duration_since(running.since) < DUPLICATE_WINDOW
}

/// A running transfer's place in the table; freed when its task ends or is aborted (only
/// its own: a superseding transfer may hold the port by then).
struct Slot {
    table: Table,
    peer: SocketAddrV4,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut table = self.table.lock().expect("transfers lock");
        if table.get(&self.peer).is_some_and(|r| r.id == self.id) {
            table.remove(&self.peer);
        }
    }
}

fn failed(client: Ipv4Addr, file: &str, detail: String, millis: u64) -> TftpEvent {
    ended(client, file, TftpOutcome::Failed, detail, millis)
}

/// A transfer that ended before its first block.
fn ended(client: Ipv4Addr, file: &str, outcome: TftpOutcome, detail: String, millis: u64) -> TftpEvent {
    TftpEvent { client, file: file.to_owned(), outcome, bytes: 0, millis, detail, switch_port: None }
}

async fn transfer(
    net: &Net,
    config: &TftpConfig,
    peer: SocketAddr,
    file: &str,
    options: &[(String, String)],
    started: Instant,
) -> (TftpEvent, Option<UdpSocket>) {
    let begun = Instant::now();
    let client = match peer {
        SocketAddr::V4(v4) => *v4.ip(),
        SocketAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    };
    let socket = match net.udp_bind(SocketAddr::from((config.ip, 0))).await {
        Ok(socket) => socket,
        Err(e) => return (failed(client, file, format!("no socket: {e}"), 0), None),
    };
    let opened = resolve_in(&config.roots, file).map_err(|e| (e.code(), e.outcome(), e.to_string())).and_then(|path| {
        std::fs::File::open(&path).map_err(|e| {
            let outcome = if e.kind() == std::io::ErrorKind::NotFound { TftpOutcome::NotFound } else { TftpOutcome::Failed };
            (code::FILE_NOT_FOUND, outcome, format!("{}: {e}", path.display()))
        })
    });
    let source = match opened {
        Ok(source) => source,
        Err((code, outcome, message)) => {
            let _ = socket.send_to(&Packet::Error { code, message: message.clone() }.emit(), peer).await;
            let millis = begun.elapsed().as_millis() as u64;
            return (ended(client, file, outcome, message, millis), Some(socket));
        }
    };
    let size = super::BlockSource::size(&source);
    let mut transfer = Transfer::new(size, options, config.limits);
    let step = transfer.begin(started.elapsed(), &source);
    let outcome = run(&socket, peer, &mut transfer, &source, step, started).await;
    let millis = begun.elapsed().as_millis() as u64;
    let last_sent = matches!(outcome, Ok((_, true))).then_some(socket);
    let event = match outcome.map(|(outcome, _)| outcome) {
        Ok(TransferOutcome::Done { bytes }) => {
            TftpEvent { client, file: file.to_owned(), outcome: TftpOutcome::Done, bytes, millis, detail: String::new(), switch_port: None }
        }
        Ok(TransferOutcome::ClientAborted { code, message }) => TftpEvent {
            client,
            file: file.to_owned(),
            outcome: TftpOutcome::Aborted,
            bytes: 0,
            millis,
            detail: format!("client error {code}: {message}"),
            switch_port: None,
        },
        Ok(TransferOutcome::TimedOut { unacked_block, blksize, retries }) => failed(
            client,
            file,
            format!(
                "no ACK for block {unacked_block} (blksize {blksize}) after {retries} retransmissions: the client \
                 stopped answering or cannot receive these datagrams"
            ),
            millis,
        ),
        Ok(TransferOutcome::LastAckMissing { bytes, retries }) => TftpEvent {
            client,
            file: file.to_owned(),
            outcome: TftpOutcome::Unconfirmed,
            bytes,
            millis,
            detail: format!(
                "every block sent, the last one never acknowledged after {retries} retransmissions: a client that \
                 quits on its final ACK (GRUB boots on it) has the file if that ACK was lost"
            ),
            switch_port: None,
        },
        Err(e) => failed(client, file, e.to_string(), millis),
    };
    (event, last_sent)
}

/// `send_to` only queues the datagram in the userspace stack, which transmits it on its next
/// poll (after ARP, if need be); a socket dropped before then takes its last packet with it.
/// Keep a transfer's socket this long after its final packet (which [`run`] says it sent).
async fn linger() {
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
}

async fn run(
    socket: &UdpSocket,
    peer: SocketAddr,
    transfer: &mut Transfer,
    source: &std::fs::File,
    mut step: std::io::Result<Step>,
    started: Instant,
) -> std::io::Result<(TransferOutcome, bool)> {
    let mut buf = vec![0u8; 65536];
    loop {
        match step? {
            Step::Send(packets) => {
                for packet in packets {
                    socket.send_to(&packet.emit(), peer).await?;
                }
            }
            Step::Wait => {}
            Step::Finish { outcome, send } => {
                if let Some(packet) = &send {
                    socket.send_to(&packet.emit(), peer).await?;
                }
                return Ok((outcome, send.is_some()));
            }
        }
        let deadline = started + transfer.deadline();
        step = tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let (n, from) = received?;
                if from != peer {
                    let error = Packet::Error { code: 5, message: "unknown transfer ID".into() };
                    send_datagram(socket, &error.emit(), from, "tftp").await;
                    Ok(Step::Wait)
                } else {
                    match Packet::parse(&buf[..n]) {
                        Ok(packet) => transfer.on_packet(started.elapsed(), &packet, source),
                        Err(_) => Ok(Step::Wait),
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => transfer.on_timeout(started.elapsed(), source),
        };
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn only_a_quick_repeat_of_the_same_file_is_a_retransmission() {
        let since = Instant::now();
        let running = Running { id: 1, file: "nixos/bzImage".into(), since, abort: None, port: None };
        assert!(retransmitted(&running, "nixos/bzImage", since + Duration::from_millis(900)));
        assert!(!retransmitted(&running, "nixos/bzImage", since + Duration::from_secs(20)), "a client that started over");
        assert!(!retransmitted(&running, "nixos/initrd", since + Duration::from_millis(10)), "another file");
    }
}
