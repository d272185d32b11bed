//! Where an artifact set comes from (protocol §1): built here from Debian packages
//! (`fixture`), a user's prebuilt files (`dir`: upstream's `boot-loader.tar.xz`,
//! `nfsroot.tar.xz`, `nixos.tar.gz`, `config`, or their unpacked directories), or the user's
//! Nix expressions (`nix`: `nix-build` as the upstream README runs it).
//!
//! Every provider ends in the same shape: a TFTP root with `nixos/` and the NFS export's
//! layers (the staged `installer/` over the NFS root). Tarballs are unpacked into the cache,
//! keyed by their content, so a large NFS root is unpacked once.

use std::path::{Path, PathBuf};
use std::process::Command;

use pxelab_fixtures::{
    BootLoader, Compression, FixtureError, HostFiles, Input, InstallImage, InstallerRoot, NetbootShape, NixosShapeImage, NixosShapeInstaller, NixosShapeKernel, PxeTree,
    Recipe, SerialConsole, ServiceStack, SignedBinaries, SignedNetboot, ZstdKernel,
};

use super::{Cache, CacheError, InstalledSystem, SystemFileError, DHCP_HOSTNAME};

/// An artifact set, ready to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactSet {
    /// Served by TFTP; holds `nixos/bootx64.efi`, `grub.cfg`, `load-kernel.cfg`, `bzImage`, ….
    pub tftp_root: PathBuf,
    /// The NFS export, top first: `installer/` (image, `nixos-image`, `config`), then the root.
    pub nfs_layers: Vec<PathBuf>,
    /// What the installed system is like (`pxelab.toml`).
    pub system: InstalledSystem,
    /// A set in netboot.nix's shape (`bzImage`, `initrd`, `netboot.ipxe` in `tftp_root`,
    /// no NFS root): the iPXE script, which iPXE is given over HTTP.
    pub netboot: Option<String>,
}

/// The iPXE script of a set in netboot.nix's shape.
pub const NETBOOT_SCRIPT: &str = "netboot.ipxe";

/// Where the artifacts come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    /// Built here from the host's Debian packages.
    Fixture { compression: Compression },
    /// The `nixos-shape` flavour, built here: upstream's kernel shape (no initrd, no
    /// virtio-net), unionfs-fuse, systemd and systemd-boot, under upstream's file names and
    /// with no `pxelab.toml`, taken as a user's directory is; the image may add a service stack,
    /// and the console may be on another serial port and speed (then named in a `pxelab.toml`).
    NixosShape { services: Option<ServiceStack>, console: SerialConsole },
    /// The busybox fixture signed for Secure Boot, from Debian's signed binaries: shim as the
    /// NBP, the signed network GRUB beside it ([`SignedNetboot`]), the host's Debian-signed
    /// kernel, and an image whose ESP boots shim and Debian's signed GRUB
    /// ([`BootLoader::SignedGrub`]).
    SignedFixture,
    /// The `netboot-shape` flavour, built here: netboot.nix's outputs (`bzImage`, an
    /// `initrd` holding the whole system, `netboot.ipxe`), whose system installs the fixture
    /// image onto the disk.
    NetbootShape,
    /// A directory of prebuilt artifacts: upstream's PXE installer files, or netboot.nix's
    /// outputs (`bzImage`, `initrd`, `netboot.ipxe`).
    Dir(PathBuf),
    /// `nix-build <installer>` (NFS root and boot loader) and `nix-build <image>` (image and
    /// config), as in the upstream README.
    Nix { installer: PathBuf, image: PathBuf },
}

/// Why no artifact set could be had. Each names the artifact and the file.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("artifacts: {what} not found in {dir} (looked for {looked})")]
    Missing { what: &'static str, dir: PathBuf, looked: String },
    #[error("artifacts: nix-build {expression} failed")]
    NixBuild {
        expression: PathBuf,
        #[source]
        source: FixtureError,
    },
    #[error("artifacts: {0}")]
    Host(#[from] FixtureError),
    #[error("artifacts")]
    Cache(#[from] CacheError),
    #[error("artifacts")]
    System(#[from] SystemFileError),
}

/// The versions of the recipes that unpack and stage a user's artifacts, part of their cache
/// keys with their real inputs: raise one when its build changes.
const UNPACK_RECIPE: &str = "unpack 1";
const STAGE_RECIPE: &str = "stage 1";

impl Default for Provider {
    /// The busybox fixture, its image gzipped.
    fn default() -> Self {
        Provider::Fixture { compression: Compression::default() }
    }
}

/// The host files the fixtures boot, the kernel repacked with a zstd payload
/// ([`ZstdKernel`], built once into `cache`): the same kernel, about 3 s faster to start under
/// TCG at every boot. Where it cannot be repacked (no configuration or no source of the same
/// release, a kernel not XZ-compressed) the host's own kernel, with a warning that says why.
/// The Secure Boot flavour keeps Debian's signed image ([`HostFiles::find`]).
pub fn host_files(cache: &Cache) -> Result<HostFiles, ProviderError> {
    let mut host = HostFiles::find()?;
    match ZstdKernel::of(&host) {
        Ok(recipe) => host.kernel = cache.get_or_build(&recipe)?.join(ZstdKernel::IMAGE),
        Err(why) => {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| tracing::warn!("the fixtures boot {} as it is, not repacked with zstd: {why}", host.kernel.display()));
        }
    }
    Ok(host)
}

/// [`host_files`] on a blocking thread (a first build takes about a minute).
pub async fn host_files_async(cache: &Cache) -> Result<HostFiles, ProviderError> {
    let cache = cache.clone();
    super::off_runtime(move || host_files(&cache)).await
}

impl Provider {
    /// The `nixos-shape` flavour as upstream ships it: no service stack, the console on
    /// ttyS0 at 115200.
    pub fn nixos_shape() -> Self {
        Provider::NixosShape { services: None, console: SerialConsole::UPSTREAM }
    }

    /// [`Provider::provide`] on a blocking thread, off the async runtime that carries the
    /// VMs' network and consoles (a build takes minutes, hashing an image seconds).
    pub async fn provide_async(&self, cache: &Cache) -> Result<ArtifactSet, ProviderError> {
        let (provider, cache) = (self.clone(), cache.clone());
        super::off_runtime(move || provider.provide(&cache)).await
    }

    /// Produce the artifact set, building or unpacking into `cache` what is missing.
    pub fn provide(&self, cache: &Cache) -> Result<ArtifactSet, ProviderError> {
        match self {
            Provider::Fixture { compression } => {
                let host = host_files(cache)?;
                let tree = cache.get_or_build(&PxeTree { host: host.clone() })?;
                let root = cache.get_or_build(&InstallerRoot { host: host.clone() })?;
                let image = cache.get_or_build(&InstallImage { host, compression: *compression, loader: BootLoader::Grub })?;
                Ok(ArtifactSet {
                    tftp_root: tree.join(PxeTree::ROOT),
                    nfs_layers: vec![image.join(InstallImage::LAYER), root.join(InstallerRoot::ROOT)],
                    system: InstalledSystem::read(&image.join(InstallImage::SYSTEM))?,
                    netboot: None,
                })
            }
            Provider::SignedFixture => {
                let host = HostFiles::find()?;
                let binaries = SignedBinaries::find()?;
                let tree = cache.get_or_build(&PxeTree { host: host.clone() })?.join(PxeTree::ROOT);
                let signed = cache.get_or_build(&SignedNetboot { binaries: binaries.clone() })?.join(SignedNetboot::ROOT);
                let root = cache.get_or_build(&InstallerRoot { host: host.clone() })?;
                let image = cache.get_or_build(&InstallImage { host, compression: Compression::Gzip, loader: BootLoader::SignedGrub(binaries) })?;
                // The protocol's tree with shim as its NBP, the signed GRUB beside it and
                // that GRUB's configuration at its built-in prefix.
                let mut entries = vec![("nixos".to_owned(), Source::Tree(tree.join("nixos")))];
                for file in ["nixos/bootx64.efi", "nixos/grubx64.efi", "grub/grub.cfg"] {
                    entries.push((file.to_owned(), Source::File(signed.join(file))));
                }
                Ok(ArtifactSet {
                    tftp_root: staged(cache, "signed-boot-loader", entries)?,
                    nfs_layers: vec![image.join(InstallImage::LAYER), root.join(InstallerRoot::ROOT)],
                    system: InstalledSystem::read(&image.join(InstallImage::SYSTEM))?,
                    netboot: None,
                })
            }
            Provider::NetbootShape => {
                let host = host_files(cache)?;
                let installer_root = cache.get_or_build(&InstallerRoot { host: host.clone() })?;
                let image = cache.get_or_build(&InstallImage { host: host.clone(), compression: Compression::Gzip, loader: BootLoader::systemd_boot()? })?;
                let built = cache.get_or_build(&NetbootShape { host, installer_root, image })?;
                Ok(ArtifactSet {
                    tftp_root: built.join(NetbootShape::DIR),
                    nfs_layers: Vec::new(),
                    system: InstalledSystem::read(&built.join(NetbootShape::SYSTEM))?,
                    netboot: Some(NETBOOT_SCRIPT.into()),
                })
            }
            Provider::Dir(dir) if dir.join(NETBOOT_SCRIPT).is_file() => Ok(ArtifactSet {
                tftp_root: dir.clone(),
                nfs_layers: Vec::new(),
                system: InstalledSystem::find(std::slice::from_ref(dir))?,
                netboot: Some(NETBOOT_SCRIPT.into()),
            }),
            Provider::NixosShape { services, console } => {
                let kernel = cache.get_or_build(&NixosShapeKernel::find()?)?.join(NixosShapeKernel::IMAGE);
                let host = HostFiles::find()?;
                let installer = cache.get_or_build(&NixosShapeInstaller { host: host.clone(), kernel: kernel.clone(), console: *console })?;
                let image = cache.get_or_build(&NixosShapeImage { host, kernel, services: *services, console: *console })?;
                let outputs = [installer, image];
                // Upstream's shape, but pxelab's installer, which writes the DHCP host name
                // into the system's configuration (upstream's leaves `nixos`).
                let system = InstalledSystem { hostname: DHCP_HOSTNAME.into(), ..InstalledSystem::find(&outputs)? };
                from_files(cache, &Files::in_outputs(&outputs)?, system)
            }
            Provider::Dir(dir) => from_files(cache, &Files::in_dir(dir)?, InstalledSystem::find(std::slice::from_ref(dir))?),
            Provider::Nix { installer, image } => {
                let mut outputs = nix_build(installer)?;
                outputs.extend(nix_build(image)?);
                // pxelab.toml in an output, else beside the image's expression.
                let mut dirs = outputs.clone();
                dirs.extend(image.parent().map(Path::to_owned));
                from_files(cache, &Files::in_outputs(&outputs)?, InstalledSystem::find(&dirs)?)
            }
        }
    }
}

/// The four artifacts as files or unpacked directories.
#[derive(Debug)]
struct Files {
    boot_loader: PathBuf,
    nfs_root: PathBuf,
    image: PathBuf,
    config: PathBuf,
}

const BOOT_LOADER: &[&str] = &["boot-loader.tar.xz", "boot-loader.tar", "boot-loader"];
const NFS_ROOT: &[&str] = &["nfsroot.tar.xz", "nfsroot.tar", "nfsroot"];
const IMAGE: &[&str] = &["nixos.tar.gz", "nixos.tar.xz", "nixos.tar.zst", "nixos.tar"];

fn find(dirs: &[PathBuf], what: &'static str, names: &[&str]) -> Result<PathBuf, ProviderError> {
    for dir in dirs {
        for name in names {
            if dir.join(name).exists() {
                return Ok(dir.join(name));
            }
        }
    }
    Err(ProviderError::Missing {
        what,
        dir: dirs.first().cloned().unwrap_or_default(),
        looked: names.join(", "),
    })
}

impl Files {
    fn in_dir(dir: &Path) -> Result<Self, ProviderError> {
        Self::in_outputs(&[dir.to_owned()])
    }

    fn in_outputs(dirs: &[PathBuf]) -> Result<Self, ProviderError> {
        Ok(Files {
            boot_loader: find(dirs, "the boot loader", BOOT_LOADER)?,
            nfs_root: find(dirs, "the NFS root", NFS_ROOT)?,
            image: find(dirs, "the install image", IMAGE)?,
            config: find(dirs, "the install config", &["config"])?,
        })
    }
}

fn from_files(cache: &Cache, files: &Files, system: InstalledSystem) -> Result<ArtifactSet, ProviderError> {
    // Upstream's boot-loader tarball is flat; its files are served from `nixos/`.
    let tftp_root = match files.boot_loader.is_dir() {
        true => staged(cache, "boot-loader", vec![("nixos".into(), Source::Tree(files.boot_loader.clone()))])?,
        false => cache.get_or_build(&Unpack { name: "boot-loader", tarball: files.boot_loader.clone(), into: "nixos" })?,
    };
    let nfs_root = match files.nfs_root.is_dir() {
        true => files.nfs_root.clone(),
        false => cache.get_or_build(&Unpack { name: "nfsroot", tarball: files.nfs_root.clone(), into: "tree" })?.join("tree"),
    };
    let image_name = files.image.file_name().expect("a file name").to_string_lossy().into_owned();
    let installer = staged(
        cache,
        "installer",
        vec![
            (format!("installer/{image_name}"), Source::File(files.image.clone())),
            ("installer/config".into(), Source::File(files.config.clone())),
            ("installer/nixos-image".into(), Source::Symlink(format!("./{image_name}"))),
        ],
    )?;
    Ok(ArtifactSet { tftp_root, nfs_layers: vec![installer, nfs_root], system, netboot: None })
}

/// Unpack a tarball (compression detected from its content) into `<entry>/<into>`.
struct Unpack {
    name: &'static str,
    tarball: PathBuf,
    into: &'static str,
}

impl Recipe for Unpack {
    fn name(&self) -> String {
        format!("unpacked-{}", self.name)
    }

    fn inputs(&self) -> Vec<Input> {
        vec![Input::Text(UNPACK_RECIPE.into()), Input::Text(self.into.into()), Input::File(self.tarball.clone())]
    }

    fn build(&self, out: &Path) -> Result<(), FixtureError> {
        let target = out.join(self.into);
        std::fs::create_dir_all(&target).map_err(|source| FixtureError::Write { path: target.clone(), source })?;
        let output = Command::new("tar")
            .args(["--numeric-owner", "-xpf"])
            .arg(&self.tarball)
            .arg("-C")
            .arg(&target)
            .output()
            .map_err(|source| FixtureError::ToolMissing { tool: "tar".into(), package: "tar", source })?;
        if !output.status.success() {
            return Err(FixtureError::ToolFailed {
                tool: format!("tar -x {}", self.tarball.display()),
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(())
    }
}

enum Source {
    File(PathBuf),
    Tree(PathBuf),
    Symlink(String),
}

/// A cache entry holding `entries` (files hard-linked or copied, trees copied, symlinks).
fn staged(cache: &Cache, name: &'static str, entries: Vec<(String, Source)>) -> Result<PathBuf, ProviderError> {
    struct Stage {
        name: &'static str,
        entries: Vec<(String, Source)>,
    }
    impl Recipe for Stage {
        fn name(&self) -> String {
            format!("staged-{}", self.name)
        }
        fn inputs(&self) -> Vec<Input> {
            let mut inputs = vec![Input::Text(STAGE_RECIPE.into())];
            for (at, source) in &self.entries {
                inputs.push(Input::Text(at.clone()));
                inputs.push(match source {
                    Source::File(path) => Input::File(path.clone()),
                    Source::Tree(path) => Input::Dir(path.clone()),
                    Source::Symlink(target) => Input::Text(target.clone()),
                });
            }
            inputs
        }
        fn build(&self, out: &Path) -> Result<(), FixtureError> {
            for (at, source) in &self.entries {
                let target = out.join(at);
                let err = |source| FixtureError::Write { path: target.clone(), source };
                std::fs::create_dir_all(target.parent().expect("a parent")).map_err(err)?;
                match source {
                    Source::File(path) => {
                        if std::fs::hard_link(path, &target).is_err() {
                            std::fs::copy(path, &target).map_err(err)?;
                        }
                    }
                    Source::Tree(path) => copy_tree(path, &target).map_err(err)?,
                    Source::Symlink(link) => std::os::unix::fs::symlink(link, &target).map_err(err)?,
                }
            }
            Ok(())
        }
    }
    Ok(cache.get_or_build(&Stage { name, entries })?)
}

/// Copy a tree as it is: a symlink stays a symlink (never the file outside the tree that it
/// points to).
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, target)?;
        } else if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Run `nix-build <expression>`; its output paths (one per stdout line).
fn nix_build(expression: &Path) -> Result<Vec<PathBuf>, ProviderError> {
    let nix_error = |source| ProviderError::NixBuild { expression: expression.to_owned(), source };
    let output = Command::new("nix-build")
        .arg(expression)
        .arg("--no-out-link")
        .output()
        .map_err(|source| nix_error(FixtureError::ToolMissing { tool: "nix-build".into(), package: "nix-bin", source }))?;
    if !output.status.success() {
        return Err(nix_error(FixtureError::ToolFailed {
            tool: "nix-build".into(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        }));
    }
    Ok(String::from_utf8_lossy(&output.stdout).lines().filter(|l| l.starts_with('/')).map(PathBuf::from).collect())
}

#[cfg(test)]
mod test {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tar(dir: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let src = dir.join(format!("{name}.src"));
        for (path, text) in files {
            std::fs::create_dir_all(src.join(path).parent().unwrap()).unwrap();
            std::fs::write(src.join(path), text).unwrap();
        }
        let out = dir.join(name);
        let status = Command::new("tar").arg("-caf").arg(&out).arg("-C").arg(&src).arg(".").status().unwrap();
        assert!(status.success());
        out
    }

    /// Upstream's four files: a flat boot loader tarball, an NFS root, an image, a config.
    fn upstream_files(dir: &Path) {
        tar(dir, "boot-loader.tar.xz", &[("bootx64.efi", "MZ"), ("grub.cfg", "menuentry"), ("load-kernel.cfg", "linux"), ("bzImage", "k")]);
        tar(dir, "nfsroot.tar.xz", &[("init", "#!/bin/sh"), ("installer/.keep", "")]);
        std::fs::write(dir.join("nixos.tar.gz"), "image bytes").unwrap();
        std::fs::write(dir.join("config"), "rootDevice=/dev/sda\n").unwrap();
    }

    fn check(set: &ArtifactSet) {
        assert_eq!(std::fs::read_to_string(set.tftp_root.join("nixos/grub.cfg")).unwrap(), "menuentry");
        let (installer, root) = (&set.nfs_layers[0], &set.nfs_layers[1]);
        assert_eq!(std::fs::read_link(installer.join("installer/nixos-image")).unwrap(), Path::new("./nixos.tar.gz"));
        assert_eq!(std::fs::read_to_string(installer.join("installer/nixos-image")).unwrap(), "image bytes");
        assert_eq!(std::fs::read_to_string(installer.join("installer/config")).unwrap(), "rootDevice=/dev/sda\n");
        assert_eq!(std::fs::read_to_string(root.join("init")).unwrap(), "#!/bin/sh");
    }

    #[test]
    fn a_tree_is_copied_with_its_symlinks_as_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let (tree, copy) = (dir.path().join("tree"), dir.path().join("copy"));
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        std::fs::write(dir.path().join("secret"), "outside the tree").unwrap();
        std::os::unix::fs::symlink("../secret", tree.join("leak")).unwrap();
        std::os::unix::fs::symlink("..", tree.join("sub/up")).unwrap();
        copy_tree(&tree, &copy).unwrap();
        assert_eq!(std::fs::read_link(copy.join("leak")).unwrap(), Path::new("../secret"));
        assert_eq!(std::fs::read_link(copy.join("sub/up")).unwrap(), Path::new(".."));
    }

    #[test]
    fn dir_of_upstream_tarballs() {
        let dir = tempfile::tempdir().unwrap();
        upstream_files(dir.path());
        let cache = Cache::new(&dir.path().join("cache"));
        let set = Provider::Dir(dir.path().to_owned()).provide(&cache).unwrap();
        check(&set);
        assert_eq!(Provider::Dir(dir.path().to_owned()).provide(&cache).unwrap(), set, "unpacked once, cached");
    }

    #[test]
    fn missing_and_corrupt_artifacts_are_named() {
        let dir = tempfile::tempdir().unwrap();
        upstream_files(dir.path());
        std::fs::remove_file(dir.path().join("config")).unwrap();
        let cache = Cache::new(&dir.path().join("cache"));
        let err = Provider::Dir(dir.path().to_owned()).provide(&cache).unwrap_err();
        assert!(err.to_string().contains("the install config not found"), "{err}");

        std::fs::write(dir.path().join("config"), "rootDevice=/dev/sda\n").unwrap();
        std::fs::write(dir.path().join("nfsroot.tar.xz"), "not a tarball").unwrap();
        let err = Provider::Dir(dir.path().to_owned()).provide(&cache).unwrap_err();
        let chain = format!("{err}: {}", std::error::Error::source(&err).map(|s| s.to_string()).unwrap_or_default());
        assert!(chain.contains("unpacked-nfsroot"), "{chain}");
        let all: Vec<String> = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source()).map(|e| e.to_string()).collect();
        assert!(all.iter().any(|e| e.contains("nfsroot.tar.xz")), "{all:?}");
    }

    /// A fake nix-build on PATH: prints two output paths per expression, as the README shows.
    #[test]
    fn nix_provider_collects_nix_build_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        for out in ["nfsroot", "grub-efi-bootloader", "install-tarball", "install-config"] {
            std::fs::create_dir_all(store.join(out)).unwrap();
        }
        tar(&store.join("nfsroot"), "nfsroot.tar.xz", &[("init", "#!/bin/sh")]);
        tar(&store.join("grub-efi-bootloader"), "boot-loader.tar.xz", &[("grub.cfg", "menuentry")]);
        std::fs::write(store.join("install-tarball/nixos.tar.gz"), "image bytes").unwrap();
        std::fs::write(store.join("install-config/config"), "rootDevice=/dev/sda\n").unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let script = format!(
            "#!/bin/sh\ncase \"$1\" in\n  *installer.nix) echo {s}/nfsroot; echo {s}/grub-efi-bootloader;;\n  *image.nix) echo {s}/install-tarball; echo {s}/install-config;;\n  *) echo \"error: no such expression $1\" >&2; exit 1;;\nesac\n",
            s = store.display()
        );
        std::fs::write(bin.join("nix-build"), script).unwrap();
        std::fs::set_permissions(bin.join("nix-build"), std::fs::Permissions::from_mode(0o755)).unwrap();
        // This test runs in its own process under nextest; PATH is only read by nix_build.
        std::env::set_var("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()));

        let cache = Cache::new(&dir.path().join("cache"));
        let nix = |image: &str| Provider::Nix { installer: dir.path().join("installer.nix"), image: dir.path().join(image) };
        let set = nix("image.nix").provide(&cache).unwrap();
        assert_eq!(std::fs::read_to_string(set.tftp_root.join("nixos/grub.cfg")).unwrap(), "menuentry");
        assert_eq!(std::fs::read_to_string(set.nfs_layers[0].join("installer/nixos-image")).unwrap(), "image bytes");
        let err = nix("broken.nix").provide(&cache).unwrap_err();
        let all: Vec<String> = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source()).map(|e| e.to_string()).collect();
        assert!(all[0].contains("nix-build") && all.iter().any(|e| e.contains("no such expression")), "{all:?}");
    }
}
