//! What an install varies, defined once for the library and the command line.
//!
//! [`Hardware`], [`InstallFaults`], [`ArtifactArgs`] and [`InstallOptions`] are clap
//! argument groups as well as plain values: `pxelab run` parses them, tests build them, and
//! the repro line ([`InstallOptions::repro_command`]) is written from the same definitions
//! (each flag's name is read back from its clap argument), so a flag cannot be printed in a
//! form the command line does not take.

use crate::net::Mac;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pxelab_fixtures::Compression;

use crate::artifacts::Provider;
use crate::lab::PxeConfig;
use crate::net::fault::{duration_text, parse_duration, percent_text, Impairment, Ways};
use crate::vm::{shell_quote, DiskBus, NicModel};

/// The client `install-default` installs: MAC, address and host name.
pub const INSTALL_CLIENT: (Mac, &str, &str) = (Mac([0x52, 0x54, 0x00, 0x1a, 0x5e, 0x01]), "192.0.2.10", "nixos-pxe-1");

/// Who installs: the VM's name, and the MAC, address and host name the lab's DHCP declares
/// for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The VM's name (its directory in the run's).
    pub vm: String,
    /// Its NIC's MAC, declared to the lab's DHCP.
    pub mac: Mac,
    /// The address DHCP gives it.
    pub ip: std::net::Ipv4Addr,
    /// The host name DHCP gives it.
    pub hostname: String,
}

impl Client {
    /// The `n`th of several clients (from 1): VM `client-<n>`, MAC `52:54:00:1a:5e:<n>`,
    /// address `192.0.2.<9+n>`, host name `nixos-pxe-<n>`; the first has [`INSTALL_CLIENT`]'s.
    pub fn nth(n: u8) -> Self {
        Client { vm: format!("client-{n}"), mac: Mac([0x52, 0x54, 0x00, 0x1a, 0x5e, n]), ip: [192, 0, 2, 9 + n].into(), hostname: format!("nixos-pxe-{n}") }
    }
}

impl Default for Client {
    /// [`INSTALL_CLIENT`], as VM `client`.
    fn default() -> Self {
        let (mac, ip, hostname) = INSTALL_CLIENT;
        Client { vm: "client".into(), mac, ip: ip.parse().expect("an address"), hostname: hostname.into() }
    }
}

/// What an install varies. On the command line: the flags of `pxelab run` below
/// "Client hardware" and "Fault injection", `--wait-out-boot-menus` and `--cold-firmware`;
/// the artifacts come from [`ArtifactArgs`].
///
/// ```
/// use pxelab::jobs::{Hardware, InstallOptions};
/// use pxelab::vm::DiskBus;
///
/// let options = InstallOptions { hardware: Hardware { disk_bus: DiskBus::Sata, ..Hardware::default() }, ..InstallOptions::default() };
/// assert_eq!(options.hardware.memory_mib, 1024);
/// ```
#[derive(Debug, Clone, clap::Args)]
pub struct InstallOptions {
    /// Where the artifacts come from.
    #[arg(skip)]
    pub provider: Provider,
    /// Files for `installer/` in the export's top layer (per-host `config-<mac>` and such).
    #[arg(skip)]
    pub installer_files: Vec<(String, String)>,
    /// Faults injected during the install.
    #[command(flatten)]
    pub faults: InstallFaults,
    /// The client's hardware.
    #[command(flatten)]
    pub hardware: Hardware,
    /// Changes to the lab's configuration before it starts (to test bad DHCP setups).
    #[arg(skip)]
    pub configure_lab: Option<fn(&mut PxeConfig)>,
    /// Who installs.
    #[arg(skip)]
    pub client: Client,
    /// Wait out GRUB's menu countdown as a machine would, instead of pressing Enter at it
    /// (the default, which saves the countdown's seconds and changes nothing else).
    #[arg(long, help = "Wait out GRUB's menu countdown as a machine would, instead of pressing Enter at it")]
    pub wait_out_boot_menus: bool,
    /// Power the client's firmware on from reset, instead of from its snapshot at the point
    /// where it turns from the blank disk to the network (the default, which saves ~4 s a
    /// client under TCG: [`crate::vm::Snapshot`]).
    #[arg(long, help = "Power the firmware on from reset instead of from its snapshot")]
    pub cold_firmware: bool,
    /// Start from the disk and NVRAM an earlier install of the same artifact set, installer
    /// files, client, hardware and faults left at its reboot, kept in the cache
    /// ([`super::installed::CachedInstall`]); install and keep them if there are none. For
    /// checks of the installed system (its first boot, its services), not of the install: the
    /// stages from the firmware's DHCP to the installer's reboot do not run. Honoured by
    /// [`super::install`] (not by reinstalls or [`super::install_together`]); ignored with
    /// [`InstallOptions::configure_lab`].
    #[arg(long, help = "Boot the installed disk an earlier identical install left in the cache (installing and keeping it if none): for checks of the installed system")]
    pub cached_install: bool,
}

impl InstallOptions {
    /// Whether these are [`InstallOptions::default`]: nothing a run asked for.
    pub fn is_default(&self) -> bool {
        let default = InstallOptions::default();
        self.provider == default.provider
            && self.installer_files.is_empty()
            && self.faults == default.faults
            && self.hardware == default.hardware
            && self.configure_lab.is_none()
            && self.client == default.client
            && !self.wait_out_boot_menus
            && !self.cold_firmware
            && !self.cached_install
    }
}

impl Default for InstallOptions {
    fn default() -> Self {
        InstallOptions {
            provider: Provider::default(),
            installer_files: Vec::new(),
            faults: InstallFaults::default(),
            hardware: Hardware::default(),
            configure_lab: None,
            client: Client::default(),
            wait_out_boot_menus: false,
            cold_firmware: false,
            cached_install: false,
        }
    }
}

/// The install client's hardware.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "Client hardware (install jobs)")]
pub struct Hardware {
    /// The NIC model; by default the one the artifact set's installed system names.
    #[arg(long, value_enum, help = "NIC model [default: the one the artifacts' pxelab.toml names; e1000 for upstream's]")]
    pub nic: Option<NicModel>,
    /// The disk's controller, which names the disk in the guest.
    #[arg(
        long,
        value_enum,
        default_value_t = DiskBus::Virtio,
        help = "Disk controller: virtio (/dev/vda), nvme (/dev/nvme0n1, partitionSeparator=p) or sata (/dev/sda). The install config's rootDevice must name that disk"
    )]
    pub disk_bus: DiskBus,
    /// The disk's size in bytes (whole GiB on the command line).
    #[arg(long = "disk-gib", value_name = "GIB", value_parser = gib, default_value = "8", help = "Disk size in GiB (the protocol's layout needs more than 4.5)")]
    pub disk_bytes: u64,
    #[arg(long = "memory", value_name = "MIB", default_value_t = 1024, help = "Memory in MiB")]
    /// Memory in MiB.
    pub memory_mib: u32,
    #[arg(long, default_value_t = 1, help = "Virtual CPUs")]
    /// Virtual CPUs.
    pub cpus: u32,
    /// OVMF's Secure Boot build with Microsoft's keys enrolled and Secure Boot on
    /// ([`crate::vm::VmBuilder::secure_boot`]).
    #[arg(long, help = "Secure Boot on: OVMF's Secure Boot build with Microsoft's keys (OVMF_CODE_4M.ms.fd + OVMF_VARS_4M.ms.fd); only signed images start")]
    pub secure_boot: bool,
    /// An X.509 certificate (DER or PEM) to enrol in the client's db
    /// ([`crate::vm::VmBuilder::enrol_db_certificate`]): kernels and loaders signed with its
    /// key start.
    #[arg(long, value_name = "CERT", requires = "secure_boot", help = "Enrol this X.509 certificate (DER or PEM) in the Secure Boot client's db: what its key signed (sbsign) starts")]
    pub enrol_db_certificate: Option<std::path::PathBuf>,
}

impl Default for Hardware {
    fn default() -> Self {
        Hardware { nic: None, disk_bus: DiskBus::Virtio, disk_bytes: 8 << 30, memory_mib: 1024, cpus: 1, secure_boot: false, enrol_db_certificate: None }
    }
}

/// Whole GiB, in bytes.
fn gib(text: &str) -> Result<u64, String> {
    let gib: u64 = text.parse().map_err(|_| format!("{text:?} is not a whole number of GiB"))?;
    gib.checked_mul(1 << 30).ok_or_else(|| format!("{text} GiB is too large"))
}

/// Faults injected during an install; every one is logged in `events.jsonl`.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
#[command(next_help_heading = "Fault injection (install jobs)")]
pub struct InstallFaults {
    /// Seed of the fault injector (the same seed makes the same decisions).
    #[arg(long, default_value_t = 0, help = "Seed of the fault injector")]
    pub seed: u64,
    /// Impair the client's traffic from its first frame on, the [`InstallFaults::direction`] ways.
    #[command(flatten)]
    pub impairment: Impairment,
    /// Which ways [`InstallFaults::impairment`] applies.
    #[arg(long, value_enum, default_value_t = Ways::Both, help = "Which way the impairment applies: in (from the VM), out (to it) or both")]
    pub direction: Ways,
    /// Take the client's link down for this long in the middle of the kernel's TFTP transfer.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", help = "Take the client's link down this long in the middle of the kernel's TFTP transfer")]
    pub link_down_during_kernel: Option<Duration>,
    /// Stop the NFS server for this long from the moment the installer starts on the image
    /// (it mounts the new root and reads the image from the NFS root meanwhile).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", help = "Stop the NFS server this long as the installer starts on the image")]
    pub nfs_restart_during_unpack: Option<Duration>,
    /// A hostile neighbour on a port of its own sends this many frames a second during the
    /// install, a seeded mix ([`crate::net::flood`]) forging the client's identity.
    #[arg(
        long,
        value_name = "FRAMES_PER_S",
        value_parser = clap::value_parser!(u32).range(1..=100_000),
        help = "A hostile neighbour sends this many frames a second during the install: DHCP floods and forged DECLINE/RELEASE, a rogue DHCP server, ARP spoofing, unacknowledged TFTP and traversal requests, TCP SYNs, garbage"
    )]
    pub flood: Option<u32>,
    /// A second DHCP server on the lab network answers before the lab's, with its own
    /// address, boot file and root path ([`crate::lab::RogueDhcp`]); the switch's DHCP
    /// snooping lets it through. The install fails, and the diagnosis names the rogue.
    #[arg(long, help = "A rogue DHCP server on the lab network answers first, with another boot file and root path (MAAS's first known bad)")]
    pub rogue_dhcp: bool,
    /// The client's link drops frames whose IP packet is over this many bytes, either way
    /// (a switch port misconfigured for a smaller MTU).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u16).range(576..=9000), help = "The client's link drops frames with an IP packet over this many bytes (a misconfigured switch port's MTU)")]
    pub mtu: Option<u16>,
}

impl InstallFaults {
    /// Whether the client's traffic is impaired.
    pub fn impaired(&self) -> bool {
        self.impairment != Impairment::default()
    }
}

/// Where an install's artifacts come from, on the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "Artifacts (install jobs)")]
pub struct ArtifactArgs {
    /// Install your prebuilt artifacts from this directory (boot-loader.tar.xz,
    /// nfsroot.tar.xz, nixos.tar.gz, config) instead of the fixture's.
    #[arg(long, conflicts_with_all = ["nix_installer", "nix_image"])]
    pub artifacts: Option<PathBuf>,
    /// Build the NFS root and boot loader with `nix-build <file>` (with --nix-image).
    #[arg(long, requires = "nix_image")]
    pub nix_installer: Option<PathBuf>,
    /// Build the install image and config with `nix-build <file>` (with --nix-installer).
    #[arg(long, requires = "nix_installer")]
    pub nix_image: Option<PathBuf>,
    /// The fixture image's compression (nixos.tar.gz, .xz or .zst).
    #[arg(long, value_enum, default_value_t = Compression::Gzip)]
    pub compression: Compression,
    /// Files to add to the export's `installer/` (per-host `config-<mac>` and such).
    #[arg(long, value_name = "DIR")]
    pub installer_dir: Option<PathBuf>,
}

impl ArtifactArgs {
    /// The artifacts the user gave (`None`: the scenario's own, or the fixture's).
    pub fn given(&self) -> Option<Provider> {
        match (&self.artifacts, &self.nix_installer, &self.nix_image) {
            (Some(dir), _, _) => Some(Provider::Dir(dir.clone())),
            (None, Some(installer), Some(image)) => Some(Provider::Nix { installer: installer.clone(), image: image.clone() }),
            _ => None,
        }
    }

    /// The given artifacts, else the fixture's with `--compression`.
    pub fn provider(&self) -> Provider {
        self.given().unwrap_or(Provider::Fixture { compression: self.compression })
    }

    /// The files of `--installer-dir` (name, contents), sorted by name.
    pub fn installer_files(&self) -> Result<Vec<(String, String)>, String> {
        let mut files = Vec::new();
        if let Some(dir) = &self.installer_dir {
            let read = |e: std::io::Error| format!("--installer-dir {}: {e}", dir.display());
            for entry in std::fs::read_dir(dir).map_err(read)? {
                let path = entry.map_err(read)?.path();
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let contents = std::fs::read_to_string(&path).map_err(|e| format!("--installer-dir: {}: {e}", path.display()))?;
                files.push((name, contents));
            }
            files.sort();
        }
        Ok(files)
    }
}

/// The long flag clap defines for the field `id` of the argument group `A`.
fn flag<A: clap::Args>(id: &str) -> String {
    let command = A::augment_args(clap::Command::new("pxelab"));
    let arg = command.get_arguments().find(|a| a.get_id() == id).unwrap_or_else(|| panic!("no argument {id}"));
    format!("--{}", arg.get_long().unwrap_or_else(|| panic!("{id} has no long flag")))
}

/// A value-enum's command-line name.
fn value<V: clap::ValueEnum>(v: &V) -> String {
    v.to_possible_value().map(|p| p.get_name().to_owned()).unwrap_or_default()
}

impl Hardware {
    /// The flags that give this hardware, defaults left out; `None` when it has no
    /// command-line form (a disk of no whole number of GiB).
    pub fn args(&self) -> Option<Vec<String>> {
        let (default, mut words) = (Hardware::default(), Vec::new());
        let mut push = |id: &str, text: String| words.push(format!("{} {text}", flag::<Hardware>(id)));
        if let Some(nic) = &self.nic {
            push("nic", value(nic));
        }
        if self.disk_bus != default.disk_bus {
            push("disk_bus", value(&self.disk_bus));
        }
        if self.disk_bytes != default.disk_bytes {
            (self.disk_bytes % (1 << 30) == 0).then_some(())?;
            push("disk_bytes", (self.disk_bytes >> 30).to_string());
        }
        if self.memory_mib != default.memory_mib {
            push("memory_mib", self.memory_mib.to_string());
        }
        if self.cpus != default.cpus {
            push("cpus", self.cpus.to_string());
        }
        if let Some(cert) = &self.enrol_db_certificate {
            push("enrol_db_certificate", cert.display().to_string());
        }
        if self.secure_boot {
            words.push(flag::<Hardware>("secure_boot"));
        }
        Some(words)
    }
}

impl InstallFaults {
    /// The flags that give these faults (the seed always, the rest when set).
    pub fn args(&self) -> Vec<String> {
        let mut words = vec![format!("{} {}", flag::<InstallFaults>("seed"), self.seed)];
        let Impairment { loss, delay, jitter, duplicate, reorder, corrupt } = self.impairment;
        for (id, fraction) in [("loss", loss), ("duplicate", duplicate), ("reorder", reorder), ("corrupt", corrupt)] {
            if fraction > 0.0 {
                words.push(format!("{} {}", flag::<Impairment>(id), percent_text(fraction)));
            }
        }
        for (id, d) in [("delay", delay), ("jitter", jitter)] {
            if !d.is_zero() {
                words.push(format!("{} {}", flag::<Impairment>(id), duration_text(d)));
            }
        }
        if self.impaired() {
            words.push(format!("{} {}", flag::<InstallFaults>("direction"), value(&self.direction)));
        }
        for (id, d) in [("link_down_during_kernel", self.link_down_during_kernel), ("nfs_restart_during_unpack", self.nfs_restart_during_unpack)] {
            if let Some(d) = d {
                words.push(format!("{} {}", flag::<InstallFaults>(id), duration_text(d)));
            }
        }
        if let Some(mtu) = self.mtu {
            words.push(format!("{} {mtu}", flag::<InstallFaults>("mtu")));
        }
        if self.rogue_dhcp {
            words.push(flag::<InstallFaults>("rogue_dhcp"));
        }
        if let Some(rate) = self.flood {
            words.push(format!("{} {rate}", flag::<InstallFaults>("flood")));
        }
        words
    }
}

impl InstallOptions {
    /// The `pxelab run` command that runs this install again, with `--keep`, as
    /// `install-nixos-shape` for that flavour's artifacts and `install-default` for others;
    /// `None` when the options have no command-line form (a service-stack image, a changed
    /// lab configuration, another client).
    pub fn repro_command(&self, installer_dir: &Path) -> Option<String> {
        let scenario = match &self.provider {
            p if *p == Provider::nixos_shape() => &super::INSTALL_NIXOS_SHAPE,
            Provider::NetbootShape => &super::INSTALL_NETBOOT_SHAPE,
            Provider::SignedFixture => &super::INSTALL_SECURE_BOOT,
            _ => &super::INSTALL_DEFAULT,
        };
        self.repro_command_for(scenario, installer_dir)
    }

    /// [`InstallOptions::repro_command`] as `scenario` runs it (`None` when its own
    /// artifacts are not these options').
    pub fn repro_command_for(&self, scenario: &super::Scenario, installer_dir: &Path) -> Option<String> {
        use super::registry::{Artifacts, Runs};
        if self.configure_lab.is_some() || self.client != Client::default() {
            return None;
        }
        let path = |p: &Path| shell_quote(&std::path::absolute(p).unwrap_or_else(|_| p.to_owned()).display().to_string());
        let artifact = |id: &str, p: &Path| format!("{} {}", flag::<ArtifactArgs>(id), path(p));
        let mut words = vec!["pxelab".to_owned(), "run".to_owned(), scenario.name.to_owned()];
        match (scenario.runs, &self.provider) {
            (Runs::Install { artifacts: Artifacts::Own(own), .. }, provider) => (*provider == own()).then_some(())?,
            (Runs::UefiBoot, _) => return None,
            (_, Provider::Fixture { compression }) => {
                if *compression != Compression::default() {
                    words.push(format!("{} {}", flag::<ArtifactArgs>("compression"), value(compression)));
                }
            }
            (_, Provider::NixosShape { .. } | Provider::NetbootShape | Provider::SignedFixture) => return None,
            (_, Provider::Dir(dir)) => words.push(artifact("artifacts", dir)),
            (_, Provider::Nix { installer, image }) => words.extend([artifact("nix_installer", installer), artifact("nix_image", image)]),
        }
        if !self.installer_files.is_empty() {
            words.push(artifact("installer_dir", installer_dir));
        }
        words.extend(self.hardware.args()?);
        words.extend(self.faults.args());
        if self.wait_out_boot_menus {
            words.push(flag::<InstallOptions>("wait_out_boot_menus"));
        }
        if self.cold_firmware {
            words.push(flag::<InstallOptions>("cold_firmware"));
        }
        if self.cached_install {
            words.push(flag::<InstallOptions>("cached_install"));
        }
        words.push("--keep".into());
        Some(words.join(" "))
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Run {
        #[command(flatten)]
        artifacts: ArtifactArgs,
        #[command(flatten)]
        install: InstallOptions,
    }

    fn parse(words: &[&str]) -> Run {
        Run::try_parse_from(std::iter::once("run").chain(words.iter().copied())).unwrap_or_else(|e| panic!("{words:?}: {e}"))
    }

    #[test]
    fn the_command_lines_defaults_are_the_libraries() {
        let run = parse(&[]);
        assert_eq!(run.install.hardware, Hardware::default());
        assert_eq!(run.install.faults, InstallFaults::default());
        assert_eq!(run.artifacts, ArtifactArgs::default());
        assert_eq!(run.artifacts.provider(), Provider::default());
    }

    #[test]
    fn hardware_and_faults_read_back_from_their_own_flags() {
        let hardware = Hardware { nic: Some(NicModel::E1000e), disk_bus: DiskBus::Nvme, disk_bytes: 20 << 30, memory_mib: 2048, cpus: 2, secure_boot: true, enrol_db_certificate: Some("/keys/db.der".into()) };
        let faults = InstallFaults {
            seed: 7,
            impairment: Impairment { loss: 0.05, duplicate: 0.001, ..Impairment::delay(Duration::from_millis(5), Duration::from_millis(2)) },
            direction: Ways::In,
            link_down_during_kernel: Some(Duration::from_secs(10)),
            nfs_restart_during_unpack: Some(Duration::from_millis(1500)),
            flood: Some(500),
            rogue_dhcp: true,
            mtu: Some(1400),
        };
        let words = [hardware.args().unwrap(), faults.args()].concat().join(" ");
        let run = parse(&words.split(' ').collect::<Vec<_>>());
        assert_eq!((run.install.hardware, run.install.faults), (hardware, faults), "{words}");
        let odd = Hardware { disk_bytes: (8 << 30) + 1, ..Hardware::default() };
        assert_eq!(odd.args(), None, "a disk of no whole GiB has no flag");
    }

    #[test]
    fn the_repro_line_names_the_scenario_and_flags_the_command_line_takes() {
        let options = InstallOptions {
            provider: Provider::Fixture { compression: Compression::Zstd },
            hardware: Hardware { nic: Some(NicModel::VirtioNet), ..Hardware::default() },
            cold_firmware: true,
            cached_install: true,
            ..InstallOptions::default()
        };
        let line = options.repro_command(Path::new("/x")).unwrap();
        assert_eq!(line, "pxelab run install-default --compression zstd --nic virtio-net --seed 0 --cold-firmware --cached-install --keep");
        let words: Vec<&str> = line.split(' ').skip(3).filter(|w| *w != "--keep").collect();
        let run = parse(&words);
        assert_eq!(run.artifacts.compression, Compression::Zstd);
        assert!(run.install.cold_firmware && run.install.cached_install && run.install.hardware == options.hardware);
        let shape = InstallOptions { provider: Provider::nixos_shape(), ..InstallOptions::default() };
        assert!(shape.repro_command(Path::new("/x")).unwrap().starts_with("pxelab run install-nixos-shape --seed 0"));
        let other = InstallOptions { client: Client::nth(2), ..InstallOptions::default() };
        assert_eq!(other.repro_command(Path::new("/x")), None);
    }
}
