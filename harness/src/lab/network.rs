//! A lab's PXE network: the segment, the harness's IP host, and DHCP and TFTP served on it.

use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::events::{EventTimeout, Events};
use crate::net::fault::NoFaults;
use crate::net::host::{HostAddr, IpHost};
use crate::net::Segment;
use crate::services::dhcp::{self, DhcpConfig, DhcpEvent, DhcpEventKind, DhcpServer, HostDecl};
use crate::services::nfs::{self, NfsConfig};
use crate::services::tftp::{self, TftpConfig, TftpEvent, TftpOutcome, TransferLimits};
use crate::services::{EventSink, ServiceEvent};
use crate::vm::mac_string;

/// The harness host's MAC address on every lab segment (locally administered).
pub const HOST_MAC: [u8; 6] = [0x02, 0x70, 0x78, 0x6c, 0x61, 0x62];

/// What a lab's network serves.
#[derive(Debug, Clone)]
pub struct PxeConfig {
    pub dhcp: DhcpConfig,
    /// TFTP roots, searched in order: per-test files first, then shared trees.
    pub tftp_roots: Vec<PathBuf>,
    pub tftp_limits: TransferLimits,
    /// The NFS root export, if any.
    pub nfs: Option<NfsExport>,
}

/// A read-only NFS export: the path clients mount and its directories, top first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsExport {
    pub path: String,
    pub layers: Vec<PathBuf>,
}

/// NFS mount options the protocol's root path carries (option 17).
pub const NFS_ROOT_OPTIONS: &str = "vers=3,tcp,rsize=32768,wsize=32768,actimeo=600";

impl PxeConfig {
    /// The protocol's defaults on 192.0.2.0/24, serving `tftp_roots`.
    pub fn new(tftp_roots: Vec<PathBuf>) -> Self {
        PxeConfig { dhcp: DhcpConfig::for_subnet([192, 0, 2]), tftp_roots, tftp_limits: TransferLimits::default(), nfs: None }
    }

    /// Export `layers` (top first) read-only over NFS at `path`, and hand clients the
    /// protocol's root path for it (DHCP option 17: `<ip>:<path>,vers=3,tcp,...`).
    pub fn nfs_root(mut self, path: &str, layers: Vec<PathBuf>) -> Self {
        self.dhcp.root_path = Some(format!("{}:{path},{NFS_ROOT_OPTIONS}", self.dhcp.server));
        self.nfs = Some(NfsExport { path: path.to_owned(), layers });
        self
    }

    /// Declare a host: `mac` always gets `ip` and `hostname`.
    pub fn host(mut self, mac: [u8; 6], ip: Ipv4Addr, hostname: &str) -> Self {
        self.dhcp.hosts.push(HostDecl { mac, ip, hostname: Some(hostname.to_owned()) });
        self
    }
}

/// A running PXE network. Dropping it stops its servers and unplugs every VM.
pub struct Network {
    segment: Segment,
    host: Arc<IpHost>,
    dhcp: Arc<Mutex<DhcpServer>>,
    events: Arc<Events>,
    tasks: Vec<JoinHandle<()>>,
}

impl Network {
    /// Start the segment (capturing to `<dir>/segment.pcap`), the host and its servers.
    pub fn start(dir: &Path, config: PxeConfig) -> std::io::Result<Self> {
        let started = Instant::now();
        let events = Arc::new(Events::new(&dir.join("events.jsonl"), started)?);
        let segment = Segment::start(&dir.join("segment.pcap"), Box::new(NoFaults))?;
        let server_ip = config.dhcp.server;
        let prefix_len = u32::from(config.dhcp.netmask).leading_ones() as u8;
        let dhcp = Arc::new(Mutex::new(DhcpServer::new(config.dhcp)));
        let sink: Arc<dyn EventSink> = events.clone();
        let intercept = dhcp::interceptor(dhcp.clone(), HOST_MAC, sink.clone(), started);
        let host = Arc::new(IpHost::start(&segment, HostAddr { mac: HOST_MAC, ip: server_ip, prefix_len }, intercept));
        let tftp_config = TftpConfig { ip: server_ip, roots: config.tftp_roots, limits: config.tftp_limits };
        let net = host.clone();
        let mut tasks = vec![tokio::spawn(async move {
            if let Err(e) = tftp::serve(net, tftp_config, sink, started).await {
                tracing::error!("tftp server stopped: {e}");
            }
        })];
        if let Some(export) = config.nfs {
            let nfs_config = NfsConfig { ip: server_ip, export_path: export.path, layers: export.layers };
            let net = host.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = nfs::serve(net, nfs_config).await {
                    tracing::error!("nfs server stopped: {e}");
                }
            }));
        }
        Ok(Network { segment, host, dhcp, events, tasks })
    }

    /// A cable for a VM NIC (QEMU's end of a stream socket).
    pub fn plug(&self) -> std::io::Result<OwnedFd> {
        self.segment.attach_vm()
    }

    /// The harness host's address.
    pub fn server_ip(&self) -> Ipv4Addr {
        self.host.addr.ip
    }

    pub fn events(&self) -> &Events {
        &self.events
    }

    /// The address `mac` holds, if any.
    pub fn lease_of(&self, mac: [u8; 6]) -> Option<Ipv4Addr> {
        self.dhcp.lock().expect("dhcp lock").leases().get(&mac).map(|l| l.ip)
    }

    /// Wait until `mac` is given an address (a DHCP ACK or a BOOTP reply).
    pub async fn wait_for_dhcp_lease(&self, mac: [u8; 6], timeout: Duration) -> Result<DhcpEvent, EventTimeout> {
        let mac = mac_string(&mac);
        self.events
            .wait_for(&format!("a DHCP lease for {mac}"), timeout, |events| {
                events.iter().find_map(|(_, e)| match e {
                    ServiceEvent::Dhcp(d) if d.mac == mac && matches!(d.kind, DhcpEventKind::Ack | DhcpEventKind::Bootp) => {
                        Some(d.clone())
                    }
                    _ => None,
                })
            })
            .await
    }

    /// Wait until the client with `mac` has fetched all of `file` over TFTP.
    pub async fn wait_for_tftp_transfer(&self, mac: [u8; 6], file: &str, timeout: Duration) -> Result<TftpEvent, EventTimeout> {
        let mac = mac_string(&mac);
        let file = file.trim_start_matches('/');
        self.events
            .wait_for(&format!("{mac} to fetch {file} by TFTP"), timeout, |events| {
                let ips: Vec<Ipv4Addr> = events
                    .iter()
                    .filter_map(|(_, e)| match e {
                        ServiceEvent::Dhcp(d) if d.mac == mac => Some(d.ip),
                        _ => None,
                    })
                    .collect();
                events.iter().find_map(|(_, e)| match e {
                    ServiceEvent::Tftp(t)
                        if t.outcome == TftpOutcome::Done
                            && ips.contains(&t.client)
                            && t.file.trim_start_matches('/') == file =>
                    {
                        Some(t.clone())
                    }
                    _ => None,
                })
            })
            .await
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
