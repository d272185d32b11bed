//! Cached installs: the disk and NVRAM an install leaves at its reboot, kept in the artifact
//! cache and keyed by all they depend on, so a scenario that checks an installed system (its
//! first boot, its services) need not install it again ([`InstallOptions::cached_install`]).
//!
//! The first install of a key runs as any other; when the installer reboots, the machine is
//! paused at its reset (QEMU's `stop` drains and flushes the disks), its disk image and NVRAM
//! are copied into the cache, and it carries on booting. Later ones start a client whose disk
//! is a copy-on-write overlay on the cached image and whose NVRAM is a copy of the cached
//! one: its firmware boots the installed system for the first time, as after the install.
//! An exclusive `flock` per entry lets a second test of the same key wait for the first's
//! install and then start from it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pxelab_fixtures::Input;

use crate::artifacts::{content_key, ArtifactSet, CacheError};
use crate::vm::{file_stamp, QmpEvent, Vm, VmError};

use super::InstallOptions;

/// Bumped when what an entry holds, or how it is made, changes.
const FORMAT: &str = "installed disk 1";

/// An entry of the cache: an installed disk and its NVRAM.
#[derive(Debug, Clone)]
pub struct CachedInstall {
    dir: PathBuf,
}

impl CachedInstall {
    /// The entry of an install of `artifacts` with `options` under `cache_root`. The key holds
    /// the artifact set (directories inside the cache by their content-keyed names, others by
    /// their content), its system description and netboot script, the installer files, the
    /// client, its hardware and faults, OVMF's files and QEMU's binary. (An install with a
    /// [`InstallOptions::configure_lab`] is never cached: a function is no key.)
    pub fn of(cache_root: &Path, artifacts: &ArtifactSet, options: &InstallOptions) -> Result<Self, CacheError> {
        let mut inputs = vec![Input::Text(FORMAT.into())];
        for dir in std::iter::once(&artifacts.tftp_root).chain(&artifacts.nfs_layers) {
            inputs.push(match dir.strip_prefix(cache_root) {
                Ok(entry) => Input::Text(format!("cache entry {}", entry.display())),
                Err(_) => Input::Dir(dir.clone()),
            });
        }
        inputs.extend(
            [
                format!("{:?}", artifacts.system),
                format!("{:?}", artifacts.netboot),
                format!("{:?}", options.installer_files),
                format!("{:?}", options.client),
                format!("{:?}", options.hardware),
                format!("{:?}", options.faults),
            ]
            .map(Input::Text),
        );
        let firmware = match options.hardware.secure_boot {
            true => pxelab_ovmf::discover_secure_boot(),
            false => pxelab_ovmf::discover(),
        };
        let firmware = firmware.map_err(|e| CacheError::Io { path: cache_root.to_owned(), source: std::io::Error::other(e) })?;
        let qemu = crate::vm::on_path("qemu-system-x86_64");
        inputs.extend(qemu.iter().chain([&firmware.code, &firmware.vars_template]).map(|file| Input::Text(file_stamp(file))));
        let key = content_key(&inputs)?;
        Ok(CachedInstall { dir: cache_root.join(format!("installed-{}", &key[..16])) })
    }

    /// The entry's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The installed disk image (qcow2).
    pub fn disk(&self) -> PathBuf {
        self.dir.join("disk.qcow2")
    }

    /// The NVRAM as the installer left it.
    pub fn nvram(&self) -> PathBuf {
        self.dir.join("OVMF_VARS.fd")
    }

    /// Whether the entry is complete.
    pub fn exists(&self) -> bool {
        self.disk().is_file() && self.nvram().is_file()
    }

    /// Hold the entry's lock until the returned file closes: a second process that wants the
    /// entry waits here while the first installs and saves it.
    pub async fn lock(&self) -> std::io::Result<std::fs::File> {
        let path = self.dir.with_extension("lock");
        tokio::task::spawn_blocking(move || {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            crate::artifacts::lock_exclusive(&path)
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Save `vm`'s disk `disk` and its NVRAM into the entry at the machine's reset after the
    /// installer's reboot: wait for the reset (counted from `resets_before`), pause the guest,
    /// copy both beside the entry, rename the copy into place, and resume.
    pub async fn save(&self, vm: &Vm, disk: &Path, resets_before: usize, wait: Duration) -> Result<(), VmError> {
        let qmp = |source| VmError::Qmp { name: vm.name().to_owned(), source };
        vm.qmp().wait_for_event(QmpEvent::Reset, resets_before, wait).await.map_err(qmp)?;
        vm.qmp().stop().await.map_err(qmp)?;
        let (disk, nvram, dir) = (disk.to_owned(), vm.var_store().path.clone(), self.dir.clone());
        let copied = tokio::task::spawn_blocking(move || copy_into(&dir, &disk, &nvram)).await.map_err(std::io::Error::other).and_then(|r| r);
        let resumed = vm.qmp().cont().await.map_err(qmp);
        copied.map_err(|source| VmError::Io { what: format!("cannot save the installed disk into {}", self.dir.display()), source })?;
        resumed
    }
}

/// Copy `disk` and `nvram` into a scratch directory beside `dir`, then rename it to `dir`.
fn copy_into(dir: &Path, disk: &Path, nvram: &Path) -> std::io::Result<()> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let scratch = tempfile::Builder::new().prefix(&format!(".{name}-")).tempdir_in(parent)?;
    std::fs::copy(disk, scratch.path().join("disk.qcow2"))?;
    std::fs::copy(nvram, scratch.path().join("OVMF_VARS.fd"))?;
    if dir.exists() {
        std::fs::remove_dir_all(dir)?; // an incomplete entry a killed run left
    }
    std::fs::rename(scratch.keep(), dir)
}

#[cfg(test)]
mod test {
    use super::*;

    /// Needs OVMF (`ci/install-deps.sh`): its files are part of the key.
    #[test]
    fn the_key_follows_a_users_artifacts_by_content_and_a_cache_entry_by_its_name() {
        let cache = tempfile::tempdir().unwrap();
        let user = tempfile::tempdir().unwrap();
        let entry = cache.path().join("nfs-root-0123456789abcdef");
        std::fs::create_dir_all(entry.join("bin")).unwrap();
        std::fs::write(user.path().join("bzImage"), b"kernel").unwrap();
        let system = crate::artifacts::InstalledSystem::default();
        let set = ArtifactSet { tftp_root: user.path().to_owned(), nfs_layers: vec![entry.clone()], system, netboot: None };
        let options = InstallOptions::default();
        let key = |set: &ArtifactSet, options: &InstallOptions| CachedInstall::of(cache.path(), set, options).unwrap().dir;
        let first = key(&set, &options);
        assert!(first.starts_with(cache.path()) && first.file_name().unwrap().to_string_lossy().starts_with("installed-"), "{first:?}");
        assert_eq!(key(&set, &options), first);
        std::fs::write(entry.join("bin/sh"), b"a file in a cache entry, whose name holds its key").unwrap();
        assert_eq!(key(&set, &options), first);
        std::fs::write(user.path().join("bzImage"), b"kernel 2").unwrap();
        let second = key(&set, &options);
        assert_ne!(second, first, "a changed file of the user's is another install");
        let config = InstallOptions { installer_files: vec![("config".into(), "rootDevice=/dev/sda".into())], ..InstallOptions::default() };
        assert_ne!(key(&set, &config), second, "other installer files");
    }

    #[test]
    fn a_saved_entry_appears_whole_and_replaces_a_broken_one() {
        let root = tempfile::tempdir().unwrap();
        let (disk, nvram) = (root.path().join("disk0.qcow2"), root.path().join("vars.fd"));
        std::fs::write(&disk, b"disk").unwrap();
        std::fs::write(&nvram, b"vars").unwrap();
        let entry = CachedInstall { dir: root.path().join("cache/installed-0123") };
        std::fs::create_dir_all(entry.dir()).unwrap();
        std::fs::write(entry.disk(), b"half").unwrap();
        assert!(!entry.exists(), "a disk without its NVRAM is no entry");
        copy_into(entry.dir(), &disk, &nvram).unwrap();
        assert!(entry.exists());
        assert_eq!(std::fs::read(entry.disk()).unwrap(), b"disk");
        assert_eq!(std::fs::read(entry.nvram()).unwrap(), b"vars");
    }
}
