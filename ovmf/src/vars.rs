//! Per-VM copies of the UEFI variable store.

use std::path::{Path, PathBuf};

use crate::Firmware;

/// A VM's own writable copy of the VARS template: its NVRAM, kept after the VM stops so the
/// host can read what the guest wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarStore {
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("Cannot create the UEFI variable store {path} from {template}")]
pub struct VarStoreError {
    pub path: PathBuf,
    pub template: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl Firmware {
    /// Copy the pristine VARS template to `path` for one VM. An existing store is replaced.
    pub fn new_var_store(&self, path: &Path) -> Result<VarStore, VarStoreError> {
        let err = |source| VarStoreError {
            path: path.to_owned(),
            template: self.vars_template.clone(),
            source,
        };
        std::fs::copy(&self.vars_template, path).map_err(err)?;
        // Templates are often read-only in distribution packages: the copy must be writable
        // by its owner (QEMU), and by no one else.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(err)?;
        Ok(VarStore { path: path.to_owned() })
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::FlashSize;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn copy_is_private_and_writable() {
        let dir = tempfile::tempdir().unwrap();
        let template = dir.path().join("VARS.fd");
        std::fs::write(&template, b"pristine").unwrap();
        std::fs::set_permissions(&template, std::fs::Permissions::from_mode(0o444)).unwrap();
        let fw = Firmware {
            code: dir.path().join("CODE.fd"),
            vars_template: template.clone(),
            flash: FlashSize::FourMiB,
            source: "test".into(),
            secure_boot: false,
        };
        let store = fw.new_var_store(&dir.path().join("vm1.vars.fd")).unwrap();
        std::fs::write(&store.path, b"written by the guest").unwrap();
        let mode = std::fs::metadata(&store.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "owner-writable, not world-writable: {mode:o}");
        assert_eq!(std::fs::read(&template).unwrap(), b"pristine");
        let err = fw.new_var_store(&dir.path().join("missing/vm2.fd")).unwrap_err();
        assert!(err.to_string().contains("vm2.fd"), "{err}");
    }
}
