//! A learning Ethernet switch: the forwarding decision only, no I/O.
//!
//! Its table is bounded ([`MAX_MACS`]): a guest inventing source addresses cannot grow it, and
//! an address pinned to a port (the harness host's) is never learned elsewhere; a frame that
//! claims it from another port is dropped.

use super::Mac;
use std::collections::HashMap;

/// A port on the segment.
pub type PortId = usize;

/// Where a frame goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forward {
    /// To one port (its destination was learned there).
    Port(PortId),
    /// To every port but the one it came from (broadcast, multicast, unknown unicast).
    Flood,
    /// Nowhere (too short to be Ethernet, or its destination is the port it came from).
    Drop,
    /// Nowhere: its source is an address pinned to another port.
    Spoofed,
}

/// Most addresses the table learns; more are flooded to, not learned.
pub const MAX_MACS: usize = 1024;

/// MAC address table.
#[derive(Debug, Default)]
pub struct Switch {
    table: HashMap<Mac, PortId>,
    pinned: HashMap<Mac, PortId>,
}

impl Switch {
    /// Fix `mac` on `port`: it is never learned on another port.
    pub fn pin(&mut self, mac: Mac, port: PortId) {
        self.pinned.insert(mac, port);
    }

    /// Learn the source of `frame` on `port` and decide where the frame goes.
    pub fn forward(&mut self, port: PortId, frame: &[u8]) -> Forward {
        if frame.len() < 14 {
            return Forward::Drop;
        }
        let dst = Mac(frame[0..6].try_into().expect("6 bytes"));
        let src = Mac(frame[6..12].try_into().expect("6 bytes"));
        match self.pinned.get(&src) {
            Some(&home) if home != port => return Forward::Spoofed,
            Some(_) => {}
            None if !src.is_group() && (self.table.len() < MAX_MACS || self.table.contains_key(&src)) => {
                self.table.insert(src, port);
            }
            None => {}
        }
        if let Some(&home) = self.pinned.get(&dst) {
            return if home == port { Forward::Drop } else { Forward::Port(home) };
        }
        if dst.is_group() {
            return Forward::Flood;
        }
        match self.table.get(&dst) {
            Some(&out) if out == port => Forward::Drop,
            Some(&out) => Forward::Port(out),
            None => Forward::Flood,
        }
    }

    /// The port a MAC address was last seen on (or is pinned to).
    pub fn port_of(&self, mac: &Mac) -> Option<PortId> {
        self.pinned.get(mac).or_else(|| self.table.get(mac)).copied()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        [&dst[..], &src[..], &[0x08, 0x00], &[0u8; 46][..]].concat()
    }

    const A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0xa];
    const B: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0xb];
    const BROADCAST: [u8; 6] = [0xff; 6];

    #[test]
    fn learns_floods_unknown_and_forwards_known() {
        let mut s = Switch::default();
        assert_eq!(s.forward(0, &frame(BROADCAST, A)), Forward::Flood);
        assert_eq!(s.forward(1, &frame(B, A)), Forward::Flood, "B unknown yet; A moved to port 1");
        assert_eq!(s.port_of(&Mac(A)), Some(1));
        assert_eq!(s.forward(2, &frame(A, B)), Forward::Port(1));
        assert_eq!(s.forward(1, &frame(B, A)), Forward::Port(2));
        assert_eq!(s.forward(2, &frame(B, A)), Forward::Drop, "destination on the ingress port");
        assert_eq!(s.forward(0, &[0u8; 10]), Forward::Drop);
    }

    #[test]
    fn the_table_is_bounded_and_pinned_addresses_cannot_be_claimed() {
        let mut s = Switch::default();
        s.pin(Mac(B), 0);
        assert_eq!(s.forward(3, &frame(A, B)), Forward::Spoofed, "another port claims the host's MAC");
        assert_eq!(s.port_of(&Mac(B)), Some(0));
        assert_eq!(s.forward(1, &frame(B, A)), Forward::Port(0), "frames for the host still reach it");
        for i in 0..2 * MAX_MACS as u32 {
            let [_, _, x, y] = i.to_be_bytes();
            s.forward(2, &frame(BROADCAST, [0x02, 0, 0, 1, x, y]));
        }
        assert!(s.table.len() <= MAX_MACS);
        assert_eq!(s.forward(2, &frame(A, [0x02, 0, 0, 9, 9, 9])), Forward::Port(1), "known addresses keep working");
    }

    #[test]
    fn multicast_source_is_not_learned() {
        let mut s = Switch::default();
        s.forward(3, &frame(A, [0x01, 0, 0x5e, 0, 0, 1]));
        assert_eq!(s.port_of(&Mac([0x01, 0, 0x5e, 0, 0, 1])), None);
    }
}
