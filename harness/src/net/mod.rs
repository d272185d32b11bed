//! The lab's virtual L2 segment and the harness's own host on it.
//!
//! Each VM NIC is one end of a connected stream socket (QEMU `-netdev stream,addr.type=fd`)
//! carrying 4-byte big-endian lengths and Ethernet frames ([`framing`]). A learning
//! [`switch`] forwards frames between ports; every frame is captured to a pcap file; a
//! [`fault`] hook may drop frames. The harness's [`host`] is one more port: a userspace
//! TCP/IP stack (smoltcp) plus DHCP handled at the frame level. No frame reaches a host
//! interface.

pub mod fault;
pub mod flood;
pub mod framing;
pub mod host;
pub mod mac;

pub mod pcap;
pub mod probe;
pub mod segment;

pub mod switch;
#[cfg(test)]
mod tcp_recovery;
pub mod wire;

pub use mac::Mac;
pub use segment::{PortSender, Segment};


