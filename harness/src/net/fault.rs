//! The switch's fault-injection hook: a policy sees every frame before it is forwarded.

use super::switch::PortId;

/// What happens to a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Deliver,
    Drop,
}

/// Decides the fate of each frame entering the switch (captured to pcap either way).
pub trait FaultPolicy: Send {
    fn on_frame(&mut self, port: PortId, frame: &[u8]) -> Verdict;
}

/// Deliver everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoFaults;

impl FaultPolicy for NoFaults {
    fn on_frame(&mut self, _port: PortId, _frame: &[u8]) -> Verdict {
        Verdict::Deliver
    }
}
