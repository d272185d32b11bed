//! IPv6 router discovery: the lab says at once that it has no IPv6 router.
//!
//! The lab network is IPv4 only, but clients look for an IPv6 router too, and some wait for
//! one: iPXE's `Configuring (net0 …)` waits out its router solicitations (13 s under TCG)
//! before it boots what DHCP offered. A Router Advertisement with no router lifetime, no
//! prefix and no DHCPv6 flag answers the solicitation: it ends that wait and gives no client
//! an address or a route.

use crate::net::Mac;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv6Address,
    Ipv6Packet, Ipv6Repr, NdiscRepr, NdiscRouterFlags,
};

/// NDISC messages travel one link only: sent and accepted with this hop limit (RFC 4861).
const NDISC_HOP_LIMIT: u8 = 255;

/// The answer to `frame` if it is a Router Solicitation: an advertisement from `host_mac`'s
/// link-local address that offers nothing.
pub fn answer_router_solicitation(frame: &[u8], host_mac: Mac) -> Option<Vec<u8>> {
    let caps = ChecksumCapabilities::default();
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv6 {
        return None;
    }
    let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
    if ip.next_header() != IpProtocol::Icmpv6 || ip.hop_limit() != NDISC_HOP_LIMIT {
        return None;
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let icmp = Icmpv6Packet::new_checked(ip.payload()).ok()?;
    let Ok(Icmpv6Repr::Ndisc(NdiscRepr::RouterSolicit { .. })) = Icmpv6Repr::parse(&src, &dst, &icmp, &caps) else {
        return None;
    };
    // To the soliciting node, or to all nodes when it has no address yet.
    let (to_ip, to_mac) = match src.is_unspecified() {
        true => (Ipv6Address::new(0xff02, 0, 0, 0, 0, 0, 0, 1), EthernetAddress([0x33, 0x33, 0, 0, 0, 1])),
        false => (src, eth.src_addr()),
    };
    let advert = Icmpv6Repr::Ndisc(NdiscRepr::RouterAdvert {
        hop_limit: 0,
        flags: NdiscRouterFlags::empty(),
        router_lifetime: smoltcp::time::Duration::ZERO,
        reachable_time: smoltcp::time::Duration::ZERO,
        retrans_time: smoltcp::time::Duration::ZERO,
        lladdr: Some(EthernetAddress(host_mac.0).into()),
        mtu: None,
        prefix_info: None,
    });
    Some(emit((EthernetAddress(host_mac.0), link_local(host_mac)), (to_mac, to_ip), &advert))
}

/// An NDISC message in IPv6 in Ethernet, `from` and `to` a MAC and an address each.
fn emit(from: (EthernetAddress, Ipv6Address), to: (EthernetAddress, Ipv6Address), message: &Icmpv6Repr) -> Vec<u8> {
    let ip_repr = Ipv6Repr {
        src_addr: from.1,
        dst_addr: to.1,
        next_header: IpProtocol::Icmpv6,
        payload_len: message.buffer_len(),
        hop_limit: NDISC_HOP_LIMIT,
    };
    let eth_repr = EthernetRepr { src_addr: from.0, dst_addr: to.0, ethertype: EthernetProtocol::Ipv6 };
    let mut out = vec![0u8; eth_repr.buffer_len() + ip_repr.buffer_len() + ip_repr.payload_len];
    let mut eth = EthernetFrame::new_unchecked(&mut out[..]);
    eth_repr.emit(&mut eth);
    let mut ip = Ipv6Packet::new_unchecked(eth.payload_mut());
    ip_repr.emit(&mut ip);
    message.emit(&from.1, &to.1, &mut Icmpv6Packet::new_unchecked(ip.payload_mut()), &ChecksumCapabilities::default());
    out
}

/// The modified EUI-64 link-local address of `mac` (RFC 4291).
fn link_local(mac: Mac) -> Ipv6Address {
    let [a, b, c, d, e, f] = mac.0;
    let word = |hi: u8, lo: u8| u16::from_be_bytes([hi, lo]);
    Ipv6Address::new(0xfe80, 0, 0, 0, word(a ^ 0x02, b), word(c, 0xff), word(0xfe, d), word(e, f))
}

/// Router discovery as a [`super::LabService`]: answered in the frame hook.
pub struct NdpService {
    pub host_mac: Mac,
}

impl super::LabService for NdpService {
    fn name(&self) -> &'static str {
        "ndp"
    }

    fn listens_on(&self) -> String {
        "ICMPv6 router solicitations (in the frame hook)".into()
    }

    fn intercept(&self, _events: std::sync::Arc<dyn crate::event::Sink<super::ServiceEvent>>, _started: tokio::time::Instant) -> Option<crate::net::host::Interceptor> {
        let host_mac = self.host_mac;
        Some(Box::new(move |_from, frame| answer_router_solicitation(frame, host_mac).map(|advert| vec![advert])))
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const HOST: Mac = Mac([0x02, 0x70, 0x78, 0x65, 0x6c, 0x01]);
    const CLIENT: Mac = Mac([0x52, 0x54, 0x00, 0x1a, 0x5e, 0x01]);

    /// A Router Solicitation as a client sends it, from `src` (`::` before it has an address).
    fn solicitation(src: Ipv6Address, hop_limit: u8) -> Vec<u8> {
        let all_routers = (EthernetAddress([0x33, 0x33, 0, 0, 0, 2]), Ipv6Address::new(0xff02, 0, 0, 0, 0, 0, 0, 2));
        let mut frame = emit((EthernetAddress(CLIENT.0), src), all_routers, &Icmpv6Repr::Ndisc(NdiscRepr::RouterSolicit { lladdr: None }));
        if hop_limit != NDISC_HOP_LIMIT {
            // The hop limit is outside the ICMPv6 checksum's pseudo-header.
            Ipv6Packet::new_unchecked(&mut frame[14..]).set_hop_limit(hop_limit);
        }
        frame
    }

    #[test]
    fn a_solicitation_gets_an_advertisement_that_offers_nothing() {
        let client_ip = link_local(CLIENT);
        assert_eq!(client_ip.to_string(), "fe80::5054:ff:fe1a:5e01", "as iPXE's pcap shows it");
        let reply = answer_router_solicitation(&solicitation(client_ip, 255), HOST).expect("an answer");
        let eth = EthernetFrame::new_checked(&reply[..]).unwrap();
        assert_eq!((eth.src_addr().0, eth.dst_addr().0), (HOST.0, CLIENT.0));
        let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
        assert_eq!((ip.src_addr(), ip.dst_addr(), ip.hop_limit()), (link_local(HOST), client_ip, 255));
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        match Icmpv6Repr::parse(&ip.src_addr(), &ip.dst_addr(), &icmp, &ChecksumCapabilities::default()) {
            Ok(Icmpv6Repr::Ndisc(NdiscRepr::RouterAdvert { flags, router_lifetime, prefix_info: None, mtu: None, lladdr: Some(lladdr), .. })) => {
                assert_eq!((flags, router_lifetime), (NdiscRouterFlags::empty(), smoltcp::time::Duration::ZERO), "no router, no DHCPv6");
                assert_eq!(lladdr.as_bytes(), HOST.0);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unaddressed_solicitor_is_answered_on_all_nodes() {
        let reply = answer_router_solicitation(&solicitation(Ipv6Address::UNSPECIFIED, 255), HOST).expect("an answer");
        let eth = EthernetFrame::new_checked(&reply[..]).unwrap();
        assert_eq!(eth.dst_addr().0, [0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(Ipv6Packet::new_checked(eth.payload()).unwrap().dst_addr().to_string(), "ff02::1");
    }

    #[test]
    fn anything_else_is_left_alone() {
        assert_eq!(answer_router_solicitation(&solicitation(link_local(CLIENT), 64), HOST), None, "routed from elsewhere");
        let mut bad_checksum = solicitation(link_local(CLIENT), 255);
        *bad_checksum.last_mut().unwrap() ^= 1;
        assert_eq!(answer_router_solicitation(&bad_checksum, HOST), None);
        for cut in [0, 13, 20, 54, 60] {
            assert_eq!(answer_router_solicitation(&solicitation(link_local(CLIENT), 255)[..cut], HOST), None, "cut at {cut}");
        }
    }
}
