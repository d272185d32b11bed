//! A lab's PXE network: the segment, the harness's IP host, and DHCP and TFTP served on it.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::events::{EventWaitError, Events};
use crate::net::fault::{Direction, Faults, Impairment};
use crate::net::host::{HostAddr, IpHost};
use crate::net::segment::SegmentEvent;
use crate::net::switch::PortId;
use crate::net::Segment;
use crate::services::dhcp::{self, DhcpConfig, DhcpEvent, DhcpEventKind, DhcpServer, HostDecl};
use crate::services::nfs::{self, NfsConfig};
use crate::services::tftp::{self, TftpConfig, TftpEvent, TftpOutcome, TransferLimits};
use crate::services::{EventSink, ServiceEvent};
use crate::supervise::{FailureWatch, Supervisor};
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
    /// Seed of the fault injector's decisions (the same seed makes the same decisions).
    pub seed: u64,
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
        PxeConfig { dhcp: DhcpConfig::for_subnet([192, 0, 2]), tftp_roots, tftp_limits: TransferLimits::default(), nfs: None, seed: 0 }
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

/// The lab's servers, which a test may stop and start (see [`Network::stop_server`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Server {
    Dhcp,
    Tftp,
    Nfs,
}

impl Server {
    pub fn name(self) -> &'static str {
        match self {
            Server::Dhcp => "dhcp",
            Server::Tftp => "tftp",
            Server::Nfs => "nfs",
        }
    }
}

/// A lab network could not start.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("invalid DHCP configuration")]
    Dhcp(#[from] dhcp::ConfigError),
    #[error("cannot create {what} in {}", dir.display())]
    Io {
        what: &'static str,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A running PXE network. Dropping it stops its servers and unplugs every VM.
pub struct Network {
    segment: Segment,
    host: Arc<IpHost>,
    dhcp: Arc<Mutex<DhcpServer>>,
    dhcp_on: Arc<AtomicBool>,
    events: Arc<Events>,
    supervisor: Supervisor,
    tftp: TftpConfig,
    nfs: Option<NfsConfig>,
    running: Mutex<HashMap<Server, AbortHandle>>,
    ports: Mutex<HashMap<[u8; 6], PortId>>,
    started: Instant,
}

impl Network {
    /// Start the segment (capturing to `<dir>/segment.pcap`), the host and its servers.
    pub fn start(dir: &Path, config: PxeConfig) -> Result<Self, NetworkError> {
        let io = |what: &'static str| move |source| NetworkError::Io { what, dir: dir.to_owned(), source };
        let started = Instant::now();
        let supervisor = Supervisor::default();
        let events = Arc::new(Events::new(&dir.join("events.jsonl"), started, supervisor.watch()).map_err(io("events.jsonl"))?);
        let sink: Arc<dyn EventSink> = events.clone();
        let segment = Segment::start(&dir.join("segment.pcap"), Faults::new(config.seed), sink.clone()).map_err(io("segment.pcap"))?;
        let server_ip = config.dhcp.server;
        let prefix_len = u32::from(config.dhcp.netmask).leading_ones() as u8;
        let dhcp = Arc::new(Mutex::new(DhcpServer::new(config.dhcp)?));
        let dhcp_on = Arc::new(AtomicBool::new(true));
        let intercept = dhcp::interceptor(dhcp.clone(), dhcp_on.clone(), HOST_MAC, sink, started);
        let addr = HostAddr { mac: HOST_MAC, ip: server_ip, prefix_len };
        let host = Arc::new(IpHost::start(&segment, addr, intercept, &supervisor));
        let tftp = TftpConfig { ip: server_ip, roots: config.tftp_roots, limits: config.tftp_limits };
        let nfs = config.nfs.map(|export| NfsConfig::new(server_ip, &export.path, export.layers));
        let network = Network {
            segment,
            host,
            dhcp,
            dhcp_on,
            events,
            supervisor,
            tftp,
            nfs,
            running: Mutex::default(),
            ports: Mutex::default(),
            started,
        };
        network.spawn(Server::Tftp);
        if network.nfs.is_some() {
            network.spawn(Server::Nfs);
        }
        Ok(network)
    }

    fn spawn(&self, server: Server) {
        let host = self.host.clone();
        let abort = match server {
            Server::Dhcp => return self.dhcp_on.store(true, Ordering::SeqCst),
            Server::Tftp => {
                let (config, sink, started) = (self.tftp.clone(), self.events.clone() as Arc<dyn EventSink>, self.started);
                self.supervisor.spawn("tftp", async move { tftp::serve(host, config, sink, started).await })
            }
            Server::Nfs => {
                let Some(config) = self.nfs.clone() else { return };
                self.supervisor.spawn("nfs", async move { nfs::serve(host, config).await })
            }
        };
        self.running.lock().expect("servers lock").insert(server, abort);
    }

    /// Stop `server` on purpose, as a fault: its sockets close (TFTP transfers and NFS
    /// connections in progress end) and nothing answers until [`Network::start_server`].
    /// This is no failure of the lab; waits go on.
    pub fn stop_server(&self, server: Server) {
        match server {
            Server::Dhcp => self.dhcp_on.store(false, Ordering::SeqCst),
            _ => {
                if let Some(abort) = self.running.lock().expect("servers lock").remove(&server) {
                    abort.abort();
                }
            }
        }
        self.events.publish(ServiceEvent::Server { name: server.name().into(), running: false });
    }

    /// Start a stopped `server` again. NFS file handles stay valid across a restart, so a
    /// hard-mounted client carries on.
    pub fn start_server(&self, server: Server) {
        if !self.running.lock().expect("servers lock").contains_key(&server) {
            self.spawn(server);
        }
        self.events.publish(ServiceEvent::Server { name: server.name().into(), running: true });
    }

    /// Impair the traffic of `mac`'s port in `direction` (seeded by [`PxeConfig::seed`]).
    pub fn impair(&self, mac: [u8; 6], direction: Direction, impairment: Impairment) {
        let Some(port) = self.port_of(mac) else { return tracing::warn!("impair: {} is not plugged in", mac_string(&mac)) };
        self.segment.with_faults(move |faults| {
            faults.impair(port, direction, impairment);
            vec![SegmentEvent::Impaired { port, direction, impairment }]
        });
    }

    /// Take `mac`'s link down: nothing passes either way until [`Network::unblock`] (the
    /// NixOS test driver's `block`).
    pub fn block(&self, mac: [u8; 6]) {
        self.set_link(mac, false);
    }

    /// Bring `mac`'s link up again.
    pub fn unblock(&self, mac: [u8; 6]) {
        self.set_link(mac, true);
    }

    fn set_link(&self, mac: [u8; 6], up: bool) {
        let Some(port) = self.port_of(mac) else { return tracing::warn!("link: {} is not plugged in", mac_string(&mac)) };
        self.segment.with_faults(move |faults| {
            faults.set_link(port, up);
            vec![SegmentEvent::Link { port, up }]
        });
    }

    fn port_of(&self, mac: [u8; 6]) -> Option<PortId> {
        self.ports.lock().expect("ports lock").get(&mac).copied()
    }

    /// A watch on the lab's servers, for VMs whose waits must end when one stops.
    pub fn failure_watch(&self) -> FailureWatch {
        self.supervisor.watch()
    }

    /// A cable for the VM NIC with `mac` (QEMU's end of a stream socket).
    pub fn plug(&self, mac: [u8; 6]) -> std::io::Result<OwnedFd> {
        let (port, fd) = self.segment.attach_vm()?;
        self.ports.lock().expect("ports lock").insert(mac, port);
        Ok(fd)
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
    pub async fn wait_for_dhcp_lease(&self, mac: [u8; 6], timeout: Duration) -> Result<DhcpEvent, EventWaitError> {
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
    pub async fn wait_for_tftp_transfer(&self, mac: [u8; 6], file: &str, timeout: Duration) -> Result<TftpEvent, EventWaitError> {
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


