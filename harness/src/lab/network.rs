//! A lab's PXE network: the segment, the harness's IP host, and the services on it
//! (registered in [`services`]: router discovery, DHCP, TFTP, NFS).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::client::HostClient;
use super::events::{from_port, lease_for, EventWaitError, Events};
use crate::net::fault::{Direction, Faults, Impairment};
use crate::net::flood::{Flood, FloodTarget};
use crate::net::probe::{Probe, ProbeAnswers};
use crate::net::host::{HostAddr, Interceptor, IpHost};
use crate::net::segment::SegmentEvent;
use crate::net::switch::PortId;
use crate::net::Segment;
use crate::event::Sink;
use crate::net::wire::UdpFrame;
use crate::net::Mac;
use crate::services::dhcp::{DhcpConfig, DhcpEvent, DhcpServer, DhcpService, HostDecl};
use crate::services::ndp::NdpService;
use crate::services::syn_guard::SynGuardService;
use crate::services::http::{HttpConfig, HttpEvent, HttpService};
use crate::services::nfs::{NfsConfig, NfsService};
use crate::services::tftp::{TftpConfig, TftpEvent, TftpOutcome, TftpService, TransferLimits};
use crate::services::{LabService, ServiceEvent};
use crate::supervise::{FailureWatch, Supervisor};

/// The harness host's MAC address on every lab segment (locally administered).
pub const HOST_MAC: Mac = Mac([0x02, 0x70, 0x78, 0x6c, 0x61, 0x62]);

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
    /// A rogue DHCP server on the segment, on a port of its own ([`RogueDhcp`]).
    pub rogue_dhcp: Option<RogueDhcp>,
    /// Serve the TFTP roots over HTTP too, on port 80 ([`crate::services::http`]).
    pub http: bool,
}

/// A second DHCP server on the lab network (MAAS's first "known bad"): it answers each
/// DISCOVER and REQUEST before the lab's server does, with its own address, boot file and
/// root path, from a port the switch's DHCP snooping lets through for this fault. Nothing
/// answers at its address, so a client that takes its offer asks it for files in vain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RogueDhcp {
    pub server: Ipv4Addr,
    pub mac: Mac,
    pub pool: (Ipv4Addr, Ipv4Addr),
    pub boot_file: String,
    pub root_path: String,
}

impl Default for RogueDhcp {
    fn default() -> Self {
        RogueDhcp {
            server: Ipv4Addr::new(192, 0, 2, 66),
            mac: Mac([0x02, 0x72, 0x6f, 0x67, 0x75, 0x65]),
            pool: (Ipv4Addr::new(192, 0, 2, 200), Ipv4Addr::new(192, 0, 2, 220)),
            boot_file: "rogue/bootx64.efi".into(),
            root_path: "192.0.2.66:/srv/rogue".into(),
        }
    }
}

impl RogueDhcp {
    /// Its frame hook, run before the lab's: it answers from its own port first, then lets
    /// the lab's server answer too.
    /// Its port is plugged by [`RogueDhcp::plug`], after the host's (the first trusted port).
    fn hook(&self, port: Arc<std::sync::OnceLock<crate::net::segment::PortSender>>, subnet: &DhcpConfig, started: Instant) -> Interceptor {
        let mut config = subnet.clone();
        config.server = self.server;
        config.router = Some(self.server);
        config.dns = vec![self.server];
        config.pool = self.pool;
        config.hosts.clear();
        config.boot_files = config.boot_files.iter().map(|(arch, _)| (*arch, self.boot_file.clone())).collect();
        config.root_path = Some(self.root_path.clone());
        let mut server = DhcpServer::new(config).expect("the rogue's configuration is the lab's, readdressed");
        let (mac, ip) = (self.mac, self.server);
        Box::new(move |_, frame| {
            let udp = UdpFrame::parse(frame).filter(|u| u.dst_port == 67)?;
            if let Ok((Some(reply), _)) = server.handle_from(started.elapsed(), udp.src_mac, None, &udp.payload) {
                // Broadcast, as a server may answer: every port sees it, the lab's host too,
                // which logs another server's answers.
                let answer = UdpFrame { src_mac: mac, dst_mac: Mac::BROADCAST, src_ip: ip, dst_ip: Ipv4Addr::BROADCAST, src_port: 67, dst_port: 68, payload: reply.bytes };
                if let Some(sender) = port.get() {
                    sender.send(answer.emit());
                }
            }
            None
        })
    }

    /// Plug its port, trusted by the switch's DHCP snooping for this fault.
    fn plug(segment: &Segment, port: &std::sync::OnceLock<crate::net::segment::PortSender>) {
        let (sender, mut frames) = segment.attach();
        segment.trust(sender.port());
        // It takes nothing from its port.
        tokio::spawn(async move { while frames.recv().await.is_some() {} });
        let _ = port.set(sender);
    }
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
        PxeConfig { dhcp: DhcpConfig::for_subnet([192, 0, 2]), tftp_roots, tftp_limits: TransferLimits::default(), nfs: None, seed: 0, rogue_dhcp: None, http: false }
    }

    /// Export `layers` (top first) read-only over NFS at `path`, and hand clients the
    /// protocol's root path for it (DHCP option 17: `<ip>:<path>,vers=3,tcp,...`).
    pub fn nfs_root(mut self, path: &str, layers: Vec<PathBuf>) -> Self {
        self.dhcp.root_path = Some(format!("{}:{path},{NFS_ROOT_OPTIONS}", self.dhcp.server));
        self.nfs = Some(NfsExport { path: path.to_owned(), layers });
        self
    }

    /// What an install needs of this lab that the protocol requires: a root path (option 17)
    /// naming this lab's server and its export, and a router (option 3). `Err` says which is
    /// missing or wrong, and what fails without it.
    pub fn check_install(&self) -> Result<(), String> {
        let Some(root_path) = &self.dhcp.root_path else {
            return Err("the lab's DHCP sends no root path (option 17): the kernel has no NFS root to mount".into());
        };
        let export = self.nfs.as_ref().map(|e| e.path.as_str()).unwrap_or("nothing");
        let (server, path) = root_path.split(',').next().unwrap_or_default().split_once(':').unwrap_or(("", root_path));
        if server != self.dhcp.server.to_string() {
            return Err(format!("option 17 {root_path:?} names the server {server:?}, not the lab's {}", self.dhcp.server));
        }
        if path != export {
            return Err(format!("option 17 {root_path:?} names {path}, which the lab does not export (it exports {export}): the kernel's NFS mount would be refused"));
        }
        if self.dhcp.router.is_none() {
            return Err("the lab's DHCP sends no router (option 3): the installer finds its network interface by the default route, and would find none".into());
        }
        Ok(())
    }

    /// Serve the boot tree (the TFTP roots) over HTTP as well, at `http://<lab>/…`.
    pub fn http(mut self) -> Self {
        self.http = true;
        self
    }

    /// Boot iPXE over HTTP: iPXE clients (user class `iPXE`) get the URL of an entry script
    /// that loads the boot tree's kernel and initrds by HTTP. The scripts are written into
    /// `dir`, served before the other roots, from the `load-kernel*.cfg` files beside the
    /// boot loader of UEFI x86-64 clients ([`crate::artifacts::ipxe`]).
    pub fn ipxe_over_http(mut self, dir: &Path) -> Result<Self, crate::artifacts::ipxe::ScriptError> {
        use crate::artifacts::ipxe;
        let boot_file = self.dhcp.boot_file(Some(crate::services::dhcp::ARCH_EFI_X64)).to_owned();
        let prefix = Path::new(&boot_file).parent().unwrap_or(Path::new("")).to_path_buf();
        let root = self.tftp_roots.iter().find(|r| r.join(&prefix).is_dir()).cloned().unwrap_or_default();
        ipxe::write_scripts(&root, &boot_file, dir, &format!("http://{}", self.dhcp.server))?;
        self.dhcp.http_boot.ipxe_script = Some(ipxe::ENTRY_SCRIPT.to_owned());
        self.serve_first(dir);
        Ok(self)
    }

    /// UEFI HTTP boot: a firmware's HTTP boot (option 60 `HTTPClient`) gets the URL of
    /// `program`, copied into `dir` (served before the other roots), and runs it.
    pub fn uefi_http_boot(mut self, program: &Path, dir: &Path) -> std::io::Result<Self> {
        let name = program.file_name().ok_or_else(|| std::io::Error::other(format!("{} names no file", program.display())))?;
        std::fs::create_dir_all(dir)?;
        std::fs::copy(program, dir.join(name)).map_err(|e| std::io::Error::new(e.kind(), format!("cannot copy {} into {}: {e}", program.display(), dir.display())))?;
        self.dhcp.http_boot.uefi = Some(name.to_string_lossy().into_owned());
        self.serve_first(dir);
        Ok(self)
    }

    /// Serve `dir` over TFTP and HTTP before the other roots.
    fn serve_first(&mut self, dir: &Path) {
        if !self.tftp_roots.iter().any(|r| r == dir) {
            self.tftp_roots.insert(0, dir.to_path_buf());
        }
        self.http = true;
    }

    /// Declare a host: `mac` always gets `ip` and `hostname`.
    pub fn host(mut self, mac: impl Into<Mac>, ip: Ipv4Addr, hostname: &str) -> Self {
        self.dhcp.hosts.push(HostDecl { mac: mac.into(), ip, hostname: Some(hostname.to_owned()) });
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
    Dhcp(#[from] crate::services::dhcp::ConfigError),
    #[error("cannot create {what} in {}", dir.display())]
    Io {
        what: &'static str,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A hostile neighbour sending while it lives ([`Network::start_flood`]).
pub struct FloodHandle {
    /// Its switch port.
    pub port: PortId,
    task: AbortHandle,
}

impl Drop for FloodHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A running PXE network. Dropping it stops its servers and unplugs every VM.
pub struct Network {
    segment: Segment,
    host: Arc<IpHost>,
    dhcp: Arc<Mutex<DhcpServer>>,
    events: Arc<Events>,
    supervisor: Supervisor,
    /// Every service on the network ([`services`]).
    services: Vec<Arc<dyn LabService>>,
    running: Mutex<HashMap<&'static str, AbortHandle>>,
    ports: Mutex<HashMap<Mac, PortId>>,
    started: Instant,
    /// The boot tree's roots, which TFTP and HTTP serve.
    roots: Vec<PathBuf>,
}

/// The lab's services, in the order their frame hooks see a frame: each protocol's one
/// registration (see [`crate::services`]).
fn services(server_ip: Ipv4Addr, dhcp: Arc<Mutex<DhcpServer>>, config: &PxeConfig) -> Vec<Arc<dyn LabService>> {
    let mut services: Vec<Arc<dyn LabService>> = vec![
        Arc::new(SynGuardService { host: server_ip, guard: Arc::default() }),
        Arc::new(NdpService { host_mac: HOST_MAC }),
        Arc::new(DhcpService { server: dhcp, running: Arc::new(AtomicBool::new(true)), host_mac: HOST_MAC }),
        Arc::new(TftpService(TftpConfig {
            ip: server_ip,
            roots: config.tftp_roots.clone(),
            limits: config.tftp_limits,
            declared: config.dhcp.hosts.iter().map(|h| h.ip).collect(),
        })),
    ];
    if let Some(export) = &config.nfs {
        services.push(Arc::new(NfsService(NfsConfig::new(server_ip, &export.path, export.layers.clone()))));
    }
    if config.http {
        let http = HttpConfig { ip: server_ip, roots: config.tftp_roots.clone(), idle_timeout: crate::services::http::IDLE_TIMEOUT };
        services.push(Arc::new(HttpService(http)));
    }
    services
}

impl Network {
    /// Start the segment (capturing to `<dir>/segment.pcap`), the host and its servers; events
    /// are stamped with the time since `started` (the lab's start).
    pub fn start(dir: &Path, config: PxeConfig, started: Instant) -> Result<Self, NetworkError> {
        let io = |what: &'static str| move |source| NetworkError::Io { what, dir: dir.to_owned(), source };
        let supervisor = Supervisor::default();
        let events = Arc::new(Events::new(&dir.join("events.jsonl"), started, supervisor.watch()).map_err(io("events.jsonl"))?);
        let sink: Arc<dyn Sink<ServiceEvent>> = events.clone();
        let segment_sink: Arc<dyn Sink<SegmentEvent>> = events.clone();
        let segment = Segment::start(&dir.join("segment.pcap"), Faults::new(config.seed), segment_sink).map_err(io("segment.pcap"))?;
        let server_ip = config.dhcp.server;
        let prefix_len = u32::from(config.dhcp.netmask).leading_ones() as u8;
        let dhcp = Arc::new(Mutex::new(DhcpServer::new(config.dhcp.clone())?));
        let services = services(server_ip, dhcp.clone(), &config);
        let rogue_port = Arc::new(std::sync::OnceLock::new());
        let rogue = config.rogue_dhcp.as_ref().map(|rogue| rogue.hook(rogue_port.clone(), &config.dhcp, started));
        let rogue_plugged = rogue.is_some();
        let mut hooks: Vec<Interceptor> = rogue.into_iter().chain(services.iter().filter_map(|s| s.intercept(sink.clone(), started))).collect();
        let intercept: Interceptor = Box::new(move |from, frame| hooks.iter_mut().find_map(|hook| hook(from, frame)));
        let addr = HostAddr { mac: HOST_MAC, ip: server_ip, prefix_len };
        let host = Arc::new(IpHost::start(&segment, addr, intercept, &supervisor));
        if rogue_plugged {
            RogueDhcp::plug(&segment, &rogue_port);
        }
        let network = Network {
            segment,
            host,
            dhcp,
            events,
            supervisor,
            services,
            running: Mutex::default(),
            ports: Mutex::default(),
            started,
            roots: config.tftp_roots.clone(),
        };
        for service in &network.services {
            network.spawn(service);
        }
        Ok(network)
    }

    /// Start `service`'s task on the lab host, if it has one.
    fn spawn(&self, service: &Arc<dyn LabService>) {
        service.set_running(true);
        let sink = self.events.clone() as Arc<dyn Sink<ServiceEvent>>;
        if let Some(task) = service.serve(self.host.clone(), sink, self.started) {
            let abort = self.supervisor.spawn(service.name(), task);
            self.running.lock().expect("servers lock").insert(service.name(), abort);
        }
    }

    /// The file TFTP and HTTP serve for `path` (`/local.ipxe`, `nixos/bzImage`), with their
    /// confinement to the boot tree; `None` for what they would refuse or not find.
    pub fn served_file(&self, path: &str) -> Option<PathBuf> {
        crate::services::tftp::resolve_in(&self.roots, path.trim_start_matches('/')).ok()
    }

    fn service(&self, server: Server) -> Option<&Arc<dyn LabService>> {
        self.services.iter().find(|s| s.name() == server.name())
    }

    /// How many operations `server` has served, if it counts them ([`LabService::operations`]:
    /// NFS counts its file-system operations).
    pub fn operations(&self, server: Server) -> Option<u64> {
        self.service(server).and_then(|s| s.operations())
    }

    /// What each service listens on, as `name: what` lines (`pxelab serve` prints them).
    pub fn listening(&self) -> Vec<String> {
        self.services.iter().map(|s| format!("{}: {}", s.name(), s.listens_on())).collect()
    }

    /// Stop `server` on purpose, as a fault: its sockets close (TFTP transfers and NFS
    /// connections in progress end) and nothing answers until [`Network::start_server`].
    /// This is no failure of the lab; waits go on.
    pub fn stop_server(&self, server: Server) {
        if let Some(service) = self.service(server) {
            service.set_running(false);
        }
        if let Some(abort) = self.running.lock().expect("servers lock").remove(server.name()) {
            abort.abort();
        }
        Sink::<ServiceEvent>::publish(&*self.events, ServiceEvent::Server { name: server.name().into(), running: false });
    }

    /// Start a stopped `server` again. NFS file handles stay valid across a restart, so a
    /// hard-mounted client carries on.
    pub fn start_server(&self, server: Server) {
        if let Some(service) = self.service(server) {
            if !self.running.lock().expect("servers lock").contains_key(server.name()) {
                self.spawn(service);
            }
        }
        Sink::<ServiceEvent>::publish(&*self.events, ServiceEvent::Server { name: server.name().into(), running: true });
    }

    /// Impair the traffic of `mac`'s port in `direction` (seeded by [`PxeConfig::seed`]).
    pub fn impair(&self, mac: impl Into<Mac>, direction: Direction, impairment: Impairment) {
        let mac = mac.into();
        let Some(port) = self.port_of(mac) else { return tracing::warn!("impair: {mac} is not plugged in") };
        self.segment.with_faults(move |faults| {
            faults.impair(port, direction, impairment);
            vec![SegmentEvent::Impaired { port, direction, impairment }]
        });
    }

    /// Give `mac`'s link an MTU: frames with an IP packet over `mtu` bytes are dropped either
    /// way (a misconfigured switch port), each logged as a `too_big` fault.
    pub fn set_mtu(&self, mac: impl Into<Mac>, mtu: usize) {
        let mac = mac.into();
        let Some(port) = self.port_of(mac) else { return tracing::warn!("mtu: {mac} is not plugged in") };
        self.segment.with_faults(move |faults| {
            faults.set_mtu(port, mtu);
            Vec::new()
        });
    }

    /// Take `mac`'s link down: nothing passes either way until [`Network::unblock`] (the
    /// NixOS test driver's `block`).
    pub fn block(&self, mac: impl Into<Mac>) {
        self.set_link(mac.into(), false);
    }

    /// Bring `mac`'s link up again.
    pub fn unblock(&self, mac: impl Into<Mac>) {
        self.set_link(mac.into(), true);
    }

    fn set_link(&self, mac: Mac, up: bool) {
        let Some(port) = self.port_of(mac) else { return tracing::warn!("link: {mac} is not plugged in") };
        self.segment.with_faults(move |faults| {
            faults.set_link(port, up);
            vec![SegmentEvent::Link { port, up }]
        });
    }

    /// The switch port the VM NIC with `mac` is plugged into.
    pub fn port_of(&self, mac: Mac) -> Option<PortId> {
        self.ports.lock().expect("ports lock").get(&mac).copied()
    }

    /// A watch on the lab's servers, for VMs whose waits must end when one stops.
    pub fn failure_watch(&self) -> FailureWatch {
        self.supervisor.watch()
    }

    /// A cable for the VM NIC with `mac` (QEMU's end of a stream socket).
    pub fn plug(&self, mac: impl Into<Mac>) -> std::io::Result<OwnedFd> {
        let mac = mac.into();
        let (port, fd) = self.segment.attach_vm()?;
        self.ports.lock().expect("ports lock").insert(mac, port);
        // A declared client's MAC and address are its port's alone (port security, ARP
        // inspection): no neighbour can claim them, and its frames are never flooded.
        if let Some(host) = self.dhcp.lock().expect("dhcp lock").config().hosts.iter().find(|h| h.mac == mac) {
            self.segment.pin(mac, port);
            self.segment.protect(host.ip, port);
        }
        Ok(fd)
    }

    /// A hostile neighbour on a port of its own: `rate` frames a second of [`Flood`]'s
    /// seeded mix, forging `victim`'s identity (a declared client's), until the handle drops.
    /// A `Flood` event names its port, under which the switch counts what it drops.
    pub fn start_flood(&self, seed: u64, rate: u32, victim: Mac) -> FloodHandle {
        let victim_ip = self.dhcp_config().hosts.iter().find(|h| h.mac == victim).map_or(Ipv4Addr::new(192, 0, 2, 10), |h| h.ip);
        let target = FloodTarget { server_mac: HOST_MAC, server_ip: self.server_ip(), victim_mac: victim, victim_ip };
        let (sender, _frames) = self.segment.attach();
        let port = sender.port();
        Sink::<SegmentEvent>::publish(&*self.events, SegmentEvent::Flood { port, rate, seed });
        let task = tokio::spawn(async move {
            let mut flood = Flood::new(seed, target);
            // A batch every 10 ms: `rate` a second without a timer a frame.
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let (mut due, mut sent) = (0.0f64, 0u64);
            loop {
                tick.tick().await;
                due += f64::from(rate) / 100.0;
                while (sent as f64) < due.floor() {
                    sender.send(flood.next_frame().1);
                    sent += 1;
                }
            }
        });
        FloodHandle { port, task: task.abort_handle() }
    }

    /// A well-behaved client's check of the servers from a port of its own
    /// ([`crate::net::probe`]): a DHCP DISCOVER, then TFTP and a TCP SYN to the portmapper from
    /// the offered address. What answered within `timeout`, and how fast.
    pub async fn probe(&self, timeout: Duration) -> ProbeAnswers {
        let mut mac = [0u8; 6];
        fastrand::fill(&mut mac);
        mac[0] = (mac[0] & 0xfc) | 0x02;
        let (sender, mut frames) = self.segment.attach();
        let mut probe = Probe::new(Mac(mac), HOST_MAC, self.server_ip(), fastrand::u32(..));
        let begun = tokio::time::Instant::now();
        sender.send(probe.start(Duration::ZERO));
        let _ = tokio::time::timeout(timeout, async {
            loop {
                let frame = tokio::time::timeout(crate::net::probe::RESEND_AFTER / 4, frames.recv()).await;
                let replies = match frame {
                    Ok(Some(frame)) => probe.on_frame(begun.elapsed(), &frame),
                    Ok(None) => break,
                    Err(_) => Vec::new(),
                };
                for reply in replies.into_iter().chain(probe.on_tick(begun.elapsed())) {
                    sender.send(reply);
                }
                if probe.answers().complete() {
                    break;
                }
            }
        })
        .await;
        probe.answers()
    }

    /// Plug a connected stream socket (a QEMU started by hand with `-netdev stream`) into a
    /// port of its own.
    pub fn plug_stream(&self, stream: tokio::net::UnixStream) -> PortId {
        self.segment.attach_stream(stream)
    }

    /// The lab host as a client of the guests: port checks and HTTP over this network.
    pub fn client(&self) -> HostClient {
        HostClient { host: self.host.clone() }
    }

    /// Time since the lab started, on the clock of its events' timestamps.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The DHCP server's configuration.
    pub fn dhcp_config(&self) -> DhcpConfig {
        self.dhcp.lock().expect("dhcp lock").config().clone()
    }

    /// The harness host's address.
    pub fn server_ip(&self) -> Ipv4Addr {
        self.host.addr.ip
    }

    pub fn events(&self) -> &Events {
        &self.events
    }

    /// The address `mac` holds, if any.
    pub fn lease_of(&self, mac: impl Into<Mac>) -> Option<Ipv4Addr> {
        self.dhcp.lock().expect("dhcp lock").leases().get(&mac.into()).map(|l| l.ip)
    }

    /// How many network boot requests the client `mac` has made so far, from its own port
    /// (see [`super::events::network_boot_requests`]). An installed system's own DHCP
    /// (upstream's has `networking.useDHCP`) is not one: none after a reboot means the disk
    /// booted.
    pub fn network_boot_requests(&self, mac: impl Into<Mac>) -> usize {
        self.network_boot_requests_after(mac, super::events::Mark::default())
    }

    /// [`Network::network_boot_requests`] made after `mark` (see [`Events::mark`]), from the
    /// port the client is on now: a power cycle plugs it anew.
    pub fn network_boot_requests_after(&self, mac: impl Into<Mac>, mark: super::events::Mark) -> usize {
        let mac = mac.into();
        super::events::network_boot_requests(&self.events.since(mark.seq), mac, self.port_of(mac), self.lease_of(mac), mark)
    }

    /// Wait until `mac` is given an address (a DHCP ACK or a BOOTP reply).
    pub async fn wait_for_dhcp_lease(&self, mac: impl Into<Mac>, timeout: Duration) -> Result<DhcpEvent, EventWaitError> {
        self.wait_for_dhcp_lease_after(mac, 0, timeout).await
    }

    /// [`Network::wait_for_dhcp_lease`], among the events after the first `after` (see
    /// [`Events::count`]): a lease of a later boot.
    pub async fn wait_for_dhcp_lease_after(&self, mac: impl Into<Mac>, after: usize, timeout: Duration) -> Result<DhcpEvent, EventWaitError> {
        let mac = mac.into();
        // The client's own lease: not one a neighbour got by forging its MAC.
        let port = self.port_of(mac);
        self.events
            .wait_for(&format!("a DHCP lease for {mac}"), timeout, |e| {
                (e.seq >= after && from_port(&e.event, port)).then(|| lease_for(&e.event, mac).cloned()).flatten()
            })
            .await
    }

    /// Wait until the client with `mac` has fetched all of `file` over TFTP.
    pub async fn wait_for_tftp_transfer(&self, mac: impl Into<Mac>, file: &str, timeout: Duration) -> Result<TftpEvent, EventWaitError> {
        self.wait_for_tftp_transfer_after(mac, file, 0, timeout).await
    }

    /// [`Network::wait_for_tftp_transfer`], among the events after the first `after`. A file
    /// the server does not have ends the wait at once ([`EventWaitError::Refused`]).
    pub async fn wait_for_tftp_transfer_after(&self, mac: impl Into<Mac>, file: &str, after: usize, timeout: Duration) -> Result<TftpEvent, EventWaitError> {
        let mac = mac.into();
        let file = file.trim_start_matches('/');
        let what = format!("{mac} to fetch {file} by TFTP");
        let mut client = Addresses::of(self, mac);
        self.events
            .wait_for(&what, timeout, |e| match &e.event {
                    _ if client.learn(&e.event) => None,
                    ServiceEvent::Tftp(t) if e.seq >= after && client.ips.contains(&t.client) && t.file.trim_start_matches('/') == file => {
                        match t.outcome {
                            TftpOutcome::Done => Some(Ok(t.clone())),
                            TftpOutcome::NotFound => {
                                Some(Err(EventWaitError::Refused { what: what.clone(), detail: t.detail.clone() }))
                            }
                            _ => None,
                        }
                    }
                    _ => None,
                })
            .await?
    }

    /// Wait until the client with `mac` has fetched `path` (`/nixos/bzImage`) by HTTP GET,
    /// whole (200) or in part (206). A path the server does not have ends the wait at once
    /// ([`EventWaitError::Refused`]).
    pub async fn wait_for_http_request(&self, mac: impl Into<Mac>, path: &str, timeout: Duration) -> Result<HttpEvent, EventWaitError> {
        self.wait_for_http_request_after(mac, path, 0, timeout).await
    }

    /// [`Network::wait_for_http_request`], among the events after the first `after`.
    pub async fn wait_for_http_request_after(&self, mac: impl Into<Mac>, path: &str, after: usize, timeout: Duration) -> Result<HttpEvent, EventWaitError> {
        let mac = mac.into();
        let path = format!("/{}", path.trim_start_matches('/'));
        let what = format!("{mac} to fetch {path} by HTTP");
        let server = self.server_ip();
        let mut client = Addresses::of(self, mac);
        self.events
            .wait_for(&what, timeout, |e| match &e.event {
                _ if client.learn(&e.event) => None,
                // Its addresses, or its switch port (a client with an address of its own).
                ServiceEvent::Http(h) if e.seq >= after && client.sent(h.client, h.switch_port) && h.served.path == path && h.served.method == "GET" => match h.served.status {
                    200 | 206 => Some(Ok(h.clone())),
                    404 => Some(Err(EventWaitError::Refused { what: what.clone(), detail: format!("http://{server}{path}: the lab's HTTP server has no such file (404)") })),
                    _ => None,
                },
                _ => None,
            })
            .await?
    }

    /// Enter at GRUB's menu, once its countdown ([`GRUB_COUNTDOWN`]) shows on `vm`'s console
    /// within `wait` (a GRUB without a countdown just boots): a boot that no one waits out, as
    /// an operator at the console does. The firmware may take the key before GRUB does
    /// ([`ENTER_AGAIN_AFTER`]), and a GRUB sometimes takes it only as the end of its countdown
    /// and stays in the menu: Enter again until the client `mac` asks the TFTP server for a
    /// file, the sign that GRUB left the menu. Under TCG on a busy host a GRUB's 5 s countdown
    /// has been seen to last 88 s.
    pub async fn enter_at_grub_menu(&self, vm: &crate::vm::Vm, mac: impl Into<Mac>, wait: Duration) {
        if vm.wait_for_console_text(GRUB_COUNTDOWN, wait).await.is_err() {
            return;
        }
        let ip = self.lease_of(mac);
        for press in 1.. {
            let seen = self.events().count();
            tracing::info!(vm = %vm.name(), "Enter at GRUB's menu ({press})");
            if let Err(e) = vm.send_keys("\r").await {
                return tracing::warn!("cannot press Enter at GRUB's menu: {e}");
            }
            let asked = |e: &super::Logged| (e.seq >= seen && matches!(&e.event, ServiceEvent::Tftp(t) if Some(t.client) == ip)).then_some(());
            if !matches!(self.events().wait_for("GRUB to leave its menu", ENTER_AGAIN_AFTER, asked).await, Err(EventWaitError::Timeout { .. })) {
                return;
            }
        }
    }
}

/// GRUB's menu countdown, at which [`Network::enter_at_grub_menu`] presses Enter.
pub const GRUB_COUNTDOWN: &str = r"The highlighted entry will be executed automatically in \d+s";

/// How long GRUB has to leave its menu after an Enter before the next. GRUB reads the UART
/// itself while OVMF's terminal driver polls it too, every 20 ms: whichever reads first takes
/// the key, so a press is often lost (GRUB then waited out its whole countdown). A press a
/// quarter second is many tries within the countdown; GRUB asks the TFTP server for its first
/// `load-kernel` file within milliseconds of taking one.
const ENTER_AGAIN_AFTER: Duration = Duration::from_millis(250);

/// A client's addresses, learnt as a wait goes through the events: the one it holds, and
/// each the DHCP server names to it (from its own switch port).
struct Addresses {
    mac: Mac,
    port: Option<PortId>,
    ips: Vec<Ipv4Addr>,
}

impl Addresses {
    fn of(network: &Network, mac: Mac) -> Self {
        Addresses { mac, port: network.port_of(mac), ips: network.lease_of(mac).into_iter().collect() }
    }

    /// Note an address the DHCP server names to the client in `event`; whether it did.
    fn learn(&mut self, event: &ServiceEvent) -> bool {
        match event {
            ServiceEvent::Dhcp(d) if d.mac == self.mac && from_port(event, self.port) => {
                self.ips.push(d.ip);
                true
            }
            _ => false,
        }
    }

    /// Whether a request from `ip` on `port` is the client's.
    fn sent(&self, ip: Ipv4Addr, port: Option<PortId>) -> bool {
        self.ips.contains(&ip) || (self.port.is_some() && port == self.port)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::net::wire::UdpFrame;
    use crate::services::tftp::wire::Packet;
    use crate::services::nfs::NFS_PORT;
    use crate::supervise::failed;
    use std::net::SocketAddr;
    use dhcproto::v4::{DhcpOption, DhcpOptions, Message, MessageType, Opcode};
    use dhcproto::{Encodable, Encoder};

    const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x50];
    const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);

    fn network(dir: &Path) -> Network {
        let tftp = dir.join("tftp");
        std::fs::create_dir_all(tftp.join("nixos")).unwrap();
        std::fs::write(tftp.join("nixos/bzImage"), vec![7u8; 100_000]).unwrap();
        let nfs = dir.join("nfsroot");
        std::fs::create_dir_all(&nfs).unwrap();
        Network::start(dir, PxeConfig::new(vec![tftp]).nfs_root("/srv/nixos/nfsroot", vec![nfs]), Instant::now()).unwrap()
    }

    /// A guest on the segment with its own IP stack.
    fn client(network: &Network) -> (IpHost, Supervisor) {
        let supervisor = Supervisor::default();
        let addr = HostAddr { mac: Mac(CLIENT_MAC), ip: CLIENT_IP, prefix_len: 24 };
        (IpHost::start(&network.segment, addr, Box::new(|_, _| None), &supervisor), supervisor)
    }

    fn discover(mac: [u8; 6]) -> Vec<u8> {
        let mut m = Message::default();
        m.set_opcode(Opcode::BootRequest).set_xid(7).set_chaddr(&mac);
        let mut opts = DhcpOptions::new();
        opts.insert(DhcpOption::MessageType(MessageType::Discover));
        m.set_opts(opts);
        let mut bytes = Vec::new();
        m.encode(&mut Encoder::new(&mut bytes)).unwrap();
        bytes
    }

    fn udp(src_port: u16, dst_port: u16, dst_ip: Ipv4Addr, payload: Vec<u8>) -> Vec<u8> {
        let (src_mac, dst_mac) = (CLIENT_MAC, [0xff; 6]);
        UdpFrame { src_mac: Mac(src_mac), dst_mac: Mac(dst_mac), src_ip: CLIENT_IP, dst_ip, src_port, dst_port, payload }.emit()
    }

    async fn next_udp(frames: &mut tokio::sync::mpsc::Receiver<Vec<u8>>, port: u16) -> UdpFrame {
        let wait = async {
            loop {
                if let Some(udp) = UdpFrame::parse(&frames.recv().await.unwrap()).filter(|u| u.dst_port == port) {
                    return udp;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait).await.expect("a reply")
    }

    /// 24 clients, each with its own address, ask the TFTP server for a file twice over. The
    /// lab host must keep every one's MAC: smoltcp's neighbor cache held 8 by default,
    /// evicted the rest, and then sent at most one ARP request a second for all of them,
    /// holding their answers meanwhile (a 16-client boot storm stalled until GRUB gave up).
    #[tokio::test]
    async fn the_host_answers_more_clients_at_once_than_a_small_neighbor_cache_holds() {
        let dir = tempfile::tempdir().unwrap();
        let network = network(dir.path());
        let mut clients = Vec::new();
        for i in 0..24u8 {
            let supervisor = Supervisor::default();
            let addr = HostAddr { mac: Mac([0x02, 0, 0, 0, 1, i]), ip: Ipv4Addr::new(192, 0, 2, 60 + i), prefix_len: 24 };
            clients.push((IpHost::start(&network.segment, addr, Box::new(|_, _| None), &supervisor), supervisor));
        }
        let rrq = Packet::Rrq { filename: "missing".into(), mode: "octet".into(), options: vec![] }.emit();
        let server = SocketAddr::from((network.server_ip(), 69));
        for round in 1..=2 {
            // A new port each round: the same request from the same port is a retransmission.
            let mut sockets = Vec::new();
            for (host, _) in &clients {
                let socket = host.net().udp_bind(SocketAddr::from((host.addr.ip, 40_000 + round))).await.unwrap();
                socket.send_to(&rrq, server).await.unwrap();
                sockets.push(socket);
            }
            let deadline = Instant::now() + Duration::from_secs(3);
            for (i, socket) in sockets.iter().enumerate() {
                let mut buf = [0u8; 600];
                let answer = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await;
                let Ok(Ok((n, _))) = answer else { panic!("round {round}: client {i} got no answer within 3 s") };
                assert!(matches!(Packet::parse(&buf[..n]), Ok(Packet::Error { .. })), "round {round}: client {i}: file not found");
            }
        }
    }

    #[tokio::test]
    async fn a_dhcp_request_with_a_long_hardware_length_does_not_stop_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let network = network(dir.path());
        let (port, mut frames) = network.segment.attach();
        let mut evil = discover(CLIENT_MAC);
        evil[2] = 17; // hlen: dhcproto's chaddr() would slice [..17] of 16 bytes
        port.send(udp(68, 67, Ipv4Addr::BROADCAST, evil));
        port.send(udp(68, 67, Ipv4Addr::BROADCAST, discover(CLIENT_MAC)));
        let offer = next_udp(&mut frames, 68).await;
        assert_eq!(offer.src_port, 67, "the server answered the good request after the bad one");
        assert!(network.supervisor.watch().borrow().is_none(), "no server stopped");
    }

    #[tokio::test]
    async fn bad_datagrams_are_skipped_and_a_retransmitted_rrq_is_one_transfer() {
        let dir = tempfile::tempdir().unwrap();
        let network = network(dir.path());
        let (_client, _guard) = client(&network);
        let (port, _) = network.segment.attach();
        let rrq = Packet::Rrq { filename: "nixos/bzImage".into(), mode: "octet".into(), options: vec![] }.emit();
        // From port 0: any reply is unaddressable (today this ends the serve loop).
        port.send(udp(0, 69, network.server_ip(), rrq.clone()));
        port.send(udp(0, 111, network.server_ip(), vec![0; 40]));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let socket = _client.net().udp_bind(SocketAddr::from((CLIENT_IP, 40_000))).await.unwrap();
        let server = SocketAddr::from((network.server_ip(), 69));
        socket.send_to(&rrq, server).await.unwrap();
        socket.send_to(&rrq, server).await.unwrap();
        let mut tids = std::collections::HashSet::new();
        let mut buf = vec![0u8; 2048];
        let until = Instant::now() + Duration::from_millis(1500);
        while let Ok(Ok((n, from))) = tokio::time::timeout_at(until, socket.recv_from(&mut buf)).await {
            if let Ok(Packet::Data { block: 1, .. }) = Packet::parse(&buf[..n]) {
                tids.insert(from);
            }
        }
        assert_eq!(tids.len(), 1, "one transfer (one server port) for a retransmitted RRQ: {tids:?}");
        assert!(network.supervisor.watch().borrow().is_none(), "no server stopped");
    }

    /// 100 half-open connections to each of NFS and the portmapper, from an address that never
    /// answers (eight of them kept every client out until the lab restarted): a client that
    /// completes its handshake still connects, within the sockets' recycling time.
    /// A well-behaved probe (DHCP, TFTP, TCP to the portmapper) is answered before, during
    /// and after a neighbour's mixed flood at 2,000 frames a second: long enough for its
    /// DISCOVERs from invented MACs to have taken the whole pool, were a port's share not
    /// bounded, and for its random sources to hold every undeclared TFTP slot.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_servers_answer_a_probe_through_a_flood() {
        let dir = tempfile::tempdir().unwrap();
        let network = network(dir.path());
        let before = network.probe(Duration::from_secs(5)).await;
        assert!(before.complete(), "before the flood: {before}");
        let flood = network.start_flood(3, 2_000, Mac(CLIENT_MAC));
        tokio::time::sleep(Duration::from_secs(6)).await;
        for round in 0..3 {
            let during = network.probe(Duration::from_secs(5)).await;
            assert!(during.complete(), "during the flood, probe {round}: {during}");
        }
        drop(flood);
        let after = network.probe(Duration::from_secs(5)).await;
        assert!(after.complete(), "after the flood: {after}");
    }

    #[tokio::test]
    async fn half_open_connections_do_not_keep_others_out() {
        let dir = tempfile::tempdir().unwrap();
        let network = network(dir.path());
        let (port, _) = network.segment.attach();
        // SYNs from an address that never answers the server's ARP: each stays half-open.
        for src_port in 50_000..50_100 {
            for service in [NFS_PORT, 111] {
                port.send(syn([0x02, 0, 0, 0, 0, 0x66], Ipv4Addr::new(192, 0, 2, 66), src_port, network.server_ip(), service));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (client, _guard) = client(&network);
        let deadline = tokio::time::Instant::now() + 3 * crate::services::nfs::RECYCLE_AFTER;
        for service in [NFS_PORT, 111] {
            let mut tries = 0;
            loop {
                tries += 1;
                let connect = client.net().tcp_connect(SocketAddr::from((network.server_ip(), service)));
                match tokio::time::timeout(Duration::from_secs(2), connect).await {
                    Ok(Ok(_)) => break,
                    _ if tokio::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(250)).await,
                    other => panic!("port {service}: no connection after {tries} tries: {:?}", other.map(|r| r.map(drop))),
                }
            }
        }
    }

    /// The boot tree over HTTP from a guest's own TCP stack: the file, a response event under
    /// the guest's switch port, and a client past its connection bound refused while others
    /// are served.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_boot_tree_is_served_over_http_to_a_guest() {
        use crate::services::http::{CONNECTIONS_PER_CLIENT, HTTP_PORT};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let tftp = dir.path().join("tftp");
        std::fs::create_dir_all(tftp.join("nixos")).unwrap();
        let kernel: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(tftp.join("nixos/bzImage"), &kernel).unwrap();
        let network = Network::start(dir.path(), PxeConfig::new(vec![tftp]).http(), Instant::now()).unwrap();
        let (client, _guard) = client(&network);
        let server = SocketAddr::from((network.server_ip(), HTTP_PORT));
        let mut stream = client.net().tcp_connect(server).await.unwrap();
        stream.write_all(b"GET /nixos/bzImage HTTP/1.1\r\nHost: 192.0.2.1\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut response = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response)).await.unwrap().unwrap();
        let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&response[..split]);
        assert!(head.starts_with("HTTP/1.1 200 OK") && head.contains("content-length: 100000"), "{head}");
        assert_eq!(&response[split..], &kernel[..]);
        drop(stream);
        let served = network
            .events()
            .wait_for("the HTTP response", Duration::from_secs(5), |e| match &e.event {
                ServiceEvent::Http(h) => Some(h.clone()),
                _ => None,
            })
            .await
            .unwrap();
        assert_eq!((served.client, served.served.path.as_str(), served.served.status, served.served.bytes), (CLIENT_IP, "/nixos/bzImage", 200, 100_000));
        assert!(served.switch_port.is_some(), "{served:?}");
        // A path the server lacks ends a wait at once, naming the URL. (The client has an
        // address of its own: its requests are known by its switch port.)
        network.ports.lock().unwrap().insert(Mac(CLIENT_MAC), served.switch_port.unwrap());
        let mut missing = client.net().tcp_connect(server).await.unwrap();
        missing.write_all(b"GET /nixos/initrd HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await.unwrap();
        let refused = network.wait_for_http_request(CLIENT_MAC, "/nixos/initrd", Duration::from_secs(30)).await;
        assert!(matches!(&refused, Err(EventWaitError::Refused { detail, .. }) if detail.starts_with("http://192.0.2.1/nixos/initrd: ")), "{refused:?}");
        // Read to the server's close (Connection: close): its slot is free again.
        tokio::time::timeout(Duration::from_secs(10), missing.read_to_end(&mut Vec::new())).await.unwrap().unwrap();
        drop(crate::services::tcp::Lingering::new(missing));
        tokio::time::sleep(Duration::from_millis(300)).await;

        // A client that holds its bound of connections gets the next one closed at once.
        let connect = || async { tokio::time::timeout(Duration::from_secs(10), client.net().tcp_connect(server)).await.expect("a connection").unwrap() };
        let mut held = Vec::new();
        for _ in 0..CONNECTIONS_PER_CLIENT {
            // Lingering: closed with a FIN when dropped (a bare stream's drop tells nobody).
            held.push(crate::services::tcp::Lingering::new(connect().await));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The server closes it at once, so early that tokio-smoltcp's connect may miss the
        // Established state and wait for good (its poll_connected knows Established and Closed
        // only): the capture tells what the server did.
        let fins_before = fins_from(&dir.path().join("segment.pcap"), network.server_ip(), HTTP_PORT);
        let _ = tokio::time::timeout(Duration::from_secs(2), client.net().tcp_connect(server)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let fins = fins_from(&dir.path().join("segment.pcap"), network.server_ip(), HTTP_PORT);
        assert_eq!(fins.len(), fins_before.len() + 1, "one connection past the bound closed by the server: {fins_before:?} then {fins:?}");
        drop(held);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut again = connect().await;
        again.write_all(b"HEAD /nixos/bzImage HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut head = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), again.read_to_end(&mut head)).await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&head).starts_with("HTTP/1.1 200 OK"), "served again once the others closed");
    }

    /// The client ports that `server:port` sent a FIN to, in the capture at `pcap`.
    fn fins_from(pcap: &Path, server: Ipv4Addr, port: u16) -> std::collections::BTreeSet<u16> {
        let mut reader = pcap_file::pcap::PcapReader::new(std::fs::File::open(pcap).unwrap()).unwrap();
        let mut fins = std::collections::BTreeSet::new();
        while let Some(Ok(packet)) = reader.next_packet() {
            let f = &packet.data;
            if f.len() < 54 || f[12..14] != [8, 0] || f[23] != 6 || f[26..30] != server.octets() {
                continue;
            }
            let tcp = &f[14 + usize::from(f[14] & 0x0f) * 4..];
            if u16::from_be_bytes([tcp[0], tcp[1]]) == port && tcp[13] & 0x01 != 0 {
                fins.insert(u16::from_be_bytes([tcp[2], tcp[3]]));
            }
        }
        fins
    }

    fn syn(src_mac: [u8; 6], src_ip: Ipv4Addr, src_port: u16, dst_ip: Ipv4Addr, dst_port: u16) -> Vec<u8> {
        crate::net::flood::syn(Mac(src_mac), HOST_MAC, src_ip, dst_ip, src_port, dst_port, 1000)
    }

    /// Inodes of this process's sockets that listen on a host TCP port.
    fn host_listeners() -> Vec<String> {
        let ours: std::collections::HashSet<String> = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter_map(|target| target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_owned))
            .collect();
        let table = std::fs::read_to_string("/proc/self/net/tcp").unwrap() + &std::fs::read_to_string("/proc/self/net/tcp6").unwrap_or_default();
        table
            .lines()
            .skip(1)
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .filter(|cols| cols.len() > 9 && cols[3] == "0A" && ours.contains(cols[9]))
            .map(|cols| cols[1].to_owned())
            .collect()
    }

    /// Only guests on the segment reach the export: nothing listens on the host (a local
    /// process could otherwise mount it).
    #[tokio::test]
    async fn the_nfs_server_listens_on_no_host_socket() {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(host_listeners().len(), 1, "the check sees a listening socket");
        drop(probe);
        let dir = tempfile::tempdir().unwrap();
        let network = network(dir.path());
        let (client, _guard) = client(&network);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let connect = client.net().tcp_connect(SocketAddr::from((network.server_ip(), NFS_PORT)));
        tokio::time::timeout(Duration::from_secs(5), connect).await.expect("connected").unwrap();
        assert_eq!(host_listeners(), Vec::<String>::new(), "host TCP sockets listening");
    }

    #[tokio::test]
    async fn a_server_that_stops_fails_the_current_wait_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let network = network(dir.path());
        let started = Instant::now();
        let waiting = network.wait_for_dhcp_lease(CLIENT_MAC, Duration::from_secs(120));
        network.supervisor.spawn("tftp", async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Err(std::io::Error::other("socket gone"))
        });
        match waiting.await {
            Err(EventWaitError::Stopped { failure, .. }) => {
                assert_eq!((failure.service.as_str(), failure.cause.as_str()), ("tftp", "socket gone"));
            }
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(5), "at once, not at the wait's timeout");
        let mut watch = network.failure_watch();
        assert_eq!(failed(&mut watch).await.service, "tftp");
    }

    #[tokio::test]
    async fn a_stopped_server_is_no_failure_and_answers_again_once_started() {
        let dir = tempfile::tempdir().unwrap();
        let network = network(dir.path());
        let (client, _guard) = client(&network);
        let nfs = SocketAddr::from((network.server_ip(), NFS_PORT));
        network.stop_server(Server::Nfs);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let refused = tokio::time::timeout(Duration::from_secs(5), client.net().tcp_connect(nfs)).await.expect("an answer");
        assert!(refused.is_err(), "nothing listens while stopped");
        network.start_server(Server::Nfs);
        tokio::time::sleep(Duration::from_millis(100)).await;
        tokio::time::timeout(Duration::from_secs(5), client.net().tcp_connect(nfs)).await.expect("connected").unwrap();
        assert!(network.failure_watch().borrow().is_none(), "a deliberate stop is not a failure");
    }

}
