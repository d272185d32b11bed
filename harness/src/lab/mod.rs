//! What a test works in: its own artifact directory, the artifact cache, and its VMs.
//!
//! (The lab's network and servers join here with the virtual PXE network.)

mod stages;

pub use stages::{StageError, Stages};

use std::path::{Path, PathBuf};

use crate::artifacts::Cache;
use crate::vm::{Vm, VmBuilder};

/// One test's lab: a directory that keeps every VM's serial log, console transcript, QEMU
/// command line and output. Its path is printed when the test fails (panics).
pub struct Lab {
    name: String,
    dir: PathBuf,
    cache: Cache,
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
        Ok(Lab { name: name.to_owned(), dir, cache: Cache::new(&Cache::default_root()) })
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
