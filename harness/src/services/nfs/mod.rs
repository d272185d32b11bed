//! Read-only NFSv3 over TCP (RFC 1813) with MOUNT v3 and a portmapper (RFC 1833).
//!
//! The NFS and MOUNT programs are the `nfsserve` crate's (vendored with pxelab's patches,
//! `vendor/nfsserve/PATCHES.md`), over a [`StackedExport`], serving connections accepted on
//! the lab's own IP stack: no host socket listens. The lab answers port 111 itself
//! ([`Portmap`]).

mod export;
pub mod portmap;
pub mod rpc;
mod task;

pub use export::StackedExport;
pub use portmap::Portmap;
pub use task::{serve, NfsConfig, NfsEvent, NfsService, NFS_PORT, RECYCLE_AFTER};
