//! Where events go. The segment ([`crate::net`]) publishes [`crate::net::segment::SegmentEvent`]s
//! and the lab's services ([`crate::services`]) their own, each through a [`Sink`] of its
//! event type; the lab's event log is a sink of both. Neither layer imports the other's events.

/// A receiver of events of type `E`.
pub trait Sink<E>: Send + Sync {
    fn publish(&self, event: E);
}
