//! The lab's servers. Each protocol's logic is pure (bytes in, replies out, time passed in)
//! and sits apart from the thin task that binds it to the lab's network.

pub mod dhcp;
pub mod nfs;
pub mod tftp;

/// Something a service did that a test may wait for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "service", rename_all = "lowercase")]
pub enum ServiceEvent {
    Dhcp(dhcp::DhcpEvent),
    Tftp(tftp::TftpEvent),
}

/// Where services publish their events.
pub trait EventSink: Send + Sync {
    fn publish(&self, event: ServiceEvent);
}
