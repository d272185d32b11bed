//! A hostile neighbour's traffic, seeded: what a misbehaving firmware, installer or stray
//! machine on a PXE network sends. A lab test plugs a port that sends these frames at a
//! fixed rate while its clients install ([`crate::lab::Network::start_flood`]); the switch's
//! protections and the servers' bounds must keep the declared clients' installs whole.
//!
//! The mix, each kind in turn:
//! - DHCP DISCOVERs from random MACs (a PXE retry loop; the pool's addresses go on offers);
//! - DHCP REQUESTs, DECLINEs and RELEASEs forged for the victim's MAC and address;
//! - a rogue DHCP server's OFFER (dropped by DHCP snooping);
//! - ARP replies claiming the lab's address and the victim's (dropped by ARP inspection);
//! - frames with the victim's MAC as their source (dropped by port security);
//! - TFTP read requests never acknowledged, with long `timeout` options, and traversal names;
//! - TCP SYNs to the portmapper and NFS from addresses that never answer (half-open);
//! - garbage and oversized frames.

use std::net::Ipv4Addr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber};

use super::wire::UdpFrame;
use super::Mac;

/// Who the flood aims at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloodTarget {
    /// The lab host: its MAC and address.
    pub server_mac: Mac,
    pub server_ip: Ipv4Addr,
    /// A declared client whose identity the flood forges.
    pub victim_mac: Mac,
    pub victim_ip: Ipv4Addr,
}

/// The kinds of frame the flood sends, in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FloodKind {
    DhcpDiscover,
    ForgedRequest,
    ForgedDecline,
    ForgedRelease,
    RogueOffer,
    ArpClaimServer,
    ArpClaimVictim,
    /// An IPv6 neighbour advertisement claiming the victim's link-local address.
    NeighborClaimVictim,
    VictimMacSpoof,
    TftpUnacked,
    TftpTraversal,
    TcpSyn,
    Garbage,
    Oversized,
}

impl FloodKind {
    /// Every kind, in the order the flood sends them.
    pub const ALL: [FloodKind; 14] = [
        FloodKind::DhcpDiscover,
        FloodKind::ForgedRequest,
        FloodKind::ForgedDecline,
        FloodKind::ForgedRelease,
        FloodKind::RogueOffer,
        FloodKind::ArpClaimServer,
        FloodKind::ArpClaimVictim,
        FloodKind::NeighborClaimVictim,
        FloodKind::VictimMacSpoof,
        FloodKind::TftpUnacked,
        FloodKind::TftpTraversal,
        FloodKind::TcpSyn,
        FloodKind::Garbage,
        FloodKind::Oversized,
    ];
}

/// The flood's frames, from a seed (the same seed makes the same frames).
#[derive(Debug)]
pub struct Flood {
    rng: fastrand::Rng,
    target: FloodTarget,
    sent: u64,
}

impl Flood {
    /// A flood at `target`, seeded.
    pub fn new(seed: u64, target: FloodTarget) -> Self {
        Flood { rng: fastrand::Rng::with_seed(seed), target, sent: 0 }
    }

    /// The next frame and its kind.
    pub fn next_frame(&mut self) -> (FloodKind, Vec<u8>) {
        let kind = FloodKind::ALL[(self.sent % FloodKind::ALL.len() as u64) as usize];
        self.sent += 1;
        (kind, self.frame(kind))
    }

    /// A random locally administered unicast MAC (never the victim's or the server's).
    fn mac(&mut self) -> Mac {
        let mut bytes = [0u8; 6];
        self.rng.fill(&mut bytes);
        bytes[0] = (bytes[0] & 0xfc) | 0x02;
        Mac(bytes)
    }

    /// A random address in the lab's /24 outside the server's and the victim's.
    fn ip(&mut self) -> Ipv4Addr {
        let [a, b, c, _] = self.target.server_ip.octets();
        Ipv4Addr::new(a, b, c, self.rng.u8(200..=250))
    }

    fn frame(&mut self, kind: FloodKind) -> Vec<u8> {
        let t = self.target;
        let udp = |src_mac: Mac, dst_mac: Mac, src_ip: Ipv4Addr, dst_ip: Ipv4Addr, src_port: u16, dst_port: u16, payload: Vec<u8>| {
            UdpFrame { src_mac, dst_mac, src_ip, dst_ip, src_port, dst_port, payload }.emit()
        };
        match kind {
            FloodKind::DhcpDiscover => {
                let mac = self.mac();
                let xid = self.rng.u32(..);
                udp(mac, Mac::BROADCAST, Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67, dhcp(1, xid, mac, Ipv4Addr::UNSPECIFIED, &[53, 1, 1]))
            }
            FloodKind::ForgedRequest => {
                let (mac, ip) = (self.mac(), t.victim_ip.octets());
                let opts = [&[53, 1, 3, 50, 4][..], &ip[..], &[54, 4], &t.server_ip.octets()[..]].concat();
                udp(mac, Mac::BROADCAST, Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67, dhcp(1, self.rng.u32(..), t.victim_mac, Ipv4Addr::UNSPECIFIED, &opts))
            }
            FloodKind::ForgedDecline => {
                let (mac, ip) = (self.mac(), t.victim_ip.octets());
                let opts = [&[53, 1, 4, 50, 4][..], &ip[..], &[54, 4], &t.server_ip.octets()[..]].concat();
                udp(mac, Mac::BROADCAST, Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67, dhcp(1, self.rng.u32(..), t.victim_mac, Ipv4Addr::UNSPECIFIED, &opts))
            }
            FloodKind::ForgedRelease => {
                let mac = self.mac();
                let opts = [&[53, 1, 7, 54, 4][..], &t.server_ip.octets()[..]].concat();
                udp(mac, t.server_mac, t.victim_ip, t.server_ip, 68, 67, dhcp(1, self.rng.u32(..), t.victim_mac, t.victim_ip, &opts))
            }
            FloodKind::RogueOffer => {
                let (mac, rogue) = (self.mac(), self.ip());
                let opts = [&[53, 1, 2, 54, 4][..], &rogue.octets()[..], &[3, 4], &rogue.octets()[..]].concat();
                udp(mac, Mac::BROADCAST, rogue, Ipv4Addr::BROADCAST, 67, 68, dhcp(2, self.rng.u32(..), t.victim_mac, Ipv4Addr::UNSPECIFIED, &opts))
            }
            FloodKind::ArpClaimServer => {
                let mac = self.mac();
                arp_reply(mac, t.server_ip, t.victim_mac, t.victim_ip)
            }
            FloodKind::ArpClaimVictim => {
                let mac = self.mac();
                arp_reply(mac, t.victim_ip, t.server_mac, t.server_ip)
            }
            FloodKind::NeighborClaimVictim => {
                let mac = self.mac();
                neighbor_advertisement(mac, crate::net::switch::link_local(t.victim_mac))
            }
            FloodKind::VictimMacSpoof => {
                let payload = vec![0u8; 32];
                udp(t.victim_mac, t.server_mac, t.victim_ip, t.server_ip, 40_000, 69, payload)
            }
            FloodKind::TftpUnacked => {
                let (mac, ip, port) = (self.mac(), self.ip(), self.rng.u16(1024..));
                let rrq = [&[0, 1][..], b"nixos/bzImage\0octet\0timeout\0255\0blksize\01468\0"].concat();
                udp(mac, t.server_mac, ip, t.server_ip, port, 69, rrq)
            }
            FloodKind::TftpTraversal => {
                let (mac, ip, port) = (self.mac(), self.ip(), self.rng.u16(1024..));
                let name: &[u8] = if self.rng.bool() { b"../../../../etc/passwd" } else { b"/etc/shadow" };
                let rrq = [&[0, 1][..], name, b"\0octet\0"].concat();
                udp(mac, t.server_mac, ip, t.server_ip, port, 69, rrq)
            }
            FloodKind::TcpSyn => {
                let (mac, ip, port) = (self.mac(), self.ip(), self.rng.u16(1024..));
                let service = if self.rng.bool() { 111 } else { 2049 };
                syn(mac, t.server_mac, ip, t.server_ip, port, service, self.rng.u32(..))
            }
            FloodKind::Garbage => {
                let mut frame = vec![0u8; self.rng.usize(1..200)];
                self.rng.fill(&mut frame);
                frame
            }
            FloodKind::Oversized => {
                let mut frame = vec![0u8; 9000 + self.rng.usize(..7000)];
                self.rng.fill(&mut frame);
                frame[..6].copy_from_slice(&t.server_mac.0);
                frame
            }
        }
    }
}

/// A BOOTP/DHCP message (`op` 1 request, 2 reply) with the RFC 1048 cookie and `options`.
fn dhcp(op: u8, xid: u32, chaddr: Mac, ciaddr: Ipv4Addr, options: &[u8]) -> Vec<u8> {
    let mut m = vec![0u8; 236];
    m[0] = op;
    m[1] = 1;
    m[2] = 6;
    m[4..8].copy_from_slice(&xid.to_be_bytes());
    m[12..16].copy_from_slice(&ciaddr.octets());
    m[28..34].copy_from_slice(&chaddr.0);
    m.extend([99, 130, 83, 99]);
    m.extend(options);
    m.push(255);
    m
}

/// An ARP reply: `sender` says it has `claimed`, to `target`.
/// An unsolicited neighbour advertisement from `sender` (its own link-local source) to all
/// nodes, claiming `target` with `sender`'s MAC (override set).
fn neighbor_advertisement(sender: Mac, target: std::net::Ipv6Addr) -> Vec<u8> {
    let mut f = [&[0x33, 0x33, 0, 0, 0, 1][..], &sender.0[..], &[0x86, 0xdd]].concat();
    f.extend_from_slice(&[0x60, 0, 0, 0, 0, 32, 58, 255]);
    f.extend_from_slice(&crate::net::switch::link_local(sender).octets());
    f.extend_from_slice(&std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets());
    f.extend_from_slice(&[136, 0, 0, 0, 0x20, 0, 0, 0]);
    f.extend_from_slice(&target.octets());
    f.extend_from_slice(&[2, 1]);
    f.extend_from_slice(&sender.0);
    f
}

fn arp_reply(sender: Mac, claimed: Ipv4Addr, target: Mac, target_ip: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::with_capacity(60);
    frame.extend(target.0);
    frame.extend(sender.0);
    frame.extend([0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2]);
    frame.extend(sender.0);
    frame.extend(claimed.octets());
    frame.extend(target.0);
    frame.extend(target_ip.octets());
    frame.resize(60, 0);
    frame
}

/// A TCP SYN.
pub(crate) fn syn(src_mac: Mac, dst_mac: Mac, src_ip: Ipv4Addr, dst_ip: Ipv4Addr, src_port: u16, dst_port: u16, seq: u32) -> Vec<u8> {
    tcp_frame(src_mac, dst_mac, src_ip, dst_ip, src_port, dst_port, seq, (TcpControl::Syn, None))
}

/// A TCP RST with `seq` (`reset`), or a SYN-ACK acknowledging `seq`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn tcp_segment(src_mac: Mac, dst_mac: Mac, src_ip: Ipv4Addr, dst_ip: Ipv4Addr, src_port: u16, dst_port: u16, seq: u32, reset: bool) -> Vec<u8> {
    tcp_frame(src_mac, dst_mac, src_ip, dst_ip, src_port, dst_port, seq, if reset { (TcpControl::Rst, None) } else { (TcpControl::Syn, Some(seq.wrapping_add(1))) })
}

#[allow(clippy::too_many_arguments)]
fn tcp_frame(src_mac: Mac, dst_mac: Mac, src_ip: Ipv4Addr, dst_ip: Ipv4Addr, src_port: u16, dst_port: u16, seq: u32, (control, ack): (TcpControl, Option<u32>)) -> Vec<u8> {
    let tcp = TcpRepr {
        src_port,
        dst_port,
        control,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: 1024,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    let ip = Ipv4Repr { src_addr: src_ip, dst_addr: dst_ip, next_header: IpProtocol::Tcp, payload_len: tcp.buffer_len(), hop_limit: 64 };
    let eth = EthernetRepr { src_addr: EthernetAddress(src_mac.0), dst_addr: EthernetAddress(dst_mac.0), ethertype: EthernetProtocol::Ipv4 };
    let mut frame = vec![0u8; eth.buffer_len() + ip.buffer_len() + tcp.buffer_len()];
    let caps = ChecksumCapabilities::default();
    let mut e = EthernetFrame::new_unchecked(&mut frame[..]);
    eth.emit(&mut e);
    let mut i = Ipv4Packet::new_unchecked(e.payload_mut());
    ip.emit(&mut i, &caps);
    tcp.emit(&mut TcpPacket::new_unchecked(i.payload_mut()), &src_ip.into(), &dst_ip.into(), &caps);
    frame
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::net::switch::{Forward, Switch};

    fn target() -> FloodTarget {
        FloodTarget {
            server_mac: Mac([2, 0x70, 0x78, 0x6c, 0x61, 0x62]),
            server_ip: Ipv4Addr::new(192, 0, 2, 1),
            victim_mac: Mac([0x52, 0x54, 0, 0x1a, 0x5e, 1]),
            victim_ip: Ipv4Addr::new(192, 0, 2, 10),
        }
    }

    #[test]
    fn the_same_seed_makes_the_same_frames_and_every_kind_comes() {
        let (mut a, mut b) = (Flood::new(7, target()), Flood::new(7, target()));
        let kinds: std::collections::HashSet<FloodKind> = (0..28).map(|_| a.next_frame().0).collect();
        assert_eq!(kinds.len(), FloodKind::ALL.len());
        let (mut a, mut c) = (Flood::new(7, target()), Flood::new(8, target()));
        let frames: Vec<Vec<u8>> = (0..24).map(|_| a.next_frame().1).collect();
        assert_eq!(frames, (0..24).map(|_| b.next_frame().1).collect::<Vec<_>>());
        assert_ne!(frames, (0..24).map(|_| c.next_frame().1).collect::<Vec<_>>());
    }

    /// What the switch does with each kind, from a neighbour's port, with the lab's
    /// protections set as the lab sets them.
    #[test]
    fn the_switch_drops_the_forged_kinds_from_a_neighbours_port() {
        let t = target();
        let mut s = Switch::default();
        s.pin(t.server_mac, 0);
        s.protect(t.server_ip, 0);
        s.trust(0);
        s.pin(t.victim_mac, 1);
        s.protect(t.victim_ip, 1);
        let mut flood = Flood::new(1, t);
        let now = std::time::Duration::from_secs(1);
        for _ in 0..FloodKind::ALL.len() * 3 {
            let (kind, frame) = flood.next_frame();
            let forward = s.forward(now, 3, &frame);
            let expected = match kind {
                FloodKind::RogueOffer => Some(Forward::RogueDhcp),
                FloodKind::ArpClaimServer | FloodKind::ArpClaimVictim | FloodKind::NeighborClaimVictim => Some(Forward::ArpSpoofed),
                FloodKind::VictimMacSpoof => Some(Forward::Spoofed),
                FloodKind::ForgedRelease => Some(Forward::IpSpoofed),
                _ => None,
            };
            if let Some(expected) = expected {
                assert_eq!(forward, expected, "{kind:?}");
            }
        }
    }
}
