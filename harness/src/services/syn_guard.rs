//! A bound on half-open TCP connections per switch port, in the lab host's frame hook.
//!
//! The host's TCP services (portmapper, NFS) listen with a fixed number of sockets, and the
//! userspace stack holds a socket whose handshake never completes until the service replaces
//! it ([`crate::services::nfs::RECYCLE_AFTER`]). A neighbour sending SYNs from invented
//! addresses would keep every socket busy, and a client's connection was refused
//! (`mount: … Connection refused`). So a port may have at most [`MAX_HALF_OPEN`] handshakes
//! in progress; its further SYNs are dropped until one completes or [`HANDSHAKE_WINDOW`]
//! passes. A client completes its handshake in milliseconds and is never held back by
//! another port's.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::{LabService, ServiceEvent};
use crate::event::Sink;
use crate::net::host::Interceptor;
use crate::net::switch::PortId;

/// Handshakes in progress a port may have with the lab host.
pub const MAX_HALF_OPEN: usize = 4;
/// How long a handshake counts as in progress without its final ACK: as long as the
/// services keep a half-open socket.
pub const HANDSHAKE_WINDOW: Duration = Duration::from_secs(10);

/// A TCP segment to the host, as far as the guard looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    src: (Ipv4Addr, u16),
    dst_port: u16,
    syn: bool,
    ack: bool,
}

/// The handshakes in progress, per port; time passed in.
#[derive(Debug, Default)]
pub struct SynGuard {
    pending: HashMap<PortId, Vec<((Ipv4Addr, u16, u16), Duration)>>,
}

impl SynGuard {
    /// Whether the frame from `port` at `now` may reach the stack (`false`: a SYN past the
    /// port's bound, dropped).
    pub fn admit(&mut self, now: Duration, port: PortId, frame: &[u8], host: Ipv4Addr) -> bool {
        let Some(segment) = tcp_segment(frame, host) else { return true };
        let key = (segment.src.0, segment.src.1, segment.dst_port);
        let pending = self.pending.entry(port).or_default();
        pending.retain(|(_, since)| now.saturating_sub(*since) < HANDSHAKE_WINDOW);
        match (segment.syn, segment.ack) {
            (true, false) => {
                if pending.iter().any(|(k, _)| *k == key) {
                    return true; // a retransmitted SYN
                }
                if pending.len() >= MAX_HALF_OPEN {
                    return false;
                }
                pending.push((key, now));
                true
            }
            // The handshake's last ACK (or any later segment): no longer half-open.
            (false, true) => {
                pending.retain(|(k, _)| *k != key);
                true
            }
            _ => true,
        }
    }
}

/// The TCP segment in an IPv4 frame to `host`.
fn tcp_segment(frame: &[u8], host: Ipv4Addr) -> Option<Segment> {
    if frame.get(12..14)? != [0x08, 0x00] || *frame.get(23)? != 6 || frame.get(30..34)? != host.octets() {
        return None;
    }
    let ihl = usize::from(frame.get(14)? & 0x0f) * 4;
    let tcp = frame.get(14 + ihl..)?;
    if ihl < 20 || tcp.len() < 20 {
        return None;
    }
    let src_ip = Ipv4Addr::from(<[u8; 4]>::try_from(frame.get(26..30)?).ok()?);
    let flags = tcp[13];
    Some(Segment {
        src: (src_ip, u16::from_be_bytes([tcp[0], tcp[1]])),
        dst_port: u16::from_be_bytes([tcp[2], tcp[3]]),
        syn: flags & 0x02 != 0,
        ack: flags & 0x10 != 0,
    })
}

/// The guard as a [`LabService`]: a frame hook that drops SYNs past a port's bound.
pub struct SynGuardService {
    /// The lab host's address: only TCP to it is looked at.
    pub host: Ipv4Addr,
    pub guard: Arc<Mutex<SynGuard>>,
}

impl LabService for SynGuardService {
    fn name(&self) -> &'static str {
        "syn-guard"
    }

    fn listens_on(&self) -> String {
        format!("TCP SYNs to {} (in the frame hook: at most {MAX_HALF_OPEN} handshakes in progress a port)", self.host)
    }

    fn intercept(&self, _events: Arc<dyn Sink<ServiceEvent>>, started: Instant) -> Option<Interceptor> {
        let (guard, host) = (self.guard.clone(), self.host);
        Some(Box::new(move |from, frame| match guard.lock().expect("syn guard lock").admit(started.elapsed(), from, frame, host) {
            true => None,
            false => Some(Vec::new()),
        }))
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const HOST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    /// An Ethernet/IPv4/TCP frame from `src` to the host's `dst_port` with `flags`.
    fn tcp(src: (Ipv4Addr, u16), dst_port: u16, flags: u8) -> Vec<u8> {
        let mut frame = vec![0u8; 14 + 20 + 20];
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        frame[14] = 0x45;
        frame[23] = 6;
        frame[26..30].copy_from_slice(&src.0.octets());
        frame[30..34].copy_from_slice(&HOST.octets());
        frame[34..36].copy_from_slice(&src.1.to_be_bytes());
        frame[36..38].copy_from_slice(&dst_port.to_be_bytes());
        frame[46] = 0x50;
        frame[47] = flags;
        frame
    }

    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;

    /// 100 SYNs from invented addresses on port 3 (they held every listening socket, and
    /// the client's mount was refused): port 3 keeps at most its bound in progress, another
    /// port's client connects, and the bound frees as handshakes complete or time out.
    #[test]
    fn a_port_keeps_at_most_its_bound_of_handshakes_in_progress() {
        let mut guard = SynGuard::default();
        let now = Duration::from_secs(1);
        let admitted = (0..100u16).filter(|i| guard.admit(now, 3, &tcp((Ipv4Addr::new(192, 0, 2, 200 + (i % 50) as u8), 40_000 + i), 2049, SYN), HOST)).count();
        assert_eq!(admitted, MAX_HALF_OPEN);
        let client = (Ipv4Addr::new(192, 0, 2, 10), 700);
        assert!(guard.admit(now, 1, &tcp(client, 111, SYN), HOST), "another port's client");
        assert!(guard.admit(now, 1, &tcp(client, 111, SYN), HOST), "its retransmitted SYN");
        assert!(guard.admit(now, 1, &tcp(client, 111, ACK), HOST), "its handshake's ACK");
        for port in 701..700 + MAX_HALF_OPEN as u16 * 3 {
            let c = (client.0, port);
            assert!(guard.admit(now, 1, &tcp(c, 2049, SYN), HOST) && guard.admit(now, 1, &tcp(c, 2049, ACK), HOST), "completed handshakes free the bound");
        }
        assert!(!guard.admit(now, 3, &tcp((Ipv4Addr::new(192, 0, 2, 201), 9), 111, SYN), HOST), "port 3 is at its bound");
        assert!(guard.admit(now + HANDSHAKE_WINDOW, 3, &tcp((Ipv4Addr::new(192, 0, 2, 201), 9), 111, SYN), HOST), "after the window");
        assert!(guard.admit(now, 3, &[0u8; 20], HOST), "not TCP: not the guard's");
    }
}
