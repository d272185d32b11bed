//! What a test works in: its own artifact directory, the artifact cache, its PXE network
//! (segment, DHCP, TFTP) and its VMs.

mod events;
mod network;
mod stages;

pub use events::{EventTimeout, Events};
pub use network::{Network, NfsExport, PxeConfig, HOST_MAC, NFS_ROOT_OPTIONS};
pub use stages::{StageError, Stages};

use std::path::{Path, PathBuf};

use crate::artifacts::Cache;
use crate::vm::{Cable, Nic, NicModel, Rom, Vm, VmBuilder};

/// One test's lab: a directory that keeps every VM's serial log, console transcript, QEMU
/// command line and output. Its path is printed when the test fails (panics).
pub struct Lab {
    name: String,
    dir: PathBuf,
    cache: Cache,
    network: Option<Network>,
}

impl Lab {
    /// A lab for the test or job `name`, in `$PXELAB_RUNS_DIR/<name>` (default:
    /// `target/pxelab-runs/<name>` of the enclosing Cargo workspace). Old output is removed.
    pub fn new(name: &str) -> std::io::Result<Self> {
        let dir = runs_root().join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        Ok(Lab { name: name.to_owned(), dir, cache: Cache::new(&Cache::default_root()), network: None })
    }

    /// Start the lab's PXE network; its pcap and event log go into the lab's directory.
    pub fn start_network(&mut self, config: PxeConfig) -> std::io::Result<&Network> {
        self.network = Some(Network::start(&self.dir, config)?);
        Ok(self.network.as_ref().expect("just started"))
    }

    /// The PXE network, once started.
    pub fn network(&self) -> &Network {
        self.network.as_ref().expect("Lab::start_network was not called")
    }

    /// A diskless client whose NIC (`model`, `rom`) is plugged into the lab's network and
    /// boots second after any disk (`bootindex=2`); add disks with [`VmBuilder::disk`].
    pub fn pxe_client(&self, name: &str, mac: [u8; 6], model: NicModel, rom: Rom) -> std::io::Result<VmBuilder> {
        let cable = self.network().plug()?;
        Ok(self.vm(name).nic(Nic { model, mac, rom, bootindex: Some(2), cable: Cable::Switch(cable) }))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// A VM whose files live in `<lab dir>/<name>`.
    pub fn vm(&self, name: &str) -> VmBuilder {
        Vm::builder(name, &self.dir.join(name)).cache_dir(self.cache.root())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("pxelab: {} failed; serial logs, console transcripts and QEMU output are in {}", self.name, self.dir.display());
        }
    }
}

fn runs_root() -> PathBuf {
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
