//! The lab's servers. Each protocol's logic is pure (bytes in, replies out, time passed in)
//! and sits apart from the thin task that binds it to the lab's network.
//!
//! Each protocol plugs into the lab's network through one seam, [`LabService`]: its name,
//! what it listens on, a hook on the frames to the lab host (DHCP, router discovery) and/or
//! a task on the lab host's IP stack (TFTP, NFS), and its events ([`ServiceEvent`]).
//!
//! **A new protocol** (HTTP is next) is a folder here (`wire.rs`, `server.rs`, `task.rs`,
//! following `tftp/`), a variant of [`ServiceEvent`] for what it does, and one registration:
//! an entry in the list [`crate::lab::Network`] builds from its [`crate::lab::PxeConfig`]
//! (`services()` in `lab/network.rs`), with a [`crate::lab::Server`] name if tests may stop
//! and start it. Nothing else in the lab changes.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::time::Instant;

use crate::event::Sink;
use crate::net::host::{Interceptor, IpHost};

pub mod dhcp;
pub mod http;
pub mod ndp;
pub mod nfs;
pub mod syn_guard;
pub mod tcp;
pub mod tftp;

/// Something a service did that a test may wait for.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "service", rename_all = "lowercase")]
pub enum ServiceEvent {
    Dhcp(dhcp::DhcpEvent),
    Tftp(tftp::TftpEvent),
    Nfs(nfs::NfsEvent),
    Http(http::HttpEvent),
    /// The switch dropped frames or injected a fault.
    Segment(crate::net::segment::SegmentEvent),
    /// A server was stopped or started on purpose (fault injection).
    Server { name: String, running: bool },
}


/// A lab service as the lab's network runs it.
pub trait LabService: Send + Sync {
    /// Its name in logs, events and [`crate::lab::Server`] (`dhcp`, `tftp`).
    fn name(&self) -> &'static str;

    /// What it listens on, e.g. `UDP 69`.
    fn listens_on(&self) -> String;

    /// A hook on every frame to the lab host, before its IP stack: `Some(replies)` consumes
    /// the frame. Built once, when the network starts.
    fn intercept(&self, _events: Arc<dyn Sink<ServiceEvent>>, _started: Instant) -> Option<Interceptor> {
        None
    }

    /// Its task on the lab host's IP stack, until its sockets close; `None`: it has none. A
    /// stopped server's task is aborted, and this is called again to start it.
    fn serve(&self, _host: Arc<IpHost>, _events: Arc<dyn Sink<ServiceEvent>>, _started: Instant) -> Option<BoxFuture<'static, std::io::Result<()>>> {
        None
    }

    /// Stop or start answering, for a service that answers in its frame hook (a stopped
    /// server swallows what it would have answered).
    fn set_running(&self, _running: bool) {}

    /// How many operations it has served, for a service that counts them (NFS: its
    /// file-system operations); `None` if it does not.
    fn operations(&self) -> Option<u64> {
        None
    }
}

/// Receive the next datagram for `service` on a lab UDP socket. A bad one (larger than
/// `buf`, from port 0, not IPv4) is logged and skipped: no guest datagram ends a server. Only
/// a socket that is gone is an error.
pub async fn recv_datagram(
    socket: &tokio_smoltcp::UdpSocket,
    buf: &mut [u8],
    service: &str,
) -> std::io::Result<(usize, std::net::SocketAddrV4)> {
    let mut errors = 0u32;
    loop {
        match socket.recv_from(buf).await {
            Ok((n, std::net::SocketAddr::V4(peer))) if peer.port() != 0 => return Ok((n, peer)),
            Ok((_, peer)) => tracing::info!("{service}: skipped a datagram from {peer}"),
            // Each error consumed one datagram; a socket that only fails is gone.
            Err(e) if errors < 10_000 => {
                errors += 1;
                tracing::info!("{service}: skipped a bad datagram: {e}");
            }
            Err(e) => return Err(e),
        }
    }
}

/// Send a reply for `service`; a reply that cannot be sent (an unaddressable peer) is
/// logged, never fatal.
pub async fn send_datagram(socket: &tokio_smoltcp::UdpSocket, bytes: &[u8], peer: std::net::SocketAddr, service: &str) {
    if let Err(e) = socket.send_to(bytes, peer).await {
        tracing::info!("{service}: cannot send {} bytes to {peer}: {e}", bytes.len());
    }
}
