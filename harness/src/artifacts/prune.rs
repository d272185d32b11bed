//! What the cache holds, by last use, and pruning what has gone unused.
//!
//! An entry's modification time is its last use: [`Cache::get_or_build`] and a firmware
//! snapshot's restore set it ([`mark_used`]), as cargo tracks its cache's last use to clean
//! it. Pruning never waits: an entry whose build lock is held (a build under way) stays; any
//! other is renamed out of its name before it is removed, so a reader sees all of an entry or
//! none. Only the cache's own directory is touched: pruning needs the `CACHEDIR.TAG` that
//! pxelab writes into its cache (the Cache Directory Tagging convention, which backup tools
//! honour), and lists and removes only names pxelab gives, so a `PXELAB_CACHE_DIR` that
//! names another directory loses nothing.

use std::collections::HashSet;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{Cache, CacheError};

/// The file that marks a directory as pxelab's cache.
pub const TAG: &str = "CACHEDIR.TAG";
const TAG_TEXT: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by pxelab: its artifact cache.\n\
# For information about cache directory tags see https://bford.info/cachedir/\n";

/// The names pxelab gives what it puts in its cache: `<recipe>-<16 hex>` entries and
/// snapshots, `accel-<boot id>` verdicts, and the scratch directories of builds, saves,
/// probes and prunes (`.<recipe>-XXXXXX`, `accel-probeXXXXXX`, `.pruning-<entry>`).
static OURS: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(
        r"^(?:[A-Za-z0-9][A-Za-z0-9_-]*-[0-9a-f]{16}|accel-[0-9a-f-]{36}|accel-probe[A-Za-z0-9]{6}|\.[A-Za-z0-9][A-Za-z0-9_-]*-[A-Za-z0-9]{6}|\.pruning-.+)$",
    )
    .expect("valid pattern")
});

/// Write the cache's tag into `root` if it has none. Best effort, as [`mark_used`].
pub(crate) fn tag(root: &Path) {
    let path = root.join(TAG);
    if !path.exists() {
        let _ = std::fs::write(path, TAG_TEXT);
    }
}

/// One entry of the cache: a built or unpacked directory, a firmware snapshot, a verdict
/// file, or a build's scratch directory (its name starts with `.`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    pub name: String,
    /// Disk space its files take, a file linked from an earlier entry not counted again.
    pub bytes: u64,
    pub last_used: SystemTime,
}

/// What the cache holds: its entries, least recently used first, and the disk space they
/// take together (each hard-linked file once).
#[derive(Debug, Clone, Default)]
pub struct CacheListing {
    pub entries: Vec<CacheEntry>,
    pub bytes: u64,
}

/// Record that `entry` (a directory or file in the cache) was just used. Best effort: a
/// read-only cache keeps its old times.
pub fn mark_used(entry: &Path) {
    let _ = std::fs::File::open(entry).and_then(|f| f.set_modified(SystemTime::now()));
}

/// The entries unused for longer than `unused_for` at `now`, which pruning removes.
fn stale(entries: &[CacheEntry], unused_for: Duration, now: SystemTime) -> Vec<CacheEntry> {
    let cutoff = now.checked_sub(unused_for).unwrap_or(SystemTime::UNIX_EPOCH);
    entries.iter().filter(|e| e.last_used < cutoff).cloned().collect()
}

impl Cache {
    /// The cache's entries and their sizes; an absent cache holds nothing.
    pub fn list(&self) -> Result<CacheListing, CacheError> {
        let io = |source| CacheError::Io { path: self.root().to_owned(), source };
        let dir = match std::fs::read_dir(self.root()) {
            Ok(dir) => dir,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(CacheListing::default()),
            Err(e) => return Err(io(e)),
        };
        let mut names: Vec<String> = Vec::new();
        for item in dir {
            let name = item.map_err(io)?.file_name().to_string_lossy().into_owned();
            if OURS.is_match(&name) {
                names.push(name);
            }
        }
        names.sort();
        let mut seen = HashSet::new();
        let mut listing = CacheListing::default();
        for name in names {
            let path = self.root().join(&name);
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue }; // pruned meanwhile
            let bytes = disk_usage(&path, &mut seen).map_err(|source| CacheError::Io { path: path.clone(), source })?;
            listing.bytes += bytes;
            listing.entries.push(CacheEntry { name, bytes, last_used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH) });
        }
        listing.entries.sort_by_key(|e| e.last_used);
        Ok(listing)
    }

    /// The entries [`Cache::prune`] would remove now.
    pub fn prunable(&self, unused_for: Duration) -> Result<Vec<CacheEntry>, CacheError> {
        let listing = self.list()?;
        if !listing.entries.is_empty() && !self.root().join(TAG).is_file() {
            return Err(CacheError::Untagged { path: self.root().to_owned() });
        }
        Ok(stale(&listing.entries, unused_for, SystemTime::now()))
    }

    /// Remove the entries unused for longer than `unused_for`; returns those removed. An
    /// entry being built, or used again since it was listed, stays.
    pub fn prune(&self, unused_for: Duration) -> Result<Vec<CacheEntry>, CacheError> {
        let mut removed = Vec::new();
        for entry in self.prunable(unused_for)? {
            let path = self.root().join(&entry.name);
            let lock_path = self.root().join(format!("{}.lock", entry.name));
            let lock = match std::fs::OpenOptions::new().write(true).open(&lock_path) {
                Ok(lock) => Some(lock),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(source) => return Err(CacheError::Io { path: lock_path, source }),
            };
            // SAFETY: flock on a file we opened; released when `lock` closes.
            if lock.as_ref().is_some_and(|l| unsafe { libc::flock(l.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0) {
                continue; // a build holds it
            }
            let used_since = std::fs::symlink_metadata(&path).ok().and_then(|m| m.modified().ok()).is_none_or(|t| t > entry.last_used);
            if used_since {
                continue;
            }
            let doomed = self.root().join(format!(".pruning-{}", entry.name.trim_start_matches('.')));
            let io = |path: &Path| {
                let path = path.to_owned();
                move |source| CacheError::Io { path, source }
            };
            std::fs::rename(&path, &doomed).map_err(io(&path))?;
            match std::fs::symlink_metadata(&doomed).map_err(io(&doomed))?.is_dir() {
                true => std::fs::remove_dir_all(&doomed).map_err(io(&doomed))?,
                false => std::fs::remove_file(&doomed).map_err(io(&doomed))?,
            }
            if lock.is_some() {
                let _ = std::fs::remove_file(&lock_path);
            }
            removed.push(entry);
        }
        Ok(removed)
    }
}

/// Disk space under `path` (symlinks not followed), skipping inodes already in `seen`.
fn disk_usage(path: &Path, seen: &mut HashSet<(u64, u64)>) -> std::io::Result<u64> {
    let meta = std::fs::symlink_metadata(path)?;
    let mut bytes = match seen.insert((meta.dev(), meta.ino())) {
        true => meta.blocks() * 512,
        false => 0,
    };
    if meta.is_dir() {
        let mut children: Vec<PathBuf> = std::fs::read_dir(path)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
        children.sort();
        for child in children {
            bytes += disk_usage(&child, seen)?;
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod test {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn age(path: &Path, days: u64) {
        std::fs::File::open(path).unwrap().set_modified(SystemTime::now() - DAY * days as u32).unwrap();
    }

    #[test]
    fn stale_entries_are_those_unused_past_the_cutoff() {
        let now = SystemTime::UNIX_EPOCH + DAY * 100;
        let entry = |name: &str, days_ago: u64| CacheEntry { name: name.into(), bytes: 1, last_used: now - DAY * days_ago as u32 };
        let entries = [entry("old", 40), entry("edge", 30), entry("new", 1)];
        assert_eq!(stale(&entries, DAY * 30, now), [entry("old", 40)]);
        assert_eq!(stale(&entries, Duration::ZERO, now).len(), 3);
        assert!(stale(&entries, DAY * 1000, now).is_empty(), "a cutoff before the epoch keeps all");
    }

    #[test]
    fn prune_removes_what_went_unused_and_keeps_what_is_used_or_being_built() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cache");
        for name in ["old-1111111111111111", "building-2222222222222222", "used-3333333333333333", ".old-scratch-x0Xx0X"] {
            std::fs::create_dir_all(root.join(name).join("sub")).unwrap();
            std::fs::write(root.join(name).join("sub/file"), vec![7u8; 10_000]).unwrap();
            std::fs::write(root.join(format!("{name}.lock")), "").unwrap();
        }
        std::fs::hard_link(root.join("old-1111111111111111/sub/file"), root.join("used-3333333333333333/linked")).unwrap();
        let accel = "accel-29cb4706-93e1-48ae-8244-03e42807c641";
        std::fs::write(root.join(accel), "tcg").unwrap();
        for name in ["old-1111111111111111", "building-2222222222222222", "used-3333333333333333", ".old-scratch-x0Xx0X", accel] {
            age(&root.join(name), 40);
        }
        let cache = Cache::new(&root);
        tag(&root);
        std::fs::write(root.join("notes.txt"), "a file not pxelab's").unwrap();
        age(&root.join("notes.txt"), 40);
        mark_used(&root.join("used-3333333333333333"));
        let building = std::fs::File::open(root.join("building-2222222222222222.lock")).unwrap();
        // SAFETY: flock on a file we opened.
        assert_eq!(unsafe { libc::flock(building.as_raw_fd(), libc::LOCK_EX) }, 0);

        let listing = cache.list().unwrap();
        let names: Vec<&str> = listing.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names.len(), 5, "{names:?}");
        assert_eq!(names.last(), Some(&"used-3333333333333333"), "least recently used first");
        let file_bytes = listing.entries.iter().find(|e| e.name == "old-1111111111111111").unwrap().bytes;
        assert!(listing.bytes < 5 * file_bytes, "the hard link is counted once: {listing:?}");

        let mut removed: Vec<String> = cache.prune(DAY * 30).unwrap().into_iter().map(|e| e.name).collect();
        removed.sort();
        assert_eq!(removed, [".old-scratch-x0Xx0X", accel, "old-1111111111111111"]);
        let mut left: Vec<String> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        let kept = ["CACHEDIR.TAG", "building-2222222222222222", "building-2222222222222222.lock", "notes.txt", "used-3333333333333333", "used-3333333333333333.lock"];
        assert_eq!(left, kept);
        assert_eq!(std::fs::read(root.join("used-3333333333333333/linked")).unwrap().len(), 10_000, "a file linked from a pruned entry stays");
        drop(building);
        assert_eq!(cache.prune(DAY * 30).unwrap().len(), 1, "the finished build is pruned next time");
    }

    #[test]
    fn a_directory_without_the_tag_is_not_pruned() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("photos-0123456789abcdef")).unwrap();
        age(&dir.path().join("photos-0123456789abcdef"), 400);
        assert!(matches!(Cache::new(dir.path()).prunable(DAY), Err(CacheError::Untagged { .. })));
        let err = Cache::new(dir.path()).prune(DAY).unwrap_err();
        assert!(matches!(err, CacheError::Untagged { .. }) && err.to_string().contains("CACHEDIR.TAG"), "{err}");
        assert!(dir.path().join("photos-0123456789abcdef").exists());
    }

    #[test]
    fn an_absent_cache_lists_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(&dir.path().join("none"));
        assert!(cache.list().unwrap().entries.is_empty());
        assert!(cache.prune(Duration::ZERO).unwrap().is_empty());
        assert!(!dir.path().join("none").exists(), "listing creates nothing");
    }
}
