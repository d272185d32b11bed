//! The lab's event log: what its services did, kept for waits and written as JSON lines.

use crate::net::Mac;
use std::io::Write;
use std::path::Path;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::services::dhcp::{DhcpEvent, DhcpEventKind};
use crate::event::Sink;
use crate::net::switch::PortId;
use crate::services::ServiceEvent;
use crate::supervise::{failed, FailureWatch, ServiceFailure};

/// The DHCP event if `event` gives the client `mac` a lease: an
/// ACK or a BOOTP reply.
pub fn lease_for(event: &ServiceEvent, mac: Mac) -> Option<&DhcpEvent> {
    match event {
        ServiceEvent::Dhcp(d) if d.mac == mac && matches!(d.kind, DhcpEventKind::Ack | DhcpEventKind::Bootp) => Some(d),
        _ => None,
    }
}

/// Whether `event` came in on `port` (or either is unknown): a client's own events, not a
/// neighbour's forged for its MAC.
pub fn from_port(event: &ServiceEvent, port: Option<crate::net::switch::PortId>) -> bool {
    let came_in = match event {
        ServiceEvent::Segment(_) => None,
        _ => port_of_event(event),
    };
    port.is_none() || came_in.is_none() || came_in == port
}

/// A point in the lab's log: the next event's number and the time since the lab started
/// ([`Events::mark`]). What began after it, began after it: a TFTP transfer is logged when it
/// ends, and one begun before the mark can end after it (a lost last ACK waits out retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mark {
    pub seq: usize,
    pub at: Duration,
}

/// How many network boot requests the client `mac` made after `mark` among `events`, from
/// `port`: DHCP with a network boot's signs (a client architecture, option 93, or a
/// `PXEClient` or `HTTPClient` vendor class, option 60), and TFTP transfers and HTTP requests
/// begun after the mark from its addresses (those the events name, and `lease`). An installed system's own
/// DHCP is not one.
pub fn network_boot_requests(events: &[Logged], mac: Mac, port: Option<crate::net::switch::PortId>, lease: Option<std::net::Ipv4Addr>, mark: Mark) -> usize {
    let events: Vec<&Logged> = events.iter().filter(|e| e.seq >= mark.seq && from_port(&e.event, port)).collect();
    let mut ips: Vec<std::net::Ipv4Addr> = events
        .iter()
        .filter_map(|e| match &e.event {
            ServiceEvent::Dhcp(d) if d.mac == mac => Some(d.ip),
            _ => None,
        })
        .collect();
    ips.extend(lease);
    events
        .iter()
        .filter(|e| match &e.event {
            ServiceEvent::Dhcp(d) => {
                d.mac == mac && (d.arch.is_some() || d.vendor_class.as_deref().is_some_and(|c| c.starts_with("PXEClient") || c.starts_with("HTTPClient")))
            }
            ServiceEvent::Tftp(t) => ips.contains(&t.client) && e.at.saturating_sub(Duration::from_millis(t.millis)) >= mark.at,
            ServiceEvent::Http(h) => ips.contains(&h.client) && e.at.saturating_sub(Duration::from_millis(h.served.millis)) >= mark.at,
            _ => false,
        })
        .count()
}

/// A wait for an event ended without it.
#[derive(Debug, thiserror::Error)]
pub enum EventWaitError {
    #[error("timed out after {waited:.1?} waiting for {what}; events so far:\n{seen}")]
    Timeout { what: String, waited: Duration, seen: String },
    #[error("{what}: refused at once by the server ({detail}); no retry can change that")]
    Refused { what: String, detail: String },
    #[error("gave up waiting for {what} after {waited:.1?}")]
    Stopped {
        what: String,
        waited: Duration,
        #[source]
        failure: ServiceFailure,
    },
}

/// Most events a wait's timeout quotes (the last ones).
const TIMEOUT_EVENTS: usize = 40;

/// Most events memory keeps of one switch port (and of events tied to no port); the log file
/// keeps them all. A flooding neighbour pushes out only its own port's events, never a
/// client's.
pub const PORT_WINDOW: usize = 32_768;

/// A logged event: its number in the lab's log (from 0), its time since the lab started, and
/// the event.
#[derive(Debug, Clone)]
pub struct Logged {
    pub seq: usize,
    pub at: Duration,
    pub event: ServiceEvent,
}

/// How many events there were in all, of each kind (`dhcp`, `tftp`, `nfs`, `segment`,
/// `server`), whether memory still holds them or not.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub count: usize,
    pub by_kind: BTreeMap<String, u64>,
}

/// An event's kind: `dhcp`, `tftp`, `nfs`, `http`, `segment` or `server`.
pub fn kind(event: &ServiceEvent) -> &'static str {
    match event {
        ServiceEvent::Dhcp(_) => "dhcp",
        ServiceEvent::Tftp(_) => "tftp",
        ServiceEvent::Nfs(_) => "nfs",
        ServiceEvent::Http(_) => "http",
        ServiceEvent::Segment(_) => "segment",
        ServiceEvent::Server { .. } => "server",
    }
}

/// The switch port an event came in on, when it says.
pub fn port_of_event(event: &ServiceEvent) -> Option<PortId> {
    match event {
        ServiceEvent::Dhcp(d) => d.switch_port,
        ServiceEvent::Tftp(t) => t.switch_port,
        ServiceEvent::Nfs(n) => n.switch_port,
        ServiceEvent::Http(h) => h.switch_port,
        ServiceEvent::Segment(s) => Some(s.port()),
        ServiceEvent::Server { .. } => None,
    }
}

#[derive(Default)]
struct Store {
    /// The latest events of each switch port (`None`: tied to no port), oldest first.
    windows: BTreeMap<Option<PortId>, VecDeque<Logged>>,
    totals: Totals,
}

impl Store {
    /// The events kept with a number of at least `from`, in order.
    fn from(&self, from: usize) -> Vec<Logged> {
        let mut out: Vec<Logged> = Vec::new();
        for window in self.windows.values() {
            let first = window.partition_point(|e| e.seq < from);
            out.extend(window.range(first..).cloned());
        }
        out.sort_unstable_by_key(|e| e.seq);
        out
    }
}

/// Every service event since the lab started: each appended to `events.jsonl` as it comes,
/// the latest [`PORT_WINDOW`] of each switch port kept in memory for waits and the report.
pub struct Events {
    started: Instant,
    store: Mutex<Store>,
    changed: Notify,
    log: Mutex<std::fs::File>,
    failure: FailureWatch,
}

impl Events {
    /// Record events from `started` on, logging them to `path` (`events.jsonl`); waits end
    /// at once when `failure` reports a stopped server.
    pub fn new(path: &Path, started: Instant, failure: FailureWatch) -> std::io::Result<Self> {
        let log = Mutex::new(std::fs::File::create(path)?);
        Ok(Events { started, store: Mutex::default(), changed: Notify::new(), log, failure })
    }

    /// How many events there have been so far (the next event's number).
    pub fn count(&self) -> usize {
        self.store.lock().expect("events lock").totals.count
    }

    /// The next event's number and the time now: what comes after is counted from it.
    pub fn mark(&self) -> Mark {
        let store = self.store.lock().expect("events lock");
        Mark { seq: store.totals.count, at: self.started.elapsed() }
    }

    /// The totals: how many events there were of each kind.
    pub fn totals(&self) -> Totals {
        self.store.lock().expect("events lock").totals.clone()
    }

    /// The events memory holds, in order, with their time since the lab started: all of
    /// them unless a port sent more than [`PORT_WINDOW`].
    pub fn all(&self) -> Vec<(Duration, ServiceEvent)> {
        self.since(0).into_iter().map(|e| (e.at, e.event)).collect()
    }

    /// The events numbered `after` or later that memory holds: what a follower has not seen
    /// yet (`serve` streams them without copying the ones it has shown).
    pub fn since(&self, after: usize) -> Vec<Logged> {
        self.store.lock().expect("events lock").from(after)
    }

    /// Wait until there are more than `seen` events.
    pub async fn wait_past(&self, seen: usize) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.count() > seen {
                return;
            }
            changed.await;
        }
    }

    /// Wait until `matches` finds what it waits for. It is shown each event once, in order,
    /// from the first one memory holds on: a wait costs in proportion to the events, however
    /// long it waits. Events before a number the caller noted (see [`Events::count`]) are
    /// its own to skip by [`Logged::seq`].
    pub async fn wait_for<T>(&self, what: &str, timeout: Duration, mut matches: impl FnMut(&Logged) -> Option<T>) -> Result<T, EventWaitError> {
        let begun = Instant::now();
        let deadline = begun + timeout;
        let mut failure = self.failure.clone();
        let mut next = 0;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            // Copied out of the lock: a matcher may ask the network (leases, ports).
            let new = self.since(next);
            if let Some(last) = new.last() {
                next = last.seq + 1;
            }
            if let Some(found) = new.iter().find_map(&mut matches) {
                return Ok(found);
            }
            tokio::select! {
                _ = changed => {}
                failure = failed(&mut failure) => {
                    return Err(EventWaitError::Stopped { what: what.to_owned(), waited: begun.elapsed(), failure });
                }
                _ = tokio::time::sleep_until(deadline) => {
                    // The last events only: after a flood the whole log would bury the error.
                    let count = self.count();
                    let last = self.since(count.saturating_sub(TIMEOUT_EVENTS));
                    let mut lines: Vec<String> = last.iter().map(|e| format!("  {:>8.3}s {:?}", e.at.as_secs_f64(), e.event)).collect();
                    let earlier = count - last.len();
                    if earlier > 0 {
                        lines.insert(0, format!("  ({earlier} earlier events in events.jsonl)"));
                    }
                    return Err(EventWaitError::Timeout { what: what.to_owned(), waited: timeout, seen: lines.join("\n") });
                }
            }
        }
    }
}

impl Sink<crate::net::segment::SegmentEvent> for Events {
    fn publish(&self, event: crate::net::segment::SegmentEvent) {
        Sink::<ServiceEvent>::publish(self, ServiceEvent::Segment(event));
    }
}

impl Sink<ServiceEvent> for Events {
    fn publish(&self, event: ServiceEvent) {
        let at = self.started.elapsed();
        // `{"at_ms":…,` then the event's own fields: one write a line, no tree built.
        let mut line = format!("{{\"at_ms\":{},", at.as_millis()).into_bytes();
        let fields = line.len();
        if serde_json::to_writer(&mut line, &event).is_ok() && line.get(fields) == Some(&b'{') {
            // `{` of the event's object, or `,{` before an empty one.
            line.drain(fields - usize::from(line.get(fields + 1) == Some(&b'}'))..=fields);
            line.push(b'\n');
            let _ = self.log.lock().expect("log lock").write_all(&line);
        }
        let mut store = self.store.lock().expect("events lock");
        let seq = store.totals.count;
        store.totals.count += 1;
        *store.totals.by_kind.entry(kind(&event).to_owned()).or_insert(0) += 1;
        let window = store.windows.entry(port_of_event(&event)).or_default();
        if window.len() == PORT_WINDOW {
            window.pop_front();
        }
        window.push_back(Logged { seq, at, event });
        drop(store);
        self.changed.notify_waiters();
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::services::dhcp::DhcpEventKind;
    use crate::services::tftp::{TftpEvent, TftpOutcome};

    const MAC: Mac = Mac([0x52, 0x54, 0, 0x1a, 0x5e, 1]);
    const IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(192, 0, 2, 10);

    fn dhcp(seq: usize, at_ms: u64, arch: Option<u16>) -> Logged {
        let event = DhcpEvent {
            kind: DhcpEventKind::Ack,
            mac: MAC,
            ip: IP,
            hostname: None,
            arch,
            vendor_class: None,
            boot_file: String::new(),
            switch_port: None,
            server: None,
            root_path: None,
        };
        Logged { seq, at: Duration::from_millis(at_ms), event: ServiceEvent::Dhcp(event) }
    }

    fn tftp(seq: usize, at_ms: u64, millis: u64, outcome: TftpOutcome) -> Logged {
        let event = TftpEvent { client: IP, file: "nixos/initrd".into(), outcome, bytes: 1, millis, detail: String::new(), switch_port: None };
        Logged { seq, at: Duration::from_millis(at_ms), event: ServiceEvent::Tftp(event) }
    }

    #[test]
    fn a_transfer_begun_before_the_mark_and_ended_after_it_is_no_request_after_it() {
        // The firmware's DHCP and the boot loader's transfer; the initrd's last ACK is lost
        // and the server logs the transfer when its retries run out, after the reboot.
        let mark = Mark { seq: 2, at: Duration::from_secs(30) };
        let events = [dhcp(0, 4_000, Some(7)), tftp(1, 6_000, 100, TftpOutcome::Done), tftp(2, 33_000, 21_000, TftpOutcome::Unconfirmed), dhcp(3, 45_000, None)];
        assert_eq!(network_boot_requests(&events, MAC, None, Some(IP), mark), 0, "the installed system's own DHCP and a transfer of the first boot");
        assert_eq!(network_boot_requests(&events, MAC, None, Some(IP), Mark::default()), 3);

        // The firmware netboots again after the mark: its DHCP and its transfer count.
        let again = [tftp(2, 33_000, 21_000, TftpOutcome::Unconfirmed), dhcp(3, 40_000, Some(7)), tftp(4, 41_000, 200, TftpOutcome::Aborted)];
        assert_eq!(network_boot_requests(&again, MAC, None, Some(IP), mark), 2);
        // A transfer from another address is no request of this client.
        assert_eq!(network_boot_requests(&again[2..], MAC, None, None, mark), 0);
    }
}
