//! A content-addressed cache of built artifact directories.
//!
//! An entry's name is the recipe's name plus a SHA-256 over all its inputs (files by content,
//! directories by the names and contents of their files, text as is), so a changed kernel,
//! script or recipe source builds a new entry. Entries are built in a temporary directory
//! beside their final place and renamed into it; an exclusive `flock` per entry lets two test
//! processes that want the same entry build it once. Each use marks the entry used
//! ([`super::mark_used`]), so what goes unused can be pruned ([`Cache::prune`]).

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use pxelab_fixtures::{FixtureError, Input, Recipe};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("Cannot read the input {path} of {recipe}")]
    Input {
        recipe: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cache directory {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not pxelab's cache: it has no CACHEDIR.TAG, which pxelab writes into its cache; nothing was removed")]
    Untagged { path: PathBuf },
    #[error("Building {recipe} failed")]
    Build {
        recipe: String,
        #[source]
        source: FixtureError,
    },
}

/// The artifact cache rooted at one directory.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    pub fn new(root: &Path) -> Self {
        Cache { root: root.to_owned() }
    }

    /// `$PXELAB_CACHE_DIR`, else `$XDG_CACHE_HOME/pxelab`, else `~/.cache/pxelab`.
    pub fn default_root() -> PathBuf {
        if let Some(dir) = std::env::var_os("PXELAB_CACHE_DIR") {
            return dir.into();
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        base.join("pxelab")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// [`Cache::get_or_build`] on a blocking thread, off the async runtime that carries the
    /// VMs' network and consoles (hashing the inputs takes seconds, a build minutes).
    pub async fn build<R: Recipe + Send + 'static>(&self, recipe: R) -> Result<PathBuf, CacheError> {
        let cache = self.clone();
        super::off_runtime(move || cache.get_or_build(&recipe)).await
    }

    /// The directory `recipe` built, building it first if no entry has its inputs' key.
    pub fn get_or_build(&self, recipe: &dyn Recipe) -> Result<PathBuf, CacheError> {
        let name = recipe.name();
        let key = key(&name, &recipe.inputs())?;
        let entry = self.root.join(format!("{name}-{}", &key[..16]));
        if entry.is_dir() {
            super::mark_used(&entry);
            super::prune::tag(&self.root);
            return Ok(entry);
        }
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| CacheError::Io { path, source }
        };
        std::fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        super::prune::tag(&self.root);
        let lock_path = self.root.join(format!("{name}-{}.lock", &key[..16]));
        let _lock = lock_exclusive(&lock_path).map_err(io(&lock_path))?;
        if entry.is_dir() {
            return Ok(entry); // another process built it while we waited
        }
        tracing::info!(building = %name, "building");
        let started = Instant::now();
        let scratch = tempfile::Builder::new().prefix(&format!(".{name}-")).tempdir_in(&self.root).map_err(io(&self.root))?;
        recipe.build(scratch.path()).map_err(|source| CacheError::Build { recipe: name.clone(), source })?;
        std::fs::rename(scratch.keep(), &entry).map_err(io(&entry))?;
        tracing::info!("built {name} in {:.1?}: {}", started.elapsed(), entry.display());
        Ok(entry)
    }
}

/// An exclusive `flock` on `path` (created if missing), held until the file closes: one
/// process builds an entry while others that want it wait. Blocks.
pub fn lock_exclusive(path: &Path) -> std::io::Result<std::fs::File> {
    let lock = std::fs::File::create(path)?;
    // SAFETY: flock on a file we own; released when `lock` closes.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(lock)
}

/// Hex SHA-256 over `inputs`, as the cache keys its entries: text as is, files by content,
/// directories by the names, link targets and contents of their files.
pub fn content_key(inputs: &[Input]) -> Result<String, CacheError> {
    key("content", inputs)
}

/// Hex SHA-256 over a recipe's inputs.
fn key(recipe: &str, inputs: &[Input]) -> Result<String, CacheError> {
    let mut hash = Sha256::new();
    let read_err = |path: &Path| {
        let (recipe, path) = (recipe.to_owned(), path.to_owned());
        move |source| CacheError::Input { recipe, path, source }
    };
    for input in inputs {
        match input {
            Input::Text(text) => field(&mut hash, b"text", text.as_bytes()),
            Input::File(path) => {
                field(&mut hash, b"file", path.as_os_str().as_encoded_bytes());
                hash_file(&mut hash, path).map_err(read_err(path))?;
            }
            Input::Dir(dir) => {
                field(&mut hash, b"dir", dir.as_os_str().as_encoded_bytes());
                let mut files = Vec::new();
                walk(dir, &mut files).map_err(read_err(dir))?;
                files.sort();
                for file in files {
                    field(&mut hash, b"entry", file.strip_prefix(dir).unwrap_or(&file).as_os_str().as_encoded_bytes());
                    match std::fs::read_link(&file) {
                        Ok(target) => field(&mut hash, b"link", target.as_os_str().as_encoded_bytes()),
                        Err(_) => hash_file(&mut hash, &file).map_err(read_err(&file))?,
                    }
                }
            }
        }
    }
    Ok(hex::encode(hash.finalize()))
}

/// Length-prefixed, so no two input lists hash alike by concatenation.
fn field(hash: &mut Sha256, tag: &[u8], bytes: &[u8]) {
    hash.update(tag);
    hash.update((bytes.len() as u64).to_le_bytes());
    hash.update(bytes);
}

fn hash_file(hash: &mut Sha256, path: &Path) -> std::io::Result<()> {
    let mut file = std::fs::File::open(path)?;
    hash.update(file.metadata()?.len().to_le_bytes());
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        hash.update(&buf[..n]);
    }
}

/// Every entry below `dir` that is not a directory; symlinks are listed, never followed (a
/// link to its own directory would loop).
fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            walk(&entry.path(), files)?;
        } else {
            files.push(entry.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_symlink_loop_in_an_input_tree_is_hashed_as_a_link() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), "x").unwrap();
        std::os::unix::fs::symlink(".", dir.path().join("loop")).unwrap();
        let first = key("r", &[Input::Dir(dir.path().to_owned())]).unwrap();
        std::fs::remove_file(dir.path().join("loop")).unwrap();
        std::os::unix::fs::symlink("..", dir.path().join("loop")).unwrap();
        assert_ne!(key("r", &[Input::Dir(dir.path().to_owned())]).unwrap(), first, "the link's target is part of the key");
    }
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    struct Counting {
        input: PathBuf,
        builds: Arc<AtomicUsize>,
    }

    impl Recipe for Counting {
        fn name(&self) -> String {
            "counting".into()
        }
        fn inputs(&self) -> Vec<Input> {
            vec![Input::Text("v1".into()), Input::File(self.input.clone())]
        }
        fn build(&self, out: &Path) -> Result<(), FixtureError> {
            self.builds.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(50));
            std::fs::copy(&self.input, out.join("copy")).map(drop).map_err(|source| FixtureError::Write { path: out.into(), source })
        }
    }

    #[test]
    fn builds_once_per_input_content_even_when_raced() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("input");
        std::fs::write(&input, "one").unwrap();
        let cache = Cache::new(&dir.path().join("cache"));
        let builds = Arc::new(AtomicUsize::new(0));
        let entries: Vec<PathBuf> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let recipe = Counting { input: input.clone(), builds: builds.clone() };
                    let cache = cache.clone();
                    s.spawn(move || cache.get_or_build(&recipe).unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(builds.load(Ordering::SeqCst), 1);
        assert!(entries.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(std::fs::read_to_string(entries[0].join("copy")).unwrap(), "one");

        std::fs::write(&input, "two").unwrap();
        let recipe = Counting { input: input.clone(), builds: builds.clone() };
        let second = cache.get_or_build(&recipe).unwrap();
        assert_ne!(second, entries[0]);
        assert_eq!(builds.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn missing_input_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let recipe = Counting { input: dir.path().join("gone"), builds: Default::default() };
        let err = Cache::new(dir.path()).get_or_build(&recipe).unwrap_err();
        assert!(matches!(err, CacheError::Input { .. }));
        assert!(err.to_string().contains("gone"), "{err}");
    }
}
