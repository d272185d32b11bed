//! The running segment: one task switches frames between ports, passes them through the
//! fault layer and captures them.
//!
//! Memory is bounded whatever a guest does: frames into the switch wait in a bounded queue
//! (a VM sending faster than the switch forwards waits on its own socket), each port's
//! output queue is bounded, and a frame for a full queue (a paused or slow VM) is dropped
//! and counted ([`SegmentEvent`]).
//!
//! The lab's servers are held back instead ([`Segment::attach_server`]): their frames enter by
//! a queue of their own, and a frame of theirs for a VM port whose queue is full waits for
//! room, holding the servers' next frames back (their IP stack waits on [`ServerSink`], as it
//! would on a NIC's full ring, and nothing is resent). A port that takes nothing for
//! [`STALLED_AFTER`] counts as stopped for good: that frame and the servers' next ones for it
//! are dropped and counted until its queue has drained to half, so a paused guest costs the
//! others one wait, not one a frame.

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
/// Frames from the lab's servers waiting to enter the switch; when full, the servers wait.
pub const SERVER_QUEUE: usize = 256;
/// How long a server's frame waits for room in a VM port's queue before the port counts as
/// stopped for good.
pub const STALLED_AFTER: Duration = Duration::from_millis(250);
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
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
    pub async fn send_waiting(&self, frame: Vec<u8>) -> bool {
        self.ingress.send((self.port, frame)).await.is_ok()
    }

    pub fn port(&self) -> PortId {
        self.port
    }

    /// This port's frames as a sink that is ready only when the switch has room for one
    /// more: the way an IP stack is held back (see [`Segment::attach_server`]).
    pub fn sink(&self) -> ServerSink {
        ServerSink { port: self.port, sender: tokio_util::sync::PollSender::new(self.ingress.clone()) }
    }

    /// Count a frame this port's owner dropped itself, to be reported with the segment's own.
    pub fn count_drop(&self, reason: DropReason) {
        self.counters.count(self.port, reason);
    }
}

/// A port's way into the switch that waits for room (see [`PortSender::sink`]).
pub struct ServerSink {
    port: PortId,
    sender: tokio_util::sync::PollSender<(PortId, Vec<u8>)>,
}

impl ServerSink {
    /// Ready once the switch has room for one frame; an error once the segment is gone.
    pub fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        self.sender.poll_reserve(cx).map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "segment stopped"))
    }

    /// Send a frame into the room [`ServerSink::poll_ready`] found.
    pub fn send(&mut self, frame: Vec<u8>) -> std::io::Result<()> {
        self.sender.send_item((self.port, frame)).map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "segment stopped"))
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
#[derive(Debug, Clone)]
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
    /// The lab's servers' own way in ([`Segment::attach_server`]).
    server_ingress: Sender<(PortId, Vec<u8>)>,
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
        let (server_ingress, server_frames) = mpsc::channel(SERVER_QUEUE);
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
            held: std::collections::VecDeque::new(),
            held_since: Instant::now(),
            stalled: std::collections::HashSet::new(),
        };
        let switching = tokio::spawn(task.run(frames, server_frames, commands));
        Ok(Segment { ingress, server_ingress, control, ports, counters, tasks: Mutex::new(vec![switching]) })
    }

    /// Add a port; returns its sender and the frames the switch forwards to it.
    pub fn attach(&self) -> (PortSender, Receiver<Vec<u8>>) {
        let (egress, frames) = mpsc::channel(PORT_QUEUE);
        (self.add_port(Egress::Frames(egress)), frames)
    }

    /// Add the lab's servers' port (the harness host's): it receives each frame with the port
    /// it came in on, so that its services can say where a message came from, and what it
    /// sends is held back rather than dropped when a VM port is behind (see the module doc;
    /// [`PortSender::sink`]).
    pub fn attach_server(&self) -> (PortSender, Receiver<(PortId, Vec<u8>)>) {
        let (egress, frames) = mpsc::channel(PORT_QUEUE);
        let mut sender = self.add_port(Egress::Tagged(egress));
        sender.ingress = self.server_ingress.clone();
        (sender, frames)
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
    /// The servers' frames waiting for room in a VM port's queue: where to, from where, the
    /// frame. While any wait, the servers' queue is not read.
    held: std::collections::VecDeque<(PortId, PortId, Vec<u8>)>,
    /// Since when the first of `held` waits.
    held_since: Instant,
    /// Ports that took nothing for [`STALLED_AFTER`]: the servers' frames for them are dropped
    /// until their queue has drained to half.
    stalled: std::collections::HashSet<PortId>,
}

impl SwitchTask {
    async fn run(mut self, mut frames: Receiver<(PortId, Vec<u8>)>, mut server_frames: Receiver<(PortId, Vec<u8>)>, mut commands: mpsc::UnboundedReceiver<Control>) {
        loop {
            let next_due = self.later.peek().map(|l| l.0);
            let holding = !self.held.is_empty();
            let waiting_on = self.held.front().and_then(|(to, _, _)| self.ports.lock().expect("ports lock").get(*to).cloned());
            let stall_due = self.held_since + STALLED_AFTER;
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
                    self.ingress(Instant::now(), port, frame, false);
                }
                frame = server_frames.recv(), if !holding => {
                    let Some((port, frame)) = frame else { return };
                    self.ingress(Instant::now(), port, frame, true);
                }
                () = room(waiting_on), if holding => self.deliver_held(),
                () = tokio::time::sleep_until(stall_due), if holding => {
                    let (to, _, _) = self.held.pop_front().expect("holding");
                    self.counters.count(to, DropReason::QueueFull);
                    self.stalled.insert(to);
                    self.deliver_held();
                }
                _ = sleep_until(next_due) => {
                    let now = Instant::now();
                    while self.later.peek().is_some_and(|l| l.0 <= now) {
                        let Later(_, _, port, from, frame) = self.later.pop().expect("peeked");
                        self.deliver(port, from, frame, false);
                    }
                }
            }
            for event in self.counters.due(Instant::now()) {
                self.events.publish(event);
            }
        }
    }

    /// Deliver the held frames that now fit, in order; the rest wait on.
    fn deliver_held(&mut self) {
        while let Some((to, from, frame)) = self.held.pop_front() {
            if let Some(frame) = self.deliver(to, from, frame, true) {
                self.held.push_front((to, from, frame));
                break;
            }
            self.held_since = Instant::now();
        }
    }

    /// Switch a frame from `port`; `from_servers`: hold it for a full queue (see the module
    /// doc) instead of dropping it.
    fn ingress(&mut self, now: Instant, port: PortId, frame: Vec<u8>, from_servers: bool) {
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
                        if let Some(frame) = self.deliver(out, port, frame, from_servers) {
                            if self.held.is_empty() {
                                self.held_since = now;
                            }
                            self.held.push_back((out, port, frame));
                        }
                    } else {
                        self.seq += 1;
                        self.later.push(Later(now + delay, self.seq, out, port, frame));
                    }
                }
            }
        }
    }

    /// Queue a frame on `port`. A frame for a full queue is dropped and counted, or with
    /// `hold` given back to wait for room, unless the port counts as stopped for good.
    fn deliver(&mut self, port: PortId, from: PortId, frame: Vec<u8>, hold: bool) -> Option<Vec<u8>> {
        let ports = self.ports.lock().expect("ports lock");
        let Some(egress) = ports.get(port) else { return None };
        if self.stalled.contains(&port) && egress.room() >= PORT_QUEUE / 2 {
            self.stalled.remove(&port);
        }
        let back = match egress {
            Egress::Frames(egress) => match egress.try_send(frame) {
                Err(TrySendError::Full(frame)) => Some(frame),
                _ => None,
            },
            Egress::Tagged(egress) => match egress.try_send((from, frame)) {
                Err(TrySendError::Full((_, frame))) => Some(frame),
                _ => None,
            },
        };
        drop(ports);
        match back {
            Some(frame) if hold && !self.stalled.contains(&port) => Some(frame),
            Some(_) => {
                self.counters.count(port, DropReason::QueueFull);
                None
            }
            None => None,
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

impl Egress {
    /// Frames the queue has room for now.
    fn room(&self) -> usize {
        match self {
            Egress::Frames(egress) => egress.capacity(),
            Egress::Tagged(egress) => egress.capacity(),
        }
    }
}

/// Returns once `egress` has room for a frame, or is gone (its frames are then discarded).
async fn room(egress: Option<Egress>) {
    match &egress {
        Some(Egress::Frames(egress)) => drop(egress.reserve().await),
        Some(Egress::Tagged(egress)) => drop(egress.reserve().await),
        None => {}
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

    /// The lab's servers wait for a VM port that is behind: every frame arrives, in order,
    /// none is dropped (their IP stack would otherwise resend it).
    #[tokio::test]
    async fn a_slow_port_holds_the_servers_back_instead_of_losing_their_frames() {
        let (_dir, log, segment) = segment(0);
        let (server, _to_server) = segment.attach_server();
        segment.trust(server.port());
        let (_, mut slow) = segment.attach();
        let numbered = |i: u32| [&[0xff; 6][..], &[2, 0, 0, 0, 0, 1], &[0x08, 0x00], &i.to_be_bytes()].concat();
        let count = 3 * PORT_QUEUE as u32;
        let sending = tokio::spawn(async move {
            for i in 0..count {
                assert!(server.send_waiting(numbered(i)).await);
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!sending.is_finished(), "the servers wait while the port is behind");
        for i in 0..count {
            let got = tokio::time::timeout(Duration::from_secs(5), slow.recv()).await.unwrap_or_else(|_| panic!("frame {i} in time"));
            assert_eq!(got, Some(numbered(i)), "frame {i} whole and in order");
        }
        sending.await.unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        segment.pin(Mac([2, 0, 0, 0, 0, 7]), 0); // wakes the switch to report
        tokio::time::sleep(Duration::from_millis(100)).await;
        let drops: Vec<_> = log.0.lock().unwrap().iter().filter(|e| matches!(e, SegmentEvent::Dropped { .. })).cloned().collect();
        assert!(drops.is_empty(), "no frame dropped: {drops:?}");
    }

    /// A port that takes nothing for good costs the servers one wait, not one a frame: their
    /// frames for it are then dropped and counted, and the other ports get theirs.
    #[tokio::test]
    async fn a_port_that_stops_reading_for_good_costs_the_servers_one_wait() {
        let (_dir, log, segment) = segment(0);
        let (server, _to_server) = segment.attach_server();
        segment.trust(server.port());
        let (dead, _dead_frames) = segment.attach();
        let (alive, mut alive_frames) = segment.attach();
        let (dead_mac, alive_mac, server_mac) = ([2, 0, 0, 0, 0, 0xd], [2, 0, 0, 0, 0, 0xa], [2, 0, 0, 0, 0, 1]);
        dead.send(frame([0xff; 6], dead_mac)); // the switch learns where each is
        alive.send(frame([0xff; 6], alive_mac));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(alive_frames.recv().await, Some(frame([0xff; 6], dead_mac)), "the dead port's broadcast");
        let started = Instant::now();
        for _ in 0..PORT_QUEUE + 100 {
            assert!(server.send_waiting(frame(dead_mac, server_mac)).await);
        }
        assert!(server.send_waiting(frame(alive_mac, server_mac)).await);
        let got = tokio::time::timeout(Duration::from_secs(5), alive_frames.recv()).await.expect("the other port's frame in time");
        assert_eq!(got, Some(frame(alive_mac, server_mac)));
        let took = started.elapsed();
        assert!(took >= STALLED_AFTER, "the servers waited for the port once: {took:?}");
        assert!(took < 4 * STALLED_AFTER, "and only once: {took:?}");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        segment.pin(Mac([2, 0, 0, 0, 0, 7]), 0); // wakes the switch to report
        tokio::time::sleep(Duration::from_millis(100)).await;
        let total = log.0.lock().unwrap().iter().filter_map(|e| match e {
            SegmentEvent::Dropped { port, reason: DropReason::QueueFull, total } if *port == dead.port() => Some(*total),
            _ => None,
        }).max();
        // Its queue held the other port's broadcast and PORT_QUEUE - 1 of them.
        assert_eq!(total, Some(101), "the frames past its queue are dropped and counted");
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
