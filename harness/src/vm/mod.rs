//! QEMU clients: the command line, the process, QMP and the accelerator.
//!
//! A [`Vm`] owns everything it started: its QEMU process (terminated and reaped on drop), its
//! console and QMP sockets, its per-VM UEFI variable store and disks, all in its directory.

mod accel;
mod command;
mod process;
mod qmp;
mod snapshot;
mod verbs;

pub use accel::{probe as probe_accel, select as select_accel, Accel, AccelError};
pub use command::{mac_string, DiskBus, DiskFormat, DiskSpec, NetBackend, NicModel, NicSpec, Rom, Serial, VmSpec};
pub use process::QemuProcess;
pub use qmp::{Qmp, QmpError, QmpEvent};
pub use snapshot::{FirmwareStart, Snapshot, SnapshotError};
pub use verbs::shell_quote;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pxelab_ovmf::{DiscoverError, Firmware, VarStore, VarStoreError};
use tokio::time::Instant;

use crate::console::{banner, AttachServer, Console, ConsoleError, Match, TAIL_LABEL, TAIL_LINES};
use crate::supervise::FailureWatch;

/// Why a VM could not be started or driven.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(transparent)]
    Firmware(#[from] DiscoverError),
    #[error(transparent)]
    VarStore(#[from] VarStoreError),
    #[error(transparent)]
    Accel(#[from] AccelError),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("qemu-img failed for {path}: {stderr}")]
    QemuImg { path: PathBuf, stderr: String },
    #[error("{name}: QEMU did not start\n{}", banner("QEMU output", log))]
    Start {
        name: String,
        log: String,
        #[source]
        source: QmpError,
    },
    #[error("{name}: QMP")]
    Qmp {
        name: String,
        #[source]
        source: QmpError,
    },
    #[error("{name}: did not shut down within {waited:.1?}\n{}", banner(TAIL_LABEL, tail))]
    ShutdownTimeout { name: String, waited: Duration, tail: String },
    #[error(
        "{name}: no serial console on ttyS{unit}: a client's console can be ttyS0 to ttyS{MAX_CONSOLE_UNIT} \
         (the firmware writes to ttyS0, the command channel is ttyS1, or ttyS2 when the console is on ttyS1)"
    )]
    ConsoleUnit { name: String, unit: u8 },
    #[error("{name}: console")]
    Console {
        name: String,
        #[source]
        source: ConsoleError,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VmError {
    let what = what.into();
    move |source| VmError::Io { what, source }
}

/// A disk to attach.
#[derive(Debug, Clone)]
pub enum Disk {
    /// A new copy-on-write qcow2 overlay on a base image, so the base is never written.
    Overlay { base: PathBuf, format: DiskFormat },
    /// A new empty qcow2 disk of this many bytes.
    Blank { bytes: u64 },
    /// An image used as it is (written to by the guest).
    Image { path: PathBuf, format: DiskFormat },
}

/// A network card and what it is plugged into.
#[derive(Debug)]
pub struct Nic {
    pub model: NicModel,
    pub mac: [u8; 6],
    pub rom: Rom,
    pub bootindex: Option<u32>,
    pub cable: Cable,
}

/// The other end of a NIC's cable.
#[derive(Debug)]
pub enum Cable {
    /// QEMU's end of a stream socket to a lab switch port.
    Switch(OwnedFd),
    /// QEMU's restricted user-mode network serving `tftp_root` (see [`NetBackend::Slirp`]).
    Slirp { tftp_root: PathBuf, bootfile: String },
}

/// The last serial port a client's console can be on (`ttyS2`).
pub const MAX_CONSOLE_UNIT: u8 = 2;

/// The serial port of the command channel beside a console on `console_unit`: `ttyS1`, or
/// `ttyS2` when the console is on `ttyS1`.
pub fn command_unit(console_unit: u8) -> u8 {
    if console_unit == 1 { 2 } else { 1 }
}

/// What a client's serial port carries.
#[derive(Debug, Clone, Copy)]
enum Port {
    /// The system's console.
    Console,
    /// The command channel ([`command_unit`]).
    Commands,
    /// The first port, when the console is on another: the firmware's output.
    Firmware,
}

impl Port {
    /// QEMU's raw log of the port and the harness's, in the VM's directory.
    fn logs(self) -> (&'static str, &'static str) {
        match self {
            Port::Console => ("serial.raw.log", "console.log"),
            Port::Commands => ("commands.raw.log", "commands.log"),
            Port::Firmware => ("firmware.raw.log", "firmware.log"),
        }
    }
}

/// Configure and start one QEMU client.
pub struct VmBuilder {
    name: String,
    console_unit: u8,
    dir: PathBuf,
    memory_mib: u32,
    cpus: u32,
    accel: Option<Accel>,
    cache_dir: PathBuf,
    disks: Vec<(Disk, DiskBus, Option<u32>)>,
    nics: Vec<Nic>,
    services: Option<FailureWatch>,
    keep_nvram: bool,
    firmware_snapshot: bool,
    epoch: Option<Instant>,
    keeper: Option<Keeper>,
}

/// Where VMs go when their owner drops them in a kept lab (`pxelab run --keep`): they run on,
/// their consoles still served to terminals, until the keeper drops.
#[derive(Clone, Default)]
pub struct Keeper(Arc<Mutex<Vec<Kept>>>);

struct Kept {
    name: String,
    _process: QemuProcess,
    _terminals: Option<AttachServer>,
}

impl Keeper {
    /// The names of the VMs kept so far.
    pub fn names(&self) -> Vec<String> {
        self.0.lock().expect("keeper lock").iter().map(|k| k.name.clone()).collect()
    }

    /// Stop every kept VM (QEMU terminated and reaped, as a dropped [`Vm`]'s).
    pub fn stop(&self) {
        self.0.lock().expect("keeper lock").clear();
    }
}

/// What it takes to boot a stopped VM again as it was: its hardware, disks and NICs.
#[derive(Debug, Clone)]
pub struct Relaunch {
    pub name: String,
    pub memory_mib: u32,
    pub cpus: u32,
    pub accel: Accel,
    pub console_unit: u8,
    /// The disk files as they are now, their buses and boot indexes.
    pub disks: Vec<(PathBuf, DiskFormat, DiskBus, Option<u32>)>,
    pub nics: Vec<UnpluggedNic>,
    pub services: Option<FailureWatch>,
}

/// A stopped VM's NIC, its cable unplugged.
#[derive(Debug, Clone)]
pub struct UnpluggedNic {
    pub model: NicModel,
    pub mac: [u8; 6],
    pub rom: Rom,
    pub bootindex: Option<u32>,
    /// Its slirp network's TFTP root and boot file; `None`: a lab switch port.
    pub slirp: Option<(PathBuf, String)>,
}

impl VmBuilder {
    /// Boot with the NVRAM already in the VM's directory, as a machine keeps it across a
    /// power cycle, instead of a fresh copy of the template.
    pub fn keep_nvram(mut self) -> Self {
        self.keep_nvram = true;
        self
    }

    /// Start a fresh client's firmware from its snapshot ([`Snapshot`]), saving one first if
    /// the cache has none; a VM that is not fresh (a kept NVRAM, a disk with data, a disk not
    /// first in the boot order, a slirp NIC) boots as usual.
    pub fn from_firmware_snapshot(mut self) -> Self {
        self.firmware_snapshot = true;
        self
    }

    /// What a firmware snapshot of this VM depends on, if it can have one.
    fn snapshot_machine(&self, accel: Accel) -> Option<String> {
        let fresh = self.firmware_snapshot
            && !self.keep_nvram
            && self.disks.iter().any(|(_, _, bootindex)| *bootindex == Some(1))
            && self.nics.iter().all(|nic| matches!(nic.cable, Cable::Switch(_)));
        if !fresh {
            return None;
        }
        let disks: Option<Vec<String>> = self
            .disks
            .iter()
            .map(|(disk, bus, bootindex)| match disk {
                Disk::Blank { bytes } => Some(format!("{bus:?} {bytes} {bootindex:?}")),
                _ => None,
            })
            .collect();
        let nics: Vec<String> = self
            .nics
            .iter()
            .map(|n| format!("{:?}{} {} {:?} {:?}", n.model, n.model.properties(), mac_string(&n.mac), n.rom, n.bootindex))
            .collect();
        Some(format!("{accel:?} {} MiB {} CPUs console ttyS{} disks {:?} nics {nics:?}", self.memory_mib, self.cpus, self.console_unit, disks?))
    }

    /// Stamp the console logs with the time since `epoch` (a lab's start) instead of since
    /// this VM's start, so that a lab's logs share one clock.
    pub fn epoch(mut self, epoch: Instant) -> Self {
        self.epoch = Some(epoch);
        self
    }

    /// Hand the VM to `keeper` instead of stopping it when it drops.
    pub fn keep_with(mut self, keeper: Keeper) -> Self {
        self.keeper = Some(keeper);
        self
    }

    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus;
        self
    }

    /// Read the system's console on serial port `ttyS<unit>` (0 by default) instead of the
    /// first; the firmware's output, always on the first, is then logged apart
    /// (`firmware.log`). At most [`MAX_CONSOLE_UNIT`].
    pub fn console_unit(mut self, unit: u8) -> Self {
        self.console_unit = unit;
        self
    }

    /// Use this accelerator instead of probing.
    pub fn accel(mut self, accel: Accel) -> Self {
        self.accel = Some(accel);
        self
    }

    /// Where the KVM probe's verdict is cached.
    pub fn cache_dir(mut self, dir: &Path) -> Self {
        self.cache_dir = dir.to_owned();
        self
    }

    /// Attach a virtio-blk disk, optionally with a firmware boot index (1 boots first).
    pub fn disk(self, disk: Disk, bootindex: Option<u32>) -> Self {
        self.disk_on(DiskBus::Virtio, disk, bootindex)
    }

    /// Attach a disk on `bus`, optionally with a firmware boot index (1 boots first).
    pub fn disk_on(mut self, bus: DiskBus, disk: Disk, bootindex: Option<u32>) -> Self {
        self.disks.push((disk, bus, bootindex));
        self
    }

    pub fn nic(mut self, nic: Nic) -> Self {
        self.nics.push(nic);
        self
    }

    /// Fail the VM's console waits at once when a lab server it depends on stops.
    pub fn fail_on(mut self, services: FailureWatch) -> Self {
        self.services = Some(services);
        self
    }

    /// Start QEMU under OVMF and connect its console and QMP.
    pub async fn start(self) -> Result<Vm, VmError> {
        if self.console_unit > MAX_CONSOLE_UNIT {
            return Err(VmError::ConsoleUnit { name: self.name, unit: self.console_unit });
        }
        std::fs::create_dir_all(&self.dir).map_err(io(format!("cannot create {}", self.dir.display())))?;
        let firmware: Firmware = pxelab_ovmf::discover()?;
        let accel = match self.accel {
            Some(accel) => accel,
            None => select_accel(&firmware, &self.cache_dir).await?,
        };
        let vars_path = self.dir.join("OVMF_VARS.fd");
        let snapshot = self.snapshot_machine(accel).map(|machine| Snapshot::of(&self.cache_dir, &machine, &[&firmware.code, &firmware.vars_template]));
        let restore = snapshot.as_ref().filter(|s| s.exists()).cloned();
        if let Some(snapshot) = &restore {
            crate::artifacts::mark_used(snapshot.dir());
        }
        let vars = match &restore {
            Some(snapshot) => {
                std::fs::copy(snapshot.nvram(), &vars_path).map_err(io(format!("cannot copy {}", snapshot.nvram().display())))?;
                VarStore { path: vars_path }
            }
            None if self.keep_nvram && vars_path.is_file() => VarStore { path: vars_path },
            None => firmware.new_var_store(&vars_path)?,
        };
        let mut relaunch = Relaunch {
            name: self.name.clone(),
            memory_mib: self.memory_mib,
            cpus: self.cpus,
            accel,
            console_unit: self.console_unit,
            disks: Vec::new(),
            nics: Vec::new(),
            services: self.services.clone(),
        };
        let mut disks = Vec::new();
        for (i, (disk, bus, bootindex)) in self.disks.into_iter().enumerate() {
            let (path, format) = make_disk(&self.dir, i, disk).await?;
            relaunch.disks.push((path.clone(), format, bus, bootindex));
            disks.push(DiskSpec { path, format, bus, bootindex, serial: Some(format!("pxelab{i}")) });
        }
        let (qmp_ours, qmp_theirs) = socket_pair("QMP")?;
        let mut pass: Vec<OwnedFd> = vec![qmp_theirs.into()];
        // The serial ports in order, ttyS0 first.
        let command_unit = command_unit(self.console_unit);
        let mut ports = Vec::new();
        for unit in 0..=self.console_unit.max(command_unit) {
            let role = match unit {
                _ if unit == self.console_unit => Port::Console,
                _ if unit == command_unit => Port::Commands,
                _ => Port::Firmware,
            };
            let (ours, theirs) = socket_pair(&format!("ttyS{unit}"))?;
            ports.push((role, ours, std::os::fd::AsRawFd::as_raw_fd(&theirs), self.dir.join(role.logs().0)));
            pass.push(theirs.into());
        }
        let mut nics = Vec::new();
        for nic in self.nics {
            let slirp = match &nic.cable {
                Cable::Slirp { tftp_root, bootfile } => Some((tftp_root.clone(), bootfile.clone())),
                Cable::Switch(_) => None,
            };
            relaunch.nics.push(UnpluggedNic { model: nic.model, mac: nic.mac, rom: nic.rom.clone(), bootindex: nic.bootindex, slirp });
            let backend = match nic.cable {
                Cable::Switch(fd) => {
                    let backend = NetBackend::Switch { fd: std::os::fd::AsRawFd::as_raw_fd(&fd) };
                    pass.push(fd);
                    backend
                }
                Cable::Slirp { tftp_root, bootfile } => NetBackend::Slirp { tftp_root, bootfile },
            };
            nics.push(NicSpec { model: nic.model, mac: nic.mac, rom: nic.rom, bootindex: nic.bootindex, backend });
        }
        let spec = VmSpec {
            name: self.name.clone(),
            accel,
            memory_mib: self.memory_mib,
            cpus: self.cpus,
            firmware: Some((firmware.code.clone(), vars.path.clone())),
            disks,
            nics,
            serial: ports.iter().map(|(_, _, fd, log)| Serial::Socket { fd: *fd, log: log.clone() }).collect(),
            qmp_fd: Some(std::os::fd::AsRawFd::as_raw_fd(&pass[0])),
            incoming: restore.as_ref().map(Snapshot::state),
        };
        let argv = spec.argv();
        let cmdline = argv.join(" ");
        tracing::info!(vm = %self.name, "starting: {cmdline}");
        std::fs::write(self.dir.join("qemu.cmdline"), format!("{cmdline}\n")).map_err(io("cannot write qemu.cmdline"))?;
        let qemu_log = self.dir.join("qemu.log");
        let started = Instant::now();
        let process = QemuProcess::spawn(&argv, pass, &qemu_log).map_err(io("cannot run qemu-system-x86_64 (install the Debian package qemu-system-x86)"))?;
        let clock = self.epoch.unwrap_or(started);
        let (mut console, mut commands, mut firmware) = (None, None, None);
        for (unit, (role, ours, _, _)) in ports.into_iter().enumerate() {
            let (name, slot) = match role {
                Port::Console => (self.name.clone(), &mut console),
                Port::Commands => (format!("{} ttyS{unit}", self.name), &mut commands),
                Port::Firmware => (format!("{} firmware", self.name), &mut firmware),
            };
            let log = role.logs().1;
            let mut port = Console::attach(&name, ours, &self.dir.join(log), clock).map_err(io(format!("cannot write {log}")))?;
            if let Some(services) = &self.services {
                port.fail_on(services.clone());
            }
            *slot = Some(port);
        }
        let (console, commands) = (console.expect("a console port"), commands.expect("a command port"));
        let qmp = match Qmp::connect(qmp_ours).await {
            Ok(qmp) => qmp,
            Err(source) => {
                drop(process);
                let log = std::fs::read_to_string(&qemu_log).unwrap_or_default();
                return Err(VmError::Start { name: self.name, log, source });
            }
        };
        if let Some(snapshot) = &restore {
            // The state was saved paused, and loads paused.
            if let Err(source) = resume_when_loaded(&qmp).await {
                drop(process);
                let log = std::fs::read_to_string(&qemu_log).unwrap_or_default();
                let log = format!("{log}(starting from the firmware snapshot {}; remove it to save another)", snapshot.state().display());
                return Err(VmError::Start { name: self.name, log, source });
            }
        }
        let firmware_start = match (snapshot, restore) {
            (_, Some(snapshot)) => FirmwareStart::Restored(snapshot),
            (Some(snapshot), None) => match save_at_point(&snapshot, &qmp, firmware.as_ref().unwrap_or(&console), &vars.path, &self.name).await {
                true => FirmwareStart::Saved(snapshot),
                false => FirmwareStart::PowerOn,
            },
            (None, None) => FirmwareStart::PowerOn,
        };
        let backdoor = false;
        // A console a terminal cannot attach to is no reason to fail the run.
        let terminals = console.serve_terminals(&self.dir.join("console.sock")).map_err(|e| tracing::warn!(vm = %self.name, "no console socket: {e}")).ok();
        Ok(Vm {
            name: self.name,
            dir: self.dir,
            cmdline,
            process,
            console,
            commands,
            firmware,
            backdoor,
            qmp,
            var_store: vars,
            started,
            relaunch,
            terminals,
            keeper: self.keeper,
            firmware_start,
        })
    }
}

/// Resume a VM started from a snapshot once QEMU has loaded it.
async fn resume_when_loaded(qmp: &Qmp) -> Result<(), QmpError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match qmp.status().await?.as_str() {
            "inmigrate" if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(5)).await,
            "paused" | "postmigrate" | "prelaunch" => return qmp.cont().await,
            "running" => return Ok(()),
            other => return Err(QmpError::Command { command: "query-status", message: format!("the snapshot left the VM {other:?}") }),
        }
    }
}

/// Save `snapshot` at the firmware's first output, unless it has gone on
/// to the network by the time the guest is paused; the VM boots on either way.
async fn save_at_point(snapshot: &Snapshot, qmp: &Qmp, firmware: &Console, nvram: &Path, name: &str) -> bool {
    if !firmware.wait_for_output(Duration::from_secs(120)).await {
        tracing::info!(vm = %name, "no firmware snapshot: the firmware printed nothing");
        return false;
    }
    if let Err(e) = qmp.stop().await {
        tracing::warn!(vm = %name, "no firmware snapshot: {e}");
        return false;
    }
    let went_on = regex::Regex::new(snapshot::DISK_FAILED).expect("a valid pattern").is_match(&firmware.text());
    let saved = match went_on {
        true => {
            tracing::info!(vm = %name, "no firmware snapshot: the firmware went on before it paused");
            false
        }
        false => match snapshot.save(qmp, nvram).await {
            Ok(()) => true,
            Err(e) => {
                let cause = std::error::Error::source(&e).map(|c| format!(": {c}")).unwrap_or_default();
                // QEMU 7.2 cannot migrate an NVMe controller, for one.
                tracing::info!(vm = %name, "no firmware snapshot: {e}{cause}");
                false
            }
        },
    };
    if let Err(e) = qmp.cont().await {
        tracing::warn!(vm = %name, "cannot resume after the firmware snapshot: {e}");
    }
    saved
}

fn socket_pair(what: &str) -> Result<(tokio::net::UnixStream, std::os::unix::net::UnixStream), VmError> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(io(format!("cannot make the {what} socket")))?;
    ours.set_nonblocking(true).map_err(io("set_nonblocking"))?;
    let ours = tokio::net::UnixStream::from_std(ours).map_err(io("register socket"))?;
    Ok((ours, theirs))
}

/// Make disk `index` of a VM in `dir` (`disk<index>.qcow2`; an image is used as it is).
pub async fn make_disk(dir: &Path, index: usize, disk: Disk) -> Result<(PathBuf, DiskFormat), VmError> {
    let path = dir.join(format!("disk{index}.qcow2"));
    let mut args: Vec<String> = vec!["create".into(), "-q".into(), "-f".into(), "qcow2".into()];
    match disk {
        Disk::Image { path, format } => return Ok((path, format)),
        Disk::Overlay { base, format } => {
            let base = std::fs::canonicalize(&base).map_err(io(format!("disk base image {}", base.display())))?;
            args.extend(["-F".into(), format.as_str().into(), "-b".into(), base.display().to_string()]);
            args.push(path.display().to_string());
        }
        Disk::Blank { bytes } => args.extend([path.display().to_string(), bytes.to_string()]),
    }
    let out = tokio::process::Command::new("qemu-img")
        .args(&args)
        .output()
        .await
        .map_err(io("cannot run qemu-img (install the Debian package qemu-utils)"))?;
    if !out.status.success() {
        return Err(VmError::QemuImg { path, stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned() });
    }
    Ok((path, DiskFormat::Qcow2))
}

/// A running QEMU client.
pub struct Vm {
    name: String,
    dir: PathBuf,
    cmdline: String,
    process: QemuProcess,
    console: Console,
    /// The command channel's serial port ([`command_unit`]); commands go there once a shell
    /// answers on it.
    commands: Console,
    /// The first serial port, when the console is on another: the firmware's output.
    firmware: Option<Console>,
    backdoor: bool,
    qmp: Qmp,
    var_store: VarStore,
    relaunch: Relaunch,
    started: Instant,
    terminals: Option<AttachServer>,
    keeper: Option<Keeper>,
    firmware_start: FirmwareStart,
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(keeper) = self.keeper.take() {
            let kept = Kept { name: self.name.clone(), _process: self.process.take(), _terminals: self.terminals.take() };
            keeper.0.lock().expect("keeper lock").push(kept);
        }
    }
}

impl Vm {
    /// Configure a VM named `name` whose files live in `dir`.
    pub fn builder(name: &str, dir: &Path) -> VmBuilder {
        VmBuilder {
            name: name.to_owned(),
            console_unit: 0,
            dir: dir.to_owned(),
            memory_mib: 1024,
            cpus: 1,
            accel: None,
            cache_dir: crate::artifacts::Cache::default_root(),
            disks: Vec::new(),
            nics: Vec::new(),
            services: None,
            keep_nvram: false,
            firmware_snapshot: false,
            epoch: None,
            keeper: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The accelerator QEMU runs on.
    pub fn accel(&self) -> Accel {
        self.relaunch.accel
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Time since QEMU was started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether the firmware started from reset or from a snapshot ([`VmBuilder::from_firmware_snapshot`]).
    pub fn firmware_start(&self) -> &FirmwareStart {
        &self.firmware_start
    }

    /// This VM's UEFI variable store (its NVRAM).
    pub fn var_store(&self) -> &VarStore {
        &self.var_store
    }

    pub fn console(&self) -> &Console {
        &self.console
    }

    pub fn console_mut(&mut self) -> &mut Console {
        &mut self.console
    }

    /// The first serial port, where the firmware (OVMF, its PXE, the boot manager) writes: the
    /// console, unless the system's console is on another port.
    pub fn firmware_console(&self) -> &Console {
        self.firmware.as_ref().unwrap_or(&self.console)
    }

    /// The serial port of the command channel.
    pub fn command_unit(&self) -> u8 {
        command_unit(self.relaunch.console_unit)
    }

    /// The serial port of the system's console.
    pub fn console_unit(&self) -> u8 {
        self.relaunch.console_unit
    }

    pub fn qmp(&self) -> &Qmp {
        &self.qmp
    }

    /// See [`Console::wait_for_console_text`].
    pub async fn wait_for_console_text(&self, pattern: &str, timeout: Duration) -> Result<Match, ConsoleError> {
        self.console.wait_for_console_text(pattern, timeout).await
    }

    /// See [`Console::wait_for_console_text_before`].
    pub async fn wait_for_console_text_before(&self, pattern: &str, later: &[String], timeout: Duration) -> Result<Match, ConsoleError> {
        self.console.wait_for_console_text_before(pattern, later, timeout).await
    }

    /// See [`Console::succeed`]; on the command channel once [`Vm::connect_backdoor`] found it.
    pub async fn succeed(&self, command: &str) -> Result<String, ConsoleError> {
        self.shell().succeed(command).await
    }

    /// See [`Console::execute`]; on the command channel once [`Vm::connect_backdoor`] found it.
    pub async fn execute(&self, command: &str) -> Result<(i32, String), ConsoleError> {
        self.shell().execute(command).await
    }

    /// Use the root shell a system runs on its command port ([`Vm::command_unit`], `ttyS1` as
    /// the NixOS driver's backdoor) for commands from now on, if one answers within `timeout`: kernel
    /// and service messages on the console cannot garble them there. Returns whether it did;
    /// without one, commands stay on the console's login shell.
    pub async fn connect_backdoor(&mut self, timeout: Duration) -> bool {
        let started = std::time::Instant::now();
        self.backdoor = false;
        self.commands.set_command_timeout(Duration::from_secs(2));
        while started.elapsed() < timeout {
            match self.commands.execute("true").await {
                Ok((0, _)) => {
                    self.commands.set_command_timeout(self.console.command_timeout());
                    self.backdoor = true;
                    return true;
                }
                Ok(_) | Err(ConsoleError::Timeout { .. }) => {}
                Err(_) => return false,
            }
        }
        false
    }

    fn shell(&self) -> &Console {
        if self.backdoor { &self.commands } else { &self.console }
    }

    /// See [`Console::send_keys`].
    pub async fn send_keys(&self, keys: &str) -> Result<(), ConsoleError> {
        self.console.send_keys(keys).await
    }

    /// See [`Console::send_line`].
    pub async fn send_line(&self, line: &str) -> Result<(), ConsoleError> {
        self.console.send_line(line).await
    }

    /// QEMU's run state (`running`, `paused`, …).
    pub async fn status(&self) -> Result<String, VmError> {
        self.qmp.status().await.map_err(|source| VmError::Qmp { name: self.name.clone(), source })
    }

    /// Reset the machine, like its reset button.
    pub async fn reset(&self) -> Result<(), VmError> {
        self.qmp.system_reset().await.map_err(|source| VmError::Qmp { name: self.name.clone(), source })
    }

    /// Stop QEMU at once if it still runs (a power failure); what boots the VM again as it
    /// was, with its disks and NVRAM ([`crate::lab::Lab::restart`]).
    pub async fn power_off(mut self) -> Result<Relaunch, VmError> {
        if self.process.try_wait().map_err(io("checking QEMU"))?.is_none() {
            self.crash(Duration::from_secs(30)).await?;
        }
        Ok(self.relaunch.clone())
    }

    /// Wait until the guest powers off and QEMU exits.
    pub async fn wait_for_shutdown(&mut self, timeout: Duration) -> Result<ExitStatus, VmError> {
        match tokio::time::timeout(timeout, self.process.wait()).await {
            Ok(status) => status.map_err(io("waiting for QEMU")),
            Err(_) => Err(VmError::ShutdownTimeout {
                name: self.name.clone(),
                waited: timeout,
                tail: self.console.tail(TAIL_LINES),
            }),
        }
    }

    /// Labelled blocks for a failure report: command line, QEMU's output, console tail.
    pub fn report(&self) -> String {
        let qemu_log = std::fs::read_to_string(self.dir.join("qemu.log")).unwrap_or_default();
        [
            banner(&format!("{} QEMU command", self.name), &self.cmdline),
            banner(&format!("{} QEMU output", self.name), qemu_log.trim_end()),
            banner(&format!("{} console (last {TAIL_LINES} lines)", self.name), &self.console.tail(TAIL_LINES)),
        ]
        .join("\n")
    }
}
