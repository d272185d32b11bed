//! pxelab: end-to-end VM tests of PXE network installs.
//!
//! - [`vm`]: QEMU clients (command line, process, QMP, accelerator).
//! - [`console`]: expect-style serial console with a transcript and fail-fast patterns.
//! - [`artifacts`]: the cache that builds fixtures once per set of inputs.
//! - [`lab`]: what a test works in: its artifact directory and the VMs in it.
//! - [`jobs`]: the scenario layer: the registry of runnable scenarios, the install stage by
//!   stage, its options, `serve`, the matrix and the benchmarks.
//! - [`diagnose`]: known causes of install failures, recognised in the console.
//! - [`net`]: the virtual L2 segment and the harness's userspace IP host.
//! - [`services`]: DHCP, TFTP and NFS (protocol logic apart from sockets).
//! - [`fuzz`]: fuzz targets, each checking its invariants on arbitrary input.
//! - [`event`]: the event sink both the segment and the services publish through.
//! - [`supervise`]: server tasks whose end fails every current wait.

pub mod artifacts;
pub mod fuzz;
pub mod console;
pub mod diagnose;
pub mod event;
pub mod jobs;
pub mod lab;
pub mod net;
pub mod vm;
pub mod services;
pub mod supervise;
