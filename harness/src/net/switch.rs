//! A learning Ethernet switch: the forwarding decision only, no I/O, time passed in.
//!
//! It protects the lab as a managed switch protects a PXE network:
//! - **Port security.** An address pinned to a port (the harness host's, each declared
//!   client's) is never learned elsewhere; a frame that claims it from another port is
//!   dropped, and frames to it go to its port only, whatever the table holds.
//! - **No unknown unicast to pinned ports.** A frame to an unknown address is flooded only
//!   to ports without a pinned address: nothing a neighbour sends to invented addresses, nor
//!   the lab's answers to them, reaches a declared client's queue.
//! - **A bounded table.** Other addresses are learned with ageing ([`AGEING`]), at most
//!   [`MAX_MACS`] in all and [`MAX_MACS_PER_PORT`] per port: a guest inventing source
//!   addresses cannot grow it or push others out.
//! - **DHCP snooping.** Only the trusted port (the harness host's) may send DHCP server
//!   messages (UDP from port 67 to port 68); a neighbour's OFFER or ACK is dropped.
//! - **Dynamic ARP inspection and IP source guard.** An ARP message whose sender address is
//!   a protected IP (the lab's, a declared client's), or an IPv4 packet from one, is dropped
//!   unless it comes from that address's port.
//! - **Neighbour discovery inspection (IPv6).** The link-local address of each pinned MAC
//!   (its EUI-64 `fe80::` address, what a firmware or kernel forms first) is protected too: a
//!   neighbour advertisement naming it as its target, or an IPv6 packet from it, is dropped
//!   unless it comes from that MAC's port.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::Mac;

/// A port on the segment.
pub type PortId = usize;

/// Where a frame goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forward {
    /// To one port (its destination was learned there).
    Port(PortId),
    /// To every port but the one it came from (broadcast, multicast).
    Flood,
    /// To every port but the one it came from and those whose addresses are pinned (unknown
    /// unicast: a pinned port's own address is never unknown, so nothing flooded is for it).
    FloodUnknown,
    /// Nowhere (too short to be Ethernet, or its destination is the port it came from).
    Drop,
    /// Nowhere: its source is an address pinned to another port.
    Spoofed,
    /// Nowhere: a DHCP server message from an untrusted port.
    RogueDhcp,
    /// Nowhere: an ARP message or IPv6 neighbour advertisement claiming a protected address
    /// from another port.
    ArpSpoofed,
    /// Nowhere: an IPv4 or IPv6 packet from a protected address sent from another port.
    IpSpoofed,
    /// Nowhere: its port sent more frames to flood (broadcast, multicast, unknown unicast)
    /// than [`STORM_LIMIT`] a second.
    Storm,
}

/// Most addresses the table learns; more are flooded to, not learned.
pub const MAX_MACS: usize = 1024;
/// Most addresses one port has learned at once.
pub const MAX_MACS_PER_PORT: usize = 64;
/// How long a learned address stays without a frame from it.
pub const AGEING: Duration = Duration::from_secs(300);
/// Frames a port may have flooded to every other port in a second (storm control): a PXE
/// client's DHCP and ARP need a few; a flood would fill every other port's queue.
pub const STORM_LIMIT: u32 = 100;

/// MAC address table and the switch's protections.
#[derive(Debug, Default)]
pub struct Switch {
    /// Learned addresses: their port and when they last sent.
    table: HashMap<Mac, (PortId, Duration)>,
    learned: HashMap<PortId, usize>,
    pinned: HashMap<Mac, PortId>,
    protected: HashMap<Ipv4Addr, PortId>,
    /// Link-local IPv6 addresses of pinned MACs, and their port.
    protected6: HashMap<Ipv6Addr, PortId>,
    /// Ports that may send DHCP server messages: the harness host's, and a rogue server's
    /// when a fault puts one there on purpose.
    trusted: Vec<PortId>,
    /// Per port: the second being counted and the frames flooded in it.
    flooded: HashMap<PortId, (u64, u32)>,
}

impl Switch {
    /// Fix `mac` on `port`: it is never learned on another port.
    pub fn pin(&mut self, mac: Mac, port: PortId) {
        if let Some((old, _)) = self.table.remove(&mac) {
            self.unlearn(old);
        }
        self.pinned.insert(mac, port);
        self.protected6.insert(link_local(mac), port);
    }

    /// Only `port` may claim `ip` in ARP.
    pub fn protect(&mut self, ip: Ipv4Addr, port: PortId) {
        self.protected.insert(ip, port);
    }

    /// `port` (the harness host's, first) may send DHCP server messages; the first trusted
    /// port also floods without a storm limit.
    pub fn trust(&mut self, port: PortId) {
        if !self.trusted.contains(&port) {
            self.trusted.push(port);
        }
    }

    fn unlearn(&mut self, port: PortId) {
        if let Some(n) = self.learned.get_mut(&port) {
            *n = n.saturating_sub(1);
        }
    }

    /// Learn the source of `frame` on `port` at `now` and decide where the frame goes.
    pub fn forward(&mut self, now: Duration, port: PortId, frame: &[u8]) -> Forward {
        if frame.len() < 14 {
            return Forward::Drop;
        }
        let dst = Mac(frame[0..6].try_into().expect("6 bytes"));
        let src = Mac(frame[6..12].try_into().expect("6 bytes"));
        match self.pinned.get(&src) {
            Some(&home) if home != port => return Forward::Spoofed,
            Some(_) => {}
            None if !src.is_group() => self.learn(now, src, port),
            None => {}
        }
        if !self.trusted.is_empty() && !self.trusted.contains(&port) && is_dhcp_server_message(frame) {
            return Forward::RogueDhcp;
        }
        if let Some(claimed) = arp_sender(frame) {
            if self.protected.get(&claimed).is_some_and(|&home| home != port) {
                return Forward::ArpSpoofed;
            }
        }
        if let Some(source) = ipv4_source(frame) {
            if self.protected.get(&source).is_some_and(|&home| home != port) {
                return Forward::IpSpoofed;
            }
        }
        if let Some((source, advertised)) = ipv6_claims(frame) {
            if advertised.is_some_and(|target| self.protected6.get(&target).is_some_and(|&home| home != port)) {
                return Forward::ArpSpoofed;
            }
            if self.protected6.get(&source).is_some_and(|&home| home != port) {
                return Forward::IpSpoofed;
            }
        }
        if let Some(&home) = self.pinned.get(&dst) {
            return if home == port { Forward::Drop } else { Forward::Port(home) };
        }
        if dst.is_group() {
            return self.flood(now, port);
        }
        match self.table.get(&dst) {
            Some(&(out, seen)) if now.saturating_sub(seen) < AGEING => match out == port {
                true => Forward::Drop,
                false => Forward::Port(out),
            },
            _ => match self.flood(now, port) {
                Forward::Flood => Forward::FloodUnknown,
                storm => storm,
            },
        }
    }

    /// Whether an address is pinned to `port` (the host's, a declared client's): unknown
    /// unicast is not flooded to it.
    pub fn is_pinned_port(&self, port: PortId) -> bool {
        self.pinned.values().any(|p| *p == port)
    }

    /// Flood a frame from `port`, unless the port is past its [`STORM_LIMIT`] this second
    /// (the trusted port, the harness host's, has none: its broadcasts answer the guests).
    fn flood(&mut self, now: Duration, port: PortId) -> Forward {
        if self.trusted.first() == Some(&port) {
            return Forward::Flood;
        }
        let second = now.as_secs();
        let (counted, n) = self.flooded.entry(port).or_insert((second, 0));
        if *counted != second {
            (*counted, *n) = (second, 0);
        }
        *n += 1;
        match *n > STORM_LIMIT {
            true => Forward::Storm,
            false => Forward::Flood,
        }
    }

    fn learn(&mut self, now: Duration, src: Mac, port: PortId) {
        match self.table.get_mut(&src) {
            Some(entry) if entry.0 == port => entry.1 = now,
            Some(entry) => {
                let old = std::mem::replace(entry, (port, now)).0;
                self.unlearn(old);
                *self.learned.entry(port).or_default() += 1;
            }
            None => {
                if self.table.len() >= MAX_MACS {
                    self.age(now);
                }
                let full = self.learned.get(&port).copied().unwrap_or(0) >= MAX_MACS_PER_PORT;
                if self.table.len() < MAX_MACS && !full {
                    self.table.insert(src, (port, now));
                    *self.learned.entry(port).or_default() += 1;
                }
            }
        }
    }

    /// Forget the addresses silent for longer than [`AGEING`].
    fn age(&mut self, now: Duration) {
        let expired: Vec<(Mac, PortId)> =
            self.table.iter().filter(|(_, (_, seen))| now.saturating_sub(*seen) >= AGEING).map(|(mac, (port, _))| (*mac, *port)).collect();
        for (mac, port) in expired {
            self.table.remove(&mac);
            self.unlearn(port);
        }
    }

    /// The port a MAC address was last seen on (or is pinned to).
    pub fn port_of(&self, mac: &Mac) -> Option<PortId> {
        self.pinned.get(mac).copied().or_else(|| self.table.get(mac).map(|(port, _)| *port))
    }
}

/// Whether `frame` is an IPv4 UDP datagram from port 67 to port 68: a DHCP server's message.
fn is_dhcp_server_message(frame: &[u8]) -> bool {
    if frame.get(12..14) != Some(&[0x08, 0x00]) || frame.get(23) != Some(&17) {
        return false;
    }
    let ihl = usize::from(frame.get(14).map_or(0, |b| b & 0x0f)) * 4;
    let udp = 14 + ihl;
    ihl >= 20 && frame.get(udp..udp + 4) == Some(&[0, 67, 0, 68])
}

/// The source address of an IPv4 packet.
fn ipv4_source(frame: &[u8]) -> Option<Ipv4Addr> {
    if frame.get(12..14) != Some(&[0x08, 0x00]) {
        return None;
    }
    let src: [u8; 4] = frame.get(26..30)?.try_into().ok()?;
    Some(Ipv4Addr::from(src))
}

/// The link-local IPv6 address a host with `mac` forms first (modified EUI-64, RFC 4291).
pub fn link_local(mac: Mac) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, m[0] ^ 2, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]])
}

/// An IPv6 packet's source address, and the target a neighbour advertisement in it claims
/// (ICMPv6 type 136 right after the fixed header).
fn ipv6_claims(frame: &[u8]) -> Option<(Ipv6Addr, Option<Ipv6Addr>)> {
    if frame.get(12..14) != Some(&[0x86, 0xdd]) {
        return None;
    }
    let source: [u8; 16] = frame.get(22..38)?.try_into().ok()?;
    let advertised = match (frame.get(20), frame.get(54)) {
        (Some(58), Some(136)) => frame.get(62..78).and_then(|t| <[u8; 16]>::try_from(t).ok()).map(Ipv6Addr::from),
        _ => None,
    };
    Some((Ipv6Addr::from(source), advertised))
}

/// The sender protocol address an Ethernet/IPv4 ARP message claims.
fn arp_sender(frame: &[u8]) -> Option<Ipv4Addr> {
    if frame.get(12..14) != Some(&[0x08, 0x06]) || frame.get(14..20) != Some(&[0, 1, 0x08, 0x00, 6, 4]) {
        return None;
    }
    let spa: [u8; 4] = frame.get(28..32)?.try_into().ok()?;
    Some(Ipv4Addr::from(spa))
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
    const T: Duration = Duration::from_secs(1);

    #[test]
    fn learns_floods_unknown_and_forwards_known() {
        let mut s = Switch::default();
        assert_eq!(s.forward(T, 0, &frame(BROADCAST, A)), Forward::Flood);
        assert_eq!(s.forward(T, 1, &frame(B, A)), Forward::FloodUnknown, "B unknown yet; A moved to port 1");
        assert_eq!(s.port_of(&Mac(A)), Some(1));
        assert_eq!(s.forward(T, 2, &frame(A, B)), Forward::Port(1));
        assert_eq!(s.forward(T, 1, &frame(B, A)), Forward::Port(2));
        assert_eq!(s.forward(T, 2, &frame(B, A)), Forward::Drop, "destination on the ingress port");
        assert_eq!(s.forward(T, 0, &[0u8; 10]), Forward::Drop);
    }

    #[test]
    fn the_table_is_bounded_and_pinned_addresses_cannot_be_claimed() {
        let mut s = Switch::default();
        s.pin(Mac(B), 0);
        assert_eq!(s.forward(T, 3, &frame(A, B)), Forward::Spoofed, "another port claims the host's MAC");
        assert_eq!(s.port_of(&Mac(B)), Some(0));
        assert_eq!(s.forward(T, 1, &frame(B, A)), Forward::Port(0), "frames for the host still reach it");
        for i in 0..2 * MAX_MACS as u32 {
            let [_, _, x, y] = i.to_be_bytes();
            s.forward(T, 2, &frame(BROADCAST, [0x02, 0, 0, 1, x, y]));
        }
        assert!(s.table.len() <= MAX_MACS);
        assert_eq!(s.forward(T, 2, &frame(A, [0x02, 0, 0, 9, 9, 9])), Forward::Port(1), "known addresses keep working");
    }

    #[test]
    fn multicast_source_is_not_learned() {
        let mut s = Switch::default();
        s.forward(T, 3, &frame(A, [0x01, 0, 0x5e, 0, 0, 1]));
        assert_eq!(s.port_of(&Mac([0x01, 0, 0x5e, 0, 0, 1])), None);
    }

    /// An ARP message: `sender` claims `ip`.
    fn arp(sender: [u8; 6], ip: [u8; 4]) -> Vec<u8> {
        let header = [&BROADCAST[..], &sender[..], &[0x08, 0x06], &[0, 1, 0x08, 0x00, 6, 4, 0, 2]].concat();
        [&header[..], &sender[..], &ip[..], &[0u8; 6][..], &[192, 0, 2, 10], &[0u8; 18][..]].concat()
    }

    /// A UDP datagram from `src` port `sport` to `dport`, as an IPv4 frame.
    fn udp(src: [u8; 6], sport: u16, dport: u16) -> Vec<u8> {
        let mut ip = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 192, 0, 2, 66, 255, 255, 255, 255];
        ip.extend(sport.to_be_bytes());
        ip.extend(dport.to_be_bytes());
        ip.extend([0, 8, 0, 0]);
        [&BROADCAST[..], &src[..], &[0x08, 0x00], &ip[..], &[0u8; 18][..]].concat()
    }

    /// A neighbour on port 3 floods 100,000 invented source addresses (the table filled in
    /// under a second, and the host's frames to the client were flooded to every port, the
    /// attacker's too): a declared client pinned to its port is still reached on its port
    /// only, the neighbour learns at most its share, and others still learn.
    #[test]
    fn a_flood_of_source_addresses_never_floods_a_declared_clients_frames() {
        let mut s = Switch::default();
        let (host, client, other) = (Mac([2, 0x70, 0, 0, 0, 1]), Mac(A), [0x52, 0x54, 0, 0, 1, 1]);
        s.pin(host, 0);
        s.pin(client, 1);
        for i in 0..100_000u32 {
            let [_, a, b, c] = i.to_be_bytes();
            s.forward(T, 3, &frame(BROADCAST, [0x02, a, b, c, 0, 1]));
        }
        assert!(s.learned[&3] <= MAX_MACS_PER_PORT && s.table.len() <= MAX_MACS, "{}", s.table.len());
        assert_eq!(s.forward(T, 0, &frame(A, host.0)), Forward::Port(1), "the host's frames reach the client's port only");
        assert_eq!(s.forward(T, 2, &frame(BROADCAST, other)), Forward::Flood, "another port still floods");
        assert_eq!(s.forward(T, 0, &frame(other, host.0)), Forward::Port(2), "another client still learns");
        assert_eq!(s.forward(T, 3, &frame(BROADCAST, A)), Forward::Spoofed, "the declared client's MAC cannot be claimed");
    }

    /// A port flooding broadcasts (the client's queue overflowed with a neighbour's DHCP
    /// DISCOVERs) floods at most its limit a second; other ports and unicast are unaffected.
    #[test]
    fn storm_control_bounds_what_a_port_floods() {
        let mut s = Switch::default();
        let flooded = (0..1000).filter(|_| s.forward(T, 3, &frame(BROADCAST, [2, 0, 0, 0, 0, 0x66])) == Forward::Flood).count();
        assert_eq!(flooded, STORM_LIMIT as usize);
        assert_eq!(s.forward(T, 3, &frame(BROADCAST, [2, 0, 0, 0, 0, 0x66])), Forward::Storm);
        assert_eq!(s.forward(T, 1, &frame(BROADCAST, A)), Forward::Flood, "another port floods");
        assert_eq!(s.forward(T, 3, &frame(A, [2, 0, 0, 0, 0, 0x66])), Forward::Port(1), "known unicast passes");
        assert_eq!(s.forward(T + Duration::from_secs(1), 3, &frame(BROADCAST, [2, 0, 0, 0, 0, 0x66])), Forward::Flood, "the next second");
        s.trust(0);
        assert!((0..1000).all(|_| s.forward(T, 0, &frame(BROADCAST, [2, 0x70, 0, 0, 0, 1])) == Forward::Flood), "the host's port has no limit");
    }

    #[test]
    fn learned_addresses_age_out() {
        let mut s = Switch::default();
        s.forward(T, 1, &frame(BROADCAST, A));
        assert_eq!(s.forward(T + AGEING / 2, 2, &frame(A, B)), Forward::Port(1));
        assert_eq!(s.forward(T + AGEING * 2, 2, &frame(A, B)), Forward::FloodUnknown, "silent too long: unknown again");
    }

    /// A neighbour's ARP replies claiming the lab's address (the client then sent its TFTP
    /// requests to the attacker) or a declared client's are dropped; the owner's pass.
    #[test]
    fn arp_claiming_a_protected_address_from_another_port_is_dropped() {
        let mut s = Switch::default();
        s.protect(Ipv4Addr::new(192, 0, 2, 1), 0);
        s.protect(Ipv4Addr::new(192, 0, 2, 10), 1);
        assert_eq!(s.forward(T, 3, &arp([2, 0, 0, 0, 0, 0x66], [192, 0, 2, 1])), Forward::ArpSpoofed);
        assert_eq!(s.forward(T, 3, &arp([2, 0, 0, 0, 0, 0x66], [192, 0, 2, 10])), Forward::ArpSpoofed);
        assert_eq!(s.forward(T, 0, &arp([2, 0x70, 0, 0, 0, 1], [192, 0, 2, 1])), Forward::Flood, "the lab's own ARP");
        assert_eq!(s.forward(T, 3, &arp([2, 0, 0, 0, 0, 0x66], [192, 0, 2, 99])), Forward::Flood, "an unprotected address");
        let mut from_client = udp([2, 0, 0, 0, 0, 0x66], 68, 67);
        from_client[26..30].copy_from_slice(&[192, 0, 2, 10]);
        assert_eq!(s.forward(T, 3, &from_client), Forward::IpSpoofed, "IP source guard");
        assert_eq!(s.forward(T, 1, &from_client), Forward::Flood, "the address's own port");
    }

    /// A neighbour advertisement from another port naming a pinned MAC's link-local address
    /// (IPv6's ARP spoofing), or an IPv6 packet from that address, is dropped; the owner's
    /// own pass, and so do other addresses.
    #[test]
    fn neighbour_advertisements_claiming_a_pinned_link_local_address_are_dropped() {
        let mut s = Switch::default();
        let (client, neighbour) = (Mac(A), [2, 0, 0, 0, 0, 0x66]);
        s.pin(client, 1);
        let victim = link_local(client);
        assert_eq!(victim, "fe80::5054:ff:fe00:a".parse::<Ipv6Addr>().unwrap());
        let na = |src: [u8; 6], source: Ipv6Addr, target: Ipv6Addr| {
            let mut f = [&BROADCAST[..], &src[..], &[0x86, 0xdd]].concat();
            f.extend_from_slice(&[0x60, 0, 0, 0, 0, 32, 58, 255]);
            f.extend_from_slice(&source.octets());
            f.extend_from_slice(&"ff02::1".parse::<Ipv6Addr>().unwrap().octets());
            f.extend_from_slice(&[136, 0, 0, 0, 0x20, 0, 0, 0]);
            f.extend_from_slice(&target.octets());
            f.extend_from_slice(&[2, 1]);
            f.extend_from_slice(&src);
            f
        };
        let own = link_local(Mac(neighbour));
        assert_eq!(s.forward(T, 3, &na(neighbour, own, victim)), Forward::ArpSpoofed, "claims the client's address");
        assert_eq!(s.forward(T, 3, &na(neighbour, victim, own)), Forward::IpSpoofed, "sent from the client's address");
        assert_eq!(s.forward(T, 1, &na(A, victim, victim)), Forward::Flood, "the client's own");
        assert_eq!(s.forward(T, 3, &na(neighbour, own, own)), Forward::Flood, "the neighbour's own");
        assert_eq!(s.forward(T, 3, &na(neighbour, own, victim)[..60]), Forward::Flood, "cut short: no target to check");
    }

    /// Only the trusted port sends DHCP server messages: a rogue server's OFFER is dropped,
    /// clients' requests (68 → 67) pass.
    #[test]
    fn dhcp_server_messages_from_untrusted_ports_are_dropped() {
        let mut s = Switch::default();
        s.trust(0);
        assert_eq!(s.forward(T, 3, &udp([2, 0, 0, 0, 0, 0x66], 67, 68)), Forward::RogueDhcp);
        assert_eq!(s.forward(T, 0, &udp([2, 0x70, 0, 0, 0, 1], 67, 68)), Forward::Flood);
        assert_eq!(s.forward(T, 3, &udp([2, 0, 0, 0, 0, 0x66], 68, 67)), Forward::Flood);
    }
}
