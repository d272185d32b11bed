//! The one registry of runnable scenarios: `pxelab list`, `pxelab run`, `pxelab matrix` and
//! the scenario tests all name scenarios through [`SCENARIOS`].
//!
//! A new scenario is one more `pub const` [`Scenario`] here, listed in [`SCENARIOS`].

use super::{InstallOptions, InstallReport, Report};
use crate::artifacts::Provider;
use crate::lab::{Lab, StageError};
use crate::vm::{DiskBus, Vm};

/// A scenario: its name, what it does, and what it runs.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// The name `pxelab run` and matrix files take.
    pub name: &'static str,
    /// One line for `pxelab list`.
    pub about: &'static str,
    /// What it runs.
    pub runs: Runs,
}

/// What a scenario runs.
#[derive(Debug, Clone, Copy)]
pub enum Runs {
    /// An install ([`fn@super::install`]). `artifacts` says whose; `adapt` changes the options
    /// the run gives (hardware, faults, the artifacts' provider) into the scenario's.
    Install {
        /// Whose artifacts it installs.
        artifacts: Artifacts,
        /// Makes the run's options the scenario's.
        adapt: fn(InstallOptions) -> InstallOptions,
    },
    /// The UEFI disk fixture's boot ([`super::uefi_boot`]): no artifacts, no options.
    UefiBoot,
}

/// Whose artifacts an install scenario installs.
#[derive(Debug, Clone, Copy)]
pub enum Artifacts {
    /// The run's: the fixture's unless the user gives theirs (`--artifacts`, `--nix-*`,
    /// a matrix set).
    Given,
    /// The scenario's own flavour: given artifacts are refused.
    Own(fn() -> Provider),
}

/// Why a scenario cannot run as asked.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// No scenario has this name.
    #[error("no scenario named {name:?}; `pxelab list` shows them ({})", names())]
    Unknown {
        /// The name asked for.
        name: String,
    },
    /// The scenario installs artifacts of its own, and others were given.
    #[error("{name} builds its own artifacts; run install-default with --artifacts or --nix-*")]
    OwnArtifacts {
        /// The scenario.
        name: &'static str,
    },
    /// The scenario is no install, and install options were asked of it.
    #[error("{name} is not an install: it takes no artifacts, hardware or faults")]
    NotAnInstall {
        /// The scenario.
        name: &'static str,
    },
}

/// The main job: the busybox fixture (or the user's artifacts) installed on a blank disk.
pub const INSTALL_DEFAULT: Scenario = Scenario {
    name: "install-default",
    about: "PXE-install the fixture system on a blank disk, reboot into it from the disk, log in (the main job)",
    runs: Runs::Install { artifacts: Artifacts::Given, adapt: |options| options },
};

/// The install onto an NVMe disk, with the per-MAC config `partitionSeparator=p` it needs.
pub const INSTALL_NVME: Scenario = Scenario {
    name: "install-nvme",
    about: "The same install onto an NVMe disk (/dev/nvme0n1, partitionSeparator=p in a per-MAC config)",
    runs: Runs::Install { artifacts: Artifacts::Given, adapt: nvme },
};

/// The install with the upstream-shaped `nixos-shape` flavour.
pub const INSTALL_NIXOS_SHAPE: Scenario = Scenario {
    name: "install-nixos-shape",
    about: "The same install with upstream-shaped artifacts built here: kernel DHCP and NFS root without initrd, e1000, unionfs-fuse, systemd-boot, systemd",
    runs: Runs::Install { artifacts: Artifacts::Own(Provider::nixos_shape), adapt: |options| options },
};

/// The install with the `netboot-shape` flavour: netboot.nix's outputs over iPXE and HTTP.
pub const INSTALL_NETBOOT_SHAPE: Scenario = Scenario {
    name: "install-netboot-shape",
    about: "The same install from netboot.nix-shaped artifacts built here: iPXE (chained by the firmware's PXE) runs netboot.ipxe, kernel and a whole-system initrd by HTTP, no NFS",
    runs: Runs::Install { artifacts: Artifacts::Own(|| Provider::NetbootShape), adapt: |options| options },
};

/// The install on a Secure Boot client (OVMF's Secure Boot build, Microsoft's keys
/// enrolled, enforcing) from the fixture signed for it.
pub const INSTALL_SECURE_BOOT: Scenario = Scenario {
    name: "install-secure-boot",
    about: "The same install with Secure Boot enforcing: shim, Debian's signed GRUB and kernel over the network, then shim and signed GRUB from the installed ESP",
    runs: Runs::Install { artifacts: Artifacts::Own(|| Provider::SignedFixture), adapt: secure_boot },
};

/// OVMF → GRUB → the Debian kernel → a busybox shell, from the UEFI disk fixture.
pub const UEFI_BOOT: Scenario = Scenario {
    name: "uefi-boot",
    about: "Boot the UEFI disk fixture (OVMF → GRUB → Debian kernel → busybox shell), run `uname -r`, power off",
    runs: Runs::UefiBoot,
};

/// Every runnable scenario.
pub const SCENARIOS: &[Scenario] = &[INSTALL_DEFAULT, INSTALL_NVME, INSTALL_NIXOS_SHAPE, INSTALL_NETBOOT_SHAPE, INSTALL_SECURE_BOOT, UEFI_BOOT];

fn names() -> String {
    SCENARIOS.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
}

fn secure_boot(options: InstallOptions) -> InstallOptions {
    InstallOptions { hardware: super::Hardware { secure_boot: true, ..options.hardware.clone() }, ..options }
}

fn nvme(options: InstallOptions) -> InstallOptions {
    let mac = options.client.mac;
    let mut installer_files = options.installer_files.clone();
    installer_files.push((format!("config-{mac}"), "rootDevice=/dev/nvme0n1\npartitionSeparator=p\n".into()));
    InstallOptions { installer_files, hardware: super::Hardware { disk_bus: DiskBus::Nvme, ..options.hardware.clone() }, ..options }
}

/// The scenario called `name`.
///
/// ```
/// let scenario = pxelab::jobs::scenario("install-default").unwrap();
/// assert!(scenario.is_install());
/// assert!(pxelab::jobs::scenario("install-defualt").is_err());
/// ```
pub fn scenario(name: &str) -> Result<&'static Scenario, ScenarioError> {
    SCENARIOS.iter().find(|s| s.name == name).ok_or_else(|| ScenarioError::Unknown { name: name.to_owned() })
}

impl Scenario {
    /// Whether it installs (and so takes artifacts, hardware and faults).
    pub fn is_install(&self) -> bool {
        matches!(self.runs, Runs::Install { .. })
    }

    /// Whether it installs whatever artifacts it is given (a matrix set's).
    pub fn takes_artifacts(&self) -> bool {
        matches!(self.runs, Runs::Install { artifacts: Artifacts::Given, .. })
    }

    /// The install options of this scenario from those of the run; `given`: the artifacts
    /// the user gave (`None`: the scenario's own, or `options.provider`).
    pub fn install_options(&self, options: InstallOptions, given: Option<Provider>) -> Result<InstallOptions, ScenarioError> {
        let Runs::Install { artifacts, adapt } = self.runs else { return Err(ScenarioError::NotAnInstall { name: self.name }) };
        let provider = match (artifacts, given) {
            (Artifacts::Own(_), Some(_)) => return Err(ScenarioError::OwnArtifacts { name: self.name }),
            (Artifacts::Own(own), None) => own(),
            (Artifacts::Given, Some(given)) => given,
            (Artifacts::Given, None) => options.provider.clone(),
        };
        Ok(adapt(InstallOptions { provider, ..options }))
    }

    /// Run the scenario in `lab`; an install with `options` (see [`Scenario::install_options`]).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use pxelab::jobs::{InstallOptions, INSTALL_NVME};
    /// let mut lab = pxelab::lab::Lab::new("my-nvme-install")?;
    /// let report = INSTALL_NVME.run(&mut lab, InstallOptions::default(), None).await?;
    /// println!("{}", report.stages.table());
    /// # Ok(()) }
    /// ```
    pub async fn run(&self, lab: &mut Lab, options: InstallOptions, given: Option<Provider>) -> Result<Report, StageError> {
        match self.runs {
            Runs::UefiBoot => {
                if given.is_some() || !options.is_default() {
                    return Err(StageError::before("select job", ScenarioError::NotAnInstall { name: self.name }));
                }
                lab.set_repro(format!("pxelab run {} --keep", self.name));
                super::uefi_boot(lab).await
            }
            Runs::Install { .. } => self.install(lab, options, given).await.map(|(report, _vm)| report.into()),
        }
    }

    /// Run an install scenario in `lab` as [`Scenario::run`] does, and keep its VM: the
    /// installed system, logged in.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use pxelab::jobs::{InstallOptions, INSTALL_DEFAULT};
    /// let mut lab = pxelab::lab::Lab::new("my-install")?;
    /// let (report, vm) = INSTALL_DEFAULT.install(&mut lab, InstallOptions::default(), None).await?;
    /// assert_eq!(report.facts.dhcp_after_reboot, 0);
    /// vm.succeed("test -f /etc/hostname").await?;
    /// # Ok(()) }
    /// ```
    pub async fn install(&self, lab: &mut Lab, options: InstallOptions, given: Option<Provider>) -> Result<(InstallReport, Vm), StageError> {
        let options = self.install_options(options, given).map_err(|e| StageError::before("select job", e))?;
        if lab.repro().is_none() {
            if let Some(command) = options.repro_command_for(self, &lab.dir().join("nfs-top/installer")) {
                lab.set_repro(command);
            }
        }
        super::install(lab, &options).await
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::jobs::INSTALL_CLIENT;

    #[test]
    fn scenario_names_are_unique_and_found() {
        for (i, s) in SCENARIOS.iter().enumerate() {
            assert!(SCENARIOS[..i].iter().all(|o| o.name != s.name), "{}", s.name);
            assert_eq!(scenario(s.name).unwrap().name, s.name);
            assert!(crate::lab::valid_name(s.name));
        }
        let unknown = scenario("install").unwrap_err().to_string();
        assert!(unknown.contains("install-default, install-nvme"), "{unknown}");
    }

    #[test]
    fn own_artifacts_refuse_given_ones_and_given_take_them() {
        let dir = Provider::Dir("/a".into());
        assert!(matches!(INSTALL_NIXOS_SHAPE.install_options(InstallOptions::default(), Some(dir.clone())), Err(ScenarioError::OwnArtifacts { .. })));
        let shape = INSTALL_NIXOS_SHAPE.install_options(InstallOptions::default(), None).unwrap();
        assert_eq!(shape.provider, Provider::nixos_shape());
        let nvme = INSTALL_NVME.install_options(InstallOptions::default(), Some(dir.clone())).unwrap();
        assert_eq!((nvme.provider, nvme.hardware.disk_bus), (dir, DiskBus::Nvme));
        assert_eq!(nvme.installer_files[0].0, format!("config-{}", INSTALL_CLIENT.0));
        assert!(matches!(UEFI_BOOT.install_options(InstallOptions::default(), None), Err(ScenarioError::NotAnInstall { .. })));
    }

    /// A scenario that takes no install options refuses them before anything starts.
    #[tokio::test]
    async fn a_boot_without_install_options_refuses_them() {
        let runs = tempfile::tempdir().unwrap();
        let mut lab = Lab::in_dir(runs.path(), "uefi-boot").unwrap();
        let options = InstallOptions { cold_firmware: true, ..InstallOptions::default() };
        let err = UEFI_BOOT.run(&mut lab, options, None).await.unwrap_err();
        assert_eq!(err.stage, "select job");
        assert!(err.source.to_string().contains("uefi-boot is not an install"), "{err:?}");
        let err = UEFI_BOOT.run(&mut lab, InstallOptions::default(), Some(Provider::default())).await.unwrap_err();
        assert_eq!(err.stage, "select job");
    }
}
