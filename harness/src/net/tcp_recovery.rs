//! The lab host's TCP recovers from loss, and lets a restarted client in, as a Linux peer
//! does (vendor/smoltcp/PATCHES.md): two smoltcp stacks, the lab's sending and a client
//! receiving, on a wire that drops the segments a test names, with time passed in by the test
//! (1 ms a step).

use std::collections::VecDeque;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, Ipv4Packet, TcpPacket};

/// One side's NIC: what it received, what it sent.
#[derive(Default)]
struct Nic {
    inbox: VecDeque<Vec<u8>>,
    outbox: VecDeque<Vec<u8>>,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let result = f(&mut frame);
        self.0.push_back(frame);
        result
    }
}

impl Device for Nic {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        let frame = self.inbox.pop_front()?;
        Some((Rx(frame), Tx(&mut self.outbox)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.outbox))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = 1500;
        caps
    }
}

struct Host {
    nic: Nic,
    iface: Interface,
    sockets: SocketSet<'static>,
    tcp: SocketHandle,
}

impl Host {
    fn new(ip: [u8; 4]) -> Self {
        let mut nic = Nic::default();
        let mut iface = Interface::new(Config::new(HardwareAddress::Ip), &mut nic, Instant::ZERO);
        iface.update_ip_addrs(|addrs| addrs.push(IpCidr::new(IpAddress::v4(ip[0], ip[1], ip[2], ip[3]), 24)).unwrap());
        let buffer = || tcp::SocketBuffer::new(vec![0; 1 << 20]);
        let mut sockets = SocketSet::new(vec![]);
        let tcp = sockets.add(tcp::Socket::new(buffer(), buffer()));
        Host { nic, iface, sockets, tcp }
    }

    fn socket(&mut self) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut(self.tcp)
    }

    fn poll(&mut self, now: Instant) {
        self.iface.poll(now, &mut self.nic, &mut self.sockets);
    }
}

/// The lab (sending) and a client (receiving) connected over a wire with a drop rule, and
/// what the lab put on the wire.
struct Link {
    lab: Host,
    client: Host,
    now_ms: i64,
    /// Sequence numbers (relative to the lab's first data byte) of the data segments the
    /// lab sent, in order, retransmissions included.
    sent: Vec<u32>,
    first_seq: Option<u32>,
}

const LAB_PORT: u16 = 2049;

impl Link {
    fn connected() -> Self {
        let (mut lab, mut client) = (Host::new([10, 0, 0, 1]), Host::new([10, 0, 0, 2]));
        lab.socket().listen(LAB_PORT).unwrap();
        let cx = client.iface.context();
        client.sockets.get_mut::<tcp::Socket>(client.tcp).connect(cx, (IpAddress::v4(10, 0, 0, 1), LAB_PORT), 49152).unwrap();
        let mut link = Link { lab, client, now_ms: 0, sent: Vec::new(), first_seq: None };
        link.run_until(2_000, |l| l.lab.socket().state() == tcp::State::Established, |_, _| false);
        link
    }

    fn now(&self) -> Instant {
        Instant::from_millis(self.now_ms)
    }

    /// One millisecond: both hosts poll, and what each sent reaches the other, except the lab's
    /// data segments `drop` names by their relative sequence number and how often it was sent.
    fn step(&mut self, drop: &mut dyn FnMut(u32, usize) -> bool) {
        let now = self.now();
        self.lab.poll(now);
        self.client.poll(now);
        while let Some(packet) = self.lab.nic.outbox.pop_front() {
            if let Some(seq) = self.data_seq(&packet) {
                let times = self.sent.iter().filter(|&&s| s == seq).count();
                self.sent.push(seq);
                if drop(seq, times) {
                    continue;
                }
            }
            self.client.nic.inbox.push_back(packet);
        }
        self.lab.nic.inbox.extend(self.client.nic.outbox.drain(..));
        self.now_ms += 1;
    }

    /// The relative sequence number of a data segment from the lab.
    fn data_seq(&mut self, packet: &[u8]) -> Option<u32> {
        let ip = Ipv4Packet::new_checked(packet).ok()?;
        let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
        if tcp.src_port() != LAB_PORT || tcp.payload().is_empty() {
            return None;
        }
        let seq = tcp.seq_number().0 as u32;
        let first = *self.first_seq.get_or_insert(seq);
        Some(seq.wrapping_sub(first))
    }

    /// Steps until `done` or `limit_ms` more milliseconds; the client reads all it gets.
    fn run_until(&mut self, limit_ms: i64, mut done: impl FnMut(&mut Self) -> bool, mut drop: impl FnMut(u32, usize) -> bool) -> i64 {
        let start = self.now_ms;
        while !done(self) {
            assert!(self.now_ms - start < limit_ms, "not done after {limit_ms} ms");
            self.step(&mut drop);
            let client = self.client.socket();
            while client.can_recv() {
                client.recv(|b| (b.len(), ())).unwrap();
            }
        }
        self.now_ms - start
    }

    /// The lab sends `bytes`; returns the milliseconds until the client acknowledged them all.
    fn send(&mut self, bytes: usize, drop: impl FnMut(u32, usize) -> bool) -> i64 {
        let data = vec![0x5a; bytes];
        let mut queued = 0;
        let elapsed = self.run_until(
            60_000,
            |l| {
                let socket = l.lab.socket();
                if queued < bytes {
                    queued += socket.send_slice(&data[queued..]).unwrap();
                }
                queued == bytes && socket.send_queue() == 0
            },
            drop,
        );
        elapsed
    }

    /// Each data segment the lab sent more than once.
    fn retransmitted(&self) -> Vec<u32> {
        let mut seen = std::collections::HashSet::new();
        let mut again: Vec<u32> = self.sent.iter().filter(|s| !seen.insert(**s)).copied().collect();
        again.dedup();
        again
    }
}

/// Data segments are 1460 bytes: segment k starts at `k * MSS`.
const MSS: u32 = 1460;

#[test]
fn two_losses_in_one_window_are_resent_at_once_and_alone() {
    let mut link = Link::connected();
    let clean = link.send(400 * MSS as usize, |_, _| false);
    let mut link = Link::connected();
    // The 20th and the 23rd segment are lost once each: the first is resent after three
    // duplicate ACKs, the second when the ACK of the first stops short of it (NewReno).
    let lost = [20 * MSS, 23 * MSS];
    let elapsed = link.send(400 * MSS as usize, |seq, times| times == 0 && lost.contains(&seq));
    assert_eq!(link.retransmitted(), lost, "only the lost segments are sent again");
    assert!(elapsed < clean + 50, "two losses cost {elapsed} ms against {clean} ms without loss: a retransmission timeout");
}

#[test]
fn a_lost_tail_segment_is_resent_after_200_ms_not_a_second() {
    let mut link = Link::connected();
    let tail = 9 * MSS;
    let elapsed = link.send(10 * MSS as usize, |seq, times| times == 0 && seq == tail);
    assert_eq!(link.retransmitted(), [tail]);
    assert!((200..400).contains(&elapsed), "the tail's loss cost {elapsed} ms");
}

#[test]
fn the_timeout_backs_off_and_an_ack_of_new_data_ends_the_backoff() {
    let mut link = Link::connected();
    let tail = 9 * MSS;
    // Lost three times: 200 + 400 + 800 ms, and the ACK that ends it times nothing (Karn).
    let elapsed = link.send(10 * MSS as usize, |seq, times| seq == tail && times < 3);
    assert!(elapsed >= 1400, "three timeouts, backed off: {elapsed} ms");
    // The next segment alone, lost once: only its timeout can resend it.
    let next = 10 * MSS;
    let elapsed = link.send(MSS as usize, |seq, times| times == 0 && seq == next);
    assert_eq!(link.retransmitted(), [tail, next]);
    assert!(elapsed < 400, "after the ACK of new data a timeout took {elapsed} ms: the backoff went on");
}

/// A client that lost its connection (a VM started again, whose iPXE, restored from the same
/// firmware snapshot, picks the same port and sequence number) connects again from the same
/// port: the lab's dead connection answers its SYN with a challenge ACK, the client resets
/// it, and its next SYN reaches a listening socket (vendor/smoltcp/PATCHES.md, patch 4).
#[test]
fn a_client_that_lost_its_connection_connects_again_from_the_same_port() {
    let mut link = Link::connected();
    // A request, and its answer.
    let request = b"GET /initrd HTTP/1.1\r\n\r\n";
    link.client.socket().send_slice(request).unwrap();
    link.run_until(100, |l| l.lab.socket().recv_queue() == request.len(), |_, _| false);
    link.send(10 * MSS as usize, |_, _| false);
    let buffer = || tcp::SocketBuffer::new(vec![0; 1 << 16]);
    let mut listening = tcp::Socket::new(buffer(), buffer());
    listening.listen(LAB_PORT).unwrap();
    let second = link.lab.sockets.add(listening);
    // The client starts again: a new stack, the same address, port and random seed.
    link.client = Host::new([10, 0, 0, 2]);
    let cx = link.client.iface.context();
    link.client.sockets.get_mut::<tcp::Socket>(link.client.tcp).connect(cx, (IpAddress::v4(10, 0, 0, 1), LAB_PORT), 49152).unwrap();
    let elapsed = link.run_until(10_000, |l| l.lab.sockets.get::<tcp::Socket>(second).state() == tcp::State::Established, |_, _| false);
    assert_eq!(link.lab.socket().state(), tcp::State::Closed, "the dead connection was reset");
    assert_eq!(link.client.socket().state(), tcp::State::Established);
    assert!(elapsed < 2_000, "connected again after {elapsed} ms");
}
