//! Mapping a requested file name into the served root, refusing every way out of it.

use std::path::{Component, Path, PathBuf};

/// Why a requested name is not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("{0:?} contains '..'")]
    ParentDir(String),
    #[error("{0:?} resolves outside the TFTP root")]
    Escapes(String),
    #[error("{0:?} not found")]
    NotFound(String),
    #[error("{0:?} is not a regular file")]
    NotAFile(String),
}

impl PathError {
    /// How the transfer ends.
    pub fn outcome(&self) -> super::TftpOutcome {
        match self {
            PathError::NotFound(_) => super::TftpOutcome::NotFound,
            _ => super::TftpOutcome::Refused,
        }
    }

    /// The TFTP error code to answer with.
    pub fn code(&self) -> u16 {
        match self {
            PathError::NotFound(_) => super::wire::code::FILE_NOT_FOUND,
            _ => super::wire::code::ACCESS_VIOLATION,
        }
    }
}

/// Resolve `requested` in a stack of roots: the first root that has the file serves it, so
/// per-test files can sit over a shared, cached tree.
pub fn resolve_in(roots: &[PathBuf], requested: &str) -> Result<PathBuf, PathError> {
    let mut missing = PathError::NotFound(requested.to_owned());
    for root in roots {
        match resolve(root, requested) {
            Err(PathError::NotFound(_)) => continue,
            Err(refused @ (PathError::ParentDir(_) | PathError::Escapes(_))) => return Err(refused),
            Err(other) => missing = other,
            found @ Ok(_) => return found,
        }
    }
    Err(missing)
}

/// Resolve `requested` under `root`. A leading `/` means the root (GRUB sends
/// `/nixos/grub.cfg`), as with `tftpd --secure`; `..` is refused; symlinks are followed only
/// while they stay inside the root.
pub fn resolve(root: &Path, requested: &str) -> Result<PathBuf, PathError> {
    let relative = Path::new(requested.trim_start_matches('/'));
    if relative.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(PathError::ParentDir(requested.to_owned()));
    }
    let root = root.canonicalize().map_err(|_| PathError::NotFound(requested.to_owned()))?;
    let real = root.join(relative).canonicalize().map_err(|_| PathError::NotFound(requested.to_owned()))?;
    if !real.starts_with(&root) {
        return Err(PathError::Escapes(requested.to_owned()));
    }
    if !real.is_file() {
        return Err(PathError::NotAFile(requested.to_owned()));
    }
    Ok(real)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn traversal_absolute_and_symlink_escapes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("nixos")).unwrap();
        std::fs::write(root.join("nixos/grub.cfg"), "x").unwrap();
        std::fs::write(dir.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink("../../secret", root.join("nixos/leak")).unwrap();
        std::os::unix::fs::symlink("grub.cfg", root.join("nixos/alias")).unwrap();

        assert_eq!(resolve(&root, "nixos/grub.cfg").unwrap(), root.canonicalize().unwrap().join("nixos/grub.cfg"));
        assert!(resolve(&root, "/nixos/grub.cfg").is_ok(), "GRUB's leading slash is the root");
        assert!(resolve(&root, "nixos/alias").is_ok(), "a symlink inside the root is served");
        assert_eq!(resolve(&root, "../secret"), Err(PathError::ParentDir("../secret".into())));
        assert_eq!(resolve(&root, "nixos/../../secret").unwrap_err().code(), 2);
        assert_eq!(resolve(&root, "nixos/leak"), Err(PathError::Escapes("nixos/leak".into())));
        assert_eq!(resolve(&root, "/etc/passwd"), Err(PathError::NotFound("/etc/passwd".into())));
        assert_eq!(resolve(&root, "nixos").unwrap_err().code(), 2);
        assert_eq!(resolve(&root, "nixos/missing").unwrap_err().code(), 1);
        // The transfer's typed outcome: a missing file, or a refusal.
        use super::super::TftpOutcome;
        assert_eq!(resolve(&root, "nixos/missing").unwrap_err().outcome(), TftpOutcome::NotFound);
        for refused in ["../secret", "nixos/leak", "nixos"] {
            assert_eq!(resolve(&root, refused).unwrap_err().outcome(), TftpOutcome::Refused, "{refused}");
        }
    }

    #[test]
    fn upper_roots_shadow_lower_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (upper, lower) = (dir.path().join("upper"), dir.path().join("lower"));
        for (root, text) in [(&upper, "upper"), (&lower, "lower")] {
            std::fs::create_dir_all(root.join("nixos")).unwrap();
            std::fs::write(root.join("nixos/load-kernel.cfg"), text).unwrap();
        }
        std::fs::write(lower.join("nixos/bzImage"), "kernel").unwrap();
        let roots = [upper.clone(), lower.clone()];
        let read = |name: &str| std::fs::read_to_string(resolve_in(&roots, name).unwrap()).unwrap();
        assert_eq!(read("nixos/load-kernel.cfg"), "upper");
        assert_eq!(read("/nixos/bzImage"), "kernel");
        assert_eq!(resolve_in(&roots, "nixos/none").unwrap_err().code(), 1);
        assert_eq!(resolve_in(&roots, "../lower/nixos/bzImage").unwrap_err().code(), 2);
    }
}
