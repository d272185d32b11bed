//! The lab's event log: what its services did, kept for waits and written as JSON lines.

use crate::net::Mac;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::services::dhcp::{DhcpEvent, DhcpEventKind};
use crate::event::Sink;
use crate::services::{ServiceEvent};
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
        ServiceEvent::Dhcp(d) => d.switch_port,
        ServiceEvent::Tftp(t) => t.switch_port,
        ServiceEvent::Nfs(n) => n.switch_port,
        _ => None,
    };
    port.is_none() || came_in.is_none() || came_in == port
}

/// Every address the DHCP server named to the client `mac` among `events`: where its TFTP
/// requests come from.
pub fn addresses_of(events: &[(Duration, ServiceEvent)], mac: Mac) -> Vec<std::net::Ipv4Addr> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            ServiceEvent::Dhcp(d) if d.mac == mac => Some(d.ip),
            _ => None,
        })
        .collect()
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

/// Every service event since the lab started, in order.
pub struct Events {
    started: Instant,
    seen: Mutex<Vec<(Duration, ServiceEvent)>>,
    changed: Notify,
    log: Mutex<std::fs::File>,
    failure: FailureWatch,
}

impl Events {
    /// Record events from `started` on, logging them to `path` (`events.jsonl`); waits end
    /// at once when `failure` reports a stopped server.
    pub fn new(path: &Path, started: Instant, failure: FailureWatch) -> std::io::Result<Self> {
        let log = Mutex::new(std::fs::File::create(path)?);
        Ok(Events { started, seen: Mutex::default(), changed: Notify::new(), log, failure })
    }

    /// How many events there have been so far.
    pub fn count(&self) -> usize {
        self.seen.lock().expect("events lock").len()
    }

    /// All events so far with their time since the lab started.
    pub fn all(&self) -> Vec<(Duration, ServiceEvent)> {
        self.seen.lock().expect("events lock").clone()
    }

    /// The events after the first `after`: what a follower has not seen yet (`serve` streams
    /// them without copying the ones it has shown).
    pub fn since(&self, after: usize) -> Vec<(Duration, ServiceEvent)> {
        self.seen.lock().expect("events lock").get(after..).map(<[_]>::to_vec).unwrap_or_default()
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

    /// Wait until an event satisfies `matches`; events already seen count.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&[(Duration, ServiceEvent)]) -> Option<T>,
    ) -> Result<T, EventWaitError> {
        let begun = Instant::now();
        let deadline = begun + timeout;
        let mut failure = self.failure.clone();
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(found) = matches(&self.seen.lock().expect("events lock")) {
                return Ok(found);
            }
            tokio::select! {
                _ = changed => {}
                failure = failed(&mut failure) => {
                    return Err(EventWaitError::Stopped { what: what.to_owned(), waited: begun.elapsed(), failure });
                }
                _ = tokio::time::sleep_until(deadline) => {
                    // The last events only: after a flood the whole log would bury the error.
                    let seen = self.seen.lock().expect("events lock");
                    let from = seen.len().saturating_sub(TIMEOUT_EVENTS);
                    let mut lines: Vec<String> = seen[from..].iter().map(|(at, e)| format!("  {:>8.3}s {e:?}", at.as_secs_f64())).collect();
                    if from > 0 {
                        lines.insert(0, format!("  ({from} earlier events in events.jsonl)"));
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
        if let Ok(mut line) = serde_json::to_value(&event) {
            line["at_ms"] = (at.as_millis() as u64).into();
            let _ = writeln!(self.log.lock().expect("log lock"), "{line}");
        }
        self.seen.lock().expect("events lock").push((at, event));
        self.changed.notify_waiters();
    }
}
