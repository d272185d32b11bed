//! UDP datagrams in IPv4 in Ethernet, for the services that answer at the frame level (DHCP
//! must reach clients that have no address yet, so it does not go through the IP stack).

use super::Mac;
use std::net::Ipv4Addr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpProtocol, Ipv4Packet, Ipv4Repr, UdpPacket,
    UdpRepr,
};

/// A UDP datagram with its Ethernet and IPv4 addressing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpFrame {
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: Vec<u8>,
}

impl UdpFrame {
    /// Parse an Ethernet frame; `None` unless it is a valid IPv4 UDP datagram.
    pub fn parse(frame: &[u8]) -> Option<Self> {
        let eth = EthernetFrame::new_checked(frame).ok()?;
        if eth.ethertype() != EthernetProtocol::Ipv4 {
            return None;
        }
        let caps = ChecksumCapabilities::default();
        let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
        let ip_repr = Ipv4Repr::parse(&ip, &caps).ok()?;
        if ip_repr.next_header != IpProtocol::Udp {
            return None;
        }
        let udp = UdpPacket::new_checked(ip.payload()).ok()?;
        let udp_repr = UdpRepr::parse(&udp, &ip_repr.src_addr.into(), &ip_repr.dst_addr.into(), &caps).ok()?;
        Some(UdpFrame {
            src_mac: Mac(eth.src_addr().0),
            dst_mac: Mac(eth.dst_addr().0),
            src_ip: ip_repr.src_addr,
            dst_ip: ip_repr.dst_addr,
            src_port: udp_repr.src_port,
            dst_port: udp_repr.dst_port,
            payload: udp.payload().to_vec(),
        })
    }

    /// Encode as an Ethernet frame with valid IPv4 and UDP checksums.
    pub fn emit(&self) -> Vec<u8> {
        let caps = ChecksumCapabilities::default();
        let udp_repr = UdpRepr { src_port: self.src_port, dst_port: self.dst_port };
        let ip_repr = Ipv4Repr {
            src_addr: self.src_ip,
            dst_addr: self.dst_ip,
            next_header: IpProtocol::Udp,
            payload_len: udp_repr.header_len() + self.payload.len(),
            hop_limit: 64,
        };
        let eth_repr = EthernetRepr {
            src_addr: EthernetAddress(self.src_mac.0),
            dst_addr: EthernetAddress(self.dst_mac.0),
            ethertype: EthernetProtocol::Ipv4,
        };
        let mut frame = vec![0u8; eth_repr.buffer_len() + ip_repr.buffer_len() + ip_repr.payload_len];
        let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
        eth_repr.emit(&mut eth);
        let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
        ip_repr.emit(&mut ip, &caps);
        let mut udp = UdpPacket::new_unchecked(ip.payload_mut());
        udp_repr.emit(
            &mut udp,
            &self.src_ip.into(),
            &self.dst_ip.into(),
            self.payload.len(),
            |buf| buf.copy_from_slice(&self.payload),
            &caps,
        );
        frame
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn emit_then_parse() {
        let frame = UdpFrame {
            src_mac: Mac([0x52, 0x54, 0, 0, 0, 1]),
            dst_mac: Mac::BROADCAST,
            src_ip: Ipv4Addr::new(192, 0, 2, 1),
            dst_ip: Ipv4Addr::BROADCAST,
            src_port: 67,
            dst_port: 68,
            payload: vec![0xa5; 300],
        };
        let bytes = frame.emit();
        assert_eq!(bytes.len(), 14 + 20 + 8 + 300);
        assert_eq!(UdpFrame::parse(&bytes), Some(frame));
        let mut corrupt = bytes.clone();
        corrupt[14 + 20 + 8] ^= 0xff; // payload byte: UDP checksum no longer matches
        assert_eq!(UdpFrame::parse(&corrupt), None);
        assert_eq!(UdpFrame::parse(&bytes[..30]), None);
    }
}
