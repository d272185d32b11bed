//! The lab's servers. Each protocol's logic is pure (bytes in, replies out, time passed in)
//! and sits apart from the thin task that binds it to the lab's network.

pub mod dhcp;
pub mod ndp;
pub mod nfs;
pub mod tftp;

/// Something a service did that a test may wait for.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "service", rename_all = "lowercase")]
pub enum ServiceEvent {
    Dhcp(dhcp::DhcpEvent),
    Tftp(tftp::TftpEvent),
    Nfs(nfs::NfsEvent),
    /// The switch dropped frames or injected a fault.
    Segment(crate::net::segment::SegmentEvent),
    /// A server was stopped or started on purpose (fault injection).
    Server { name: String, running: bool },
}

/// Where services publish their events.
pub trait EventSink: Send + Sync {
    fn publish(&self, event: ServiceEvent);
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
