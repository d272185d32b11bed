//! The running segment: one task switches frames between ports, passes them through the
//! fault layer and captures them.
//!
//! Memory is bounded whatever a guest does: frames into the switch wait in a bounded queue
//! (a VM sending faster than the switch forwards waits on its own socket), each port's
//! output queue is bounded, and a frame for a full queue (a paused or slow VM) is dropped
//! and counted ([`SegmentEvent`]).

use super::Mac;
use std::collections::BinaryHeap;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::{self, error::TrySendError, Receiver, Sender};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::fault::{Direction, Faults, Impairment, Injected};
use super::framing::{self, Decoder};
use super::pcap::Capture;
use super::switch::{Forward, PortId, Switch};
use crate::event::Sink;

/// Frames waiting to enter the switch.
pub const INGRESS_QUEUE: usize = 4096;
/// Frames waiting to leave by one port.
pub const PORT_QUEUE: usize = 1024;
/// A VM port writes the frames that wait for it together, up to about this many bytes.
const WRITE_BATCH: usize = 64 * 1024;
/// Drops of one kind on one port are reported at most this often.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Why the segment dropped a frame, or what it injected.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "what")]
pub enum SegmentEvent {
    /// Frames dropped on `port` since the lab started, and why ([`DropReason`]).
    Dropped { port: PortId, reason: DropReason, total: u64 },
    /// A fault injected on `port`.
    Fault { port: PortId, direction: Direction, len: usize, #[serde(flatten)] injected: Injected },
    /// A port's link went down or up.
    Link { port: PortId, up: bool },
    /// A port's traffic in one direction is impaired from now on.
    Impaired { port: PortId, direction: Direction, impairment: Impairment },
    /// A hostile neighbour on `port` starts sending `rate` frames a second of a mixed flood
    /// ([`super::flood`]).
    Flood { port: PortId, rate: u32, seed: u64 },
}

impl SegmentEvent {
    /// The port the event is about.
    pub fn port(&self) -> PortId {
        match self {
            SegmentEvent::Dropped { port, .. }
            | SegmentEvent::Fault { port, .. }
            | SegmentEvent::Link { port, .. }
            | SegmentEvent::Impaired { port, .. }
            | SegmentEvent::Flood { port, .. } => *port,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// The port's output queue was full (its VM paused or slow).
    QueueFull,
    /// The switch's input queue was full (the harness host sent too fast).
    IngressFull,
    /// The frame's source address belongs to another port (the harness host's, a declared
    /// client's).
    Spoofed,
    /// A DHCP server message from a port other than the harness host's (DHCP snooping).
    RogueDhcp,
    /// An ARP message claiming the lab's address or a declared client's, or an IPv6 neighbour
    /// advertisement claiming a pinned MAC's link-local address, from another port (dynamic ARP
    /// and neighbour discovery inspection).
    ArpSpoofed,
    /// An IPv4 packet from the lab's address or a declared client's, or an IPv6 packet from a
    /// pinned MAC's link-local address, from another port (IP source guard).
    IpSpoofed,
    /// A frame to flood past its port's storm limit (storm control).
    Storm,
    /// The harness host's IP stack was behind: its input queue was full.
    StackFull,
}

/// A frame sender for one port: what it sends enters the switch from that port.
#[derive(Debug, Clone)]
pub struct PortSender {
    port: PortId,
    ingress: Sender<(PortId, Vec<u8>)>,
    counters: Arc<Counters>,
}

impl PortSender {
    /// Queue a frame without waiting; false once the segment is gone. A frame for a full
    /// queue is dropped and counted.
    pub fn send(&self, frame: Vec<u8>) -> bool {
        match self.ingress.try_send((self.port, frame)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.counters.count(self.port, DropReason::IngressFull);
                true
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }

    /// Queue a frame, waiting for room; false once the segment is gone.
    async fn send_waiting(&self, frame: Vec<u8>) -> bool {
        self.ingress.send((self.port, frame)).await.is_ok()
    }

    pub fn port(&self) -> PortId {
        self.port
    }

    /// Count a frame this port's owner dropped itself, to be reported with the segment's own.
    pub fn count_drop(&self, reason: DropReason) {
        self.counters.count(self.port, reason);
    }
}

/// Drops not yet reported, by port and reason.
#[derive(Debug, Default)]
struct Counters {
    totals: Mutex<std::collections::HashMap<(PortId, DropReason), Tally>>,
}

/// Drops of one kind on one port, and the last report of them.
#[derive(Debug, Default)]
struct Tally {
    total: u64,
    reported: u64,
    reported_at: Option<Instant>,
}

impl Counters {
    fn count(&self, port: PortId, reason: DropReason) {
        self.totals.lock().expect("counters lock").entry((port, reason)).or_default().total += 1;
    }

    /// Drop totals that changed and were last reported over [`REPORT_EVERY`] ago.
    fn due(&self, now: Instant) -> Vec<SegmentEvent> {
        let mut totals = self.totals.lock().expect("counters lock");
        let mut due = Vec::new();
        for (&(port, reason), tally) in totals.iter_mut() {
            if tally.total > tally.reported && tally.reported_at.is_none_or(|at| now >= at + REPORT_EVERY) {
                due.push(SegmentEvent::Dropped { port, reason, total: tally.total });
                (tally.reported, tally.reported_at) = (tally.total, Some(now));
            }
        }
        due
    }
}

/// Every port's output queue, by port.
type Ports = Arc<Mutex<Vec<Egress>>>;

/// A port's output queue: a VM's takes frames; the harness host's takes each frame with the
/// port it came in on, so that its services can say where a message came from.
#[derive(Debug)]
enum Egress {
    Frames(Sender<Vec<u8>>),
    Tagged(Sender<(PortId, Vec<u8>)>),
}

/// A change to the faults, made by the switch task; it returns what goes to the event log.
type FaultChange = Box<dyn FnOnce(&mut Faults) -> Vec<SegmentEvent> + Send>;

/// Commands to the switch task.
enum Control {
    Pin(Mac, PortId),
    Protect(std::net::Ipv4Addr, PortId),
    Trust(PortId),
    Faults(FaultChange),
}

/// One L2 segment. Dropping it stops its tasks (the VMs then see a dead link).
pub struct Segment {
    ingress: Sender<(PortId, Vec<u8>)>,
    control: mpsc::UnboundedSender<Control>,
    ports: Ports,
    counters: Arc<Counters>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Segment {
    /// Start a segment that captures every frame to `pcap` (as it enters the switch, before
    /// faults), injects `faults` and reports drops and faults to `events`.
    pub fn start(pcap: &Path, faults: Faults, events: Arc<dyn Sink<SegmentEvent>>) -> std::io::Result<Self> {
        let capture = Capture::create(pcap)?;
        let (ingress, frames) = mpsc::channel(INGRESS_QUEUE);
        let (control, commands) = mpsc::unbounded_channel();
        let counters = Arc::<Counters>::default();
        let ports = Ports::default();
        let task = SwitchTask {
            ports: ports.clone(),
            switch: Switch::default(),
            faults,
            capture,
            events,
            counters: counters.clone(),
            later: BinaryHeap::new(),
            seq: 0,
            started: Instant::now(),
        };
        let switching = tokio::spawn(task.run(frames, commands));
        Ok(Segment { ingress, control, ports, counters, tasks: Mutex::new(vec![switching]) })
    }

    /// Add a port; returns its sender and the frames the switch forwards to it.
    pub fn attach(&self) -> (PortSender, Receiver<Vec<u8>>) {
        let (egress, frames) = mpsc::channel(PORT_QUEUE);
        (self.add_port(Egress::Frames(egress)), frames)
    }

    /// Add a port that receives each frame with the port it came in on (the harness host's).
    pub fn attach_tagged(&self) -> (PortSender, Receiver<(PortId, Vec<u8>)>) {
        let (egress, frames) = mpsc::channel(PORT_QUEUE);
        (self.add_port(Egress::Tagged(egress)), frames)
    }

    fn add_port(&self, egress: Egress) -> PortSender {
        let mut ports = self.ports.lock().expect("ports lock");
        ports.push(egress);
        PortSender { port: ports.len() - 1, ingress: self.ingress.clone(), counters: self.counters.clone() }
    }

    /// Fix `mac` on `port`: no other port may send with it as its source.
    pub fn pin(&self, mac: Mac, port: PortId) {
        let _ = self.control.send(Control::Pin(mac, port));
    }

    /// Only `port` may claim `ip` in ARP (dynamic ARP inspection).
    pub fn protect(&self, ip: std::net::Ipv4Addr, port: PortId) {
        let _ = self.control.send(Control::Protect(ip, port));
    }

    /// `port` alone may send DHCP server messages (DHCP snooping).
    pub fn trust(&self, port: PortId) {
        let _ = self.control.send(Control::Trust(port));
    }

    /// Change the faults (from the switch task, between two frames); what `change` returns
    /// goes to the event log.
    pub fn with_faults(&self, change: impl FnOnce(&mut Faults) -> Vec<SegmentEvent> + Send + 'static) {
        let _ = self.control.send(Control::Faults(Box::new(change)));
    }

    /// Add a port for a VM NIC: returns the port and QEMU's end of a connected stream socket
    /// (`-netdev stream,addr.type=fd`).
    pub fn attach_vm(&self) -> std::io::Result<(PortId, OwnedFd)> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        let port = self.attach_stream(tokio::net::UnixStream::from_std(ours)?);
        Ok((port, theirs.into()))
    }

    /// Plug a connected stream socket (QEMU's `-netdev stream` framing) into a new port.
    pub fn attach_stream(&self, stream: tokio::net::UnixStream) -> PortId {
        let (mut reader, mut writer) = stream.into_split();
        let (sender, mut frames) = self.attach();
        let port = sender.port();
        let reading = tokio::spawn(async move {
            let mut decoder = Decoder::default();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                match decoder.push(&buf[..n]) {
                    Ok(done) => {
                        for frame in done {
                            if !sender.send_waiting(frame).await {
                                return;
                            }
                        }
                    }
                    Err(e) => return tracing::warn!("port {port}: {e}; link closed"),
                }
            }
        });
        // Frames queued together go out in one write: QEMU then takes them in one read, one
        // wake-up of its main loop instead of one each.
        let writing = tokio::spawn(async move {
            let mut out = Vec::with_capacity(WRITE_BATCH + framing::MAX_FRAME + 4);
            while let Some(frame) = frames.recv().await {
                out.clear();
                framing::encode_into(&mut out, &frame);
                while out.len() < WRITE_BATCH {
                    let Ok(frame) = frames.try_recv() else { break };
                    framing::encode_into(&mut out, &frame);
                }
                if writer.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
        self.tasks.lock().expect("tasks lock").extend([reading, writing]);
        port
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        for task in self.tasks.lock().expect("tasks lock").drain(..) {
            task.abort();
        }
    }
}

/// A frame held back by a delay, due at `.0`.
#[derive(Debug, PartialEq, Eq)]
/// A frame due later: when, its order, where it goes, where it came from, the frame.
struct Later(Instant, u64, PortId, PortId, Vec<u8>);

impl Ord for Later {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.0, other.1).cmp(&(self.0, self.1)) // earliest first in a max-heap
    }
}

impl PartialOrd for Later {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

struct SwitchTask {
    ports: Ports,
    switch: Switch,
    faults: Faults,
    capture: Capture,
    events: Arc<dyn Sink<SegmentEvent>>,
    counters: Arc<Counters>,
    later: BinaryHeap<Later>,
    seq: u64,
    /// The switch's clock starts here (its table ages on it).
    started: Instant,
}

impl SwitchTask {
    async fn run(mut self, mut frames: Receiver<(PortId, Vec<u8>)>, mut commands: mpsc::UnboundedReceiver<Control>) {
        loop {
            let next_due = self.later.peek().map(|l| l.0);
            // Commands first: a fault set before a frame was sent applies to that frame.
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(Control::Pin(mac, port)) => self.switch.pin(mac, port),
                    Some(Control::Protect(ip, port)) => self.switch.protect(ip, port),
                    Some(Control::Trust(port)) => self.switch.trust(port),
                    Some(Control::Faults(change)) => {
                        for event in change(&mut self.faults) {
                            self.events.publish(event);
                        }
                    }
                    None => return,
                },
                frame = frames.recv() => {
                    let Some((port, frame)) = frame else { return };
                    self.ingress(Instant::now(), port, frame);
                }
                _ = sleep_until(next_due) => {
                    let now = Instant::now();
                    while self.later.peek().is_some_and(|l| l.0 <= now) {
                        let Later(_, _, port, from, frame) = self.later.pop().expect("peeked");
                        self.deliver(port, from, frame);
                    }
                }
            }
            for event in self.counters.due(Instant::now()) {
                self.events.publish(event);
            }
        }
    }

    fn ingress(&mut self, now: Instant, port: PortId, frame: Vec<u8>) {
        self.capture.record(&frame);
        let fate = self.faults.fate(port, Direction::In, &frame);
        self.report(port, Direction::In, frame.len(), fate.injected);
        for (delay_in, frame) in fate.copies {
            let outs: Vec<PortId> = match self.switch.forward(now.duration_since(self.started), port, &frame) {
                Forward::Port(out) => vec![out],
                Forward::Flood => (0..self.ports.lock().expect("ports lock").len()).filter(|&out| out != port).collect(),
                Forward::FloodUnknown => {
                    let ports = self.ports.lock().expect("ports lock").len();
                    (0..ports).filter(|&out| out != port && !self.switch.is_pinned_port(out)).collect()
                }
                Forward::Drop => vec![],
                Forward::Spoofed => {
                    self.counters.count(port, DropReason::Spoofed);
                    vec![]
                }
                Forward::RogueDhcp => {
                    self.counters.count(port, DropReason::RogueDhcp);
                    vec![]
                }
                Forward::ArpSpoofed => {
                    self.counters.count(port, DropReason::ArpSpoofed);
                    vec![]
                }
                Forward::IpSpoofed => {
                    self.counters.count(port, DropReason::IpSpoofed);
                    vec![]
                }
                Forward::Storm => {
                    self.counters.count(port, DropReason::Storm);
                    vec![]
                }
            };
            for out in outs {
                let fate = self.faults.fate(out, Direction::Out, &frame);
                self.report(out, Direction::Out, frame.len(), fate.injected);
                for (delay_out, frame) in fate.copies {
                    let delay = delay_in + delay_out;
                    if delay.is_zero() {
                        self.deliver(out, port, frame);
                    } else {
                        self.seq += 1;
                        self.later.push(Later(now + delay, self.seq, out, port, frame));
                    }
                }
            }
        }
    }

    fn deliver(&mut self, port: PortId, from: PortId, frame: Vec<u8>) {
        let full = match self.ports.lock().expect("ports lock").get(port) {
            Some(Egress::Frames(egress)) => matches!(egress.try_send(frame), Err(TrySendError::Full(_))),
            Some(Egress::Tagged(egress)) => matches!(egress.try_send((from, frame)), Err(TrySendError::Full(_))),
            None => false,
        };
        if full {
            self.counters.count(port, DropReason::QueueFull);
        }
    }

    fn report(&self, port: PortId, direction: Direction, len: usize, injected: Vec<Injected>) {
        for injected in injected {
            if injected == Injected::LinkDown {
                continue; // reported once, when the link went down
            }
            self.events.publish(SegmentEvent::Fault { port, direction, len, injected });
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        [&dst[..], &src[..], &[0x08, 0x00], &[0xa5u8; 46][..]].concat()
    }

    #[derive(Default)]
    struct Log(Mutex<Vec<SegmentEvent>>);

    impl Sink<SegmentEvent> for Log {
        fn publish(&self, event: SegmentEvent) {
            self.0.lock().unwrap().push(event);
        }
    }

    /// A segment capturing into a temp dir, with its event log.
    fn segment(seed: u64) -> (tempfile::TempDir, Arc<Log>, Segment) {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::default());
        let segment = Segment::start(&dir.path().join("s.pcap"), Faults::new(seed), log.clone()).unwrap();
        (dir, log, segment)
    }

    async fn read_frame(vm: &mut tokio::net::UnixStream) -> Vec<u8> {
        let mut len = [0u8; 4];
        vm.read_exact(&mut len).await.unwrap();
        let mut got = vec![0u8; u32::from_be_bytes(len) as usize];
        vm.read_exact(&mut got).await.unwrap();
        got
    }

    fn vm_stream(fd: OwnedFd) -> tokio::net::UnixStream {
        let vm: std::os::unix::net::UnixStream = fd.into();
        vm.set_nonblocking(true).unwrap();
        tokio::net::UnixStream::from_std(vm).unwrap()
    }

    #[tokio::test]
    async fn vm_ports_speak_qemu_stream_framing() {
        let (dir, _, segment) = segment(0);
        let (host, mut to_host) = segment.attach();
        let (_, fd) = segment.attach_vm().unwrap();
        let mut vm = vm_stream(fd);
        let a = [0x52, 0x54, 0, 0, 0, 0xa];
        let host_mac = [0x52, 0x54, 0, 0, 0, 1];
        vm.write_all(&framing::encode(&frame([0xff; 6], a))).await.unwrap();
        assert_eq!(to_host.recv().await.unwrap(), frame([0xff; 6], a), "broadcast flooded to the host");
        host.send(frame(a, host_mac));
        assert_eq!(read_frame(&mut vm).await, frame(a, host_mac), "unicast delivered to the learned port");
        drop(segment);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let pcap = std::fs::read(dir.path().join("s.pcap")).unwrap();
        assert_eq!(pcap.len(), 24 + 2 * (16 + 60), "both frames captured");
    }

    /// A VM that never reads (paused) must not grow the harness's memory: its queue stays
    /// bounded, the excess is dropped and counted in the events.
    #[tokio::test]
    async fn a_port_that_does_not_read_gets_drops_not_memory() {
        let (_dir, log, segment) = segment(0);
        let (host, _to_host) = segment.attach();
        segment.trust(host.port()); // the host's broadcasts have no storm limit
        let (_paused, mut frames) = segment.attach();
        for _ in 0..3 * PORT_QUEUE {
            host.send(frame([0xff; 6], [2, 0, 0, 0, 0, 1]));
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
        host.send(frame([0xff; 6], [2, 0, 0, 0, 0, 1]));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut queued = 0;
        while frames.try_recv().is_ok() {
            queued += 1;
        }
        assert_eq!(queued, PORT_QUEUE, "the queue holds at most its bound");
        let reports = {
            let events = log.0.lock().unwrap();
            let total = events.iter().filter_map(|e| match e {
                SegmentEvent::Dropped { port: 1, reason: DropReason::QueueFull, total } => Some(*total),
                _ => None,
            }).max();
            assert_eq!(total, Some(2 * PORT_QUEUE as u64 + 1), "every dropped frame is counted: {events:?}");
            events.iter().filter(|e| matches!(e, SegmentEvent::Dropped { .. })).count()
        };
        tokio::time::sleep(Duration::from_millis(1100)).await;
        segment.pin(Mac([2, 0, 0, 0, 0, 7]), 0); // wakes the switch without a frame
        tokio::time::sleep(Duration::from_millis(100)).await;
        let after: Vec<u64> = log.0.lock().unwrap().iter().filter_map(|e| match e {
            SegmentEvent::Dropped { total, .. } => Some(*total),
            _ => None,
        }).collect();
        assert_eq!(after.len(), reports, "an unchanged total is not reported again: {after:?}");
    }

    #[tokio::test]
    async fn a_vm_that_stops_reading_gets_every_queued_frame_once_it_reads_again() {
        let (_dir, _, segment) = segment(0);
        let (host, _to_host) = segment.attach();
        segment.trust(host.port()); // the host's broadcasts have no storm limit
        let (_, fd) = segment.attach_vm().unwrap();
        let mut vm = vm_stream(fd);
        let numbered = |i: u16| [&[0xff; 6][..], &[2, 0, 0, 0, 0, 1], &[0x08, 0x00], &i.to_be_bytes(), &[0x5a; 1498][..]].concat();
        // More than the socket buffer holds: the writer waits for room with frames queued.
        let count = PORT_QUEUE as u16 / 2;
        for i in 0..count {
            host.send(numbered(i));
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        for i in 0..count {
            let got = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut vm)).await.unwrap_or_else(|_| panic!("frame {i} in time"));
            assert_eq!(got, numbered(i), "frame {i} whole and in order");
        }
    }

    #[tokio::test]
    async fn a_guest_cannot_claim_a_pinned_address() {
        let (_dir, _, segment) = segment(0);
        let host_mac = [2, 0x70, 0x78, 0, 0, 1];
        let (host, mut to_host) = segment.attach();
        segment.pin(Mac(host_mac), host.port());
        let (_, fd) = segment.attach_vm().unwrap();
        let (_, fd2) = segment.attach_vm().unwrap();
        let (mut evil, mut victim) = (vm_stream(fd), vm_stream(fd2));
        evil.write_all(&framing::encode(&frame([0xff; 6], host_mac))).await.unwrap();
        let honest = frame([0xff; 6], [2, 0, 0, 0, 0, 9]);
        victim.write_all(&framing::encode(&honest)).await.unwrap();
        assert_eq!(to_host.recv().await.unwrap(), honest, "the spoofed frame went nowhere");
        host.send(frame([2, 0, 0, 0, 0, 9], host_mac));
        assert_eq!(read_frame(&mut victim).await, frame([2, 0, 0, 0, 0, 9], host_mac));
    }

    #[tokio::test]
    async fn delayed_frames_arrive_late_and_a_down_link_passes_nothing() {
        let (_dir, log, segment) = segment(5);
        let (host, _) = segment.attach();
        let (_, mut vm) = segment.attach();
        segment.with_faults(|f| {
            f.impair(1, Direction::Out, Impairment::delay(Duration::from_millis(200), Duration::ZERO));
            vec![]
        });
        let sent = Instant::now();
        host.send(frame([0xff; 6], [2, 0, 0, 0, 0, 1]));
        vm.recv().await.unwrap();
        assert!(sent.elapsed() >= Duration::from_millis(190), "{:?}", sent.elapsed());
        segment.with_faults(|f| {
            f.set_link(1, false);
            vec![SegmentEvent::Link { port: 1, up: false }]
        });
        host.send(frame([0xff; 6], [2, 0, 0, 0, 0, 1]));
        assert!(tokio::time::timeout(Duration::from_millis(400), vm.recv()).await.is_err());
        assert!(log.0.lock().unwrap().contains(&SegmentEvent::Link { port: 1, up: false }));
    }
}
