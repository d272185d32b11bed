//! QEMU clients: the command line, the process, QMP and the accelerator.
//!
//! A [`Vm`] owns everything it started: its QEMU process (terminated and reaped on drop), its
//! console and QMP sockets, its per-VM UEFI variable store and disks, all in its directory.

mod accel;
mod builder;
mod command;
mod process;
mod qmp;
mod snapshot;
mod verbs;

pub use accel::{probe as probe_accel, select as select_accel, Accel, AccelError};
pub use builder::{make_disk, VmBuilder};
pub use command::{DiskBus, DiskFormat, DiskSpec, GuestForward, NetBackend, NicModel, NicSpec, Rom, Serial, SlirpNet, VmSpec};
pub use process::{HostSample, QemuProcess};
pub use qmp::{Qmp, QmpError, QmpEvent};
pub use snapshot::{file_stamp, FirmwareStart, Snapshot, SnapshotError};
pub use verbs::shell_quote;

/// Where `program` is on `PATH`, as a shell finds it.
pub fn on_path(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|path| std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file()))
}

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pxelab_ovmf::{DiscoverError, Firmware, VarStore, VarStoreError};
use tokio::time::Instant;

use crate::console::{banner, AttachServer, Console, ConsoleError, Match, TAIL_LABEL, TAIL_LINES};
use crate::net::Mac;
use crate::supervise::FailureWatch;

/// Why a VM could not be started or driven.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(transparent)]
    Firmware(#[from] DiscoverError),
    #[error(transparent)]
    VarStore(#[from] VarStoreError),
    #[error("{what}")]
    Nvram {
        what: String,
        #[source]
        source: pxelab_ovmf::VarsError,
    },
    #[error("{name}: its firmware wrote no boot entry for {target:?}; it has {entries}")]
    NoBootEntry { name: String, target: pxelab_ovmf::BootTarget, entries: String },
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
    #[error("{name}: a NIC on the unix socket {} is for a client started by hand (VmBuilder::hand_started)", path.display())]
    HandCable { name: String, path: PathBuf },
    #[error("{name}: a client started by hand has its NICs on unix sockets (Cable::Unix) only")]
    NotHandCable { name: String },
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
    pub mac: Mac,
    pub rom: Rom,
    pub bootindex: Option<u32>,
    pub cable: Cable,
}

/// The other end of a NIC's cable.
#[derive(Debug)]
pub enum Cable {
    /// QEMU's end of a stream socket to a lab switch port.
    Switch(OwnedFd),
    /// QEMU's restricted user-mode network (see [`NetBackend::Slirp`]).
    Slirp(SlirpNet),
    /// A unix socket QEMU connects to itself: a lab served to QEMUs the user starts by hand
    /// (`pxelab serve`, [`VmBuilder::hand_started`]).
    Unix(PathBuf),
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
    /// It ran OVMF's Secure Boot build ([`VmBuilder::secure_boot`]).
    pub secure_boot: bool,
}

/// A stopped VM's NIC, its cable unplugged.
#[derive(Debug, Clone)]
pub struct UnpluggedNic {
    pub model: NicModel,
    pub mac: Mac,
    pub rom: Rom,
    pub bootindex: Option<u32>,
    /// Its slirp network; `None`: a lab switch port.
    pub slirp: Option<SlirpNet>,
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
        VmBuilder::new(name, dir)
    }

    /// The VM's name (its directory's, and its console log's label).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The VM's directory: its logs, NVRAM, disks and `qemu.cmdline`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The accelerator QEMU runs on.
    pub fn accel(&self) -> Accel {
        self.relaunch.accel
    }

    /// QEMU's process id.
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

    /// The disk files as they are now, their formats, buses and boot indexes.
    pub fn disks(&self) -> &[(PathBuf, DiskFormat, DiskBus, Option<u32>)] {
        &self.relaunch.disks
    }

    /// This VM's UEFI variable store (its NVRAM).
    pub fn var_store(&self) -> &VarStore {
        &self.var_store
    }

    /// Secure Boot as this VM's NVRAM sets it up (platform key, the switch, the key
    /// databases), read from the host. Whether the firmware enforces it also takes a Secure
    /// Boot build ([`VmBuilder::secure_boot`]): the plain one checks nothing.
    pub fn secure_boot_state(&self) -> Result<pxelab_ovmf::SecureBoot, pxelab_ovmf::VarsError> {
        pxelab_ovmf::read_variables(&self.var_store.path).map(|variables| pxelab_ovmf::SecureBoot::of(&variables))
    }

    /// The system's serial console: its transcript, waits and writes.
    pub fn console(&self) -> &Console {
        &self.console
    }

    /// The system's serial console, to change how it matches (fail-fast patterns).
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

    /// QEMU's monitor (QMP), for what the verbs do not cover.
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
