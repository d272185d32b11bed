//! Read-only NFSv3 over TCP (RFC 1813) with MOUNT v3 and a portmapper (RFC 1833).
//!
//! The NFS and MOUNT programs are the `nfsserve` crate's, over a [`StackedExport`]. nfsserve
//! only serves connections from its own `TcpListener`, so it listens on loopback and the lab's
//! IP host proxies each NFS connection to it; its built-in portmapper would report that
//! loopback port, so the lab answers port 111 itself ([`Portmap`]).

mod export;
pub mod portmap;
pub mod rpc;
mod task;

pub use export::StackedExport;
pub use portmap::Portmap;
pub use task::{serve, NfsConfig, NFS_PORT};
