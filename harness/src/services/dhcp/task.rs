//! DHCP on the segment: answered at the frame level, before the IP stack.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use super::{DhcpEvent, DhcpServer};
use crate::net::wire::UdpFrame;
use crate::event::Sink;
use crate::services::ServiceEvent;

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;

/// An interceptor for the IP host that answers DHCP requests from `server` while `running`
/// (a stopped server swallows them unanswered).
pub fn interceptor(
    server: Arc<Mutex<DhcpServer>>,
    running: Arc<AtomicBool>,
    host_mac: crate::net::Mac,
    events: Arc<dyn Sink<ServiceEvent>>,
    started: Instant,
) -> crate::net::host::Interceptor {
    Box::new(move |from, frame: &[u8]| {
        let udp = UdpFrame::parse(frame)?;
        // Another server's answer on the segment (a rogue server): seen, not consumed.
        if udp.src_port == SERVER_PORT && udp.dst_port == CLIENT_PORT && udp.src_mac != host_mac {
            if let Some(event) = super::server::foreign_reply(&udp.payload) {
                tracing::warn!("dhcp: another server, {:?}, answered {} with {} ({:?})", event.server, event.mac, event.ip, event.kind);
                events.publish(ServiceEvent::Dhcp(DhcpEvent { switch_port: Some(from), ..event }));
            }
            return None;
        }
        if udp.dst_port != SERVER_PORT {
            return None;
        }
        if !running.load(Ordering::SeqCst) {
            return Some(Vec::new());
        }
        let mut server = server.lock().expect("dhcp lock");
        match server.handle_from(started.elapsed(), udp.src_mac, Some(from), &udp.payload) {
            Ok((reply, mut event)) => {
                event.switch_port = Some(from);
                tracing::info!(
                    "dhcp: {:?} {} -> {} (arch {:?}, class {:?})",
                    event.kind,
                    event.mac,
                    event.ip,
                    event.arch,
                    event.vendor_class
                );
                events.publish(ServiceEvent::Dhcp(event));
                let out = reply.map(|r| {
                    UdpFrame {
                        src_mac: host_mac,
                        dst_mac: r.dst_mac,
                        src_ip: server.config().server,
                        dst_ip: r.dst_ip,
                        src_port: SERVER_PORT,
                        dst_port: CLIENT_PORT,
                        payload: r.bytes,
                    }
                    .emit()
                });
                Some(out.into_iter().collect())
            }
            Err(why) => {
                tracing::info!("dhcp: ignored a request from {}: {why}", udp.src_mac);
                Some(Vec::new())
            }
        }
    })
}

/// DHCP as a [`crate::services::LabService`]: answered in the frame hook, from the shared
/// server state (the lab reads its leases and configuration).
pub struct DhcpService {
    pub server: Arc<Mutex<DhcpServer>>,
    pub running: Arc<AtomicBool>,
    pub host_mac: crate::net::Mac,
}

impl crate::services::LabService for DhcpService {
    fn name(&self) -> &'static str {
        "dhcp"
    }

    fn listens_on(&self) -> String {
        format!("UDP {SERVER_PORT} (BOOTP/DHCP, in the frame hook)")
    }

    fn intercept(&self, events: Arc<dyn Sink<ServiceEvent>>, started: Instant) -> Option<crate::net::host::Interceptor> {
        Some(interceptor(self.server.clone(), self.running.clone(), self.host_mac, events, started))
    }

    fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::SeqCst);
    }
}
