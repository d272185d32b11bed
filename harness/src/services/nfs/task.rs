//! NFS on the lab's IP host: the portmapper on port 111 (UDP and TCP) and NFS+MOUNT on
//! port 2049, each connection proxied to nfsserve on loopback.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use nfsserve::tcp::{NFSTcp, NFSTcpListener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::rpc::{record, RecordDecoder};
use super::{Portmap, StackedExport};
use crate::net::host::IpHost;

/// Where NFS and MOUNT listen on the lab network.
pub const NFS_PORT: u16 = 2049;
const PORTMAP_PORT: u16 = 111;

/// What the NFS server exports.
#[derive(Debug, Clone)]
pub struct NfsConfig {
    /// The server's address on the segment.
    pub ip: Ipv4Addr,
    /// The path clients mount, e.g. `/srv/nixos/nfsroot`.
    pub export_path: String,
    /// The export's directories, top first (see [`StackedExport`]).
    pub layers: Vec<PathBuf>,
}

/// Serve the export until the host goes away.
pub async fn serve(host: Arc<IpHost>, config: NfsConfig) -> std::io::Result<()> {
    let mut backend = NFSTcpListener::bind("127.0.0.1:0", StackedExport::new(config.layers)).await?;
    backend.with_export_name(config.export_path.trim_start_matches('/'));
    let backend_addr = SocketAddr::from(([127, 0, 0, 1], backend.get_listen_port()));
    let portmap = Portmap::nfs3_tcp(NFS_PORT);
    // Dropped (and so aborted) with this future, also when the lab aborts it.
    let _helpers = AbortOnDrop(vec![
        tokio::spawn(async move { drop(backend.handle_forever().await) }),
        tokio::spawn(portmap_udp(host.clone(), config.ip, portmap.clone())),
        tokio::spawn(portmap_tcp(host.clone(), config.ip, portmap)),
    ]);
    proxy(&host, config.ip, backend_addr).await
}

/// Tasks that end when this value is dropped.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Accept NFS connections on the segment and splice each to nfsserve.
async fn proxy(host: &IpHost, ip: Ipv4Addr, backend: SocketAddr) -> std::io::Result<()> {
    let mut listener = host.net().tcp_bind(SocketAddr::from((ip, NFS_PORT))).await?;
    loop {
        let (mut client, peer) = listener.accept().await?;
        tokio::spawn(async move {
            let mut server = match tokio::net::TcpStream::connect(backend).await {
                Ok(server) => server,
                Err(e) => return tracing::error!("nfs: cannot reach nfsserve for {peer}: {e}"),
            };
            let _ = server.set_nodelay(true);
            tracing::info!("nfs: connection from {peer}");
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
                tracing::debug!("nfs: connection from {peer} ended: {e}");
            }
        });
    }
}

async fn portmap_udp(host: Arc<IpHost>, ip: Ipv4Addr, portmap: Portmap) {
    if let Err(e) = portmap_udp_loop(&host, ip, &portmap).await {
        tracing::error!("portmap (udp) stopped: {e}");
    }
}

async fn portmap_udp_loop(host: &IpHost, ip: Ipv4Addr, portmap: &Portmap) -> std::io::Result<()> {
    let socket = host.net().udp_bind(SocketAddr::from((ip, PORTMAP_PORT))).await?;
    let mut buf = vec![0u8; 9000];
    loop {
        let (n, peer) = socket.recv_from(&mut buf).await?;
        if let Some(reply) = portmap.handle(&buf[..n]) {
            socket.send_to(&reply, peer).await?;
        }
    }
}

async fn portmap_tcp(host: Arc<IpHost>, ip: Ipv4Addr, portmap: Portmap) {
    let mut listener = match host.net().tcp_bind(SocketAddr::from((ip, PORTMAP_PORT))).await {
        Ok(listener) => listener,
        Err(e) => return tracing::error!("portmap (tcp): {e}"),
    };
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => return tracing::error!("portmap (tcp) stopped: {e}"),
        };
        let portmap = portmap.clone();
        tokio::spawn(async move {
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
        });
    }
}
