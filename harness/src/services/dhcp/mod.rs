//! DHCP/BOOTP server for PXE clients (RFC 2131, RFC 2132, RFC 4578 for options 93/94/97), UEFI
//! HTTP boot clients and iPXE ([`HttpBoot`]).
//!
//! [`DhcpServer`] holds the configuration and lease table and answers one decoded request at a
//! time; the lab's network task feeds it frames and sends what it returns.

mod config;
mod server;
mod task;

pub use config::{BootClient, ConfigError, DhcpConfig, HostDecl, HttpBoot, Quirks, ARCH_EFI_X64, ARCH_EFI_X64_ALT};
pub use server::{DhcpEvent, DhcpEventKind, DhcpServer, Ignored, Lease, Reply, BOOTP_MIN_LEN};
pub use task::{interceptor, DhcpService};
