//! Runnable scenarios: what `pxelab run <name>` does, stage by stage.

use std::process::ExitStatus;
use std::time::Duration;

use pxelab_fixtures::install::{INSTALL_STAGES, NFS_SETUP_MARKER};
use pxelab_fixtures::{Compression, HostFiles, SerialConsole, UefiDisk, UefiDiskInit};

use crate::artifacts::{ArtifactSet, Provider};
use crate::console::{banner, ConsoleError};
use crate::lab::{addresses_of, lease_for, EventWaitError, Lab, PxeConfig, Server, StageError, Stages};
use crate::net::fault::{Direction, Impairment};
use crate::services::ServiceEvent;
use crate::vm::{shell_quote, Disk, DiskBus, DiskFormat, FirmwareStart, NicModel, Vm};

/// A scenario `pxelab run` can run.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    pub name: &'static str,
    pub about: &'static str,
}

/// Every runnable scenario.
pub const JOBS: &[Job] = &[
    Job {
        name: "install-default",
        about: "PXE-install the fixture system on a blank disk, reboot into it from the disk, log in (the main job)",
    },
    Job {
        name: "install-nixos-shape",
        about: "The same install with upstream-shaped artifacts built here: kernel DHCP and NFS root without initrd, e1000, unionfs-fuse, systemd-boot, systemd",
    },
    Job {
        name: "uefi-boot",
        about: "Boot the UEFI disk fixture (OVMF → GRUB → Debian kernel → busybox shell), run `uname -r`, power off",
    },
];

/// What a finished job reports.
#[derive(Debug)]
pub struct Report {
    pub stages: Stages,
    /// Facts the job read from the guest, as `(what, value)`.
    pub facts: Vec<(&'static str, String)>,
}

impl Report {
    /// The report of a job's `stages`; `facts` go into the run's report too.
    pub fn new(stages: Stages, facts: Vec<(&'static str, String)>) -> Self {
        for (what, value) in &facts {
            stages.fact(what, value);
        }
        Report { stages, facts }
    }
}

/// Run the job called `name` in `lab`: an install job with `options` (whose provider
/// replaces the fixture artifacts when `own_artifacts`).
pub async fn run(name: &str, lab: &mut Lab, options: InstallOptions, own_artifacts: bool) -> Result<Report, StageError> {
    match name {
        "install-default" => install(lab, &options).await.map(|(report, _vm)| report),
        "install-nixos-shape" if own_artifacts => {
            Err(stage_error("select job", "install-nixos-shape builds its own artifacts; run install-default with --artifacts or --nix-*".into()))
        }
        "install-nixos-shape" => {
            let options = InstallOptions { provider: Provider::NixosShape { services: None, console: SerialConsole::UPSTREAM }, ..options };
            install(lab, &options).await.map(|(report, _vm)| report)
        }
        "uefi-boot" => {
            lab.set_repro("pxelab run uefi-boot --keep".into());
            uefi_boot(lab).await
        }
        other => Err(StageError {
            stage: "select job".into(),
            elapsed: Duration::ZERO,
            source: format!("no job named {other:?}; `pxelab list` shows them").into(),
        }),
    }
}

/// Boot the UEFI disk fixture to a shell, check the kernel version, power off.
pub async fn uefi_boot(lab: &Lab) -> Result<Report, StageError> {
    let mut stages = lab.stages();
    let host = stages.run("find host files", async { HostFiles::find() }).await?;
    let recipe = UefiDisk { host: host.clone(), init: UefiDiskInit::Shell };
    let fixture = stages.run("build fixture", async { lab.cache().get_or_build(&recipe) }).await?;
    let disk = Disk::Overlay { base: fixture.join(UefiDisk::IMAGE), format: DiskFormat::Raw };
    let mut vm = stages.run("start QEMU", lab.vm("client").disk(disk, Some(1)).start()).await?;
    stages
        .run("firmware → GRUB", vm.wait_for_console_text("pxelab-fixture: GRUB loading", Duration::from_secs(120)))
        .await?;
    stages.run("kernel → shell", vm.wait_for_console_text(UefiDisk::SHELL_MARKER, Duration::from_secs(240))).await?;
    let uname = stages.run("uname -r", vm.succeed("uname -r")).await?;
    if lab.keeps() {
        // The user gets the shell instead of its power-off.
        return Ok(Report::new(stages, vec![("uname -r", uname)]));
    }
    let exit: ExitStatus = stages
        .run("power off", async {
            vm.send_line("poweroff -f").await?;
            vm.wait_for_shutdown(Duration::from_secs(60)).await.map_err(Box::<dyn std::error::Error + Send + Sync>::from)
        })
        .await?;
    Ok(Report::new(stages, vec![("uname -r", uname), ("QEMU exit", exit.to_string())]))
}

/// The client `install-default` installs.
pub const INSTALL_CLIENT: ([u8; 6], &str, &str) = ([0x52, 0x54, 0x00, 0x1a, 0x5e, 0x01], "192.0.2.10", "nixos-pxe-1");
/// Who installs: the VM's name, and the MAC, address and host name the lab's DHCP declares
/// for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub vm: String,
    pub mac: [u8; 6],
    pub ip: std::net::Ipv4Addr,
    pub hostname: String,
}

impl Client {
    /// The `n`th of several clients (from 1): VM `client-<n>`, MAC `52:54:00:1a:5e:<n>`,
    /// address `192.0.2.<9+n>`, host name `nixos-pxe-<n>`; the first has [`INSTALL_CLIENT`]'s.
    pub fn nth(n: u8) -> Self {
        Client { vm: format!("client-{n}"), mac: [0x52, 0x54, 0x00, 0x1a, 0x5e, n], ip: [192, 0, 2, 9 + n].into(), hostname: format!("nixos-pxe-{n}") }
    }
}

impl Default for Client {
    /// [`INSTALL_CLIENT`], as VM `client`.
    fn default() -> Self {
        let (mac, ip, hostname) = INSTALL_CLIENT;
        Client { vm: "client".into(), mac, ip: ip.parse().expect("an address"), hostname: hostname.into() }
    }
}

/// Where the lab exports the installer's NFS root.
pub const NFS_EXPORT: &str = "/srv/nixos/nfsroot";
/// Each install stage's budget under TCG, in seconds, before scaling: a stage that takes
/// longer fails with its cause and the console's tail. Every budget stays below nextest's
/// `terminate-after` for the tests that run installs (a test checks it against
/// `.config/nextest.toml`), so a hung stage ends in pxelab's error, never a bare kill.
pub const STAGE_BUDGETS: &[(&str, u64)] = &[
    ("firmware → DHCP", 120),
    ("TFTP: GRUB", 120),
    ("TFTP: kernel", 180),
    ("kernel → NFS root", 180),
    ("installer: unpack image", 300),
    // Every other installer marker.
    ("installer: *", 180),
    ("firmware → disk", 180),
    ("installed system boots", 180),
    ("login", 60),
    ("command channel", 60),
];

/// How long the kernel may run without asking for an address before its NIC is suspected.
const KERNEL_DHCP_BUDGET: u64 = 60;
/// Budgets are multiplied by this under KVM, which boots several times faster than TCG.
const KVM_SCALE: f64 = 0.5;
/// And by this for an install with impaired traffic (loss, delay): lockstep TFTP and NFS
/// over a lossy link take several times longer.
const IMPAIRED_SCALE: f64 = 2.5;

/// An install's stage budgets: [`STAGE_BUDGETS`] times `PXELAB_TIMEOUT_SCALE` (as openQA's
/// TIMEOUT_SCALE, for a slow machine), times [`KVM_SCALE`] under KVM, times
/// [`IMPAIRED_SCALE`] when traffic is impaired.
#[derive(Debug, Clone, Copy)]
pub struct Budgets {
    scale: f64,
}

impl Budgets {
    pub fn new(accel: crate::vm::Accel, faults: &InstallFaults) -> Self {
        let user = std::env::var("PXELAB_TIMEOUT_SCALE").ok().and_then(|s| s.parse::<f64>().ok()).filter(|s| *s > 0.0).unwrap_or(1.0);
        let accel = if accel == crate::vm::Accel::Kvm { KVM_SCALE } else { 1.0 };
        let impaired = if faults.impair.is_empty() { 1.0 } else { IMPAIRED_SCALE };
        Budgets { scale: user * accel * impaired }
    }

    /// The budget of `stage` (an installer stage without its own uses `installer: *`).
    pub fn of(&self, stage: &str) -> Duration {
        let find = |name: &str| STAGE_BUDGETS.iter().find(|(s, _)| *s == name);
        let base = find(stage).or_else(|| stage.starts_with("installer: ").then(|| find("installer: *")).flatten());
        self.secs(base.map_or(180, |(_, secs)| *secs))
    }

    fn secs(&self, secs: u64) -> Duration {
        Duration::from_secs(secs).mul_f64(self.scale)
    }
}

fn stage_error(stage: &str, why: String) -> StageError {
    StageError { stage: stage.into(), elapsed: Duration::ZERO, source: why.into() }
}

/// What an install varies.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// Where the artifacts come from.
    pub provider: Provider,
    /// Files for `installer/` in the export's top layer (per-host `config-<mac>` and such).
    pub installer_files: Vec<(String, String)>,
    /// Faults injected during the install.
    pub faults: InstallFaults,
    /// The client's hardware.
    pub hardware: Hardware,
    /// Changes to the lab's configuration before it starts (to test bad DHCP setups).
    pub configure_lab: Option<fn(&mut PxeConfig)>,
    /// Who installs.
    pub client: Client,
    /// Wait out GRUB's menu countdown as a machine would, instead of pressing Enter at it
    /// (the default, which saves the countdown's seconds and changes nothing else).
    pub wait_out_boot_menus: bool,
    /// Power the client's firmware on from reset, instead of from its snapshot at the point
    /// where it turns from the blank disk to the network (the default, which saves ~4 s a
    /// client under TCG: [`crate::vm::Snapshot`]).
    pub cold_firmware: bool,
}

impl Default for InstallOptions {
    fn default() -> Self {
        InstallOptions {
            provider: Provider::Fixture { compression: Compression::Gzip },
            installer_files: Vec::new(),
            faults: InstallFaults::default(),
            hardware: Hardware::default(),
            configure_lab: None,
            client: Client::default(),
            wait_out_boot_menus: false,
            cold_firmware: false,
        }
    }
}

/// The install client's hardware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hardware {
    /// The NIC model; by default the one the artifact set's installed system names.
    pub nic: Option<NicModel>,
    pub disk_bus: DiskBus,
    pub disk_bytes: u64,
    pub memory_mib: u32,
    pub cpus: u32,
}

impl Default for Hardware {
    fn default() -> Self {
        Hardware { nic: None, disk_bus: DiskBus::Virtio, disk_bytes: 8 << 30, memory_mib: 1024, cpus: 1 }
    }
}

/// Faults injected during an install; every one is logged in `events.jsonl`.
#[derive(Debug, Clone, Default)]
pub struct InstallFaults {
    /// Seed of the fault injector (the same seed makes the same decisions).
    pub seed: u64,
    /// Impair the client's traffic, per direction, from its first frame on.
    pub impair: Vec<(Direction, Impairment)>,
    /// Take the client's link down for this long in the middle of the kernel's TFTP transfer.
    pub link_down_during_kernel: Option<Duration>,
    /// Stop the NFS server for this long from the moment the installer starts on the image
    /// (it mounts the new root and reads the image from the NFS root meanwhile).
    pub nfs_restart_during_unpack: Option<Duration>,
}

impl InstallOptions {
    /// The `pxelab run` command that runs this install again, with `--keep`; `None` when the
    /// options have no command-line form (a service-stack image).
    pub fn repro_command(&self, installer_dir: &std::path::Path) -> Option<String> {
        if self.configure_lab.is_some() || self.client != Client::default() {
            return None;
        }
        let path = |p: &std::path::Path| shell_quote(&std::path::absolute(p).unwrap_or_else(|_| p.to_owned()).display().to_string());
        let mut words = vec!["pxelab".to_owned(), "run".to_owned()];
        match &self.provider {
            Provider::Fixture { compression } => {
                words.push("install-default".into());
                if *compression != Compression::Gzip {
                    words.push(format!("--compression {}", format!("{compression:?}").to_lowercase()));
                }
            }
            Provider::NixosShape { services: None, console: SerialConsole::UPSTREAM } => words.push("install-nixos-shape".into()),
            Provider::NixosShape { .. } => return None,
            Provider::Dir(dir) => words.extend(["install-default".into(), format!("--artifacts {}", path(dir))]),
            Provider::Nix { installer, image } => {
                words.extend(["install-default".into(), format!("--nix-installer {}", path(installer)), format!("--nix-image {}", path(image))])
            }
        }
        if !self.installer_files.is_empty() {
            words.push(format!("--installer-dir {}", path(installer_dir)));
        }
        let (hw, default) = (&self.hardware, Hardware::default());
        if let Some(nic) = hw.nic {
            words.push(format!("--nic {}", serde_json::to_value(nic).ok()?.as_str()?));
        }
        if hw.disk_bus != default.disk_bus {
            words.push(format!("--disk-bus {}", format!("{:?}", hw.disk_bus).to_lowercase()));
        }
        if hw.disk_bytes != default.disk_bytes {
            // The flag takes whole GiB; a size that is not one has no command-line form.
            (hw.disk_bytes % (1 << 30) == 0).then_some(())?;
            words.push(format!("--disk-gib {}", hw.disk_bytes >> 30));
        }
        if hw.memory_mib != default.memory_mib {
            words.push(format!("--memory {}", hw.memory_mib));
        }
        if hw.cpus != default.cpus {
            words.push(format!("--cpus {}", hw.cpus));
        }
        let faults = &self.faults;
        words.push(format!("--seed {}", faults.seed));
        if let Some(&(_, impairment)) = faults.impair.first() {
            // The command line impairs one way or both alike.
            faults.impair.iter().all(|&(_, i)| i == impairment).then_some(())?;
            let direction = match faults.impair.as_slice() {
                [(Direction::In, _)] => "in",
                [(Direction::Out, _)] => "out",
                _ => "both",
            };
            let ms = |d: Duration| format!("{}ms", d.as_millis());
            let Impairment { loss, delay, jitter, duplicate, reorder, corrupt } = impairment;
            for (flag, percent) in [("loss", loss), ("duplicate", duplicate), ("reorder", reorder), ("corrupt", corrupt)] {
                if percent > 0.0 {
                    words.push(format!("--{flag} {}", (percent * 100.0 * 1e6).round() / 1e6));
                }
            }
            for (flag, d) in [("delay", delay), ("jitter", jitter)] {
                if !d.is_zero() {
                    words.push(format!("--{flag} {}", ms(d)));
                }
            }
            words.push(format!("--direction {direction}"));
        }
        if let Some(d) = faults.link_down_during_kernel {
            words.push(format!("--link-down-during-kernel {}ms", d.as_millis()));
        }
        if let Some(d) = faults.nfs_restart_during_unpack {
            words.push(format!("--nfs-restart-during-unpack {}ms", d.as_millis()));
        }
        if self.wait_out_boot_menus {
            words.push("--wait-out-boot-menus".into());
        }
        if self.cold_firmware {
            words.push("--cold-firmware".into());
        }
        words.push("--keep".into());
        Some(words.join(" "))
    }
}

/// GRUB's menu countdown, at which the install presses Enter (see
/// [`InstallOptions::wait_out_boot_menus`]).
const GRUB_COUNTDOWN: &str = r"The highlighted entry will be executed automatically in \d+s";

/// How long GRUB has to leave its menu after an Enter before the next. GRUB reads the UART
/// itself while OVMF's terminal driver polls it too, every 20 ms: whichever reads first takes
/// the key, so a press is often lost (GRUB then waited out its whole countdown). A press a
/// quarter second is many tries within the countdown; GRUB asks the TFTP server for its first
/// `load-kernel` file within milliseconds of taking one.
const ENTER_AGAIN_AFTER: Duration = Duration::from_millis(250);

/// The console pattern of an installer marker. A marker of the form `<step>...<result>` is
/// printed in two writes, the step before its work and the result after it (`Unpacking
/// image …...`, 20 s of `tar`, `done`): kernel lines the work brings (`random: crng init
/// done`, `EXT4-fs …`) land between the two, and the result then starts a line of its own.
fn marker_pattern(marker: &str) -> String {
    match marker.split_once("...") {
        Some((step, result)) if !step.is_empty() && !result.is_empty() => {
            let (step, result) = (regex::escape(step), regex::escape(result));
            format!(r"{step}\.\.\.(?:{result}|[^\n]*\n(?:[^\n]*\n)*?{result})")
        }
        _ => regex::escape(marker),
    }
}

/// The kernel's first console line.
const KERNEL_STARTED: &str = r"Linux version \S+";
/// The console line after which GRUB fetches the kernel.
const LOADING_KERNEL: &str = r"load-kernel\.cfg: loading kernel";
/// The firmware starting a boot entry from a disk (not the network): the evidence, with no
/// network boot traffic after the reboot, that the installed disk booted.
const DISK_BOOT: &str = r#"BdsDxe: starting (Boot[0-9A-F]{4}) "([^"]*)" from [^\n]*HD\("#;

/// Prints the device the root file system is mounted from, by its device number (a kernel
/// that mounted its root without an initrd calls it `/dev/root`); busybox and coreutils alike.
const ROOT_DEVICE: &str = "echo /dev/$(basename $(readlink /sys/dev/block/$(awk '$5 == \"/\" { print $3 }' /proc/self/mountinfo | tail -n 1)))";

/// The main job: [`install`] with the fixture artifacts and their default configuration.
pub async fn install_default(lab: &mut Lab) -> Result<(Report, Vm), StageError> {
    install(lab, &InstallOptions::default()).await
}

/// A client with a blank disk PXE-boots, installs the artifact set's system over the
/// protocol, reboots itself and boots the disk through its new NVRAM entry; then it is logged
/// in on the serial console as the set's `pxelab.toml` says. Returns the report and the
/// logged-in VM.
pub async fn install(lab: &mut Lab, options: &InstallOptions) -> Result<(Report, Vm), StageError> {
    let mut stages = lab.stages();
    if lab.repro().is_none() {
        if let Some(command) = options.repro_command(&lab.dir().join("nfs-top/installer")) {
            lab.set_repro(command);
        }
    }
    let (artifacts, config) = prepare(lab, &mut stages, std::slice::from_ref(options)).await?;
    let vm = stages
        .run("start network and QEMU", async {
            lab.start_network(config)?;
            start_client(lab, options, &artifacts).await
        })
        .await?;
    network_install(lab, vm, stages, &artifacts, options, 0).await
}

/// Several clients install at once on one lab network, each as [`install`]'s client with its
/// own [`Client`], hardware and faults; the artifacts, seed and lab configuration are the
/// first's, the installer files everyone's. Each client's stages are named after its VM
/// (`client-2: firmware → DHCP`). `Err`: a stage all share failed.
pub async fn install_together(lab: &mut Lab, installs: &[InstallOptions]) -> Result<Vec<Result<(Report, Vm), StageError>>, StageError> {
    let mut stages = lab.stages();
    let (artifacts, config) = prepare(lab, &mut stages, installs).await?;
    stages.run("start network", async { lab.start_network(config).map(drop) }).await?;
    let lab: &Lab = lab;
    let each = installs.iter().map(|options| {
        let artifacts = &artifacts;
        async move {
            let mut stages = lab.stages_for(&options.client.vm);
            let vm = stages.run("start QEMU", start_client(lab, options, artifacts)).await?;
            network_install(lab, vm, stages, artifacts, options, 0).await
        }
    });
    Ok(futures::future::join_all(each).await)
}

/// [`configure`] the lab for `installs`, then check the inputs.
async fn prepare(lab: &Lab, stages: &mut Stages, installs: &[InstallOptions]) -> Result<(ArtifactSet, PxeConfig), StageError> {
    let (artifacts, config) = configure(lab, stages, installs).await?;
    stages
        .run("check inputs", async {
            for options in installs {
                check_disk(options.hardware.disk_bytes)?;
            }
            config.check_install()?;
            crate::artifacts::check(&artifacts.tftp_root, &artifacts.nfs_layers, artifacts.system.console).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .await?;
    Ok((artifacts, config))
}

/// Build the artifacts, write the installer files into the export's top layer and configure
/// the lab for `installs`' clients; the artifacts, seed and lab configuration are the first's.
async fn configure(lab: &Lab, stages: &mut Stages, installs: &[InstallOptions]) -> Result<(ArtifactSet, PxeConfig), StageError> {
    let first = &installs[0];
    let top = lab.dir().join("nfs-top");
    let artifacts = stages.run("build artifacts", async { first.provider.provide(lab.cache()) }).await?;
    // Per-test files (installer/config-<mac>, ...) go into the top layer of the export.
    let layers = [vec![top.clone()], artifacts.nfs_layers.clone()].concat();
    std::fs::create_dir_all(top.join("installer")).map_err(|e| stage_error("start network", e.to_string()))?;
    for (name, contents) in installs.iter().flat_map(|o| &o.installer_files) {
        std::fs::write(top.join("installer").join(name), contents).map_err(|e| stage_error("start network", e.to_string()))?;
    }
    let mut config = PxeConfig::new(vec![artifacts.tftp_root.clone()]).nfs_root(NFS_EXPORT, layers);
    for Client { mac, ip, hostname, .. } in installs.iter().map(|o| &o.client) {
        config = config.host(*mac, *ip, hostname);
    }
    config.seed = first.faults.seed;
    if let Some(configure) = first.configure_lab {
        configure(&mut config);
    }
    Ok((artifacts, config))
}

/// Start `options`' client with a blank disk, its NIC on the lab's network, its faults set.
async fn start_client(lab: &Lab, options: &InstallOptions, artifacts: &ArtifactSet) -> Result<Vm, Box<dyn std::error::Error + Send + Sync>> {
    let Client { vm, mac, .. } = &options.client;
    let nic = options.hardware.nic.unwrap_or(artifacts.system.nic);
    let client = lab.pxe_client(vm, *mac, nic, nic.pxe_rom())?;
    for &(direction, impairment) in &options.faults.impair {
        lab.network().impair(*mac, direction, impairment);
    }
    let hw = &options.hardware;
    let client = client
        .memory_mib(hw.memory_mib)
        .cpus(hw.cpus)
        .console_unit(artifacts.system.console.unit)
        .disk_on(hw.disk_bus, Disk::Blank { bytes: hw.disk_bytes }, Some(1));
    let client = match options.cold_firmware {
        true => client,
        false => client.from_firmware_snapshot(),
    };
    Ok(client.start().await?)
}

/// The installed client installs again over its own disk, as an operator reinstalls a
/// machine: its shell sets `BootNext` to its IPv4 PXE entry (through efivarfs) and reboots;
/// the firmware PXE-boots and the install runs as [`install`]'s, with the same checks.
pub async fn reinstall(lab: &Lab, vm: Vm, options: &InstallOptions) -> Result<(Report, Vm), StageError> {
    let mut stages = lab.stages();
    let mac = options.client.mac;
    let artifacts = stages.run("build artifacts", async { options.provider.provide(lab.cache()) }).await?;
    let after = lab.network().events().count();
    stages
        .run("BootNext → PXE, reboot", async {
            let entries = vm.var_store().boot_entries()?;
            let nic = format!("MAC({})", hex::encode(mac));
            let Some(pxe) = entries.options.iter().find(|o| o.path.contains(&nic) && o.path.ends_with("IPv4")) else {
                return Err(format!("no IPv4 PXE entry for {nic} in NVRAM: {entries:?}").into());
            };
            vm.set_boot_next(pxe.number).await?;
            vm.reboot().await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .await?;
    network_install(lab, vm, stages, &artifacts, options, after).await
}

/// From a client's power-on or reboot into PXE to its login on the installed system: the
/// lab's events count from the first `after`. A failure whose cause shows no console lines
/// (a wait on the lab's events) gets the client's console tail.
async fn network_install(lab: &Lab, mut vm: Vm, stages: Stages, artifacts: &ArtifactSet, options: &InstallOptions, after: usize) -> Result<(Report, Vm), StageError> {
    match install_stages(lab, &mut vm, stages, artifacts, options, after).await {
        Ok(report) => Ok((report, vm)),
        Err(mut e) => {
            let why = crate::lab::chain(e.source.as_ref());
            if !why.contains(crate::console::TAIL_LABEL) {
                e.source = format!("{why}\n{}", vm.console().tail_block()).into();
            }
            Err(e)
        }
    }
}

async fn install_stages(lab: &Lab, vm: &mut Vm, mut stages: Stages, artifacts: &ArtifactSet, options: &InstallOptions, after: usize) -> Result<Report, StageError> {
    let faults = &options.faults;
    let nic = options.hardware.nic.unwrap_or(artifacts.system.nic);
    let mac = options.client.mac;
    let net = lab.network();
    let budgets = Budgets::new(vm.accel(), faults);
    let budget = |stage: &str| budgets.of(stage);
    stages.run("firmware → DHCP", net.wait_for_dhcp_lease_after(mac, after, budget("firmware → DHCP"))).await?;
    let listed = |e: EventWaitError| match e {
        EventWaitError::Refused { .. } => format!("{e}\n{}", tftp_listing(&artifacts.tftp_root)),
        other => other.to_string(),
    };
    // The firmware may start GRUB before its ACK of the last block reaches the server (a lost
    // ACK under loss): GRUB's first request, for its configuration, then says it runs.
    let grub = async {
        let fetched = net.wait_for_tftp_transfer_after(mac, "nixos/bootx64.efi", after, budget("TFTP: GRUB"));
        let grub_asks = tftp_request(net.lease_of(mac), after, Some("nixos/bootx64.efi"));
        tokio::select! {
            fetched = fetched => fetched.map(drop).map_err(listed),
            Ok(()) = net.events().wait_for("GRUB's first request", budget("TFTP: GRUB"), grub_asks) => Ok(()),
        }
    };
    // The firmware's PXE says why it gives up (`PXE-E16: No valid offer received.`).
    let pxe_error = async {
        let Ok(line) = vm.firmware_console().wait_for_console_text(r"PXE-E[0-9A-F]{2}: [^\n]*\n", budget("TFTP: GRUB")).await else {
            return std::future::pending().await;
        };
        let hint = match line.matched.contains("PXE-E16") {
            true => {
                let quirk = match net.dhcp_config().quirks.pxe_client_without_43 {
                    true => "; this lab's DHCP sends option 60 `PXEClient` without option 43 (Quirks::pxe_client_without_43)",
                    false => "",
                };
                format!(": OVMF's PXE takes an offer that carries option 60 `PXEClient` and no option 43 for no valid offer{quirk}")
            }
            false => String::new(),
        };
        Err::<(), String>(format!("the firmware's PXE gave up: {:?}{hint}", line.matched.trim()))
    };
    stages
        .run("TFTP: GRUB", async {
            tokio::select! {
                grub = grub => grub,
                failed = pxe_error => failed,
            }
        })
        .await?;
    let link_down = async {
        let Some(down_for) = faults.link_down_during_kernel else { return };
        if vm.wait_for_console_text(LOADING_KERNEL, budget("TFTP: kernel")).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(300)).await;
            net.block(mac);
            tokio::time::sleep(down_for).await;
            net.unblock(mac);
        }
    };
    // The kernel, not the initrd: GRUB may boot before its ACK of the initrd's last block
    // leaves the wire, so the server cannot always see that last transfer complete. A set
    // without an initrd (upstream's) has that race on the kernel's last block: the kernel's
    // banner then says that GRUB had it all. `true`: the banner came first.
    let kernel = async {
        tokio::select! {
            fetched = net.wait_for_tftp_transfer_after(mac, "nixos/bzImage", after, budget("TFTP: kernel")) => fetched.map(|_| false).map_err(listed),
            () = async {
                if vm.wait_for_console_text(KERNEL_STARTED, budget("TFTP: kernel")).await.is_err() {
                    std::future::pending::<()>().await;
                }
            } => {
                tracing::info!("the kernel started before its download's last ACK reached the server: GRUB booted right after the last block");
                Ok(true)
            }
        }
    };
    let kernel = stages.run("TFTP: kernel", kernel);
    // Enter at GRUB's menu (a GRUB without a countdown just boots). The firmware may take the
    // key before GRUB does ([`ENTER_AGAIN_AFTER`]), and a GRUB sometimes takes it only as the
    // end of its countdown and stays in the menu: Enter again, for as long as the stage runs,
    // until it asks the TFTP server for a file, the sign that it left the menu.
    let press_enter = async {
        if !options.wait_out_boot_menus && vm.wait_for_console_text(GRUB_COUNTDOWN, budget("TFTP: kernel")).await.is_ok() {
            let ip = net.lease_of(mac);
            for press in 1.. {
                let seen = net.events().count();
                tracing::info!("Enter at GRUB's menu ({press})");
                if let Err(e) = vm.send_keys("\r").await {
                    tracing::warn!("cannot press Enter at GRUB's menu: {e}");
                    break;
                }
                let asked = tftp_request(ip, seen, None);
                if !matches!(net.events().wait_for("GRUB to leave its menu", ENTER_AGAIN_AFTER, asked).await, Err(EventWaitError::Timeout { .. })) {
                    break;
                }
            }
        }
        std::future::pending::<()>().await
    };
    let kernel = tokio::select! {
        (kernel, ()) = async { tokio::join!(kernel, link_down) } => kernel,
        () = press_enter => unreachable!("pending"),
    };
    let kernel_started = kernel?;
    // A kernel with no driver for the NIC never asks for an address: it panics when its NFS
    // root fails, or waits. Either way, say why, within a minute of the kernel's start (GRUB
    // may still be fetching an initrd after the kernel's download).
    let after_kernel = net.events().count();
    let no_lease = |waited: Duration| {
        format!(
            "no DHCP lease for the kernel after {waited:.0?}: has it a driver for the client's {} NIC? \
             (upstream's kernel has e1000, e1000e and igb built in, and virtio-net only as a module it cannot load before \
             its NFS root)",
            nic.device()
        )
    };
    let kernel_dhcp = async {
        if !kernel_started {
            if let Err(e) = vm.wait_for_console_text(KERNEL_STARTED, budget("kernel → NFS root")).await {
                return Err(e.to_string());
            }
        }
        let why = match net.wait_for_dhcp_lease_after(mac, after_kernel, budgets.secs(KERNEL_DHCP_BUDGET)).await {
            Ok(_) => return std::future::pending().await,
            Err(EventWaitError::Timeout { waited, .. }) => no_lease(waited),
            Err(e) => e.to_string(),
        };
        Err(why)
    };
    let setup = async { vm.wait_for_console_text(&regex::escape(NFS_SETUP_MARKER), budget("kernel → NFS root")).await.map_err(|e| e.to_string()) };
    let stage_started = tokio::time::Instant::now();
    stages
        .run("kernel → NFS root", async {
            let result = tokio::select! {
                setup = setup => setup,
                failed = kernel_dhcp => failed,
            };
            result.map(drop).map_err(|why| match leased_after(lab, mac, after_kernel) || why.contains("no DHCP lease for the kernel") {
                true => why,
                false => format!("{}\n{why}", no_lease(stage_started.elapsed())),
            })
        })
        .await?;
    // An installer file as the client sees it: the export's top layer first.
    let layers = [vec![lab.dir().join("nfs-top")], artifacts.nfs_layers.clone()].concat();
    let installer_file = |name: &str| layers.iter().find_map(|l| std::fs::read_to_string(l.join("installer").join(name)).ok());
    let patterns: Vec<String> = INSTALL_STAGES.iter().map(|(_, marker)| marker_pattern(marker)).collect();
    for (i, (stage, marker)) in INSTALL_STAGES.iter().enumerate() {
        let (name, pattern) = (format!("installer: {stage}"), &patterns[i]);
        // A later step's marker first: this one's text changed or was broken up.
        let later = &patterns[i + 1..];
        let wait = stages.run(&name, async {
            let waited = vm.wait_for_console_text_before(pattern, later, budget(&name)).await;
            waited.map_err(|e| match e {
                ConsoleError::FailFast { ref fail_fast, .. } if later.contains(fail_fast) => format!(
                    "the installer went on to a later step without printing {marker:?}, the protocol's marker of this one \
                     (§3): a changed or broken-up message\n{e}"
                )
                .into(),
                e => crate::diagnose::diagnose(Box::new(e), &vm.console().text(), installer_file),
            })
        });
        match faults.nfs_restart_during_unpack.filter(|_| *stage == "unpack image") {
            Some(down_for) => {
                // From the end of the previous stage: the installer mounts the disk and
                // reads the image from the NFS root while the server is down.
                let restart = async {
                    net.stop_server(Server::Nfs);
                    tokio::time::sleep(down_for).await;
                    net.start_server(Server::Nfs);
                };
                tokio::join!(wait, restart).0?;
            }
            None => drop(wait.await?),
        }
    }
    let (dhcp_before_reboot, boot_before_reboot) = (dhcp_events(lab, mac), network_boot_events(lab, mac));
    let booted = stages.run("firmware → disk", vm.firmware_console().wait_for_console_text(DISK_BOOT, budget("firmware → disk"))).await?;
    let login = &artifacts.system.login;
    stages.run("installed system boots", vm.wait_for_console_text(&login.prompt, budget("installed system boots"))).await?;
    stages
        .run("login", async {
            vm.send_line(&login.user).await?;
            vm.wait_for_console_text(&login.password_prompt, budget("login")).await?;
            vm.send_line(&login.password).await?;
            vm.wait_for_console_text(&login.shell_prompt, budget("login")).await
        })
        .await?;
    // A root shell on the command port, if the system runs one, takes the commands from here on.
    let backdoor = stages
        .run("command channel", async {
            match artifacts.system.backdoor {
                Some(false) => Ok(false),
                None => Ok(vm.connect_backdoor(Duration::from_secs(2)).await),
                Some(true) => match vm.connect_backdoor(budget("command channel")).await {
                    true => Ok(true),
                    false => Err(format!(
                        "no root shell answered on ttyS{} (the command port) in {:.0?}, and the artifact set says its system runs \
                         one (`backdoor = true` in pxelab.toml)",
                        vm.command_unit(),
                        budget("command channel")
                    )),
                },
            }
        })
        .await?;
    let channel = match backdoor {
        true => format!("ttyS{} (backdoor shell)", vm.command_unit()),
        false => format!("ttyS{} (console login)", vm.console_unit()),
    };
    let system = &artifacts.system;
    let ready = stages
        .run("system ready", async {
            match vm.execute(&system.ready_command).await? {
                (0, output) => Ok(output),
                (status, output) => {
                    let (_, diagnosis) = vm.execute(&system.diagnose_command).await?;
                    let why = format!("{:?} exited {status}: {output}\n{}", system.ready_command, banner("diagnosis", &diagnosis));
                    Err(Box::<dyn std::error::Error + Send + Sync>::from(why))
                }
            }
        })
        .await?;
    let dhcp_after_reboot = dhcp_events(lab, mac) - dhcp_before_reboot;
    let boot_after_reboot = network_boot_events(lab, mac) - boot_before_reboot;
    let facts = stages
        .run("check the system", async {
            let entries = vm.var_store().boot_entries()?;
            let first = entries.first().map(|o| format!("Boot{:04X} {} {}", o.number, o.description, o.path)).unwrap_or_default();
            let root = vm.succeed(ROOT_DEVICE).await?;
            let labelled = vm.succeed("findfs LABEL=nixos").await?;
            let version = vm.succeed(&system.version_command).await?;
            let hostname = vm.succeed("hostname").await?;
            let modes = vm.succeed("stat -c %a / /tmp").await?.split_whitespace().collect::<Vec<_>>().join(" ");
            if modes != "755 1777" {
                return Err(format!(
                    "the installed system's / and /tmp have modes {modes}, where the protocol has 755 and 1777: the installer \
                     must set them after unpacking (`chmod 755 /mnt`, `chmod 1777 /mnt/tmp`), whatever modes the image carries"
                )
                .into());
            }
            let group = |i: usize| booted.groups.get(i).cloned().flatten().unwrap_or_default();
            let firmware_start = match vm.firmware_start() {
                FirmwareStart::PowerOn => "power-on".to_owned(),
                FirmwareStart::Saved(s) => format!("power-on, saving the snapshot {}", s.state().display()),
                FirmwareStart::Restored(s) => format!("the snapshot {}", s.state().display()),
            };
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(vec![
                ("firmware started from", firmware_start),
                ("image version", version),
                ("hostname", hostname),
                ("modes of / and /tmp", modes),
                ("system state", ready),
                ("commands on", channel),
                ("root file system", root),
                ("LABEL=nixos", labelled),
                ("firmware booted", format!("{} {}", group(0), group(1))),
                ("first boot entry", first),
                ("network boot requests after the reboot", boot_after_reboot.to_string()),
                ("DHCP requests after the reboot", dhcp_after_reboot.to_string()),
            ])
        })
        .await?;
    Ok(Report::new(stages, facts))
}

/// The protocol's layout: a 512 MiB ESP, and the last 4 GiB left unused.
const LAYOUT_BYTES: u64 = (512 << 20) + (4 << 30);

/// A disk the protocol's layout fits on.
fn check_disk(bytes: u64) -> Result<(), String> {
    match bytes > LAYOUT_BYTES {
        true => Ok(()),
        false => Err(format!(
            "the client's disk of {:.1} GiB is too small for the protocol's layout: the ESP takes 512 MiB and the last 4 GiB stay unused, so it needs more than 4.5 GiB",
            bytes as f64 / f64::from(1 << 30)
        )),
    }
}

/// A client for the user to start by hand against a served lab ([`serve`]).
#[derive(Debug, Clone)]
pub struct HandClient {
    pub name: String,
    pub mac: [u8; 6],
    pub ip: std::net::Ipv4Addr,
    pub hostname: String,
    /// The QEMU command line, ready to paste into a shell.
    pub command: String,
}

/// `pxelab serve`: the lab's network alone, DHCP, TFTP and NFS for the artifacts of
/// `options`, with a host entry for each of `clients`; and for each, an NVRAM copy, a blank
/// disk and the QEMU command line that PXE-boots it on the lab through `socket` (which the
/// caller listens on and plugs in with [`crate::lab::Network::plug_stream`]).
pub async fn serve(lab: &mut Lab, options: &InstallOptions, clients: u8, socket: &std::path::Path) -> Result<Vec<HandClient>, StageError> {
    let mut stages = lab.stages();
    let installs: Vec<InstallOptions> = (1..=clients).map(|n| InstallOptions { client: Client::nth(n), ..options.clone() }).collect();
    let (artifacts, config) = configure(lab, &mut stages, &installs).await?;
    stages.run("start network", async { lab.start_network(config).map(drop) }).await?;
    stages
        .run("prepare clients", async {
            let firmware = pxelab_ovmf::discover()?;
            let accel = crate::vm::select_accel(&firmware, lab.cache().root()).await?;
            let hw = &options.hardware;
            let nic = hw.nic.unwrap_or(artifacts.system.nic);
            let mut out = Vec::new();
            for Client { vm: name, mac, ip, hostname } in installs.iter().map(|o| o.client.clone()) {
                let dir = lab.dir().join(&name);
                std::fs::create_dir_all(&dir)?;
                let vars = firmware.new_var_store(&dir.join("OVMF_VARS.fd"))?;
                let (path, format) = crate::vm::make_disk(&dir, 0, Disk::Blank { bytes: hw.disk_bytes }).await?;
                let spec = crate::vm::VmSpec {
                    name: name.clone(),
                    accel,
                    memory_mib: hw.memory_mib,
                    cpus: hw.cpus,
                    firmware: Some((firmware.code.clone(), vars.path.clone())),
                    disks: vec![crate::vm::DiskSpec { path, format, bus: hw.disk_bus, bootindex: Some(1), serial: Some("pxelab0".into()) }],
                    nics: vec![crate::vm::NicSpec { model: nic, mac, rom: nic.pxe_rom(), bootindex: Some(2), backend: crate::vm::NetBackend::Unix { path: socket.to_owned() } }],
                    serial: hand_serial(artifacts.system.console.unit, &dir),
                    qmp_fd: None,
                    incoming: None,
                };
                let plain = |w: &str| w.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./,=:@+".contains(&b));
                let command = spec.argv().iter().map(|w| if plain(w) { w.clone() } else { shell_quote(w) }).collect::<Vec<_>>().join(" ");
                std::fs::write(dir.join("qemu.cmdline"), format!("{command}\n"))?;
                out.push(HandClient { name, mac, ip, hostname, command });
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(out)
        })
        .await
}

/// A hand-started client's serial ports: the system's console in the user's terminal, each
/// port before it (COM1 holds the firmware's output) in a file in the client's directory.
fn hand_serial(console_unit: u8, dir: &std::path::Path) -> Vec<crate::vm::Serial> {
    let before = (0..console_unit).map(|unit| crate::vm::Serial::File(dir.join(format!("ttyS{unit}.log"))));
    before.chain([crate::vm::Serial::Stdio]).collect()
}

/// An event check: the client at `ip` asked the TFTP server for a file (other than `except`)
/// after the first `after` events.
fn tftp_request(ip: Option<std::net::Ipv4Addr>, after: usize, except: Option<&str>) -> impl Fn(&[(Duration, ServiceEvent)]) -> Option<()> + '_ {
    move |events| {
        let asked = |e: &ServiceEvent| matches!(e, ServiceEvent::Tftp(t) if Some(t.client) == ip && Some(t.file.trim_start_matches('/')) != except);
        events.iter().skip(after).any(|(_, e)| asked(e)).then_some(())
    }
}

/// What the TFTP root's `nixos/` holds, for an error about a file it lacks.
fn tftp_listing(root: &std::path::Path) -> String {
    let dir = root.join("nixos");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    format!("the TFTP root {} holds: {}", dir.display(), if names.is_empty() { "nothing".into() } else { names.join(", ") })
}

/// Whether `mac` got a lease among the events after the first `after`.
fn leased_after(lab: &Lab, mac: [u8; 6], after: usize) -> bool {
    let mac = crate::vm::mac_string(&mac);
    lab.network().events().all().iter().skip(after).any(|(_, e)| lease_for(e, &mac).is_some())
}

/// How many DHCP requests `mac` has made so far (an installed system may run DHCP itself).
fn dhcp_events(lab: &Lab, mac: [u8; 6]) -> usize {
    let mac = crate::vm::mac_string(&mac);
    lab.network().events().all().iter().filter(|(_, e)| matches!(e, ServiceEvent::Dhcp(d) if d.mac == mac)).count()
}

/// How many network boot requests `mac` has made so far: firmware DHCP (client architecture
/// or a `PXEClient` vendor class) and TFTP transfers from its addresses.
fn network_boot_events(lab: &Lab, mac: [u8; 6]) -> usize {
    let mac = crate::vm::mac_string(&mac);
    let events = lab.network().events().all();
    let ips = addresses_of(&events, &mac);
    events
        .iter()
        .filter(|(_, e)| match e {
            ServiceEvent::Dhcp(d) => d.mac == mac && (d.arch.is_some() || d.vendor_class.as_deref().is_some_and(|c| c.starts_with("PXEClient"))),
            ServiceEvent::Tftp(t) => ips.contains(&t.client),
            _ => false,
        })
        .count()
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_hand_client_has_its_systems_console_in_the_terminal() {
        use crate::vm::Serial;
        assert_eq!(hand_serial(0, "/c".as_ref()), [Serial::Stdio]);
        assert_eq!(hand_serial(2, "/c".as_ref()), [Serial::File("/c/ttyS0.log".into()), Serial::File("/c/ttyS1.log".into()), Serial::Stdio]);
    }

    #[test]
    fn a_two_part_marker_is_found_around_kernel_lines_between_its_parts() {
        let unpack = regex::Regex::new(&marker_pattern("Unpacking image /installer/nixos-image...done")).unwrap();
        for console in [
            "Unpacking image /installer/nixos-image...done\r\n",
            "Unpacking image /installer/nixos-image...random: crng init done\r\ndone\r\n",
            "Unpacking image /installer/nixos-image...clocksource: timekeeping watchdog\r\nclocksource: 'hpet' wd_now\r\ndone\r\n",
        ] {
            let found = unpack.find(console).unwrap_or_else(|| panic!("not in {console:?}"));
            assert!(found.as_str().ends_with("\ndone") || found.as_str().ends_with("...done"), "{:?}", found.as_str());
        }
        // The result belongs to the step: not another step's, and not a kernel line's.
        for console in [
            "Unpacking image /installer/nixos-image...\r\n...activation done\r\n",
            "Unpacking image /installer/nixos-image...random: crng init done\r\n",
            "Unpacking image /installer/nixos-image/other...done\r\n",
        ] {
            assert!(!unpack.is_match(console), "{console:?}");
        }
        // A marker printed in one write stays literal.
        assert_eq!(marker_pattern("...udev done"), regex::escape("...udev done"));
    }

    /// Time an install takes before its slowest stage starts, on a loaded 2-core machine.
    const BEFORE_THE_STAGE: u64 = 180;

    /// Every stage budget of an install, plus the time before it, stays below the
    /// `terminate-after` that nextest gives the tests running installs, so a hung stage ends in
    /// pxelab's error (stage, cause, console tail) and not in nextest's kill.
    #[test]
    fn stage_budgets_stay_below_nextests_terminate_after() {
        let config: toml::Value = toml::from_str(include_str!("../../.config/nextest.toml")).unwrap();
        let overrides = config["profile"]["default"]["overrides"].as_array().unwrap();
        let vm_groups: Vec<_> = overrides.iter().filter(|o| o.get("test-group").and_then(|g| g.as_str()) == Some("vm")).collect();
        assert!(vm_groups.len() >= 3, "{vm_groups:?}");
        let longest = STAGE_BUDGETS.iter().map(|(_, secs)| *secs).max().unwrap();
        for group in vm_groups {
            let timeout = &group["slow-timeout"];
            let period: u64 = timeout["period"].as_str().unwrap().trim_end_matches('s').parse().unwrap();
            let kill = period * timeout["terminate-after"].as_integer().unwrap() as u64;
            let filter = group["filter"].as_str().unwrap();
            let scale = if filter.contains("binary(faults)") { IMPAIRED_SCALE } else { 1.0 };
            let worst = (longest as f64 * scale) as u64 + BEFORE_THE_STAGE;
            assert!(worst < kill, "{filter}: a {worst} s stage outlasts nextest's {kill} s");
        }
        let tcg = Budgets::new(crate::vm::Accel::Tcg, &InstallFaults::default());
        assert_eq!(tcg.of("installer: file systems"), Duration::from_secs(180));
        assert_eq!(tcg.of("installer: unpack image"), Duration::from_secs(300));
        let kvm = Budgets::new(crate::vm::Accel::Kvm, &InstallFaults::default());
        assert_eq!(kvm.of("login"), Duration::from_secs(30));
    }
}
