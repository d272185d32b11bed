//! A learning Ethernet switch: the forwarding decision only, no I/O.

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
}

/// MAC address table.
#[derive(Debug, Default)]
pub struct Switch {
    table: HashMap<[u8; 6], PortId>,
}

impl Switch {
    /// Learn the source of `frame` on `port` and decide where the frame goes.
    pub fn forward(&mut self, port: PortId, frame: &[u8]) -> Forward {
        if frame.len() < 14 {
            return Forward::Drop;
        }
        let dst: [u8; 6] = frame[0..6].try_into().expect("6 bytes");
        let src: [u8; 6] = frame[6..12].try_into().expect("6 bytes");
        if src[0] & 1 == 0 {
            self.table.insert(src, port);
        }
        if dst[0] & 1 == 1 {
            return Forward::Flood;
        }
        match self.table.get(&dst) {
            Some(&out) if out == port => Forward::Drop,
            Some(&out) => Forward::Port(out),
            None => Forward::Flood,
        }
    }

    /// The port a MAC address was last seen on.
    pub fn port_of(&self, mac: &[u8; 6]) -> Option<PortId> {
        self.table.get(mac).copied()
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
        assert_eq!(s.port_of(&A), Some(1));
        assert_eq!(s.forward(2, &frame(A, B)), Forward::Port(1));
        assert_eq!(s.forward(1, &frame(B, A)), Forward::Port(2));
        assert_eq!(s.forward(2, &frame(B, A)), Forward::Drop, "destination on the ingress port");
        assert_eq!(s.forward(0, &[0u8; 10]), Forward::Drop);
    }

    #[test]
    fn multicast_source_is_not_learned() {
        let mut s = Switch::default();
        s.forward(3, &frame(A, [0x01, 0, 0x5e, 0, 0, 1]));
        assert_eq!(s.port_of(&[0x01, 0, 0x5e, 0, 0, 1]), None);
    }
}
