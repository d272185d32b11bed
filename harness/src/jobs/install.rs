//! The install: a client with a blank disk PXE-boots, installs over the protocol, reboots
//! from its disk and is logged in. The flow is here; each stage is a function of
//! [`super::install_stages`].

use crate::artifacts::ArtifactSet;
use crate::lab::{Lab, PxeConfig, StageError, Stages};
use crate::vm::{Disk, Vm, VmError};

use super::install_stages::{Cached, Install};
use super::installed::CachedInstall;
use super::{Client, InputError, InstallOptions, InstallReport, Stage, SystemError};
use super::error::StartError;

/// Where the lab exports the installer's NFS root.
pub const NFS_EXPORT: &str = "/srv/nixos/nfsroot";

/// The main job: [`install`] with the fixture artifacts and their default configuration.
pub async fn install_default(lab: &mut Lab) -> Result<(InstallReport, Vm), StageError> {
    install(lab, &InstallOptions::default()).await
}

/// A client with a blank disk PXE-boots, installs the artifact set's system over the
/// protocol, reboots itself and boots the disk through its new NVRAM entry; then it is logged
/// in on the serial console as the set's `pxelab.toml` says. Returns the report and the
/// logged-in VM.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use pxelab::jobs::{self, InstallOptions};
/// let mut lab = pxelab::lab::Lab::new("my-install")?;
/// let (report, vm) = jobs::install(&mut lab, &InstallOptions::default()).await?;
/// assert_eq!(report.facts.dhcp_after_reboot, 0);
/// assert_eq!(vm.succeed("hostname").await?, "nixos-pxe-1");
/// # Ok(()) }
/// ```
pub async fn install(lab: &mut Lab, options: &InstallOptions) -> Result<(InstallReport, Vm), StageError> {
    let mut stages = lab.stages();
    if lab.repro().is_none() {
        if let Some(command) = options.repro_command(&lab.dir().join("nfs-top/installer")) {
            lab.set_repro(command);
        }
    }
    let (artifacts, config) = prepare(lab, &mut stages, std::slice::from_ref(options)).await?;
    let entry = match options.cached_install && options.configure_lab.is_none() {
        true => Some(cached_install(lab, &artifacts, options).await?),
        false => None,
    };
    // Held while this install makes the entry: another process that wants it waits, then starts from it.
    let lock = match &entry {
        Some(entry) => Some(entry.lock().await.map_err(|e| StageError::before(Stage::StartNetworkAndQemu, e))?),
        None => None,
    };
    let restored = entry.as_ref().filter(|entry| entry.exists());
    if let Some(entry) = restored {
        crate::artifacts::mark_used(entry.dir()); // so `pxelab cache prune` keeps what is used
    }
    let start = if restored.is_some() { Stage::StartCachedInstall } else { Stage::StartNetworkAndQemu };
    let vm = stages
        .run(start, async {
            lab.start_network(config)?;
            Ok::<_, StartError>(start_client(lab, options, &artifacts, restored).await?)
        })
        .await?;
    let cached = match (&entry, restored) {
        (Some(entry), Some(_)) => {
            drop(lock); // the entry is only read from now on
            Cached::Restored(entry)
        }
        (Some(entry), None) => Cached::Save(entry),
        (None, _) => Cached::No,
    };
    network_install(lab, vm, stages, &artifacts, options, 0, cached).await
}

/// The cache entry of `options`' installed disk ([`InstallOptions::cached_install`]); its key
/// hashes any artifact directory outside the cache, off the async runtime.
async fn cached_install(lab: &Lab, artifacts: &ArtifactSet, options: &InstallOptions) -> Result<CachedInstall, StageError> {
    let (root, artifacts, options) = (lab.cache().root().to_owned(), artifacts.clone(), options.clone());
    let entry = crate::artifacts::off_runtime(move || CachedInstall::of(&root, &artifacts, &options)).await;
    entry.map_err(|e| StageError::before(Stage::StartNetworkAndQemu, format!("cannot find the cached install's key: {}", crate::lab::chain(&e))))
}

/// Several clients install at once on one lab network, each as [`install`]'s client with its
/// own [`Client`], hardware and faults; the artifacts, seed and lab configuration are the
/// first's, the installer files everyone's. Each client's stages are named after its VM
/// (`client-2: firmware → DHCP`). `Err`: a stage all share failed.
pub async fn install_together(lab: &mut Lab, installs: &[InstallOptions]) -> Result<Vec<Result<(InstallReport, Vm), StageError>>, StageError> {
    let mut stages = lab.stages();
    let (artifacts, config) = prepare(lab, &mut stages, installs).await?;
    stages.run(Stage::StartNetwork, async { lab.start_network(config).map(drop) }).await?;
    let lab: &Lab = lab;
    let each = installs.iter().map(|options| {
        let artifacts = &artifacts;
        async move {
            let mut stages = lab.stages_for(&options.client.vm);
            let vm = stages.run(Stage::StartQemu, start_client(lab, options, artifacts, None)).await?;
            network_install(lab, vm, stages, artifacts, options, 0, Cached::No).await
        }
    });
    Ok(futures::future::join_all(each).await)
}

/// [`configure`] the lab for `installs`, then check the inputs.
async fn prepare(lab: &Lab, stages: &mut Stages, installs: &[InstallOptions]) -> Result<(ArtifactSet, PxeConfig), StageError> {
    let (artifacts, config) = configure(lab, stages, installs).await?;
    stages
        .run(Stage::CheckInputs, async {
            for options in installs {
                check_disk(options.hardware.disk_bytes).map_err(InputError::Setup)?;
            }
            match &artifacts.netboot {
                None => {
                    config.check_install().map_err(InputError::Setup)?;
                    crate::artifacts::check(&artifacts.tftp_root, &artifacts.nfs_layers, artifacts.system.console).await?;
                }
                Some(script) => crate::artifacts::check_netboot(&artifacts.tftp_root, script, config.dhcp.server).await?,
            }
            Ok::<_, InputError>(())
        })
        .await?;
    Ok((artifacts, config))
}

/// Build the artifacts, write the installer files into the export's top layer and configure
/// the lab for `installs`' clients; the artifacts, seed and lab configuration are the first's.
pub(super) async fn configure(lab: &Lab, stages: &mut Stages, installs: &[InstallOptions]) -> Result<(ArtifactSet, PxeConfig), StageError> {
    let first = &installs[0];
    let top = lab.dir().join("nfs-top");
    let artifacts = stages.run(Stage::BuildArtifacts, first.provider.provide_async(lab.cache())).await?;
    // Per-test files (installer/config-<mac>, ...) go into the top layer of the export.
    let layers = [vec![top.clone()], artifacts.nfs_layers.clone()].concat();
    let files: Vec<(String, String)> = installs.iter().flat_map(|o| o.installer_files.clone()).collect();
    let written = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(top.join("installer"))?;
        files.iter().try_for_each(|(name, contents)| std::fs::write(top.join("installer").join(name), contents))
    });
    written.await.map_err(std::io::Error::other).and_then(|r| r).map_err(|e| StageError::before(Stage::StartNetwork, e))?;
    let mut config = match &artifacts.netboot {
        None => PxeConfig::new(vec![artifacts.tftp_root.clone()]).nfs_root(NFS_EXPORT, layers),
        Some(script) => netboot_config(lab, &artifacts, script).map_err(|e| StageError::before(Stage::StartNetwork, e))?,
    };
    for Client { mac, ip, hostname, .. } in installs.iter().map(|o| &o.client) {
        config = config.host(*mac, *ip, hostname);
    }
    config.seed = first.faults.seed;
    config.rogue_dhcp = first.faults.rogue_dhcp.then(crate::lab::RogueDhcp::default);
    if let Some(configure) = first.configure_lab {
        configure(&mut config);
    }
    Ok((artifacts, config))
}

/// The lab for a set in netboot.nix's shape, served as pixiecore serves one: PXE firmware
/// gets iPXE's EFI program by TFTP (UEFI HTTP boot gets it by HTTP), and iPXE gets the set's
/// script by HTTP, which loads the kernel and initrd by HTTP too.
fn netboot_config(lab: &Lab, artifacts: &ArtifactSet, script: &str) -> Result<PxeConfig, Box<dyn std::error::Error + Send + Sync>> {
    let ipxe = pxelab_fixtures::HostFiles::ipxe_efi()?;
    let mut config = PxeConfig::new(vec![artifacts.tftp_root.clone()]).uefi_http_boot(&ipxe, &lab.dir().join("http"))?;
    let program = config.dhcp.http_boot.uefi.clone().unwrap_or_default();
    for (_, file) in &mut config.dhcp.boot_files {
        file.clone_from(&program);
    }
    config.dhcp.http_boot.ipxe_script = Some(script.to_owned());
    Ok(config)
}

/// Start `options`' client with a blank disk, or on a cached install's disk and NVRAM, its
/// NIC on the lab's network, its faults set.
async fn start_client(lab: &Lab, options: &InstallOptions, artifacts: &ArtifactSet, installed: Option<&CachedInstall>) -> Result<Vm, VmError> {
    let Client { vm, mac, .. } = &options.client;
    let nic = options.hardware.nic.unwrap_or(artifacts.system.nic);
    let plugged = lab.pxe_client(vm, *mac, nic, nic.pxe_rom());
    let client = plugged.map_err(|source| VmError::Io { what: format!("{vm}: cannot plug its NIC into the lab's switch"), source })?;
    let faults = &options.faults;
    if faults.impaired() {
        for &direction in faults.direction.directions() {
            lab.network().impair(*mac, direction, faults.impairment);
        }
    }
    if let Some(mtu) = faults.mtu {
        lab.network().set_mtu(*mac, usize::from(mtu));
    }
    let hw = &options.hardware;
    let client = client.memory_mib(hw.memory_mib).cpus(hw.cpus).console_unit(artifacts.system.console.unit);
    let client = if hw.secure_boot { client.secure_boot() } else { client };
    if let Some(entry) = installed {
        // The installer's NVRAM (its boot entry), copied: the cached one is never written.
        let nvram = lab.dir().join(vm).join("OVMF_VARS.fd");
        let copied = std::fs::create_dir_all(lab.dir().join(vm)).and_then(|()| std::fs::copy(entry.nvram(), &nvram));
        copied.map_err(|source| VmError::Io { what: format!("cannot copy the cached install's NVRAM {}", entry.nvram().display()), source })?;
        let disk = Disk::Overlay { base: entry.disk(), format: crate::vm::DiskFormat::Qcow2 };
        return client.disk_on(hw.disk_bus, disk, Some(1)).keep_nvram().start().await;
    }
    let client = client.disk_on(hw.disk_bus, Disk::Blank { bytes: hw.disk_bytes }, Some(1));
    let client = match options.cold_firmware {
        true => client,
        false => client.from_firmware_snapshot(),
    };
    let client = match &hw.enrol_db_certificate {
        Some(path) => client.enrol_db_certificate(certificate_der(path)?),
        None => client,
    };
    client.start().await
}

/// A certificate file's DER bytes: the file itself, or the first PEM block in it.
fn certificate_der(path: &std::path::Path) -> Result<Vec<u8>, VmError> {
    let bad = |why: String| VmError::Io { what: format!("cannot read the certificate to enrol, {}", path.display()), source: std::io::Error::other(why) };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let Some(pem) = std::str::from_utf8(&bytes).ok().filter(|t| t.contains("-----BEGIN")) else { return Ok(bytes) };
    let body: String = pem.lines().skip_while(|l| !l.starts_with("-----BEGIN")).skip(1).take_while(|l| !l.starts_with("-----END")).collect();
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(body.trim()).map_err(|e| bad(format!("not PEM: {e}")))
}

/// The installed client installs again over its own disk, as an operator reinstalls a
/// machine: its shell sets `BootNext` to its IPv4 PXE entry (through efivarfs) and reboots;
/// the firmware PXE-boots and the install runs as [`install`]'s, with the same checks.
pub async fn reinstall(lab: &Lab, vm: Vm, options: &InstallOptions) -> Result<(InstallReport, Vm), StageError> {
    reinstall_by(lab, vm, options, NetworkTurn::BootNext).await
}

/// How a reinstall turns the installed client back to the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkTurn {
    /// `BootNext` set to its IPv4 PXE entry, then a reboot: what works.
    BootNext,
    /// A reboot alone, the disk still first in BootOrder: the redeploy bug reported against
    /// MAAS. The firmware boots the old disk, and `firmware → DHCP` says so at once.
    RebootOnly,
    /// The host powers the machine off, sets `BootNext` to its IPv4 PXE entry in its NVRAM
    /// and powers it on, as a BMC does for Ironic or MAAS (`ipmitool chassis bootdev pxe`):
    /// for an installed system that cannot write UEFI variables itself.
    HostBootNext,
}

/// [`reinstall`], turning the client to the network as `turn` says.
pub async fn reinstall_by(lab: &Lab, vm: Vm, options: &InstallOptions, turn: NetworkTurn) -> Result<(InstallReport, Vm), StageError> {
    let mut stages = lab.stages();
    let mac = options.client.mac;
    let artifacts = stages.run(Stage::BuildArtifacts, options.provider.provide_async(lab.cache())).await?;
    let after = lab.network().events().count();
    let vm = stages
        .run(Stage::BootNextPxe, async {
            let entries = vm.var_store().boot_entries()?;
            let nic = format!("MAC({})", mac.hex());
            let Some(pxe) = entries.options.iter().find(|o| o.path.contains(&nic) && o.path.ends_with("IPv4")) else {
                return Err(SystemError::Check(format!("no IPv4 PXE entry for {nic} in NVRAM: {entries:?}")));
            };
            match turn {
                NetworkTurn::BootNext => {
                    vm.set_boot_next(pxe.number).await?;
                    vm.reboot().await?;
                }
                NetworkTurn::RebootOnly => vm.reboot().await?,
                NetworkTurn::HostBootNext => return Ok(lab.restart_with_boot_next(vm, pxe.number).await?),
            }
            Ok(vm)
        })
        .await?;
    network_install(lab, vm, stages, &artifacts, options, after, Cached::No).await
}

/// From a client's power-on or reboot into PXE to its login on the installed system: the
/// lab's events count from the first `after`. A failure whose cause shows no console lines
/// (a wait on the lab's events) gets the client's console tail.
async fn network_install(
    lab: &Lab,
    mut vm: Vm,
    mut stages: Stages,
    artifacts: &ArtifactSet,
    options: &InstallOptions,
    after: usize,
    cached: Cached<'_>,
) -> Result<(InstallReport, Vm), StageError> {
    let install = Install::new(lab, &vm, artifacts, options, after).cached(cached);
    // A failed stage says whether the host let the guest run (flake triage).
    let (pid, budgets) = (vm.pid(), install.budgets());
    stages.watch(
        (std::sync::Arc::new(move || crate::vm::HostSample::of(pid)), format!("{:?}", vm.accel())),
        std::sync::Arc::new(move |name| super::Stage::named(name).map(|stage| budgets.of(stage))),
    );
    match install.run(&mut vm, &mut stages).await {
        Ok(facts) => Ok((InstallReport::new(stages, facts), vm)),
        Err(mut e) => {
            let why = crate::lab::chain(e.source.as_ref());
            let mut more = Vec::new();
            // A rogue DHCP server's answer explains any stage that follows it.
            if let Some(cause) = crate::diagnose::rogue_dhcp_server(&lab.network().events().all(), install.mac()) {
                more.push(crate::console::banner("known causes", &cause));
            }
            if !why.contains(crate::console::TAIL_LABEL) {
                more.push(vm.console().tail_block());
            }
            if !more.is_empty() {
                e.source = format!("{why}\n{}", more.join("\n")).into();
            }
            Err(e)
        }
    }
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

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_certificate_to_enrol_is_read_as_der_or_from_its_pem_block() {
        use base64::Engine as _;
        let dir = tempfile::tempdir().unwrap();
        let der = vec![0x30, 0x82, 0x01, 0x0a, 0xff, 0x00];
        std::fs::write(dir.path().join("db.der"), &der).unwrap();
        let pem = format!("subject=/CN=x\n-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", base64::engine::general_purpose::STANDARD.encode(&der));
        std::fs::write(dir.path().join("db.pem"), pem).unwrap();
        assert_eq!(certificate_der(&dir.path().join("db.der")).unwrap(), der);
        assert_eq!(certificate_der(&dir.path().join("db.pem")).unwrap(), der);
        std::fs::write(dir.path().join("bad.pem"), "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n").unwrap();
        let err = certificate_der(&dir.path().join("bad.pem")).unwrap_err().to_string();
        assert!(err.contains("bad.pem"), "{err}");
        assert!(certificate_der(&dir.path().join("missing.der")).is_err());
    }

    #[test]
    fn a_disk_too_small_for_the_layout_is_refused() {
        assert!(check_disk(LAYOUT_BYTES).unwrap_err().contains("too small"));
        assert!(check_disk(LAYOUT_BYTES + (1 << 20)).is_ok());
    }
}
