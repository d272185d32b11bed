//! An install's stages from the client's start to the check of its installed system, one
//! function each, in the order the install runs them.

use crate::net::Mac;
use std::time::Duration;

use pxelab_fixtures::install::NFS_SETUP_MARKER;
use pxelab_fixtures::InstallerStep;

use crate::artifacts::ArtifactSet;
use crate::console::{banner, ConsoleError};
use crate::lab::{from_port, lease_for, EventWaitError, Lab, Logged, Server, StageError, Stages};
use crate::services::ServiceEvent;
use crate::vm::{FirmwareStart, NicModel, QmpEvent, Vm};

use super::stage::KERNEL_DHCP_BUDGET;
use crate::artifacts::ipxe::Via;
use super::installed::CachedInstall;
use super::{Budgets, InstallFacts, InstallOptions, Stage, SystemError};

/// GRUB's menu countdown, at which the install presses Enter (see
/// [`InstallOptions::wait_out_boot_menus`] and [`crate::lab::Network::enter_at_grub_menu`]).
pub(crate) use crate::lab::GRUB_COUNTDOWN;

/// The kernel's first console line.
pub(crate) const KERNEL_STARTED: &str = r"Linux version \S+";
/// The console line after which GRUB fetches the kernel.
pub(crate) const LOADING_KERNEL: &str = r"load-kernel\.cfg: loading kernel";
/// The firmware starting a boot entry from a disk (not the network): the evidence, with no
/// network boot traffic after the reboot, that the installed disk booted.
const DISK_BOOT: &str = r#"BdsDxe: starting (Boot[0-9A-F]{4}) "([^"]*)" from [^\n]*HD\("#;

/// Prints the device the root file system is mounted from, by its device number (a kernel
/// that mounted its root without an initrd calls it `/dev/root`); busybox and coreutils alike.
const ROOT_DEVICE: &str = "echo /dev/$(basename $(readlink /sys/dev/block/$(awk '$5 == \"/\" { print $3 }' /proc/self/mountinfo | tail -n 1)))";

/// One client's install on a started lab: what every stage needs.
pub(super) struct Install<'a> {
    lab: &'a Lab,
    artifacts: &'a ArtifactSet,
    options: &'a InstallOptions,
    budgets: Budgets,
    mac: Mac,
    nic: NicModel,
    /// The lab's events count from the first `after` (a reinstall's from its reboot).
    after: usize,
    cached: Cached<'a>,
}

/// An install's part in the cache of installed disks ([`InstallOptions::cached_install`]).
#[derive(Debug, Clone, Copy)]
pub(super) enum Cached<'a> {
    /// Not cached: the install runs and nothing is kept.
    No,
    /// The install runs, and its disk and NVRAM go into this entry at its reboot.
    Save(&'a CachedInstall),
    /// The client starts on this entry's disk: only the installed system's stages run.
    Restored(&'a CachedInstall),
}

impl<'a> Install<'a> {
    pub(super) fn new(lab: &'a Lab, vm: &Vm, artifacts: &'a ArtifactSet, options: &'a InstallOptions, after: usize) -> Self {
        let budgets = Budgets::new(vm.accel(), &options.faults);
        let nic = options.hardware.nic.unwrap_or(artifacts.system.nic);
        Install { lab, artifacts, options, budgets, mac: options.client.mac, nic, after, cached: Cached::No }
    }

    /// The install's part in the cache of installed disks.
    pub(super) fn cached(self, cached: Cached<'a>) -> Self {
        Install { cached, ..self }
    }

    /// The stages' budgets.
    pub(super) fn budgets(&self) -> super::stage::Budgets {
        self.budgets
    }

    /// The client's MAC.
    pub(super) fn mac(&self) -> Mac {
        self.mac
    }

    fn budget(&self, stage: Stage) -> Duration {
        self.budgets.of(stage)
    }

    /// Every stage from the client's first DHCP to the check of the installed system.
    pub(super) async fn run(&self, vm: &mut Vm, stages: &mut Stages) -> Result<InstallFacts, StageError> {
        // A hostile neighbour for as long as the install runs.
        let _flood = self.options.faults.flood.map(|rate| self.lab.network().start_flood(self.options.faults.seed, rate, self.mac));
        let reboot = match self.cached {
            // The client starts on the installed disk: what it asks is counted from its start.
            Cached::Restored(_) => self.lab.network().events().mark(),
            Cached::No | Cached::Save(_) => self.install(vm, stages).await?,
        };
        let installed_by = match self.cached {
            Cached::No => "this run's install".to_owned(),
            Cached::Save(entry) => format!("this run's install, its disk kept in {}", entry.dir().display()),
            Cached::Restored(entry) => format!("the cached install {}", entry.dir().display()),
        };
        let booted = stages.run(Stage::FirmwareDisk, self.lab.wait_for_firmware_line(vm, DISK_BOOT, self.budget(Stage::FirmwareDisk))).await?;
        self.login(vm, stages).await?;
        let commands_on = stages.run(Stage::CommandChannel, self.command_channel(vm)).await?;
        let system_state = stages.run(Stage::SystemReady, self.system_ready(vm)).await?;
        let group = |i: usize| booted.groups.get(i).cloned().flatten().unwrap_or_default();
        let facts = InstallFacts {
            firmware_start: String::new(),
            installed_by,
            image_version: String::new(),
            hostname: String::new(),
            modes: String::new(),
            system_state,
            commands_on,
            root_fs: String::new(),
            label_nixos: String::new(),
            firmware_booted: format!("{} {}", group(0), group(1)),
            first_boot_entry: String::new(),
            secure_boot: String::new(),
            network_boot_after_reboot: self.lab.network().network_boot_requests_after(self.mac, reboot),
            dhcp_after_reboot: dhcp_events_after(self.lab, self.mac, reboot.seq),
            switch_drops: switch_drops(self.lab),
        };
        stages.run(Stage::CheckTheSystem, self.check_the_system(vm, facts)).await
    }

    /// From the firmware's DHCP to the installer's reboot; the log's point at the reboot,
    /// from which what the client asks is counted. An install whose disk goes into the cache
    /// is saved at the machine's reset.
    async fn install(&self, vm: &Vm, stages: &mut Stages) -> Result<crate::lab::Mark, StageError> {
        stages.run(Stage::FirmwareDhcp, self.firmware_dhcp(vm)).await?;
        match &self.artifacts.netboot {
            None => {
                stages.run(Stage::TftpGrub, self.tftp_grub(vm)).await?;
                let kernel_started = self.tftp_kernel(vm, stages).await?;
                self.kernel_nfs_root(vm, stages, kernel_started).await?;
            }
            Some(script) => self.netboot(vm, stages, script).await?,
        }
        // The kernel runs: the next reset is the installer's reboot.
        let resets = vm.qmp().count(QmpEvent::Reset);
        for step in InstallerStep::ALL {
            self.installer_step(vm, stages, step).await?;
        }
        let reboot = self.lab.network().events().mark();
        if let Cached::Save(entry) = self.cached {
            let disk = vm.disks().first().map(|(path, ..)| path.clone()).unwrap_or_default();
            stages.run(Stage::SaveInstalledDisk, entry.save(vm, &disk, resets, self.budget(Stage::FirmwareDisk))).await?;
        }
        Ok(reboot)
    }

    /// `firmware → DHCP`: the lab's lease for the client, or at once the ACK of another DHCP
    /// server on the segment that the client took instead (a rogue server).
    async fn firmware_dhcp(&self, vm: &Vm) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let (net, mac, after, budget) = (self.lab.network(), self.mac, self.after, self.budget(Stage::FirmwareDhcp));
        let rogue = net.events().wait_for("another DHCP server's ACK", budget, |e| match &e.event {
            ServiceEvent::Dhcp(d) if e.seq >= after && d.mac == mac && d.kind == crate::services::dhcp::DhcpEventKind::ForeignAck => Some(()),
            _ => None,
        });
        tokio::select! {
            lease = net.wait_for_dhcp_lease_after(mac, after, budget) => lease.map(drop).map_err(Into::into),
            Ok(()) = rogue => {
                let cause = crate::diagnose::rogue_dhcp_server(&net.events().all(), mac).unwrap_or_default();
                Err(format!("the client took another DHCP server's address, not the lab's: {cause}").into())
            }
            // The firmware booted a disk where a network boot was expected (a redeploy that
            // left the disk first in BootOrder and set no BootNext).
            Ok(booted) = vm.firmware_console().wait_for_console_text(DISK_BOOT, budget) => {
                let (entry, name) = (booted.groups[0].clone().unwrap_or_default(), booted.groups[1].clone().unwrap_or_default());
                Err(format!(
                    "the firmware booted {entry} \"{name}\" from the disk where a network boot was expected: set BootNext to the \
                     client's network entry, or put it first in BootOrder (a redeploy that leaves the disk first loses network control)"
                )
                .into())
            }
        }
    }

    /// A set in netboot.nix's shape: `iPXE: script`, then `HTTP: kernel and initrd`, the
    /// images the script names (relative to it, or URLs of the lab's server). The firmware's
    /// PXE saying why it gave up ends the first at once.
    async fn netboot(&self, vm: &Vm, stages: &mut Stages, script: &str) -> Result<(), StageError> {
        let (net, mac, after) = (self.lab.network(), self.mac, self.after);
        let budget = self.budget(Stage::IpxeScript);
        let fetched = async { net.wait_for_http_request_after(mac, script, after, budget).await.map(drop).map_err(|e| self.listed(e)) };
        stages
            .run(Stage::IpxeScript, async {
                tokio::select! {
                    fetched = fetched => fetched,
                    failed = self.pxe_gave_up(vm, budget) => failed,
                }
            })
            .await?;
        let text = std::fs::read_to_string(self.artifacts.tftp_root.join(script)).map_err(|e| StageError::before(Stage::HttpKernel, e))?;
        let loads = crate::artifacts::ipxe::loads(&text).map_err(|e| StageError::before(Stage::HttpKernel, e))?;
        let budget = self.budget(Stage::HttpKernel);
        stages
            .run(Stage::HttpKernel, async {
                for image in loads.images(net.server_ip()) {
                    match &image.served {
                        Some((Via::Http, path)) => net.wait_for_http_request_after(mac, path, after, budget).await.map(drop),
                        Some((Via::Tftp, path)) => net.wait_for_tftp_transfer_after(mac, path, after, budget).await.map(drop),
                        None => continue,
                    }
                    .map_err(|e| self.listed(e))?;
                }
                Ok::<_, String>(())
            })
            .await
    }

    /// The firmware's PXE saying why it gives up (`PXE-E16: No valid offer received.`), as
    /// an error; pending while it says nothing.
    async fn pxe_gave_up(&self, vm: &Vm, budget: Duration) -> Result<(), String> {
        let net = self.lab.network();
        let Ok(line) = vm.firmware_console().wait_for_console_text(r"PXE-E[0-9A-F]{2}: [^\n]*\n", budget).await else {
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
        Err(format!("the firmware's PXE gave up: {:?}{hint}", line.matched.trim()))
    }

    /// `TFTP: GRUB`: the boot loader fetched, or the firmware's PXE saying why it gave up.
    async fn tftp_grub(&self, vm: &Vm) -> Result<(), String> {
        let (net, mac, after, budget) = (self.lab.network(), self.mac, self.after, self.budget(Stage::TftpGrub));
        // The firmware may start GRUB before its ACK of the last block reaches the server (a
        // lost ACK under loss): GRUB's first request, for its configuration, then says it runs.
        let grub = async {
            let fetched = net.wait_for_tftp_transfer_after(mac, "nixos/bootx64.efi", after, budget);
            let grub_asks = tftp_request(net.lease_of(mac), after, Some("nixos/bootx64.efi"));
            tokio::select! {
                fetched = fetched => fetched.map(drop).map_err(|e| self.listed(e)),
                Ok(()) = net.events().wait_for("GRUB's first request", budget, grub_asks) => Ok(()),
            }
        };
        tokio::select! {
            grub = grub => grub,
            failed = self.pxe_gave_up(vm, budget) => failed,
            Some(too_big) = self.too_big(budget) => Err(too_big),
        }
    }

    /// The first frame the client's link dropped for its MTU (`--mtu`), in a sentence that
    /// names the MTU and the TFTP block size that does not fit; `None` when none is dropped
    /// within `budget`.
    async fn too_big(&self, budget: Duration) -> Option<String> {
        let port = self.lab.network().port_of(self.mac)?;
        let after = self.after;
        let dropped = self.lab.network().events().wait_for("a frame over the link's MTU", budget, |e| match &e.event {
            ServiceEvent::Segment(crate::net::segment::SegmentEvent::Fault { port: p, injected: crate::net::fault::Injected::TooBig { len, mtu }, .. })
                if e.seq >= after && *p == port => Some((*len, *mtu)),
            _ => None,
        });
        let (len, mtu) = dropped.await.ok()?;
        // The IP packet of a TFTP DATA block: 20 bytes of IP, 8 of UDP, 4 of TFTP.
        let block = len.saturating_sub(32);
        Some(format!(
            "the client's link dropped a {len}-byte IP packet, over its MTU of {mtu} bytes: TFTP blocks of {block} bytes (the block \
             size the client negotiated) do not fit; blocks of at most {} bytes would. A switch port or link set to a smaller MTU \
             than the client's; fix the MTU, or have the client ask for a smaller blksize",
            mtu.saturating_sub(32)
        ))
    }

    /// A TFTP refusal with what the TFTP root holds.
    fn listed(&self, e: EventWaitError) -> String {
        match e {
            EventWaitError::Refused { .. } => format!("{e}\n{}", tftp_listing(&self.artifacts.tftp_root)),
            other => other.to_string(),
        }
    }

    /// `TFTP: kernel`, with Enter at GRUB's menu and the link-down fault. `true`: the
    /// kernel's banner came before the server saw its download's last ACK.
    async fn tftp_kernel(&self, vm: &Vm, stages: &mut Stages) -> Result<bool, StageError> {
        let (net, mac, after, budget) = (self.lab.network(), self.mac, self.after, self.budget(Stage::TftpKernel));
        let link_down = async {
            let Some(down_for) = self.options.faults.link_down_during_kernel else { return };
            if vm.wait_for_console_text(LOADING_KERNEL, budget).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(300)).await;
                net.block(mac);
                tokio::time::sleep(down_for).await;
                net.unblock(mac);
            }
        };
        // The kernel, not the initrd: GRUB may boot before its ACK of the initrd's last block
        // leaves the wire, so the server cannot always see that last transfer complete. A set
        // without an initrd (upstream's) has that race on the kernel's last block: the
        // kernel's banner then says that GRUB had it all.
        // A console that fails fast (Secure Boot refusing GRUB, a panic) ends the stage at
        // once, with its known causes.
        let kernel = async {
            tokio::select! {
                fetched = net.wait_for_tftp_transfer_after(mac, "nixos/bzImage", after, budget) => fetched.map(|_| false).map_err(|e| self.listed(e)),
                started = async {
                    match vm.wait_for_console_text(KERNEL_STARTED, budget).await {
                        Ok(_) => Ok(()),
                        Err(e @ ConsoleError::FailFast { .. }) => Err(with_known_causes(e, vm)),
                        Err(_) => std::future::pending().await,
                    }
                } => {
                    started?;
                    tracing::info!("the kernel started before its download's last ACK reached the server: GRUB booted right after the last block");
                    Ok(true)
                }
            }
        };
        let kernel = stages.run(Stage::TftpKernel, kernel);
        tokio::select! {
            (kernel, ()) = async { tokio::join!(kernel, link_down) } => kernel,
            () = self.press_enter(vm) => unreachable!("pending"),
        }
    }

    /// Enter at GRUB's menu ([`crate::lab::Network::enter_at_grub_menu`]), unless the options wait it out. Never
    /// returns.
    async fn press_enter(&self, vm: &Vm) {
        if !self.options.wait_out_boot_menus {
            self.lab.network().enter_at_grub_menu(vm, self.mac, self.budget(Stage::TftpKernel)).await;
        }
        std::future::pending::<()>().await
    }

    /// `kernel → NFS root`. A kernel with no driver for the NIC never asks for an address: it
    /// panics when its NFS root fails, or waits. Either way, say why, within a minute of the
    /// kernel's start (GRUB may still be fetching an initrd after the kernel's download).
    async fn kernel_nfs_root(&self, vm: &Vm, stages: &mut Stages, kernel_started: bool) -> Result<(), StageError> {
        let (net, mac, budget) = (self.lab.network(), self.mac, self.budget(Stage::KernelNfsRoot));
        let after_kernel = net.events().count();
        let no_lease = |waited: Duration| {
            format!(
                "no DHCP lease for the kernel after {waited:.0?}: has it a driver for the client's {} NIC? \
                 (upstream's kernel has e1000, e1000e and igb built in, and virtio-net only as a module it cannot load before \
                 its NFS root)",
                self.nic.device()
            )
        };
        let kernel_dhcp = async {
            if !kernel_started {
                if let Err(e) = vm.wait_for_console_text(KERNEL_STARTED, budget).await {
                    return Err(with_known_causes(e, vm));
                }
            }
            let why = match net.wait_for_dhcp_lease_after(mac, after_kernel, self.budgets.secs(KERNEL_DHCP_BUDGET)).await {
                Ok(_) => return std::future::pending().await,
                Err(EventWaitError::Timeout { waited, .. }) => no_lease(waited),
                Err(e) => e.to_string(),
            };
            Err(why)
        };
        let setup = async { vm.wait_for_console_text(&regex::escape(NFS_SETUP_MARKER), budget).await.map_err(|e| e.to_string()) };
        let stage_started = tokio::time::Instant::now();
        stages
            .run(Stage::KernelNfsRoot, async {
                let result = tokio::select! {
                    setup = setup => setup,
                    failed = kernel_dhcp => failed,
                };
                let refused = || crate::diagnose::secure_boot_refusal(&vm.console().text()).is_some();
                result.map(drop).map_err(|why| match refused() || leased_after(self.lab, mac, after_kernel) || why.contains("no DHCP lease for the kernel") {
                    true => why,
                    false => format!("{}\n{why}", no_lease(stage_started.elapsed())),
                })
            })
            .await
    }

    /// `installer: <step>`: the step's marker, failing at once at a later step's, with the
    /// NFS restart fault during the image's unpacking.
    async fn installer_step(&self, vm: &Vm, stages: &mut Stages, step: InstallerStep) -> Result<(), StageError> {
        let stage = Stage::Installer(step);
        let (pattern, later) = (marker_pattern(step.marker()), later_markers(step));
        // An installer file as the client sees it: the export's top layer first.
        let layers = [vec![self.lab.dir().join("nfs-top")], self.artifacts.nfs_layers.clone()].concat();
        let installer_file = |name: &str| layers.iter().find_map(|l| std::fs::read_to_string(l.join("installer").join(name)).ok());
        let wait = stages.run(stage, async {
            let waited = vm.wait_for_console_text_before(&pattern, &later, self.budget(stage)).await;
            waited.map_err(|e| match e {
                ConsoleError::FailFast { ref fail_fast, .. } if later.contains(fail_fast) => format!(
                    "the installer went on to a later step without printing {:?}, the protocol's marker of this one \
                     (§3): a changed or broken-up message\n{e}",
                    step.marker()
                )
                .into(),
                e => crate::diagnose::diagnose(Box::new(e), &vm.console().text(), installer_file),
            })
        });
        match self.options.faults.nfs_restart_during_unpack.filter(|_| step == InstallerStep::UnpackImage) {
            Some(down_for) => {
                // From the end of the previous stage: the installer mounts the disk and reads
                // the image from the NFS root while the server is down.
                let net = self.lab.network();
                let restart = async {
                    net.stop_server(Server::Nfs);
                    tokio::time::sleep(down_for).await;
                    net.start_server(Server::Nfs);
                };
                tokio::join!(wait, restart).0.map(drop)
            }
            None => wait.await.map(drop),
        }
    }

    /// `installed system boots` and `login`, as the artifact set's `pxelab.toml` says.
    async fn login(&self, vm: &Vm, stages: &mut Stages) -> Result<(), StageError> {
        let login = &self.artifacts.system.login;
        stages.run(Stage::SystemBoots, vm.wait_for_console_text(&login.prompt, self.budget(Stage::SystemBoots))).await?;
        let budget = self.budget(Stage::Login);
        stages
            .run(Stage::Login, async {
                vm.send_line(&login.user).await?;
                vm.wait_for_console_text(&login.password_prompt, budget).await?;
                vm.send_line(&login.password).await?;
                vm.wait_for_console_text(&login.shell_prompt, budget).await
            })
            .await
            .map(drop)
    }

    /// `command channel`: a root shell on the command port, if the system runs one, takes
    /// the commands from here on. Says where they run.
    async fn command_channel(&self, vm: &mut Vm) -> Result<String, String> {
        let budget = self.budget(Stage::CommandChannel);
        let backdoor = match self.artifacts.system.backdoor {
            Some(false) => false,
            None => vm.connect_backdoor(Duration::from_secs(2)).await,
            Some(true) => match vm.connect_backdoor(budget).await {
                true => true,
                false => {
                    return Err(format!(
                        "no root shell answered on ttyS{} (the command port) in {budget:.0?}, and the artifact set says its system runs \
                         one (`backdoor = true` in pxelab.toml)",
                        vm.command_unit(),
                    ))
                }
            },
        };
        Ok(match backdoor {
            true => format!("ttyS{} (backdoor shell)", vm.command_unit()),
            false => format!("ttyS{} (console login)", vm.console_unit()),
        })
    }

    /// `system ready`: the artifact set's ready command succeeds; its output.
    async fn system_ready(&self, vm: &Vm) -> Result<String, SystemError> {
        let system = &self.artifacts.system;
        match vm.execute(&system.ready_command).await? {
            (0, output) => Ok(output),
            (status, output) => {
                let (_, diagnosis) = vm.execute(&system.diagnose_command).await?;
                let mut text = format!("{:?} exited {status}: {output}\n{}", system.ready_command, banner("diagnosis", &diagnosis));
                // A unit that failed before journald ran has an empty journal: its cause is on
                // the console, and in the boot's journal around its program's lines.
                let console = std::fs::read_to_string(vm.dir().join("console.log")).unwrap_or_default();
                for unit in crate::diagnose::units::failed_units(&diagnosis) {
                    let description = crate::diagnose::units::description(&unit, &diagnosis);
                    let lines = crate::diagnose::units::console_lines_about(&unit, description.as_deref(), &console);
                    if !lines.is_empty() {
                        text += &format!("\n{}", banner(&format!("console lines about {unit}"), &lines.join("\n")));
                    }
                    if let Ok((_, around)) = vm.execute(&crate::diagnose::units::journal_around(&unit)).await {
                        if !around.trim().is_empty() {
                            text += &format!("\n{}", banner(&format!("the boot's journal around {unit}"), &around));
                        }
                    }
                }
                Err(SystemError::Check(text))
            }
        }
    }

    /// `check the system`: the facts read from the installed system, into `facts`; `/` and
    /// `/tmp` must have the protocol's modes.
    async fn check_the_system(&self, vm: &Vm, facts: InstallFacts) -> Result<InstallFacts, SystemError> {
        // One read of the NVRAM for both the boot entries and the Secure Boot state.
        let variables = pxelab_ovmf::read_variables(&vm.var_store().path)?;
        let entries = pxelab_ovmf::boot_entries(&variables);
        if let Some(piled) = crate::diagnose::piled_boot_entries(&entries) {
            return Err(SystemError::Check(piled));
        }
        let first_boot_entry = entries.first().map(|o| format!("Boot{:04X} {} {}", o.number, o.description, o.path)).unwrap_or_default();
        let secure_boot = pxelab_ovmf::SecureBoot::of(&variables).to_string();
        let root_fs = vm.succeed(ROOT_DEVICE).await?;
        let label_nixos = vm.succeed("findfs LABEL=nixos").await?;
        let image_version = vm.succeed(&self.artifacts.system.version_command).await?;
        let hostname = vm.succeed("hostname").await?;
        let declared = self.lab.network().dhcp_config().hosts.iter().find(|h| h.mac == self.mac).and_then(|h| h.hostname.clone());
        let system = &self.artifacts.system;
        if let Some(expected) = system.expected_hostname(declared.as_deref()).filter(|e| *e != hostname) {
            let rule = match system.hostname.as_str() {
                crate::artifacts::DHCP_HOSTNAME => "`hostname = \"dhcp\"`: the lab's DHCP host name".to_owned(),
                name => format!("`hostname = \"{name}\"`{}", if name == crate::artifacts::UPSTREAM_HOSTNAME { " (upstream's default image's, when pxelab.toml says none)" } else { "" }),
            };
            return Err(SystemError::Check(format!(
                "the installed system calls itself {hostname:?} where its artifact set expects {expected:?} ({rule}); \
                 say in pxelab.toml what the system's name should be"
            )));
        }
        let modes = vm.succeed("stat -c %a / /tmp").await?.split_whitespace().collect::<Vec<_>>().join(" ");
        if modes != "755 1777" {
            return Err(SystemError::Check(format!(
                "the installed system's / and /tmp have modes {modes}, where the protocol has 755 and 1777: the installer \
                 must set them after unpacking (`chmod 755 /mnt`, `chmod 1777 /mnt/tmp`), whatever modes the image carries"
            )));
        }
        let firmware_start = match vm.firmware_start() {
            FirmwareStart::PowerOn => "power-on".to_owned(),
            FirmwareStart::Saved(s) => format!("power-on, saving the snapshot {}", s.state().display()),
            FirmwareStart::Restored(s) => format!("the snapshot {}", s.state().display()),
        };
        Ok(InstallFacts { firmware_start, image_version, hostname, modes, root_fs, label_nixos, first_boot_entry, secure_boot, ..facts })
    }
}

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

/// The patterns of the steps after `step`: one of them first fails `step` at once.
fn later_markers(step: InstallerStep) -> Vec<String> {
    InstallerStep::ALL.iter().skip_while(|s| **s != step).skip(1).map(|s| marker_pattern(s.marker())).collect()
}

/// An event check: the client at `ip` asked the TFTP server for a file (other than `except`)
/// after the first `after` events.
fn tftp_request(ip: Option<std::net::Ipv4Addr>, after: usize, except: Option<&str>) -> impl Fn(&Logged) -> Option<()> + '_ {
    move |e| {
        let asked = matches!(&e.event, ServiceEvent::Tftp(t) if Some(t.client) == ip && Some(t.file.trim_start_matches('/')) != except);
        (e.seq >= after && asked).then_some(())
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

/// A console error with the known causes the console shows ([`crate::diagnose::diagnose`]).
fn with_known_causes(e: ConsoleError, vm: &Vm) -> String {
    crate::diagnose::diagnose(Box::new(e), &vm.console().text(), |_| None).to_string()
}

/// The switch's latest drop totals, per port and reason, in port order.
pub(super) fn switch_drops(lab: &Lab) -> Vec<(crate::net::switch::PortId, crate::net::segment::DropReason, u64)> {
    switch_drops_since(lab, &[])
}

/// The switch's drops per port and reason since `before` (an earlier [`switch_drops`]),
/// those that grew only.
pub(super) fn switch_drops_since(
    lab: &Lab,
    before: &[(crate::net::switch::PortId, crate::net::segment::DropReason, u64)],
) -> Vec<(crate::net::switch::PortId, crate::net::segment::DropReason, u64)> {
    let mut latest = std::collections::BTreeMap::new();
    for (_, e) in lab.network().events().all() {
        if let ServiceEvent::Segment(crate::net::segment::SegmentEvent::Dropped { port, reason, total }) = e {
            latest.insert((port, reason), total);
        }
    }
    for (port, reason, total) in before {
        if let Some(now) = latest.get_mut(&(*port, *reason)) {
            *now = now.saturating_sub(*total);
        }
    }
    latest.into_iter().filter(|(_, n)| *n > 0).map(|((port, reason), n)| (port, reason, n)).collect()
}

/// Whether `mac` got a lease among the events after the first `after`.
fn leased_after(lab: &Lab, mac: Mac, after: usize) -> bool {
    let port = lab.network().port_of(mac);
    lab.network().events().since(after).iter().any(|e| from_port(&e.event, port) && lease_for(&e.event, mac).is_some())
}

/// How many DHCP messages of `mac` the events numbered `after` or later hold, from its port
/// (an installed system may run DHCP itself).
fn dhcp_events_after(lab: &Lab, mac: Mac, after: usize) -> usize {
    let port = lab.network().port_of(mac);
    lab.network().events().since(after).iter().filter(|e| from_port(&e.event, port) && matches!(&e.event, ServiceEvent::Dhcp(d) if d.mac == mac)).count()
}

#[cfg(test)]
mod test {
    use super::*;

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

    #[test]
    fn a_steps_later_markers_are_those_after_it() {
        assert_eq!(later_markers(InstallerStep::Reboot), Vec::<String>::new());
        let after_unpack = later_markers(InstallerStep::UnpackImage);
        assert_eq!(after_unpack.len(), 3);
        assert_eq!(after_unpack[0], marker_pattern(InstallerStep::SystemConfiguration.marker()));
    }
}
