//! Read-only TFTP server (RFC 1350) with the option extension (RFC 2347) and the blksize,
//! timeout/tsize and windowsize options (RFC 2348, RFC 2349, RFC 7440).
//!
//! [`wire`] parses and emits packets; [`Transfer`] is one read transfer's state machine
//! (time passed in); [`resolve`] maps a requested name into the served root, refusing
//! escapes. The lab binds them to UDP sockets on its IP host.

mod path;
mod task;
mod transfer;
pub mod wire;

pub use path::{resolve, resolve_in, PathError};
pub use task::{serve, TftpConfig, TftpEvent, TftpOutcome, TftpService};
pub use transfer::{admit, BlockSource, Holder, Refusal, Step, Transfer, TransferLimits, TransferOutcome, MTU_BLKSIZE};
