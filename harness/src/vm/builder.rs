//! [`VmBuilder`]: how a VM is put together and started, the one route to a QEMU command line.

use super::*;

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
    secure_boot: bool,
    /// DER certificates to add to the fresh NVRAM's `db`.
    db_certificates: Vec<Vec<u8>>,
    epoch: Option<Instant>,
    keeper: Option<Keeper>,
}

impl VmBuilder {
    /// Configure a VM named `name` whose files live in `dir` ([`Vm::builder`]).
    pub(super) fn new(name: &str, dir: &Path) -> VmBuilder {
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
            secure_boot: false,
            db_certificates: Vec::new(),
            epoch: None,
            keeper: None,
        }
    }

    /// Run OVMF's Secure Boot build with Microsoft's keys enrolled and Secure Boot on
    /// ([`pxelab_ovmf::discover_secure_boot`]; `OVMF_SECURE_BOOT_CODE`/`_VARS` override it):
    /// the firmware starts only images signed by a key in its `db`, such as Microsoft-signed
    /// shim. [`Vm::secure_boot_state`] reads what its NVRAM sets up.
    pub fn secure_boot(mut self) -> Self {
        self.secure_boot = true;
        self
    }

    /// Add an X.509 certificate (DER) to the `db` of the VM's fresh NVRAM before it starts, as
    /// a platform owner enrols a key of their own: with [`VmBuilder::secure_boot`], images
    /// signed by its key (`sbsign`) then start, and shim trusts kernels signed by it. Such a VM
    /// starts its firmware from reset: its NVRAM is not the template's a snapshot keeps.
    pub fn enrol_db_certificate(mut self, der: Vec<u8>) -> Self {
        self.db_certificates.push(der);
        self
    }

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
            && self.db_certificates.is_empty()
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
            .map(|n| format!("{:?}{} {} {:?} {:?}", n.model, n.model.properties(), n.mac, n.rom, n.bootindex))
            .collect();
        Some(format!("{} {} MiB {} CPUs console ttyS{} disks {:?} nics {nics:?}", accel.qemu_arg(), self.memory_mib, self.cpus, self.console_unit, disks?))
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

    /// Memory in MiB (1024 by default).
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Virtual CPUs (1 by default).
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

    /// Attach a NIC, its cable plugged into a lab switch port, a slirp network or a unix socket.
    pub fn nic(mut self, nic: Nic) -> Self {
        self.nics.push(nic);
        self
    }

    /// Fail the VM's console waits at once when a lab server it depends on stops.
    pub fn fail_on(mut self, services: FailureWatch) -> Self {
        self.services = Some(services);
        self
    }

    /// Enrol the builder's certificates in a fresh NVRAM.
    fn enrol(&self, vars: &VarStore) -> Result<(), VmError> {
        if self.db_certificates.is_empty() {
            return Ok(());
        }
        let what = || format!("cannot enrol a certificate in {}'s db ({})", self.name, vars.path.display());
        let mut image = std::fs::read(&vars.path).map_err(io(what()))?;
        for der in &self.db_certificates {
            // The owner GUID is only a label: pxelab's.
            pxelab_ovmf::enrol_db_certificate(&mut image, der, *b"pxelab-owner-key")
                .map_err(|e| VmError::Io { what: what(), source: std::io::Error::other(e.to_string()) })?;
        }
        std::fs::write(&vars.path, image).map_err(io(what()))
    }

    /// What a started and a hand-started VM share: a console port that exists, the VM's
    /// directory, the firmware and the accelerator.
    async fn machine(&self) -> Result<(Firmware, Accel), VmError> {
        if self.console_unit > MAX_CONSOLE_UNIT {
            return Err(VmError::ConsoleUnit { name: self.name.clone(), unit: self.console_unit });
        }
        std::fs::create_dir_all(&self.dir).map_err(io(format!("cannot create {}", self.dir.display())))?;
        let plain: Firmware = pxelab_ovmf::discover()?;
        let accel = match self.accel {
            Some(accel) => accel,
            // The probe boots the plain build: it is about the host, not the firmware.
            None => select_accel(&plain, &self.cache_dir).await?,
        };
        let firmware = if self.secure_boot { pxelab_ovmf::discover_secure_boot()? } else { plain };
        Ok((firmware, accel))
    }

    /// The command line that starts this VM by hand, as `pxelab serve` prints it for its
    /// clients: the machine [`VmBuilder::start`] would boot (firmware, accelerator, a fresh
    /// NVRAM copy, the disks made now in the VM's directory), its NICs on the unix sockets of
    /// their [`Cable::Unix`] cables, its console in the user's terminal (`-serial mon:stdio`;
    /// Ctrl-A X quits) and the serial ports before the console in `ttyS<n>.log` files. Written
    /// to `qemu.cmdline` too; nothing is started.
    pub async fn hand_started(self) -> Result<String, VmError> {
        if !self.nics.iter().all(|nic| matches!(nic.cable, Cable::Unix(_))) {
            return Err(VmError::NotHandCable { name: self.name });
        }
        let (firmware, accel) = self.machine().await?;
        let vars = firmware.new_var_store(&self.dir.join("OVMF_VARS.fd"))?;
        self.enrol(&vars)?;
        let mut disks = Vec::new();
        for (i, (disk, bus, bootindex)) in self.disks.into_iter().enumerate() {
            let (path, format) = make_disk(&self.dir, i, disk).await?;
            disks.push(DiskSpec { path, format, bus, bootindex, serial: Some(format!("pxelab{i}")) });
        }
        let mut nics = Vec::new();
        for nic in self.nics {
            let Cable::Unix(path) = nic.cable else { unreachable!("checked above") };
            nics.push(NicSpec { model: nic.model, mac: nic.mac, rom: nic.rom, bootindex: nic.bootindex, backend: NetBackend::Unix { path } });
        }
        let spec = VmSpec {
            name: self.name.clone(),
            accel,
            memory_mib: self.memory_mib,
            cpus: self.cpus,
            firmware: Some((firmware.code.clone(), vars.path.clone())),
            secure_boot: firmware.secure_boot,
            disks,
            nics,
            serial: hand_serial(self.console_unit, &self.dir),
            qmp_fd: None,
            incoming: None,
        };
        let plain = |w: &str| w.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./,=:@+".contains(&b));
        let command = spec.argv().iter().map(|w| if plain(w) { w.clone() } else { shell_quote(w) }).collect::<Vec<_>>().join(" ");
        std::fs::write(self.dir.join("qemu.cmdline"), format!("{command}\n")).map_err(io("cannot write qemu.cmdline"))?;
        Ok(command)
    }

    /// Start QEMU under OVMF and connect its console and QMP.
    pub async fn start(self) -> Result<Vm, VmError> {
        if let Some(Cable::Unix(path)) = self.nics.iter().map(|nic| &nic.cable).find(|c| matches!(c, Cable::Unix(_))) {
            return Err(VmError::HandCable { name: self.name.clone(), path: path.clone() });
        }
        let (firmware, accel) = self.machine().await?;
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
            None => {
                let vars = firmware.new_var_store(&vars_path)?;
                self.enrol(&vars)?;
                vars
            }
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
            secure_boot: firmware.secure_boot,
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
                Cable::Slirp(net) => Some(net.clone()),
                Cable::Switch(_) => None,
                Cable::Unix(_) => unreachable!("refused before anything was made"),
            };
            relaunch.nics.push(UnpluggedNic { model: nic.model, mac: nic.mac, rom: nic.rom.clone(), bootindex: nic.bootindex, slirp });
            let backend = match nic.cable {
                Cable::Switch(fd) => {
                    let backend = NetBackend::Switch { fd: std::os::fd::AsRawFd::as_raw_fd(&fd) };
                    pass.push(fd);
                    backend
                }
                Cable::Slirp(net) => NetBackend::Slirp(net),
                Cable::Unix(path) => NetBackend::Unix { path },
            };
            nics.push(NicSpec { model: nic.model, mac: nic.mac, rom: nic.rom, bootindex: nic.bootindex, backend });
        }
        let spec = VmSpec {
            name: self.name.clone(),
            accel,
            memory_mib: self.memory_mib,
            cpus: self.cpus,
            firmware: Some((firmware.code.clone(), vars.path.clone())),
            secure_boot: firmware.secure_boot,
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

/// A hand-started VM's serial ports: the system's console in the user's terminal, each port
/// before it (COM1 holds the firmware's output) in a file in the VM's directory.
fn hand_serial(console_unit: u8, dir: &Path) -> Vec<Serial> {
    let before = (0..console_unit).map(|unit| Serial::File(dir.join(format!("ttyS{unit}.log"))));
    before.chain([Serial::Stdio]).collect()
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_hand_started_vm_has_its_systems_console_in_the_terminal() {
        assert_eq!(hand_serial(0, "/c".as_ref()), [Serial::Stdio]);
        assert_eq!(hand_serial(2, "/c".as_ref()), [Serial::File("/c/ttyS0.log".into()), Serial::File("/c/ttyS1.log".into()), Serial::Stdio]);
    }

    #[tokio::test]
    async fn only_hand_cables_make_a_hand_started_vm_and_only_others_start() {
        let dir = tempfile::tempdir().unwrap();
        let nic = |cable| Nic { model: NicModel::E1000, mac: Mac([2, 0, 0, 0, 0, 1]), rom: Rom::OvmfNative, bootindex: None, cable };
        let slirp = Cable::Slirp(SlirpNet::tftp(dir.path(), ""));
        let by_hand = Vm::builder("a", dir.path()).accel(Accel::Tcg).nic(nic(slirp)).hand_started().await;
        assert!(matches!(by_hand, Err(VmError::NotHandCable { .. })), "{by_hand:?}");
        let started = Vm::builder("b", dir.path()).accel(Accel::Tcg).nic(nic(Cable::Unix(dir.path().join("s.sock")))).start().await;
        assert!(matches!(started, Err(VmError::HandCable { .. })), "{:?}", started.err());
    }
}
