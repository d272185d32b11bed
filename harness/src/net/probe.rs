//! A well-behaved client's check of the lab's servers, as frames: a DHCP DISCOVER answered by
//! an OFFER, then from the offered address a TFTP read request answered by DATA or ERROR, and
//! a TCP SYN to the portmapper answered by SYN-ACK. A test runs it from a port of its own
//! during and after a neighbour's flood ([`crate::lab::Network::probe`]): the servers must
//! answer each within its timeout. Pure: frames in, frames out, time passed in.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::wire::UdpFrame;
use super::Mac;

/// The file the probe asks TFTP for: the server answers DATA or `file not found` alike.
pub const PROBE_FILE: &str = "pxelab-probe";
const TFTP_PORT: u16 = 40_069;
const TCP_PORT: u16 = 40_111;
const PORTMAP: u16 = 111;
/// How long an unanswered TFTP request or SYN waits before it goes again, as a client's
/// first retransmission timeout (Linux's initial RTO for a SYN).
pub const RESEND_AFTER: Duration = Duration::from_secs(1);

/// How long each server took to answer the probe, or `None` while it has not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeAnswers {
    pub dhcp_offer: Option<Duration>,
    pub tftp_reply: Option<Duration>,
    pub tcp_syn_ack: Option<Duration>,
}

impl ProbeAnswers {
    /// Whether every server answered.
    pub fn complete(&self) -> bool {
        self.dhcp_offer.is_some() && self.tftp_reply.is_some() && self.tcp_syn_ack.is_some()
    }
}

impl std::fmt::Display for ProbeAnswers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |d: Option<Duration>| d.map_or("no answer".to_owned(), |d| format!("{:.1} ms", d.as_secs_f64() * 1000.0));
        write!(f, "DHCP offer {}, TFTP reply {}, TCP SYN-ACK {}", show(self.dhcp_offer), show(self.tftp_reply), show(self.tcp_syn_ack))
    }
}

/// The probe's state.
#[derive(Debug)]
pub struct Probe {
    mac: Mac,
    server_mac: Mac,
    server_ip: Ipv4Addr,
    xid: u32,
    started: Duration,
    /// The offered address, once offered, and when the requests from it went.
    ip: Option<(Ipv4Addr, Duration)>,
    /// When the unanswered requests last went.
    resent: Duration,
    answers: ProbeAnswers,
}

impl Probe {
    /// A probe from `mac` (an undeclared client's) of the server at `server_ip`; `xid` is its
    /// DHCP transaction.
    pub fn new(mac: Mac, server_mac: Mac, server_ip: Ipv4Addr, xid: u32) -> Self {
        Probe { mac, server_mac, server_ip, xid, started: Duration::ZERO, ip: None, resent: Duration::ZERO, answers: ProbeAnswers::default() }
    }

    pub fn answers(&self) -> ProbeAnswers {
        self.answers
    }

    /// The DISCOVER, sent at `now`.
    pub fn start(&mut self, now: Duration) -> Vec<u8> {
        self.started = now;
        let mut m = vec![0u8; 236];
        m[..3].copy_from_slice(&[1, 1, 6]);
        m[4..8].copy_from_slice(&self.xid.to_be_bytes());
        m[10] = 0x80;
        m[28..34].copy_from_slice(&self.mac.0);
        m.extend([99, 130, 83, 99, 53, 1, 1, 255]);
        UdpFrame { src_mac: self.mac, dst_mac: Mac::BROADCAST, src_ip: Ipv4Addr::UNSPECIFIED, dst_ip: Ipv4Addr::BROADCAST, src_port: 68, dst_port: 67, payload: m }.emit()
    }

    /// A frame the probe's port received at `now`; what the probe sends in return.
    pub fn on_frame(&mut self, now: Duration, frame: &[u8]) -> Vec<Vec<u8>> {
        if let Some(asker) = self.ip.and_then(|(ip, _)| arp_request_for(frame, ip)) {
            return vec![arp_reply(self.mac, self.ip.expect("asked for it").0, asker)];
        }
        if let Some(udp) = UdpFrame::parse(frame) {
            if udp.src_port == 67 && udp.dst_port == 68 && self.ip.is_none() && udp.payload.len() >= 240 && udp.payload[4..8] == self.xid.to_be_bytes() && udp.payload[28..34] == self.mac.0 {
                let offered = Ipv4Addr::new(udp.payload[16], udp.payload[17], udp.payload[18], udp.payload[19]);
                self.answers.dhcp_offer = Some(now.saturating_sub(self.started));
                self.ip = Some((offered, now));
                self.resent = now;
                // As a client does: ask for the server's MAC first (which tells the server
                // the client's), then the requests.
                return vec![self.who_has_server(offered), self.rrq(offered), self.syn(offered)];
            }
            if let Some((ip, asked)) = self.ip {
                if udp.src_ip == self.server_ip && udp.dst_ip == ip && udp.dst_port == TFTP_PORT && self.answers.tftp_reply.is_none() {
                    self.answers.tftp_reply = Some(now.saturating_sub(asked));
                    // Stop a transfer the server began: an ERROR, as a client that has enough.
                    let error = [&[0u8, 5, 0, 0][..], b"probe done\0"].concat();
                    return vec![UdpFrame { src_mac: self.mac, dst_mac: self.server_mac, src_ip: ip, dst_ip: self.server_ip, src_port: TFTP_PORT, dst_port: udp.src_port, payload: error }.emit()];
                }
            }
            return Vec::new();
        }
        if let (Some((ip, asked)), Some(ack)) = (self.ip, self.syn_ack(frame)) {
            if self.answers.tcp_syn_ack.is_none() {
                self.answers.tcp_syn_ack = Some(now.saturating_sub(asked));
                return vec![super::flood::tcp_segment(self.mac, self.server_mac, ip, self.server_ip, TCP_PORT, PORTMAP, ack, true)];
            }
        }
        Vec::new()
    }

    /// What the probe sends again at `now`: each request still unanswered [`RESEND_AFTER`]
    /// after it last went (a SYN that met a server not yet listening got a RST, which the
    /// probe ignores as a client's retransmission does). Each answer stays timed from the
    /// first request.
    pub fn on_tick(&mut self, now: Duration) -> Vec<Vec<u8>> {
        let Some((ip, _)) = self.ip else { return Vec::new() };
        if now.saturating_sub(self.resent) < RESEND_AFTER {
            return Vec::new();
        }
        self.resent = now;
        let tftp = self.answers.tftp_reply.is_none().then(|| self.rrq(ip));
        let tcp = self.answers.tcp_syn_ack.is_none().then(|| self.syn(ip));
        tftp.into_iter().chain(tcp).collect()
    }

    fn who_has_server(&self, ip: Ipv4Addr) -> Vec<u8> {
        let mut frame = [&Mac::BROADCAST.0[..], &self.mac.0[..], &[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1], &self.mac.0[..], &ip.octets()[..], &[0; 6][..], &self.server_ip.octets()[..]].concat();
        frame.resize(60, 0);
        frame
    }

    fn rrq(&self, ip: Ipv4Addr) -> Vec<u8> {
        let payload = [&[0u8, 1][..], PROBE_FILE.as_bytes(), b"\0octet\0"].concat();
        UdpFrame { src_mac: self.mac, dst_mac: self.server_mac, src_ip: ip, dst_ip: self.server_ip, src_port: TFTP_PORT, dst_port: 69, payload }.emit()
    }

    fn syn(&self, ip: Ipv4Addr) -> Vec<u8> {
        super::flood::syn(self.mac, self.server_mac, ip, self.server_ip, TCP_PORT, PORTMAP, 0x5052_4f42)
    }

    /// The server's SYN-ACK to the probe's SYN: its acknowledgement number.
    fn syn_ack(&self, frame: &[u8]) -> Option<u32> {
        if frame.get(12..14)? != [0x08, 0x00] || *frame.get(23)? != 6 {
            return None;
        }
        let ihl = usize::from(frame.get(14)? & 0x0f) * 4;
        let tcp = frame.get(14 + ihl..)?;
        let (src, dst) = (u16::from_be_bytes([*tcp.first()?, *tcp.get(1)?]), u16::from_be_bytes([*tcp.get(2)?, *tcp.get(3)?]));
        let flags = *tcp.get(13)?;
        if src != PORTMAP || dst != TCP_PORT || flags & 0x12 != 0x12 {
            return None;
        }
        Some(u32::from_be_bytes(tcp.get(8..12)?.try_into().ok()?))
    }
}

/// The asker's MAC and address if `frame` is an ARP request for `ip`.
fn arp_request_for(frame: &[u8], ip: Ipv4Addr) -> Option<(Mac, Ipv4Addr)> {
    if frame.get(12..22)? != [0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1] || frame.get(38..42)? != ip.octets() {
        return None;
    }
    Some((Mac(frame.get(22..28)?.try_into().ok()?), Ipv4Addr::from(<[u8; 4]>::try_from(frame.get(28..32)?).ok()?)))
}

fn arp_reply(mac: Mac, ip: Ipv4Addr, (asker, asker_ip): (Mac, Ipv4Addr)) -> Vec<u8> {
    let mut frame = [&asker.0[..], &mac.0[..], &[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2], &mac.0[..], &ip.octets()[..], &asker.0[..], &asker_ip.octets()[..]].concat();
    frame.resize(60, 0);
    frame
}

#[cfg(test)]
mod test {
    use super::*;

    const SERVER: Mac = Mac([2, 0x70, 0x78, 0x6c, 0x61, 0x62]);
    const PROBE: Mac = Mac([2, 0x50, 0x52, 0x4f, 0x42, 0x45]);
    const SERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const OFFERED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 150);
    const MS: Duration = Duration::from_millis(1);

    fn offer(xid: u32) -> Vec<u8> {
        let mut m = vec![0u8; 240];
        m[0] = 2;
        m[4..8].copy_from_slice(&xid.to_be_bytes());
        m[16..20].copy_from_slice(&OFFERED.octets());
        m[28..34].copy_from_slice(&PROBE.0);
        UdpFrame { src_mac: SERVER, dst_mac: Mac::BROADCAST, src_ip: SERVER_IP, dst_ip: Ipv4Addr::BROADCAST, src_port: 67, dst_port: 68, payload: m }.emit()
    }

    /// DISCOVER, OFFER, then TFTP and TCP from the offered address, each answer timed from
    /// its request; ARP for the offered address is answered; another transaction's OFFER
    /// counts for nothing.
    #[test]
    fn each_servers_answer_is_timed_from_its_request() {
        let mut probe = Probe::new(PROBE, SERVER, SERVER_IP, 7);
        let discover = UdpFrame::parse(&probe.start(MS)).unwrap();
        assert_eq!((discover.dst_port, &discover.payload[28..34]), (67, &PROBE.0[..]));
        assert!(probe.on_frame(2 * MS, &offer(8)).is_empty(), "another transaction's OFFER");
        let sent = probe.on_frame(3 * MS, &offer(7));
        assert_eq!(probe.answers().dhcp_offer, Some(2 * MS));
        assert_eq!((&sent[0][12..14], &sent[0][38..42]), (&[0x08, 0x06][..], &SERVER_IP.octets()[..]), "ARP for the server first");
        let rrq = UdpFrame::parse(&sent[1]).unwrap();
        assert_eq!((rrq.src_ip, rrq.dst_port, &rrq.payload[2..2 + PROBE_FILE.len()]), (OFFERED, 69, PROBE_FILE.as_bytes()));
        assert_eq!(&sent[2][12..14], &[0x08, 0x00]);

        let mut who_has = [&Mac::BROADCAST.0[..], &SERVER.0[..], &[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1], &SERVER.0[..], &SERVER_IP.octets()[..], &[0; 6][..], &OFFERED.octets()[..]].concat();
        who_has.resize(60, 0);
        let reply = probe.on_frame(4 * MS, &who_has);
        assert_eq!((&reply[0][0..6], &reply[0][20..22], &reply[0][28..32]), (&SERVER.0[..], &[0, 2][..], &OFFERED.octets()[..]));

        let error = UdpFrame { src_mac: SERVER, dst_mac: PROBE, src_ip: SERVER_IP, dst_ip: OFFERED, src_port: 50_000, dst_port: TFTP_PORT, payload: b"\0\x05\0\x01not found\0".to_vec() }.emit();
        probe.on_frame(7 * MS, &error);
        assert_eq!(probe.answers().tftp_reply, Some(4 * MS));
        assert!(!probe.answers().complete());
        let syn_ack = super::super::flood::tcp_segment(SERVER, PROBE, SERVER_IP, OFFERED, PORTMAP, TCP_PORT, 99, false);
        let rst = probe.on_frame(9 * MS, &syn_ack);
        assert_eq!(probe.answers().tcp_syn_ack, Some(6 * MS));
        assert!(probe.answers().complete());
        assert_eq!(rst.len(), 1, "the half-open connection is reset");
        assert!(probe.on_tick(3 * MS + 5 * RESEND_AFTER).is_empty(), "all answered: nothing goes again");
    }

    /// A SYN without its SYN-ACK (a server not yet listening answers RST) goes again after
    /// `RESEND_AFTER`, not before, and its answer is timed from the first.
    #[test]
    fn an_unanswered_request_goes_again_after_a_second() {
        let mut probe = Probe::new(PROBE, SERVER, SERVER_IP, 7);
        probe.start(MS);
        assert!(probe.on_tick(2 * RESEND_AFTER).is_empty(), "nothing to resend before the offer");
        let sent = probe.on_frame(3 * MS, &offer(7));
        let error = UdpFrame { src_mac: SERVER, dst_mac: PROBE, src_ip: SERVER_IP, dst_ip: OFFERED, src_port: 50_000, dst_port: TFTP_PORT, payload: b"\0\x05\0\x01not found\0".to_vec() }.emit();
        probe.on_frame(5 * MS, &error);
        assert!(probe.on_tick(3 * MS + RESEND_AFTER - MS).is_empty());
        let again = probe.on_tick(3 * MS + RESEND_AFTER);
        assert_eq!(again, vec![sent[2].clone()], "the SYN alone, as it went");
        assert!(probe.on_tick(3 * MS + RESEND_AFTER + MS).is_empty());
        let syn_ack = super::super::flood::tcp_segment(SERVER, PROBE, SERVER_IP, OFFERED, PORTMAP, TCP_PORT, 99, false);
        probe.on_frame(3 * MS + RESEND_AFTER + 2 * MS, &syn_ack);
        assert_eq!(probe.answers().tcp_syn_ack, Some(RESEND_AFTER + 2 * MS));
    }
}
