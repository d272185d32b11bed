//! Firmware snapshots: a fresh client's firmware, restored instead of booted.
//!
//! A client with a new NVRAM, blank disks and a disk first in its boot order boots its
//! firmware the same way every time, up to where OVMF gives up on the blank disk and turns to
//! the network: ~4.1 s under TCG before its first DHCP DISCOVER. The first such VM of a
//! machine saves its state at its first console output, 3.6 s in (terminal control sequences:
//! OVMF has set up its console and is enumerating devices), with QEMU migration to a file
//! and its NVRAM (the guest pauses ~0.2 s), and boots on; later ones start from
//! that state (`-incoming`) and send their DISCOVER ~0.5 s after QEMU starts.
//!
//! Snapshots live in the artifact cache, keyed by all the state depends on: QEMU's binary,
//! OVMF's files, the accelerator and the machine's devices, MACs and boot order.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{shell_quote, Qmp, QmpError};

/// What the firmware prints when the blank disk fails, ~10 ms before its first packet: a
/// guest paused after it may already have sent that packet, and is not saved.
pub const DISK_FAILED: &str = "BdsDxe: failed to load Boot[0-9A-F]{4} ";

/// How long a machine's state may take to write.
const SAVE_TIMEOUT: Duration = Duration::from_secs(60);

/// How a VM's firmware started.
#[derive(Debug, Clone)]
pub enum FirmwareStart {
    /// From reset (a VM that is not fresh, or one whose disk had failed before it paused).
    PowerOn,
    /// From reset, and this VM saved the snapshot on its way.
    Saved(Snapshot),
    /// From the snapshot.
    Restored(Snapshot),
}

/// One machine's snapshot in the cache: `state` (QEMU's migration stream) and `OVMF_VARS.fd`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot {what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot save the machine's state")]
    Qmp(#[source] QmpError),
}

/// A host file's identity for a cache key: its path, size and modification time (a package
/// update changes them).
pub fn file_stamp(file: &Path) -> String {
    let meta = std::fs::metadata(file).ok();
    format!("{} {:?}", file.display(), meta.map(|m| (m.len(), m.modified().ok())))
}

impl Snapshot {
    /// The snapshot of the machine `machine` describes (its devices, in any stable text),
    /// under `cache_root`; `files` are what else the state depends on (OVMF's CODE and VARS
    /// template), and QEMU's binary is added.
    pub fn of(cache_root: &Path, machine: &str, files: &[&Path]) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"saved at the firmware's first output\n");
        hash.update(machine.as_bytes());
        let qemu = super::on_path("qemu-system-x86_64");
        for file in qemu.iter().map(PathBuf::as_path).chain(files.iter().copied()) {
            hash.update(format!("\n{}", file_stamp(file)).as_bytes());
        }
        let key = hex::encode(hash.finalize());
        Snapshot { dir: cache_root.join(format!("firmware-snapshot-{}", &key[..16])) }
    }

    /// Its directory in the cache.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn nvram(&self) -> PathBuf {
        self.dir.join("OVMF_VARS.fd")
    }

    pub fn exists(&self) -> bool {
        self.state().is_file() && self.nvram().is_file()
    }

    /// Remove the snapshot from the cache (the next fresh VM of its machine saves it again).
    pub fn remove(&self) -> std::io::Result<()> {
        std::fs::remove_dir_all(&self.dir)
    }

    /// Save the paused guest behind `qmp`, whose NVRAM is the file `nvram`. Written beside
    /// the entry and renamed into place, so a reader never sees half a snapshot; a VM that
    /// saved the same snapshot first wins.
    pub async fn save(&self, qmp: &Qmp, nvram: &Path) -> Result<(), SnapshotError> {
        let root = self.dir.parent().expect("a snapshot has a parent");
        let io = |what: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| SnapshotError::Io { what, path, source }
        };
        std::fs::create_dir_all(root).map_err(io("create", root))?;
        let scratch = tempfile::Builder::new().prefix(".firmware-snapshot-").tempdir_in(root).map_err(io("create a directory in", root))?;
        let staged = Snapshot { dir: scratch.path().to_owned() };
        std::fs::copy(nvram, staged.nvram()).map_err(io("copy", nvram))?;
        let uri = format!("exec:cat > {}", shell_quote(&staged.state().display().to_string()));
        qmp.migrate(&uri, SAVE_TIMEOUT).await.map_err(SnapshotError::Qmp)?;
        match std::fs::rename(scratch.keep(), &self.dir) {
            Ok(()) => Ok(()),
            Err(_) if self.exists() => {
                let _ = std::fs::remove_dir_all(&staged.dir);
                Ok(())
            }
            Err(source) => Err(SnapshotError::Io { what: "rename a snapshot to", path: self.dir.clone(), source }),
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn the_key_follows_the_machine_and_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let code = dir.path().join("OVMF_CODE.fd");
        std::fs::write(&code, b"code").unwrap();
        let of = |machine: &str| Snapshot::of(dir.path(), machine, &[&code]).dir;
        assert_eq!(of("tcg 1024 mac 52:54:00:1a:5e:01"), of("tcg 1024 mac 52:54:00:1a:5e:01"));
        assert_ne!(of("tcg 1024 mac 52:54:00:1a:5e:01"), of("tcg 1024 mac 52:54:00:1a:5e:02"));
        let before = of("m");
        std::fs::write(&code, b"a newer firmware").unwrap();
        assert_ne!(of("m"), before, "another OVMF build");
        assert!(of("m").starts_with(dir.path()));
        assert!(!Snapshot { dir: of("m") }.exists());
    }
}
