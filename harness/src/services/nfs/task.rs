//! NFS on the lab's IP host: the portmapper on port 111 (UDP and TCP) and NFS+MOUNT on
//! port 2049, each TCP connection served by nfsserve straight from the lab's IP stack (no
//! host socket listens, so only guests on the segment can mount the export).
//!
//! Each TCP port has a backlog of listening sockets, so connections that never finish their
//! handshake cannot keep others out, and a connection idle for [`IDLE_TIMEOUT`] is closed.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nfsserve::tcp::NFSConnections;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::rpc::{record, RecordDecoder};
use super::{Portmap, StackedExport};
use crate::net::host::IpHost;
use crate::event::Sink;
use crate::services::tcp::{accept, Closed, Handler, Idle, Lingering};
use crate::services::{recv_datagram, send_datagram, ServiceEvent};

pub use crate::services::tcp::RECYCLE_AFTER;

/// An NFS client connected or its connection ended (for a run's timeline).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NfsEvent {
    pub client: Ipv4Addr,
    pub port: u16,
    /// The switch port the client's connection came in on.
    pub switch_port: Option<crate::net::switch::PortId>,
    pub connected: bool,
}

/// Where NFS and MOUNT listen on the lab network.
pub const NFS_PORT: u16 = 2049;
const PORTMAP_PORT: u16 = 111;
/// A TCP connection with no traffic either way for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// What the NFS server exports.
#[derive(Debug, Clone)]
pub struct NfsConfig {
    /// The server's address on the segment.
    pub ip: Ipv4Addr,
    /// The path clients mount, e.g. `/srv/nixos/nfsroot`.
    pub export_path: String,
    /// The export, kept across server restarts so that file handles stay valid.
    pub export: Arc<StackedExport>,
    pub idle_timeout: Duration,
}

/// NFS, MOUNT and the portmapper as a [`crate::services::LabService`]: a task on the lab
/// host's TCP and UDP ports 111 and TCP 2049.
pub struct NfsService(pub NfsConfig);

impl crate::services::LabService for NfsService {
    fn name(&self) -> &'static str {
        "nfs"
    }

    fn listens_on(&self) -> String {
        format!("TCP/UDP {}:111 (portmap), TCP {}:{NFS_PORT} (NFSv3, MOUNT), export {}", self.0.ip, self.0.ip, self.0.export_path)
    }

    fn operations(&self) -> Option<u64> {
        Some(self.0.export.operations())
    }

    fn serve(&self, host: Arc<IpHost>, events: Arc<dyn Sink<ServiceEvent>>, _started: tokio::time::Instant) -> Option<futures::future::BoxFuture<'static, std::io::Result<()>>> {
        let config = self.0.clone();
        Some(Box::pin(serve(host, config, events)))
    }
}

impl NfsConfig {
    /// Export `layers` (top first, see [`StackedExport`]) at `export_path`.
    pub fn new(ip: Ipv4Addr, export_path: &str, layers: Vec<PathBuf>) -> Self {
        let export = Arc::new(StackedExport::new(layers));
        NfsConfig { ip, export_path: export_path.to_owned(), export, idle_timeout: IDLE_TIMEOUT }
    }
}

/// Serve the export until the host goes away (or the task is aborted: a server stop).
pub async fn serve(host: Arc<IpHost>, config: NfsConfig, events: Arc<dyn Sink<ServiceEvent>>) -> std::io::Result<()> {
    let nfs = Arc::new(NFSConnections::new(config.export.clone(), config.export_path.trim_start_matches('/')));
    let portmap = Portmap::nfs3_tcp(NFS_PORT);
    let idle = config.idle_timeout;
    let seen = host.clone();
    let nfs_handler: Handler = Arc::new(move |stream, peer| {
        let (nfs, events, host) = (nfs.clone(), events.clone(), seen.clone());
        Box::pin(async move {
            tracing::info!("nfs: connection from {peer}");
            let SocketAddr::V4(client) = peer else { return };
            let switch_port = host.port_of(*client.ip());
            let event = move |connected| ServiceEvent::Nfs(NfsEvent { client: *client.ip(), port: client.port(), switch_port, connected });
            events.publish(event(true));
            // Published when the connection ends in any way, the idle timeout's included.
            let _closed = Closed(Some(Box::new(move || events.publish(event(false)))));
            if let Err(e) = nfs.serve(stream, peer.to_string(), NFS_PORT).await {
                tracing::debug!("nfs: connection from {peer} ended: {e}");
            }
        })
    });
    let pm = portmap.clone();
    let portmap_handler: Handler = Arc::new(move |stream, peer| Box::pin(portmap_connection(stream, peer, pm.clone())));
    tokio::try_join!(
        accept(host.clone(), SocketAddr::from((config.ip, NFS_PORT)), idle, nfs_handler),
        accept(host.clone(), SocketAddr::from((config.ip, PORTMAP_PORT)), idle, portmap_handler),
        portmap_udp(&host, config.ip, &portmap),
    )
    .map(drop)
}

async fn portmap_udp(host: &IpHost, ip: Ipv4Addr, portmap: &Portmap) -> std::io::Result<()> {
    let socket = host.net().udp_bind(SocketAddr::from((ip, PORTMAP_PORT))).await?;
    let mut buf = vec![0u8; 9000];
    loop {
        let (n, peer) = recv_datagram(&socket, &mut buf, "portmap").await?;
        if let Some(reply) = portmap.handle(&buf[..n]) {
            send_datagram(&socket, &reply, peer.into(), "portmap").await;
        }
    }
}

async fn portmap_connection(mut stream: Idle<Lingering>, peer: SocketAddr, portmap: Portmap) {
    let mut decoder = RecordDecoder::default();
    let mut buf = vec![0u8; 4096];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let records = match decoder.push(&buf[..n]) {
            Ok(records) => records,
            Err(e) => return tracing::info!("portmap: {peer}: {e}"),
        };
        for call in records {
            if let Some(reply) = portmap.handle(&call) {
                if stream.write_all(&record(&reply)).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    /// An RPC call record for NFSv3 procedure `procedure`, AUTH_NULL, with `args` (XDR words).
    fn nfs_call(xid: u32, procedure: u32, args: &[u32]) -> Vec<u8> {
        let words: Vec<u32> = [xid, 0, 2, 100_003, 3, procedure, 0, 0, 0, 0].iter().chain(args).copied().collect();
        record(&words.iter().flat_map(|w| w.to_be_bytes()).collect::<Vec<u8>>())
    }

    /// Serve `input` on one connection over an empty export. Returns the reply records read
    /// until `wanted` arrived or the server ended the connection, and whether it ended it
    /// within a second (allocating and zeroing the GiBs a wire length may claim takes longer).
    async fn exchange(input: Vec<u8>, wanted: usize) -> (Vec<Vec<u8>>, bool) {
        let dir = tempfile::tempdir().unwrap();
        let nfs = NFSConnections::new(Arc::new(StackedExport::new(vec![dir.path().to_owned()])), "srv/nixos/nfsroot");
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client.write_all(&input).await.unwrap();
        let (mut replies, mut decoder, mut buf) = (Vec::new(), RecordDecoder::default(), vec![0u8; 4096]);
        let serving = tokio::time::timeout(Duration::from_secs(1), nfs.serve(server, "test".into(), NFS_PORT));
        tokio::pin!(serving);
        let ended = loop {
            tokio::select! {
                served = &mut serving => break served.is_ok(),
                read = client.read(&mut buf) => {
                    replies.extend(decoder.push(&buf[..read.unwrap()]).unwrap());
                    if replies.len() >= wanted {
                        break false;
                    }
                }
            }
        };
        (replies, ended)
    }

    #[tokio::test]
    async fn link_and_mknod_answer_read_only_file_system() {
        let fh = [16u32, 0, 0, 0, 0];
        let mut input = nfs_call(7, 15, &[fh, [16, 0, 0, 0, 0]].concat()); // LINK: file, then dir + name
        input.extend(nfs_call(8, 11, &[fh[0], 0, 0, 0, 0, 1, 0x7800_0000]));
        let (replies, _) = exchange(input, 2).await;
        assert_eq!(replies.len(), 2);
        for (reply, xid) in replies.iter().zip([7u32, 8]) {
            let words: Vec<u32> = reply.chunks(4).map(|c| u32::from_be_bytes(c.try_into().unwrap())).collect();
            assert_eq!(words[..7], [xid, 1, 0, 0, 0, 0, 30], "accepted, SUCCESS, then NFS3ERR_ROFS (30)");
        }
    }

    /// A MOUNT call of a version it does not serve gets PROG_MISMATCH with the versions it
    /// does (RFC 5531 §9), as rpcinfo's probe expects (`rpcinfo -T tcp 192.0.2.1 100005` asks
    /// for version 0, then each of low..=high); version 3's NULL is answered.
    #[tokio::test]
    async fn mount_answers_an_unserved_version_with_its_versions() {
        let call = |xid: u32, version: u32| {
            let words = [xid, 0, 2, 100_005, version, 0, 0, 0, 0, 0];
            record(&words.iter().flat_map(|w| w.to_be_bytes()).collect::<Vec<u8>>())
        };
        let (replies, _) = exchange([call(1, 0), call(2, 1), call(3, 4), call(4, 3)].concat(), 4).await;
        assert_eq!(replies.len(), 4);
        let words: Vec<Vec<u32>> = replies.iter().map(|r| r.chunks(4).map(|c| u32::from_be_bytes(c.try_into().unwrap())).collect()).collect();
        for (reply, xid) in words.iter().take(3).zip([1u32, 2, 3]) {
            assert_eq!(reply[..8], [xid, 1, 0, 0, 0, 2, 3, 3], "accepted, PROG_MISMATCH (2), low 3, high 3");
        }
        assert_eq!(words[3][..6], [4, 1, 0, 0, 0, 0], "version 3: SUCCESS");
    }

    /// The published nfsserve allocates whatever a fragment header or an XDR length says.
    #[tokio::test]
    async fn huge_records_and_opaques_end_the_connection_without_allocating_them() {
        let (_, ended) = exchange(0x7fff_ffffu32.to_be_bytes().to_vec(), 1).await;
        assert!(ended, "a 2 GiB fragment header ends the connection at once");
        // GETATTR whose file handle claims 4 GiB - 1 bytes.
        let (replies, ended) = exchange(nfs_call(9, 1, &[u32::MAX, 0, 0]), 1).await;
        assert!(ended && replies.is_empty(), "the call is refused, not allocated");
    }
}
