//! What a test works in: its own artifact directory, the artifact cache, its PXE network
//! (segment, DHCP, TFTP) and its VMs.

mod client;
mod events;
mod network;
mod report;
mod stages;

pub use client::{ClientError, HostClient, Response};
pub use events::{from_port, lease_for, port_of_event, EventWaitError, Events, Logged, Mark, Totals, PORT_WINDOW};
pub use network::{FloodHandle, Network, NetworkError, NfsExport, PxeConfig, RogueDhcp, Server, GRUB_COUNTDOWN, HOST_MAC, NFS_ROOT_OPTIONS};
pub use report::{summary as describe_event, Failure, Outcome, RunReport};
pub use stages::{chain, RunLog, StageError, StageRecord, Stages};


use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::artifacts::Cache;
use crate::vm::{Cable, Disk, Keeper, Nic, NicModel, Rom, UnpluggedNic, Vm, VmBuilder, VmError};

/// One test's lab: a directory that keeps every VM's serial log, console transcript, QEMU
/// command line and output, and the run's report. Its path is printed when the test fails
/// (panics), with the command that reproduces the run when there is one.
pub struct Lab {
    name: String,
    dir: PathBuf,
    cache: Cache,
    network: Option<Network>,
    epoch: Instant,
    log: Arc<Mutex<RunLog>>,
    repro: Option<String>,
    reported: bool,
    keeper: Option<Keeper>,
}

impl Lab {
    /// A lab for the test or job `name`, in `$PXELAB_RUNS_DIR/<name>` (default:
    /// `target/pxelab-runs/<name>` of the enclosing Cargo workspace). The output of an
    /// earlier run of `name` is removed; a directory pxelab did not make is left alone.
    pub fn new(name: &str) -> Result<Self, LabError> {
        Self::in_dir(&runs_root(), name)
    }

    /// A lab for `name` under `root` (see [`Lab::new`]). Under nextest's retries, the
    /// directory of the attempt before this one is kept beside it as `<name>.attempt-<n>`,
    /// so that a test that failed and then passed (nextest's FLAKY) leaves its failure's
    /// logs, pcap and report to read.
    pub fn in_dir(root: &Path, name: &str) -> Result<Self, LabError> {
        let attempt = std::env::var("NEXTEST_ATTEMPT").ok().and_then(|n| n.parse::<u32>().ok());
        Self::in_dir_at_attempt(root, name, attempt)
    }

    fn in_dir_at_attempt(root: &Path, name: &str, attempt: Option<u32>) -> Result<Self, LabError> {
        let dir = run_dir(root, name)?;
        let io = |what: &'static str| {
            let dir = dir.clone();
            move |source| LabError::Io { what, dir, source }
        };
        if dir.symlink_metadata().is_ok() {
            if !dir.join(RUN_MARKER).is_file() {
                return Err(LabError::NotOurs(dir));
            }
            match attempt.filter(|&n| n > 1) {
                Some(n) => {
                    let kept = root.join(format!("{name}.attempt-{}", n - 1));
                    if kept.join(RUN_MARKER).is_file() {
                        std::fs::remove_dir_all(&kept).map_err(io("remove an earlier run's attempt"))?;
                    }
                    std::fs::rename(&dir, &kept).map_err(io("keep the earlier attempt"))?;
                }
                None => std::fs::remove_dir_all(&dir).map_err(io("remove the earlier run"))?,
            }
        }
        std::fs::create_dir_all(&dir).map_err(io("create"))?;
        std::fs::write(dir.join(RUN_MARKER), "made by pxelab; removed with this directory on the next run\n")
            .map_err(io("mark"))?;
        Ok(Lab {
            name: name.to_owned(),
            dir,
            cache: Cache::new(&Cache::default_root()),
            network: None,
            epoch: Instant::now(),
            log: Arc::default(),
            repro: None,
            reported: false,
            keeper: None,
        })
    }

    /// Start the lab's PXE network; its pcap and event log go into the lab's directory.
    pub fn start_network(&mut self, config: PxeConfig) -> Result<&Network, NetworkError> {
        self.network = Some(Network::start(&self.dir, config, tokio::time::Instant::from_std(self.epoch))?);
        Ok(self.network.as_ref().expect("just started"))
    }

    /// The PXE network, once started.
    pub fn network(&self) -> &Network {
        self.network.as_ref().expect("Lab::start_network was not called")
    }

    /// A diskless client whose NIC (`model`, `rom`) is plugged into the lab's network and
    /// boots second after any disk (`bootindex=2`); add disks with [`VmBuilder::disk`].
    pub fn pxe_client(&self, name: &str, mac: impl Into<crate::net::Mac>, model: NicModel, rom: Rom) -> std::io::Result<VmBuilder> {
        let mac = mac.into();
        let cable = self.network().plug(mac)?;
        let nic = Nic { model, mac, rom, bootindex: Some(2), cable: Cable::Switch(cable) };
        Ok(self.vm(name).nic(nic).fail_on(self.network().failure_watch()))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Keep this lab's VMs running when the jobs drop them, until the lab drops or
    /// [`Keeper::stop`] (`pxelab run --keep`). Returns the keeper, which lists them.
    pub fn keep(&mut self) -> Keeper {
        self.keeper.get_or_insert_with(Keeper::default).clone()
    }

    /// Whether [`Lab::keep`] was called: a job leaves its VMs up for the user.
    pub fn keeps(&self) -> bool {
        self.keeper.is_some()
    }

    /// Stages timed on this lab's clock and recorded for its report.
    pub fn stages(&self) -> Stages {
        Stages::recording(self.epoch, self.log.clone())
    }

    /// The stages run so far as a table, the failed one marked ([`RunLog::table`]).
    pub fn stage_table(&self) -> String {
        self.log.lock().expect("run log lock").table()
    }

    /// Stages of one of several clients, logged as `<client>: <stage>`.
    pub fn stages_for(&self, client: &str) -> Stages {
        self.stages().prefixed(client)
    }

    /// The command that reproduces this run (printed when it fails, and in its report).
    pub fn set_repro(&mut self, command: String) {
        self.repro = Some(command);
    }

    pub fn repro(&self) -> Option<&str> {
        self.repro.as_deref()
    }

    /// Write `report.json` and `report.html` into the lab's directory now (a lab that is
    /// dropped without it writes them then); returns the page's path.
    pub fn write_report(&mut self) -> std::io::Result<PathBuf> {
        let events = self.network.as_ref().map(|n| n.events().all()).unwrap_or_default();
        let totals = self.network.as_ref().map(|n| n.events().totals()).unwrap_or_default();
        let log = self.log.lock().expect("run log lock");
        let report = RunReport::gather(&self.name, &self.dir, &log, &events, &totals, std::thread::panicking(), self.repro.clone());
        drop(log);
        report.write(&self.dir)?;
        self.reported = true;
        Ok(self.dir.join("report.html"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Power `vm` off at once if it still runs, and boot it again as it was: the same disks
    /// and NVRAM, its NICs plugged into this lab's switch again (the NixOS driver's
    /// `crash(); start()`). Its console log goes on in the same file.
    pub async fn restart(&self, vm: Vm) -> Result<Vm, VmError> {
        self.restart_to(vm, None).await
    }

    /// [`Lab::restart`] with `BootNext` set to `entry` in the VM's NVRAM while it is off: the
    /// host turns its next boot, as a BMC does (`ipmitool chassis bootdev pxe`), whatever
    /// the installed system can write.
    pub async fn restart_with_boot_next(&self, vm: Vm, entry: u16) -> Result<Vm, VmError> {
        self.restart_to(vm, Some(NvramTurn::Next(entry))).await
    }

    /// [`Lab::restart`] with `BootOrder` set to `entries` in the VM's NVRAM while it is off,
    /// as a BMC or `efibootmgr -o` orders them. OVMF keeps that order only on a VM none of
    /// whose devices has a `bootindex` (it orders by QEMU's boot order at each boot).
    pub async fn restart_with_boot_order(&self, vm: Vm, entries: &[u16]) -> Result<Vm, VmError> {
        self.restart_to(vm, Some(NvramTurn::Order(entries.to_vec()))).await
    }

    /// Wait until `vm`'s firmware has downloaded its UEFI HTTP boot program from the lab
    /// ([`PxeConfig::uefi_http_boot`]), or fail at once when the firmware says it gave up,
    /// naming what in the lab's DHCP configuration made it ([`crate::diagnose::http_boot_gave_up`]).
    pub async fn wait_for_http_boot(&self, vm: &Vm, mac: impl Into<crate::net::Mac>, timeout: std::time::Duration) -> Result<crate::services::http::HttpEvent, Box<dyn std::error::Error + Send + Sync>> {
        let net = self.network();
        let dhcp = net.dhcp_config();
        let program = dhcp.http_boot.uefi.clone().unwrap_or_default();
        let gave_up = async {
            let line = vm.firmware_console().wait_for_console_text(r">>Start HTTP Boot over IPv4[\s\S]*?Error: [^\n]*\n", timeout).await;
            match line {
                Ok(_) => {
                    // The firmware prints its errors a line apart: let the second arrive.
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    crate::diagnose::http_boot_gave_up(&vm.firmware_console().text(), &dhcp).unwrap_or_else(|| "the firmware's HTTP boot gave up".into())
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            fetched = net.wait_for_http_request(mac, &program, timeout) => Ok(fetched?),
            why = gave_up => Err(why.into()),
        }
    }

    /// [`Lab::restart_with_boot_order`] by what the entries boot: the entries of `targets`,
    /// found among those `vm`'s firmware wrote (OVMF writes them before it tries the first:
    /// wait for its first `BdsDxe: loading` line). A target with no entry is refused, naming
    /// the entries there are, and `vm` runs on.
    pub async fn restart_booting(&self, vm: Vm, targets: &[pxelab_ovmf::BootTarget]) -> Result<Vm, VmError> {
        let store = vm.var_store().clone();
        let entries = store.boot_entries().map_err(|source| VmError::Nvram { what: format!("cannot read the boot entries in {}", store.path.display()), source })?;
        let mut order = Vec::new();
        for &target in targets {
            let Some(entry) = target.find(&entries) else {
                let listed: Vec<String> = entries.options.iter().map(|o| format!("Boot{:04X} {:?} {}", o.number, o.description, o.path)).collect();
                return Err(VmError::NoBootEntry { name: vm.name().to_owned(), target, entries: listed.join(", ") });
            };
            order.push(entry.number);
        }
        self.restart_with_boot_order(vm, &order).await
    }

    /// Wait until `vm`'s firmware starts its boot entry `entry` (`BdsDxe: starting Boot####`),
    /// or fail at once when it opens its boot manager instead, saying why
    /// ([`crate::diagnose::boot_manager_opened`]).
    pub async fn wait_for_boot_entry(&self, vm: &Vm, entry: u16, timeout: std::time::Duration) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.wait_for_firmware_line(vm, &format!("BdsDxe: starting Boot{entry:04X} "), timeout).await.map(drop)
    }

    /// Wait for `pattern` on `vm`'s firmware console, or fail at once when the firmware opens
    /// its boot manager instead, saying why ([`crate::diagnose::boot_manager_opened`]).
    pub async fn wait_for_firmware_line(&self, vm: &Vm, pattern: &str, timeout: std::time::Duration) -> Result<crate::console::Match, Box<dyn std::error::Error + Send + Sync>> {
        tokio::select! {
            found = vm.firmware_console().wait_for_console_text(pattern, timeout) => found.map_err(Into::into),
            why = self.boot_manager_opened(vm, timeout) => Err(why.into()),
        }
    }

    /// Pending until `vm`'s firmware opens its boot manager (`UiApp`, a menu that waits for a
    /// key) within `timeout`, then why it did ([`crate::diagnose::boot_manager_opened`]; an
    /// iPXE script it names is read from this lab's boot tree): for a wait to end with it.
    async fn boot_manager_opened(&self, vm: &Vm, timeout: std::time::Duration) -> String {
        if vm.firmware_console().wait_for_console_text(crate::diagnose::BOOT_MANAGER_OPENED, timeout).await.is_err() {
            return std::future::pending().await;
        }
        let network = self.network.as_ref();
        let served = |url: &str| {
            let network = network?;
            let path = url.strip_prefix(&format!("http://{}/", network.server_ip()))?;
            std::fs::read_to_string(network.served_file(path)?).ok()
        };
        crate::diagnose::boot_manager_opened(&vm.firmware_console().text(), served).unwrap_or_else(|| "the firmware opened its boot manager".into())
    }

    async fn restart_to(&self, vm: Vm, turn: Option<NvramTurn>) -> Result<Vm, VmError> {
        let store = vm.var_store().clone();
        let was = vm.power_off().await?;
        let path = store.path.display().to_string();
        let nvram = |what: String| move |source| VmError::Nvram { what: format!("cannot set {what} in {path}"), source };
        match turn {
            Some(NvramTurn::Next(entry)) => store.set_boot_next(entry).map_err(nvram(format!("BootNext to Boot{entry:04X}")))?,
            Some(NvramTurn::Order(entries)) => {
                let names: Vec<String> = entries.iter().map(|e| format!("Boot{e:04X}")).collect();
                store.set_boot_order(&entries).map_err(nvram(format!("BootOrder to {}", names.join(","))))?
            }
            None => {}
        }
        let mut builder = self.vm(&was.name).memory_mib(was.memory_mib).cpus(was.cpus).accel(was.accel).console_unit(was.console_unit).keep_nvram();
        if was.secure_boot {
            builder = builder.secure_boot();
        }
        for (path, format, bus, bootindex) in was.disks {
            builder = builder.disk_on(bus, Disk::Image { path, format }, bootindex);
        }
        for UnpluggedNic { model, mac, rom, bootindex, slirp } in was.nics {
            let cable = match slirp {
                Some(net) => Cable::Slirp(net),
                None => Cable::Switch(self.network().plug(mac).map_err(|source| VmError::Io { what: "cannot plug the NIC in again".into(), source })?),
            };
            builder = builder.nic(Nic { model, mac, rom, bootindex, cable });
        }
        if let Some(services) = was.services {
            builder = builder.fail_on(services);
        }
        builder.start().await
    }

    /// A VM whose files live in `<lab dir>/<name>`.
    pub fn vm(&self, name: &str) -> VmBuilder {
        let builder = Vm::builder(name, &self.dir.join(name)).cache_dir(self.cache.root()).epoch(tokio::time::Instant::from_std(self.epoch));
        match &self.keeper {
            Some(keeper) => builder.keep_with(keeper.clone()),
            None => builder,
        }
    }
}

/// What the host writes into a powered-off VM's NVRAM before it boots again.
enum NvramTurn {
    Next(u16),
    Order(Vec<u16>),
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.reported {
            if let Err(e) = self.write_report() {
                eprintln!("pxelab: cannot write the report of {}: {e}", self.name);
            }
        }
        if std::thread::panicking() {
            eprintln!("{}", self.stage_table());
            eprintln!("pxelab: {} failed; serial logs, console transcripts and QEMU output are in {}", self.name, self.dir.display());
            eprintln!("report: {}", self.dir.join("report.html").display());
            if let Some(repro) = &self.repro {
                eprintln!("reproduce: {repro}");
            }
        }
    }
}

/// The file that marks a directory as a pxelab run's, so that only such a directory is ever
/// removed.
pub const RUN_MARKER: &str = ".pxelab-run";

/// A lab's directory could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("lab name {0:?} is not a plain name: use letters, digits, '.', '_' and '-', not starting with '.' or '-'")]
    BadName(String),
    #[error("{} exists and was not made by pxelab (no {RUN_MARKER} in it): left alone; remove it or pick another name", .0.display())]
    NotOurs(PathBuf),
    #[error("cannot {what} the run directory {}", dir.display())]
    Io {
        what: &'static str,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Whether `name` can name a lab (see [`Lab::new`]).
pub fn valid_name(name: &str) -> bool {
    run_dir(Path::new("/"), name).is_ok()
}

/// `root/name`, for a `name` that is one plain path component (so never `..`, `.`, `~`,
/// an absolute path or a path with separators, which `join` would take out of `root`).
fn run_dir(root: &Path, name: &str) -> Result<PathBuf, LabError> {
    let plain = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(['.', '-'])
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !plain {
        return Err(LabError::BadName(name.to_owned()));
    }
    Ok(root.join(name))
}

/// Where labs put their directories (see [`Lab::new`]).
pub fn runs_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("PXELAB_RUNS_DIR") {
        return dir.into();
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("pxelab-runs");
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| std::env::temp_dir());
    // The outermost directory with a Cargo.lock is the workspace root.
    let workspace = cwd.ancestors().filter(|d| d.join("Cargo.lock").is_file()).last();
    match workspace {
        Some(root) => root.join("target").join("pxelab-runs"),
        None => std::env::temp_dir().join("pxelab-runs"),
    }
}

#[cfg(test)]
mod test {
    use super::*;

    /// A retry (nextest's second attempt) keeps the failed attempt's directory beside its
    /// own; a first attempt removes the earlier run's.
    #[test]
    fn a_retry_keeps_the_attempt_before_it() {
        let root = tempfile::tempdir().unwrap();
        let first = Lab::in_dir_at_attempt(root.path(), "flaky", Some(1)).unwrap();
        std::fs::write(first.dir().join("console.log"), "the failure").unwrap();
        drop(first);
        let second = Lab::in_dir_at_attempt(root.path(), "flaky", Some(2)).unwrap();
        assert_eq!(std::fs::read_to_string(root.path().join("flaky.attempt-1/console.log")).unwrap(), "the failure");
        assert!(!second.dir().join("console.log").exists(), "the retry starts afresh");
        drop(second);
        Lab::in_dir_at_attempt(root.path(), "flaky", Some(1)).unwrap();
        assert!(root.path().join("flaky.attempt-1").is_dir(), "a new run's first attempt leaves other names alone");
        assert!(!root.path().join("flaky").join("console.log").exists());
    }

    #[test]
    fn names_that_leave_the_runs_root_are_refused_and_touch_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (root, victim) = (dir.path().join("runs"), dir.path().join("victim"));
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(&victim).unwrap();
        std::fs::write(victim.join("canary"), "keep").unwrap();
        std::fs::write(root.join("canary"), "keep").unwrap();
        let absolute = victim.display().to_string();
        for name in [absolute.as_str(), "..", ".", "~", "", "../victim", "sub/x", "-rf", ".hidden", "a\0b"] {
            assert!(matches!(Lab::in_dir(&root, name), Err(LabError::BadName(_))), "{name:?} accepted");
        }
        assert_eq!(std::fs::read_to_string(victim.join("canary")).unwrap(), "keep");
        assert_eq!(std::fs::read_to_string(root.join("canary")).unwrap(), "keep");
    }

    #[test]
    fn only_a_directory_pxelab_made_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("mine")).unwrap();
        std::fs::write(root.join("mine/canary"), "keep").unwrap();
        assert!(matches!(Lab::in_dir(root, "mine"), Err(LabError::NotOurs(_))));
        assert_eq!(std::fs::read_to_string(root.join("mine/canary")).unwrap(), "keep");

        let lab = Lab::in_dir(root, "run-1").unwrap();
        std::fs::write(lab.dir().join("console.log"), "old").unwrap();
        drop(lab);
        let lab = Lab::in_dir(root, "run-1").unwrap();
        assert!(!lab.dir().join("console.log").exists(), "an earlier run's output is removed");
        assert!(lab.dir().join(RUN_MARKER).is_file());
    }
}
