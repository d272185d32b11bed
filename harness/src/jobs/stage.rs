//! The stages of pxelab's scenarios, and the budgets of an install's stages.
//!
//! A stage is a value of [`Stage`]: the stage tables, the report, the budgets, `pxelab bench`
//! and the matrix name stages through it, so a misspelt stage does not compile.

use std::time::Duration;

use pxelab_fixtures::InstallerStep;

use super::options::InstallFaults;

/// A stage of one of pxelab's scenarios, as its stage table names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// `build artifacts`: the artifact set, from the cache or built.
    BuildArtifacts,
    /// `check inputs`: what cannot work is refused before anything boots.
    CheckInputs,
    /// `start network and QEMU` (one client).
    StartNetworkAndQemu,
    /// `start network` (several clients, or `serve`).
    StartNetwork,
    /// `start QEMU` (each of several clients; the UEFI disk).
    StartQemu,
    /// `prepare clients`: `serve`'s NVRAM copies, disks and command lines.
    PrepareClients,
    /// `BootNext → PXE, reboot`: an installed client turned back to the network.
    BootNextPxe,
    /// `start network and QEMU on the cached install`: a client on an installed disk
    /// ([`super::InstallOptions::cached_install`]).
    StartCachedInstall,
    /// `save the installed disk`: the installer's disk and NVRAM, kept in the cache at the
    /// machine's reset.
    SaveInstalledDisk,
    /// `firmware → DHCP`: the firmware's lease.
    FirmwareDhcp,
    /// `TFTP: GRUB`: the boot loader fetched (or asking for its configuration).
    TftpGrub,
    /// `TFTP: kernel`.
    TftpKernel,
    /// `kernel → NFS root`: the kernel's DHCP and the NFS root's setup marker.
    KernelNfsRoot,
    /// `iPXE: script`: iPXE fetched the netboot set's script by HTTP.
    IpxeScript,
    /// `HTTP: kernel and initrd`: what the netboot script loads, fetched.
    HttpKernel,
    /// `installer: <step>`: the installer printed the step's marker.
    Installer(InstallerStep),
    /// `firmware → disk`: the firmware started a boot entry from the disk.
    FirmwareDisk,
    /// `installed system boots`: its login prompt.
    SystemBoots,
    /// `login`.
    Login,
    /// `command channel`: a backdoor shell, or the console login.
    CommandChannel,
    /// `system ready`: the artifact set's ready command succeeded.
    SystemReady,
    /// `check the system`: the facts read from the installed system.
    CheckTheSystem,
    /// `find host files` (the UEFI disk fixture).
    FindHostFiles,
    /// `build fixture` (the UEFI disk fixture).
    BuildFixture,
    /// `firmware → GRUB` (the UEFI disk fixture).
    FirmwareGrub,
    /// `kernel → shell` (the UEFI disk fixture).
    KernelShell,
    /// `uname -r` (the UEFI disk fixture).
    Uname,
    /// `power off` (the UEFI disk fixture).
    PowerOff,
}

impl Stage {
    /// The stage's name in stage tables and reports.
    pub const fn name(self) -> &'static str {
        match self {
            Stage::BuildArtifacts => "build artifacts",
            Stage::CheckInputs => "check inputs",
            Stage::StartNetworkAndQemu => "start network and QEMU",
            Stage::StartNetwork => "start network",
            Stage::StartQemu => "start QEMU",
            Stage::PrepareClients => "prepare clients",
            Stage::BootNextPxe => "BootNext → PXE, reboot",
            Stage::StartCachedInstall => "start network and QEMU on the cached install",
            Stage::SaveInstalledDisk => "save the installed disk",
            Stage::FirmwareDhcp => "firmware → DHCP",
            Stage::TftpGrub => "TFTP: GRUB",
            Stage::TftpKernel => "TFTP: kernel",
            Stage::KernelNfsRoot => "kernel → NFS root",
            Stage::IpxeScript => "iPXE: script",
            Stage::HttpKernel => "HTTP: kernel and initrd",
            Stage::Installer(step) => match step {
                InstallerStep::Start => "installer: installer start",
                InstallerStep::ModulesAndUdev => "installer: kernel modules and udev",
                InstallerStep::CustomConfiguration => "installer: custom configuration",
                InstallerStep::Partitions => "installer: disk label and partitions",
                InstallerStep::FileSystems => "installer: file systems",
                InstallerStep::UnpackImage => "installer: unpack image",
                InstallerStep::SystemConfiguration => "installer: system configuration",
                InstallerStep::Activation => "installer: activation (boot loader, NVRAM)",
                InstallerStep::Reboot => "installer: reboot",
            },
            Stage::FirmwareDisk => "firmware → disk",
            Stage::SystemBoots => "installed system boots",
            Stage::Login => "login",
            Stage::CommandChannel => "command channel",
            Stage::SystemReady => "system ready",
            Stage::CheckTheSystem => "check the system",
            Stage::FindHostFiles => "find host files",
            Stage::BuildFixture => "build fixture",
            Stage::FirmwareGrub => "firmware → GRUB",
            Stage::KernelShell => "kernel → shell",
            Stage::Uname => "uname -r",
            Stage::PowerOff => "power off",
        }
    }

    /// The stages of an install from the client's start to its check, in order.
    pub fn install() -> impl Iterator<Item = Stage> {
        let network = [Stage::FirmwareDhcp, Stage::TftpGrub, Stage::TftpKernel, Stage::KernelNfsRoot];
        let installed = [Stage::FirmwareDisk, Stage::SystemBoots, Stage::Login, Stage::CommandChannel, Stage::SystemReady, Stage::CheckTheSystem];
        network.into_iter().chain(InstallerStep::ALL.map(Stage::Installer)).chain(installed)
    }

    /// The stage of this name, of any scenario.
    pub fn named(name: &str) -> Option<Stage> {
        const OTHERS: [Stage; 17] = [
            Stage::IpxeScript,
            Stage::HttpKernel,
            Stage::BuildArtifacts,
            Stage::CheckInputs,
            Stage::StartNetworkAndQemu,
            Stage::StartNetwork,
            Stage::StartQemu,
            Stage::PrepareClients,
            Stage::BootNextPxe,
            Stage::StartCachedInstall,
            Stage::SaveInstalledDisk,
            Stage::FindHostFiles,
            Stage::BuildFixture,
            Stage::FirmwareGrub,
            Stage::KernelShell,
            Stage::Uname,
            Stage::PowerOff,
        ];
        Stage::install().chain(OTHERS).find(|s| s.name() == name)
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl AsRef<str> for Stage {
    fn as_ref(&self) -> &str {
        self.name()
    }
}

/// Each install stage's budget under TCG, in seconds, before scaling: a stage that takes
/// longer fails with its cause and the console's tail. Every budget stays below nextest's
/// `terminate-after` for the tests that run installs (a test checks it against
/// `.config/nextest.toml`), so a hung stage ends in pxelab's error, never a bare kill.
pub const fn budget_secs(stage: Stage) -> u64 {
    match stage {
        Stage::FirmwareDhcp | Stage::TftpGrub => 120,
        Stage::Installer(InstallerStep::UnpackImage) => 300,
        Stage::Login | Stage::CommandChannel => 60,
        // TFTP: kernel, kernel → NFS root, every other installer step, firmware → disk,
        // installed system boots, and the rest.
        _ => 180,
    }
}

/// How long the kernel may run without asking for an address before its NIC is suspected.
pub(crate) const KERNEL_DHCP_BUDGET: u64 = 60;
/// Budgets are multiplied by this under KVM, which boots several times faster than TCG.
const KVM_SCALE: f64 = 0.5;
/// And by this for an install with impaired traffic (loss, delay): lockstep TFTP and NFS
/// over a lossy link take several times longer.
pub(crate) const IMPAIRED_SCALE: f64 = 2.5;

/// An install's stage budgets: [`budget_secs`] times `PXELAB_TIMEOUT_SCALE` (as openQA's
/// TIMEOUT_SCALE, for a slow machine), times 0.5 under KVM, times 2.5 when traffic is
/// impaired.
#[derive(Debug, Clone, Copy)]
pub struct Budgets {
    scale: f64,
}

impl Budgets {
    /// The budgets of an install under `accel` with `faults`.
    pub fn new(accel: crate::vm::Accel, faults: &InstallFaults) -> Self {
        let user = std::env::var("PXELAB_TIMEOUT_SCALE").ok().and_then(|s| s.parse::<f64>().ok()).filter(|s| *s > 0.0).unwrap_or(1.0);
        let accel = if accel == crate::vm::Accel::Kvm { KVM_SCALE } else { 1.0 };
        let impaired = if faults.impaired() { IMPAIRED_SCALE } else { 1.0 };
        Budgets { scale: user * accel * impaired }
    }

    /// The budget of `stage`.
    pub fn of(&self, stage: Stage) -> Duration {
        self.secs(budget_secs(stage))
    }

    pub(crate) fn secs(&self, secs: u64) -> Duration {
        Duration::from_secs(secs).mul_f64(self.scale)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn each_stage_has_one_name_and_is_found_by_it() {
        let mut names = std::collections::HashSet::new();
        for stage in Stage::install() {
            assert!(names.insert(stage.name()), "{stage:?}");
            assert_eq!(Stage::named(stage.name()), Some(stage));
        }
        for step in InstallerStep::ALL {
            assert_eq!(Stage::Installer(step).name(), format!("installer: {}", step.name()));
        }
        assert_eq!(Stage::named("TFTP: grub"), None);
    }

    /// Time an install takes before its slowest stage starts, on a loaded 2-core machine.
    const BEFORE_THE_STAGE: u64 = 180;

    /// Every stage budget of an install, plus the time before it, stays below the
    /// `terminate-after` that nextest gives the tests running installs, so a hung stage ends in
    /// pxelab's error (stage, cause, console tail) and not in nextest's kill.
    #[test]
    fn stage_budgets_stay_below_nextests_terminate_after() {
        let config: toml::Value = toml::from_str(include_str!("../../../.config/nextest.toml")).unwrap();
        let overrides = config["profile"]["default"]["overrides"].as_array().unwrap();
        let vm_groups: Vec<_> = overrides.iter().filter(|o| o.get("test-group").and_then(|g| g.as_str()) == Some("vm")).collect();
        assert!(vm_groups.len() >= 3, "{vm_groups:?}");
        let longest = Stage::install().map(budget_secs).max().unwrap();
        for group in vm_groups {
            let timeout = &group["slow-timeout"];
            let period: u64 = timeout["period"].as_str().unwrap().trim_end_matches('s').parse().unwrap();
            let kill = period * timeout["terminate-after"].as_integer().unwrap() as u64;
            let filter = group["filter"].as_str().unwrap();
            let scale = if filter.contains("binary(faults)") { IMPAIRED_SCALE } else { 1.0 };
            let worst = (longest as f64 * scale) as u64 + BEFORE_THE_STAGE;
            assert!(worst < kill, "{filter}: a {worst} s stage outlasts nextest's {kill} s");
        }
    }

    #[test]
    fn budgets_scale_and_unpack_has_its_own() {
        let tcg = Budgets::new(crate::vm::Accel::Tcg, &InstallFaults::default());
        assert_eq!(tcg.of(Stage::Installer(InstallerStep::FileSystems)), Duration::from_secs(180));
        assert_eq!(tcg.of(Stage::Installer(InstallerStep::UnpackImage)), Duration::from_secs(300));
        let kvm = Budgets::new(crate::vm::Accel::Kvm, &InstallFaults::default());
        assert_eq!(kvm.of(Stage::Login), Duration::from_secs(30));
    }
}
