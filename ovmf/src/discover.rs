//! Finding an OVMF CODE/VARS pair on the host.

use std::path::{Path, PathBuf};

/// Where distributions install OVMF, in order of preference: `(code, vars, distribution)`.
pub const CANDIDATES: &[(&str, &str, &str)] = &[
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd", "Debian/Ubuntu (4M)"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd", "Debian/Ubuntu (2M)"),
    ("/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd", "Fedora"),
    ("/usr/share/edk2/x64/OVMF_CODE.4m.fd", "/usr/share/edk2/x64/OVMF_VARS.4m.fd", "Arch (4M)"),
    ("/usr/share/edk2/x64/OVMF_CODE.fd", "/usr/share/edk2/x64/OVMF_VARS.fd", "Arch (2M)"),
    ("/usr/share/edk2-ovmf/x64/OVMF_CODE.fd", "/usr/share/edk2-ovmf/x64/OVMF_VARS.fd", "Arch (older)"),
];

/// Secure Boot builds (SMM, variables in secure flash) with Microsoft's keys enrolled and
/// Secure Boot on, in order of preference: `(code, vars, distribution)`.
pub const SECURE_BOOT_CANDIDATES: &[(&str, &str, &str)] = &[
    ("/usr/share/OVMF/OVMF_CODE_4M.ms.fd", "/usr/share/OVMF/OVMF_VARS_4M.ms.fd", "Debian/Ubuntu (4M, Secure Boot, Microsoft keys)"),
    ("/usr/share/OVMF/OVMF_CODE.ms.fd", "/usr/share/OVMF/OVMF_VARS.ms.fd", "Debian/Ubuntu (2M, Secure Boot, Microsoft keys)"),
    ("/usr/share/edk2/ovmf/OVMF_CODE.secboot.fd", "/usr/share/edk2/ovmf/OVMF_VARS.secboot.fd", "Fedora (Secure Boot, Microsoft keys)"),
];

const MIB: u64 = 1024 * 1024;

/// The size of the flash device a CODE/VARS pair fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashSize {
    TwoMiB,
    FourMiB,
}

/// A checked OVMF CODE/VARS pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firmware {
    /// Read-only firmware code, mapped as the first pflash device.
    pub code: PathBuf,
    /// Pristine variable store that each VM copies.
    pub vars_template: PathBuf,
    pub flash: FlashSize,
    /// Where the pair came from: an environment override or a distribution's layout.
    pub source: String,
    /// A Secure Boot build: QEMU must give it SMM and secure flash (`-machine q35,smm=on`,
    /// `-global driver=cfi.pflash01,property=secure,value=on`), or it does not start.
    pub secure_boot: bool,
}

/// What discovery looks at; [`Lookup::from_env`] reads the real environment.
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    /// `OVMF_CODE` override.
    pub code: Option<PathBuf>,
    /// `OVMF_VARS` override.
    pub vars: Option<PathBuf>,
    /// Prefix put before every candidate path (empty for the real root); tests use a temp dir.
    pub root: PathBuf,
}

impl Lookup {
    /// Read `OVMF_CODE` and `OVMF_VARS` from the environment.
    pub fn from_env() -> Self {
        Lookup {
            code: std::env::var_os("OVMF_CODE").map(PathBuf::from),
            vars: std::env::var_os("OVMF_VARS").map(PathBuf::from),
            root: PathBuf::from("/"),
        }
    }

    /// Read `OVMF_SECURE_BOOT_CODE` and `OVMF_SECURE_BOOT_VARS` from the environment: the
    /// Secure Boot pair's override.
    pub fn secure_boot_from_env() -> Self {
        Lookup {
            code: std::env::var_os("OVMF_SECURE_BOOT_CODE").map(PathBuf::from),
            vars: std::env::var_os("OVMF_SECURE_BOOT_VARS").map(PathBuf::from),
            root: PathBuf::from("/"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error(
        "No OVMF firmware found (looked in {looked}). Install it: `apt-get install ovmf` \
         (Debian/Ubuntu), `dnf install edk2-ovmf` (Fedora), `pacman -S edk2-ovmf` (Arch), \
         or set OVMF_CODE and OVMF_VARS"
    )]
    NotFound { looked: String },
    #[error(
        "No OVMF Secure Boot build with keys enrolled found (looked in {looked}). Install it: \
         `apt-get install ovmf` (Debian/Ubuntu: OVMF_CODE_4M.ms.fd and OVMF_VARS_4M.ms.fd), \
         `dnf install edk2-ovmf` (Fedora), or set OVMF_SECURE_BOOT_CODE and OVMF_SECURE_BOOT_VARS"
    )]
    NoSecureBoot { looked: String },
    #[error("OVMF_{set} is set but OVMF_{unset} is not: set both to use your own firmware pair")]
    HalfOverride { set: &'static str, unset: &'static str },
    #[error(
        "OVMF pair does not fit one flash device: {code} ({code_len} bytes) + {vars} \
         ({vars_len} bytes) is neither 2 MiB nor 4 MiB; a 4M CODE must go with a 4M VARS"
    )]
    MismatchedPair { code: PathBuf, code_len: u64, vars: PathBuf, vars_len: u64 },
    #[error("Cannot read OVMF file {path}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Find the firmware pair to use on this host (environment overrides first).
pub fn discover() -> Result<Firmware, DiscoverError> {
    discover_with(&Lookup::from_env())
}

/// Find the firmware pair that `lookup` describes.
pub fn discover_with(lookup: &Lookup) -> Result<Firmware, DiscoverError> {
    match (&lookup.code, &lookup.vars) {
        (Some(code), Some(vars)) => return check_pair(code, vars, "OVMF_CODE/OVMF_VARS"),
        (Some(_), None) => return Err(DiscoverError::HalfOverride { set: "CODE", unset: "VARS" }),
        (None, Some(_)) => return Err(DiscoverError::HalfOverride { set: "VARS", unset: "CODE" }),
        (None, None) => {}
    }
    match first_candidate(lookup, CANDIDATES) {
        Some(found) => found,
        None => Err(DiscoverError::NotFound { looked: looked(CANDIDATES) }),
    }
}

/// Find this host's Secure Boot pair (its override first): a Secure Boot build whose VARS
/// hold Microsoft's keys with Secure Boot on, so that Microsoft-signed shim starts and an
/// unsigned image does not.
pub fn discover_secure_boot() -> Result<Firmware, DiscoverError> {
    discover_secure_boot_with(&Lookup::secure_boot_from_env())
}

/// Find the Secure Boot pair that `lookup` describes.
pub fn discover_secure_boot_with(lookup: &Lookup) -> Result<Firmware, DiscoverError> {
    let found = match (&lookup.code, &lookup.vars) {
        (Some(code), Some(vars)) => check_pair(code, vars, "OVMF_SECURE_BOOT_CODE/OVMF_SECURE_BOOT_VARS"),
        (Some(_), None) => Err(DiscoverError::HalfOverride { set: "SECURE_BOOT_CODE", unset: "SECURE_BOOT_VARS" }),
        (None, Some(_)) => Err(DiscoverError::HalfOverride { set: "SECURE_BOOT_VARS", unset: "SECURE_BOOT_CODE" }),
        (None, None) => first_candidate(lookup, SECURE_BOOT_CANDIDATES)
            .unwrap_or_else(|| Err(DiscoverError::NoSecureBoot { looked: looked(SECURE_BOOT_CANDIDATES) })),
    };
    found.map(|firmware| Firmware { secure_boot: true, ..firmware })
}

fn first_candidate(lookup: &Lookup, candidates: &[(&str, &str, &str)]) -> Option<Result<Firmware, DiscoverError>> {
    candidates.iter().find_map(|(code, vars, distro)| {
        let (code, vars) = (rooted(&lookup.root, code), rooted(&lookup.root, vars));
        (code.is_file() && vars.is_file()).then(|| check_pair(&code, &vars, distro))
    })
}

fn looked(candidates: &[(&str, &str, &str)]) -> String {
    candidates.iter().map(|(c, _, _)| *c).collect::<Vec<_>>().join(", ")
}

fn rooted(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn check_pair(code: &Path, vars: &Path, source: &str) -> Result<Firmware, DiscoverError> {
    let len = |path: &Path| {
        std::fs::metadata(path)
            .map(|m| m.len())
            .map_err(|source| DiscoverError::Unreadable { path: path.to_owned(), source })
    };
    let (code_len, vars_len) = (len(code)?, len(vars)?);
    let flash = match code_len + vars_len {
        n if n == 2 * MIB => FlashSize::TwoMiB,
        n if n == 4 * MIB => FlashSize::FourMiB,
        _ => {
            return Err(DiscoverError::MismatchedPair {
                code: code.to_owned(),
                code_len,
                vars: vars.to_owned(),
                vars_len,
            })
        }
    };
    Ok(Firmware {
        code: code.to_owned(),
        vars_template: vars.to_owned(),
        flash,
        source: source.to_owned(),
        secure_boot: false,
    })
}

#[cfg(test)]
mod test {
    use super::*;

    const CODE_4M: u64 = 3_653_632;
    const VARS_4M: u64 = 540_672;
    const CODE_2M: u64 = 1_966_080;
    const VARS_2M: u64 = 131_072;

    fn file(root: &Path, path: &str, len: u64) -> PathBuf {
        let path = rooted(root, path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::File::create(&path).unwrap().set_len(len).unwrap();
        path
    }

    fn lookup(root: &Path) -> Lookup {
        Lookup { code: None, vars: None, root: root.to_owned() }
    }

    #[test]
    fn debian_4m_pair_preferred_over_2m() {
        let root = tempfile::tempdir().unwrap();
        file(root.path(), "/usr/share/OVMF/OVMF_CODE.fd", CODE_2M);
        file(root.path(), "/usr/share/OVMF/OVMF_VARS.fd", VARS_2M);
        let code = file(root.path(), "/usr/share/OVMF/OVMF_CODE_4M.fd", CODE_4M);
        file(root.path(), "/usr/share/OVMF/OVMF_VARS_4M.fd", VARS_4M);
        let fw = discover_with(&lookup(root.path())).unwrap();
        assert_eq!(fw.code, code);
        assert_eq!(fw.flash, FlashSize::FourMiB);
        assert_eq!(fw.source, "Debian/Ubuntu (4M)");
    }

    #[test]
    fn fedora_and_arch_layouts() {
        let root = tempfile::tempdir().unwrap();
        file(root.path(), "/usr/share/edk2/ovmf/OVMF_CODE.fd", CODE_4M);
        file(root.path(), "/usr/share/edk2/ovmf/OVMF_VARS.fd", VARS_4M);
        assert_eq!(discover_with(&lookup(root.path())).unwrap().source, "Fedora");

        let root = tempfile::tempdir().unwrap();
        file(root.path(), "/usr/share/edk2/x64/OVMF_CODE.4m.fd", CODE_4M);
        file(root.path(), "/usr/share/edk2/x64/OVMF_VARS.4m.fd", VARS_4M);
        assert_eq!(discover_with(&lookup(root.path())).unwrap().source, "Arch (4M)");
    }

    #[test]
    fn the_secure_boot_pair_is_a_secure_boot_build_and_its_absence_is_named() {
        let root = tempfile::tempdir().unwrap();
        file(root.path(), "/usr/share/OVMF/OVMF_CODE_4M.fd", CODE_4M);
        file(root.path(), "/usr/share/OVMF/OVMF_VARS_4M.fd", VARS_4M);
        assert!(!discover_with(&lookup(root.path())).unwrap().secure_boot);
        let err = discover_secure_boot_with(&lookup(root.path())).unwrap_err();
        assert!(matches!(err, DiscoverError::NoSecureBoot { .. }) && err.to_string().contains("OVMF_VARS_4M.ms.fd"), "{err}");
        let code = file(root.path(), "/usr/share/OVMF/OVMF_CODE_4M.ms.fd", CODE_4M);
        file(root.path(), "/usr/share/OVMF/OVMF_VARS_4M.ms.fd", VARS_4M);
        let fw = discover_secure_boot_with(&lookup(root.path())).unwrap();
        assert_eq!((fw.code, fw.secure_boot, fw.flash), (code, true, FlashSize::FourMiB));
        assert!(!discover_with(&lookup(root.path())).unwrap().secure_boot, "the plain pair stays the default");
    }

    #[test]
    fn half_a_pair_is_not_a_pair() {
        let root = tempfile::tempdir().unwrap();
        file(root.path(), "/usr/share/OVMF/OVMF_CODE_4M.fd", CODE_4M);
        let err = discover_with(&lookup(root.path())).unwrap_err();
        assert!(matches!(err, DiscoverError::NotFound { .. }));
        assert!(err.to_string().contains("apt-get install ovmf"), "{err}");
    }

    #[test]
    fn env_override_wins_and_is_checked() {
        let root = tempfile::tempdir().unwrap();
        file(root.path(), "/usr/share/OVMF/OVMF_CODE_4M.fd", CODE_4M);
        file(root.path(), "/usr/share/OVMF/OVMF_VARS_4M.fd", VARS_4M);
        let code = file(root.path(), "/nix/store/x/OVMF_CODE.fd", CODE_2M);
        let vars = file(root.path(), "/nix/store/x/OVMF_VARS.fd", VARS_2M);
        let mut l = lookup(root.path());
        l.code = Some(code.clone());
        l.vars = Some(vars);
        let fw = discover_with(&l).unwrap();
        assert_eq!((fw.code, fw.flash), (code, FlashSize::TwoMiB));

        l.vars = None;
        assert!(matches!(discover_with(&l), Err(DiscoverError::HalfOverride { set: "CODE", .. })));
    }

    #[test]
    fn a_4m_code_never_pairs_with_a_2m_vars() {
        let root = tempfile::tempdir().unwrap();
        let mut l = lookup(root.path());
        l.code = Some(file(root.path(), "/a/OVMF_CODE_4M.fd", CODE_4M));
        l.vars = Some(file(root.path(), "/a/OVMF_VARS.fd", VARS_2M));
        let err = discover_with(&l).unwrap_err();
        assert!(matches!(err, DiscoverError::MismatchedPair { .. }), "{err}");
    }

    #[test]
    fn missing_override_file_is_named() {
        let root = tempfile::tempdir().unwrap();
        let mut l = lookup(root.path());
        l.code = Some(root.path().join("nope/CODE.fd"));
        l.vars = Some(root.path().join("nope/VARS.fd"));
        let err = discover_with(&l).unwrap_err();
        assert!(err.to_string().contains("nope/CODE.fd"), "{err}");
    }
}
