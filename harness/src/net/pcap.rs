//! A pcap capture of every frame on the segment, readable by Wireshark and tcpdump.
//!
//! A thread of its own writes the file, so no disk write ever blocks the async runtime that
//! carries the network. It writes what came in one write every `DRAIN_EVERY` at most, and
//! is woken at most that often: a frame costs the network path a copy and no wake-up (waking
//! the writer per frame cost a lockstep TFTP transfer 14 µs a block). A killed test still
//! leaves a readable file, short of its last few milliseconds.

use std::cell::RefCell;
use std::io::Write;
use std::path::Path;
use std::rc::Rc;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::DataLink;

/// Frames waiting for the writer thread; more are left out of the capture (and counted).
const QUEUE: usize = 8192;
/// How long the writer sleeps after writing what was queued.
const DRAIN_EVERY: Duration = Duration::from_millis(20);

/// What the writer thread has not yet written to the file.
#[derive(Default, Clone)]
struct Batch(Rc<RefCell<Vec<u8>>>);

impl Write for Batch {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends frames to the capture's writer thread; dropping it ends the thread.
pub struct Capture {
    frames: SyncSender<(Duration, Vec<u8>)>,
    missed: u64,
}

impl Capture {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let mut file = std::fs::File::create(path)?;
        let (frames, queue) = sync_channel::<(Duration, Vec<u8>)>(QUEUE);
        let name = path.display().to_string();
        std::thread::Builder::new().name("pcap".into()).spawn(move || {
            let batch = Batch::default();
            let header = PcapHeader { datalink: DataLink::ETHERNET, ..Default::default() };
            let mut writer = PcapWriter::with_header(batch.clone(), header).expect("a header into memory");
            // Woken by the first frame after a pause only: a frame sent while it sleeps or
            // writes wakes nothing, so the capture costs the network no context switches.
            loop {
                for (at, frame) in queue.try_iter() {
                    writer.write_packet(&PcapPacket::new(at, frame.len() as u32, &frame)).expect("a frame into memory");
                }
                if let Err(e) = file.write_all(&batch.0.take()) {
                    return tracing::warn!("pcap {name}: {e}; capture stopped");
                }
                std::thread::sleep(DRAIN_EVERY);
                match queue.recv() {
                    Ok((at, frame)) => {
                        writer.write_packet(&PcapPacket::new(at, frame.len() as u32, &frame)).expect("a frame into memory");
                    }
                    Err(_) => return,
                }
            }
        })?;
        Ok(Capture { frames, missed: 0 })
    }

    /// Queue one frame, stamped with the wall clock.
    pub fn record(&mut self, frame: &[u8]) {
        let at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        if let Err(TrySendError::Full(_)) = self.frames.try_send((at, frame.to_vec())) {
            self.missed += 1;
            if self.missed.is_power_of_two() {
                tracing::warn!("pcap: the writer is behind; {} frames left out of the capture", self.missed);
            }
        }
    }
}

/// What a capture holds, by protocol: for a run's report.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub frames: u64,
    pub bytes: u64,
    /// Seconds from the first frame to the last.
    pub seconds: u64,
    /// Frames per protocol (`arp`, `dhcp`, `tftp`, `nfs`, `portmap`, `http`, `other udp`, ...), most first.
    pub protocols: Vec<(String, u64)>,
    /// How many frames were corrupt or cut short at the end of the file (a killed run).
    pub unreadable: u64,
    /// TCP segments the lab's servers sent again (NFS, portmap, HTTP: from port 2049, 111
    /// or 80), by protocol ([`Resent`]); on an unimpaired link the harness should drop none.
    pub server_resent: Vec<(String, u64)>,
}

/// Counts TCP segments sent again, frame by frame: per flow (addresses and ports), a segment
/// with data that starts before the highest sequence number the flow has already sent up to
/// (wrapping, RFC 793's comparison). Pure.
#[derive(Debug, Default)]
pub struct Resent {
    sent_up_to: std::collections::HashMap<([u8; 4], u16, [u8; 4], u16), u32>,
}

impl Resent {
    /// Take one frame; `Some(source port)` if it is a TCP segment that resends data.
    pub fn push(&mut self, frame: &[u8]) -> Option<u16> {
        if frame.get(12..14)? != [0x08, 0x00] || *frame.get(23)? != 6 {
            return None;
        }
        let ip = frame.get(14..)?;
        let header = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?])).min(ip.len());
        let tcp = ip.get(header..total)?;
        let data_offset = usize::from(tcp.get(12)? >> 4) * 4;
        let payload = tcp.len().checked_sub(data_offset)? as u32;
        if payload == 0 {
            return None;
        }
        let (source, destination) = (u16::from_be_bytes([tcp[0], tcp[1]]), u16::from_be_bytes([tcp[2], tcp[3]]));
        let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
        let flow = (ip[12..16].try_into().ok()?, source, ip[16..20].try_into().ok()?, destination);
        let end = seq.wrapping_add(payload);
        match self.sent_up_to.get_mut(&flow) {
            None => {
                self.sent_up_to.insert(flow, end);
                None
            }
            Some(up_to) => {
                let resent = (seq.wrapping_sub(*up_to) as i32) < 0;
                if (end.wrapping_sub(*up_to) as i32) > 0 {
                    *up_to = end;
                }
                resent.then_some(source)
            }
        }
    }
}

/// Count the frames of the pcap file at `path` by protocol.
pub fn summarize(path: &Path) -> std::io::Result<Summary> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut reader = pcap_file::pcap::PcapReader::new(file).map_err(std::io::Error::other)?;
    let mut summary = Summary::default();
    let mut counts = std::collections::HashMap::<&'static str, u64>::new();
    let (mut first, mut last) = (None, Duration::ZERO);
    let mut resent = Resent::default();
    let mut server_resent = std::collections::BTreeMap::<&'static str, u64>::new();
    while let Some(packet) = reader.next_packet() {
        let Ok(packet) = packet else {
            summary.unreadable += 1;
            break;
        };
        summary.frames += 1;
        summary.bytes += packet.data.len() as u64;
        first.get_or_insert(packet.timestamp);
        last = packet.timestamp;
        *counts.entry(protocol(&packet.data)).or_default() += 1;
        if let Some(port @ (2049 | 111 | 80)) = resent.push(&packet.data) {
            *server_resent.entry(match port { 2049 => "nfs", 111 => "portmap", _ => "http" }).or_default() += 1;
        }
    }
    summary.server_resent = server_resent.into_iter().map(|(p, n)| (p.to_owned(), n)).collect();
    summary.seconds = last.saturating_sub(first.unwrap_or(last)).as_secs();
    let mut protocols: Vec<_> = counts.into_iter().map(|(p, n)| (p.to_owned(), n)).collect();
    protocols.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    summary.protocols = protocols;
    Ok(summary)
}

/// One reply of a DHCP server in a capture, set against the client's request it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpAnswer {
    pub client: crate::net::Mac,
    /// The reply's type: `Offer`, `Ack` or `Nak`.
    pub reply: dhcproto::v4::MessageType,
    /// When the reply was captured (the capture's clock).
    pub at: Duration,
    /// From the capture of the request it answers to the capture of the reply.
    pub latency: Duration,
}

/// Pairs a DHCP server's replies with the requests they answer, frame by frame, by
/// transaction id and client MAC: each reply answers the earliest request of that pair not
/// yet answered (a client that resends its DISCOVER before the OFFER arrives gets two).
/// Pure: frames and their capture times in, [`DhcpAnswer`]s out.
#[derive(Debug, Default)]
pub struct DhcpPairing {
    server: Option<std::net::Ipv4Addr>,
    pending: std::collections::HashMap<(u32, [u8; 6]), std::collections::VecDeque<Duration>>,
    answers: Vec<DhcpAnswer>,
}

impl DhcpPairing {
    /// Pair the replies sent from `server`'s address.
    pub fn new(server: std::net::Ipv4Addr) -> Self {
        DhcpPairing { server: Some(server), ..Default::default() }
    }

    /// Take one captured frame; any frame that is not DHCP over IPv4 is ignored.
    pub fn push(&mut self, at: Duration, frame: &[u8]) {
        use dhcproto::v4::{Message, MessageType, Opcode};
        use dhcproto::Decodable;
        if protocol(frame) != "dhcp" {
            return;
        }
        let Some(udp) = super::wire::UdpFrame::parse(frame) else { return };
        let Ok(message) = Message::from_bytes(&udp.payload) else { return };
        let Some(client) = message.chaddr().get(..6).and_then(|c| <[u8; 6]>::try_from(c).ok()) else { return };
        let key = (message.xid(), client);
        match (message.opcode(), message.opts().msg_type()) {
            (Opcode::BootRequest, Some(MessageType::Discover | MessageType::Request)) => {
                self.pending.entry(key).or_default().push_back(at);
            }
            (Opcode::BootReply, Some(reply @ (MessageType::Offer | MessageType::Ack | MessageType::Nak))) if Some(udp.src_ip) == self.server => {
                let asked = self.pending.get_mut(&key).and_then(|q| q.pop_front());
                if let Some(asked) = asked {
                    self.answers.push(DhcpAnswer { client: crate::net::Mac(client), reply, at, latency: at.saturating_sub(asked) });
                }
            }
            _ => {}
        }
    }

    /// The replies paired so far, in capture order.
    pub fn answers(&self) -> &[DhcpAnswer] {
        &self.answers
    }
}

/// The DHCP replies `server` sent in the pcap file at `path`, each with its latency
/// ([`DhcpPairing`]); a file cut short at its end (a killed run) gives what it holds.
pub fn dhcp_answers(path: &Path, server: std::net::Ipv4Addr) -> std::io::Result<Vec<DhcpAnswer>> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut reader = pcap_file::pcap::PcapReader::new(file).map_err(std::io::Error::other)?;
    let mut pairing = DhcpPairing::new(server);
    while let Some(Ok(packet)) = reader.next_packet() {
        pairing.push(packet.timestamp, &packet.data);
    }
    Ok(pairing.answers)
}

/// The protocol of an Ethernet frame, by EtherType, IP protocol and well-known port.
fn protocol(frame: &[u8]) -> &'static str {
    let ethertype = frame.get(12..14).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    match ethertype {
        0x0806 => return "arp",
        0x86dd => return "ipv6",
        0x0800 => {}
        _ => return "other",
    }
    let Some(ip) = frame.get(14..) else { return "other" };
    let header = usize::from(ip.first().map_or(0, |b| b & 0x0f)) * 4;
    let ports = |at: usize| ip.get(at..at + 4).map(|p| (u16::from_be_bytes([p[0], p[1]]), u16::from_be_bytes([p[2], p[3]])));
    let Some((source, destination)) = ports(header) else { return "other ipv4" };
    let port = |p: u16| source == p || destination == p;
    match ip.get(9) {
        Some(17) if port(67) || port(68) => "dhcp",
        Some(17) if port(111) => "portmap",
        Some(17) if port(69) || source >= 1024 && destination >= 1024 => "tftp",
        Some(17) => "other udp",
        Some(6) if port(2049) => "nfs",
        Some(6) if port(111) => "portmap",
        Some(6) if port(80) => "http",
        Some(6) => "other tcp",
        Some(1) => "icmp",
        _ => "other ipv4",
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use pcap_file::pcap::PcapReader;

    #[test]
    fn frames_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment.pcap");
        let mut capture = Capture::create(&path).unwrap();
        capture.record(&[0xff; 60]);
        capture.record(&[0x52; 1514]);
        drop(capture);
        std::thread::sleep(Duration::from_millis(200));
        let mut reader = PcapReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        assert_eq!(reader.header().datalink, DataLink::ETHERNET);
        let mut lens = Vec::new();
        while let Some(packet) = reader.next_packet() {
            lens.push(packet.unwrap().data.len());
        }
        assert_eq!(lens, [60, 1514]);
    }

    /// A DHCP message of `op` (1 request, 2 reply) and `kind` (option 53), as a frame from `src_ip`.
    fn dhcp_frame(op: u8, kind: u8, xid: u32, client: [u8; 6], src_ip: std::net::Ipv4Addr) -> Vec<u8> {
        let mut m = vec![0u8; 236];
        m[..3].copy_from_slice(&[op, 1, 6]);
        m[4..8].copy_from_slice(&xid.to_be_bytes());
        m[28..34].copy_from_slice(&client);
        m.extend([99, 130, 83, 99, 53, 1, kind, 255]);
        let (src_port, dst_port) = if op == 1 { (68, 67) } else { (67, 68) };
        let mac = crate::net::Mac(client);
        crate::net::wire::UdpFrame { src_mac: mac, dst_mac: crate::net::Mac::BROADCAST, src_ip, dst_ip: std::net::Ipv4Addr::BROADCAST, src_port, dst_port, payload: m }.emit()
    }

    #[test]
    fn each_dhcp_reply_is_timed_from_the_request_it_answers() {
        use dhcproto::v4::MessageType;
        let server: std::net::Ipv4Addr = "192.0.2.1".parse().unwrap();
        let rogue: std::net::Ipv4Addr = "192.0.2.254".parse().unwrap();
        let zero = std::net::Ipv4Addr::UNSPECIFIED;
        let (a, b) = ([0x52, 0x54, 0, 0, 0, 1], [0x52, 0x54, 0, 0, 0, 2]);
        let ms = Duration::from_millis;
        let mut pairing = DhcpPairing::new(server);
        let frames = [
            (ms(0), dhcp_frame(1, 1, 7, a, zero)),   // a DISCOVER
            (ms(1), dhcp_frame(1, 1, 9, b, zero)),   // b DISCOVER
            (ms(3), dhcp_frame(2, 2, 7, a, rogue)),  // another server's OFFER: not ours
            (ms(4), dhcp_frame(2, 2, 7, a, server)), // a OFFER, 4 ms
            (ms(5), dhcp_frame(1, 1, 9, b, zero)),   // b resends before its OFFER
            (ms(6), dhcp_frame(2, 2, 9, b, server)), // answers b's first: 5 ms
            (ms(7), dhcp_frame(2, 2, 9, b, server)), // and its second: 2 ms
            (ms(8), dhcp_frame(2, 2, 9, b, server)), // nothing left to answer: not paired
            (ms(10), dhcp_frame(1, 3, 7, a, zero)),  // a REQUEST
            (ms(13), dhcp_frame(2, 5, 7, a, server)), // a ACK, 3 ms
            (ms(14), vec![0u8; 60]),                 // not DHCP
        ];
        for (at, frame) in &frames {
            pairing.push(*at, frame);
        }
        let got: Vec<(u8, MessageType, Duration)> = pairing.answers().iter().map(|x| (x.client.0[5], x.reply, x.latency)).collect();
        assert_eq!(
            got,
            [(1, MessageType::Offer, ms(4)), (2, MessageType::Offer, ms(5)), (2, MessageType::Offer, ms(2)), (1, MessageType::Ack, ms(3))]
        );
    }

    /// A TCP segment from 192.0.2.1:`source` to 192.0.2.10:`destination` with `len` bytes at `seq`.
    fn tcp(source: u16, destination: u16, seq: u32, len: usize) -> Vec<u8> {
        let mut frame = vec![0u8; 12];
        frame.extend([0x08, 0x00]);
        let total = (20 + 20 + len) as u16;
        frame.extend([0x45, 0]);
        frame.extend(total.to_be_bytes());
        frame.extend([0, 0, 0, 0, 64, 6, 0, 0, 192, 0, 2, 1, 192, 0, 2, 10]);
        frame.extend(source.to_be_bytes());
        frame.extend(destination.to_be_bytes());
        frame.extend(seq.to_be_bytes());
        frame.extend([0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        frame.extend(vec![0xab; len]);
        frame
    }

    #[test]
    fn segments_sent_again_are_counted_per_flow_across_the_sequence_wrap() {
        let mut resent = Resent::default();
        let near_wrap = u32::MAX - 99;
        let frames = [
            tcp(2049, 700, near_wrap, 100),      // first of its flow
            tcp(2049, 700, near_wrap.wrapping_add(100), 1000), // wraps past 0: new data
            tcp(2049, 700, near_wrap, 100),      // sent again
            tcp(2049, 700, 500, 1000),           // overlaps what was sent: again
            tcp(2049, 701, near_wrap, 100),      // another flow's first
            tcp(2049, 700, 1500, 0),             // a bare ACK: no data
            tcp(2049, 700, 1500, 10),            // new data
        ];
        let got: Vec<Option<u16>> = frames.iter().map(|f| resent.push(f)).collect();
        assert_eq!(got, [None, None, Some(2049), Some(2049), None, None, None]);
        assert_eq!(resent.push(&[0u8; 20]), None, "not IPv4 TCP");
    }

    #[test]
    fn a_summary_counts_frames_by_protocol() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment.pcap");
        let mut capture = Capture::create(&path).unwrap();
        let ip = |protocol: u8, source: u16, destination: u16| {
            let mut frame = vec![0u8; 12];
            frame.extend([0x08, 0x00, 0x45, 0, 0, 0, 0, 0, 0, 0, 64, protocol]);
            frame.extend([0u8; 10]);
            frame.extend(source.to_be_bytes());
            frame.extend(destination.to_be_bytes());
            frame.extend([0u8; 8]);
            frame
        };
        let mut arp = vec![0u8; 12];
        arp.extend([0x08, 0x06, 0, 1]);
        for frame in [ip(17, 68, 67), ip(17, 67, 68), ip(17, 2000, 69), arp, ip(6, 80, 40000)] {
            capture.record(&frame);
        }
        drop(capture);
        std::thread::sleep(Duration::from_millis(200));
        let summary = summarize(&path).unwrap();
        assert_eq!(summary.frames, 5);
        let expected = [("dhcp", 2), ("arp", 1), ("http", 1), ("tftp", 1)].map(|(p, n)| (p.to_owned(), n));
        assert_eq!(summary.protocols, expected);
    }
}
