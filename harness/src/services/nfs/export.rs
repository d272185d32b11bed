//! A read-only NFS export made of stacked directories.
//!
//! Layers are searched top first: a per-test or per-client directory can add or replace files
//! of a large shared tree that is unpacked once and never copied. A name resolves in the first
//! layer that has it; directories present in several layers list the union of their entries.
//! Symlinks are served as symlinks and never followed on the server; a path is looked up in a
//! layer only through real directories, so nothing outside the layers is reachable.

use std::collections::{BTreeMap, HashMap};
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::RwLock;

use async_trait::async_trait;
use nfsserve::nfs::{fattr3, fileid3, filename3, ftype3, nfspath3, nfsstat3, nfstime3, sattr3, specdata3};
use nfsserve::vfs::{DirEntry, NFSFileSystem, ReadDirResult, VFSCapabilities};

const ROOT_ID: fileid3 = 1;
/// The most a READ returns: the `rtmax` nfsserve advertises in FSINFO. A client asking for
/// more gets this much (RFC 1813 allows a short read), and nothing larger is allocated.
pub const RTMAX: u32 = 1024 * 1024;

/// Stacked read-only directories, served over NFSv3.
#[derive(Debug)]
pub struct StackedExport {
    layers: Vec<PathBuf>,
    ids: RwLock<Ids>,
    /// File-system operations asked of it ([`StackedExport::operations`]).
    operations: std::sync::atomic::AtomicU64,
}

/// File ids handed out, by path relative to the export root.
#[derive(Debug, Default)]
struct Ids {
    paths: Vec<PathBuf>,
    by_path: HashMap<PathBuf, fileid3>,
}

impl StackedExport {
    /// Serve `layers`, the first on top. A layer may itself be a symlink (a Nix `result`
    /// link, say): layer roots are resolved once here; inside them nothing is followed.
    pub fn new(layers: Vec<PathBuf>) -> Self {
        let layers = layers.into_iter().map(|l| l.canonicalize().unwrap_or(l)).collect();
        let ids = Ids { paths: vec![PathBuf::new()], by_path: HashMap::from([(PathBuf::new(), ROOT_ID)]) };
        StackedExport { layers, ids: RwLock::new(ids), operations: Default::default() }
    }

    /// How many file-system operations nfsserve has asked of the export on its clients'
    /// behalf (a lookup, an attribute read, a READ, a directory read, a refused write): about
    /// one per NFS call, a call that nfsserve answers alone (NULL, FSINFO) being left out.
    pub fn operations(&self) -> u64 {
        self.operations.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count(&self) {
        self.operations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn path_of(&self, id: fileid3) -> Result<PathBuf, nfsstat3> {
        let ids = self.ids.read().expect("ids lock");
        ids.paths.get((id as usize).wrapping_sub(1)).cloned().ok_or(nfsstat3::NFS3ERR_STALE)
    }

    fn id_of(&self, rel: &Path) -> fileid3 {
        if let Some(&id) = self.ids.read().expect("ids lock").by_path.get(rel) {
            return id;
        }
        let mut ids = self.ids.write().expect("ids lock");
        if let Some(&id) = ids.by_path.get(rel) {
            return id;
        }
        ids.paths.push(rel.to_owned());
        let id = ids.paths.len() as fileid3;
        ids.by_path.insert(rel.to_owned(), id);
        id
    }

    /// The topmost real path for `rel` and its metadata (of the entry itself, not a target).
    fn locate(&self, rel: &Path) -> Option<(PathBuf, Metadata)> {
        self.layers.iter().find_map(|layer| within(layer, rel))
    }

    fn stat(&self, id: fileid3) -> Result<(PathBuf, Metadata), nfsstat3> {
        self.locate(&self.path_of(id)?).ok_or(nfsstat3::NFS3ERR_STALE)
    }

    /// The merged entries of directory `rel`, by name.
    fn entries(&self, rel: &Path) -> BTreeMap<Vec<u8>, PathBuf> {
        let mut names = BTreeMap::new();
        for layer in &self.layers {
            let Some((dir, meta)) = within(layer, rel) else { continue };
            if !meta.is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let name = entry.file_name();
                names.entry(name.as_bytes().to_vec()).or_insert_with(|| rel.join(&name));
            }
        }
        names
    }
}

/// `layer/rel`, reached through real directories only (a symlink on the way is not followed).
fn within(layer: &Path, rel: &Path) -> Option<(PathBuf, Metadata)> {
    let mut path = layer.to_owned();
    let mut meta = std::fs::symlink_metadata(&path).ok()?;
    for component in rel.components() {
        let Component::Normal(name) = component else { return None };
        if !meta.is_dir() {
            return None;
        }
        path.push(name);
        meta = std::fs::symlink_metadata(&path).ok()?;
    }
    Some((path, meta))
}

fn attr(id: fileid3, meta: &Metadata) -> fattr3 {
    let file_type = meta.file_type();
    let ftype = if file_type.is_dir() {
        ftype3::NF3DIR
    } else if file_type.is_symlink() {
        ftype3::NF3LNK
    } else {
        use std::os::unix::fs::FileTypeExt;
        match () {
            _ if file_type.is_block_device() => ftype3::NF3BLK,
            _ if file_type.is_char_device() => ftype3::NF3CHR,
            _ if file_type.is_fifo() => ftype3::NF3FIFO,
            _ if file_type.is_socket() => ftype3::NF3SOCK,
            _ => ftype3::NF3REG,
        }
    };
    let time = |s: i64, ns: i64| nfstime3 { seconds: s as u32, nseconds: ns as u32 };
    let rdev = meta.rdev();
    fattr3 {
        ftype,
        mode: meta.mode() & 0o7777,
        nlink: meta.nlink() as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        size: meta.size(),
        used: meta.blocks() * 512,
        rdev: specdata3 { specdata1: libc::major(rdev), specdata2: libc::minor(rdev) },
        fsid: 0,
        fileid: id,
        atime: time(meta.atime(), meta.atime_nsec()),
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        ctime: time(meta.ctime(), meta.ctime_nsec()),
    }
}

#[async_trait]
impl NFSFileSystem for StackedExport {
    /// Deliberately `ReadWrite`: for a `ReadOnly` file system nfsserve masks ACCESS replies
    /// to READ|LOOKUP, dropping EXECUTE, so no program on an NFS root could run. Every
    /// mutating call below answers `NFS3ERR_ROFS` instead.
    fn capabilities(&self) -> VFSCapabilities {
        VFSCapabilities::ReadWrite
    }

    fn root_dir(&self) -> fileid3 {
        ROOT_ID
    }

    fn link_and_mknod(&self) -> nfsstat3 {
        nfsstat3::NFS3ERR_ROFS
    }

    async fn lookup(&self, dirid: fileid3, filename: &filename3) -> Result<fileid3, nfsstat3> {
        self.count();
        let dir = self.path_of(dirid)?;
        let (_, meta) = self.locate(&dir).ok_or(nfsstat3::NFS3ERR_STALE)?;
        if !meta.is_dir() {
            return Err(nfsstat3::NFS3ERR_NOTDIR);
        }
        let rel = match &filename.0[..] {
            b"." => dir,
            b".." => dir.parent().map(Path::to_owned).unwrap_or_default(), // the root is its own parent
            name if name.is_empty() || name.contains(&b'/') || name.contains(&0) => return Err(nfsstat3::NFS3ERR_INVAL),
            name => dir.join(std::ffi::OsStr::from_bytes(name)),
        };
        self.locate(&rel).ok_or(nfsstat3::NFS3ERR_NOENT)?;
        Ok(self.id_of(&rel))
    }

    async fn getattr(&self, id: fileid3) -> Result<fattr3, nfsstat3> {
        self.count();
        let (_, meta) = self.stat(id)?;
        Ok(attr(id, &meta))
    }

    async fn setattr(&self, _id: fileid3, _setattr: sattr3) -> Result<fattr3, nfsstat3> {
        self.count();
        Err(nfsstat3::NFS3ERR_ROFS)
    }

    async fn read(&self, id: fileid3, offset: u64, count: u32) -> Result<(Vec<u8>, bool), nfsstat3> {
        self.count();
        let (path, meta) = self.stat(id)?;
        if !meta.is_file() {
            return Err(if meta.is_dir() { nfsstat3::NFS3ERR_ISDIR } else { nfsstat3::NFS3ERR_INVAL });
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|_| nfsstat3::NFS3ERR_IO)?;
        let mut data = vec![0u8; count.min(RTMAX) as usize];
        let mut filled = 0;
        while filled < data.len() {
            match file.read_at(&mut data[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(_) => return Err(nfsstat3::NFS3ERR_IO),
            }
        }
        data.truncate(filled);
        Ok((data, offset + filled as u64 >= meta.size()))
    }

    async fn write(&self, _id: fileid3, _offset: u64, _data: &[u8]) -> Result<fattr3, nfsstat3> {
        self.count();
        Err(nfsstat3::NFS3ERR_ROFS)
    }

    async fn create(&self, _dirid: fileid3, _name: &filename3, _attr: sattr3) -> Result<(fileid3, fattr3), nfsstat3> {
        self.count();
        Err(nfsstat3::NFS3ERR_ROFS)
    }

    async fn create_exclusive(&self, _dirid: fileid3, _name: &filename3) -> Result<fileid3, nfsstat3> {
        self.count();
        Err(nfsstat3::NFS3ERR_ROFS)
    }

    async fn mkdir(&self, _dirid: fileid3, _name: &filename3) -> Result<(fileid3, fattr3), nfsstat3> {
        self.count();
        Err(nfsstat3::NFS3ERR_ROFS)
    }

    async fn remove(&self, _dirid: fileid3, _name: &filename3) -> Result<(), nfsstat3> {
        self.count();
        Err(nfsstat3::NFS3ERR_ROFS)
    }

    async fn rename(&self, _from: fileid3, _name: &filename3, _to: fileid3, _to_name: &filename3) -> Result<(), nfsstat3> {
        self.count();
        Err(nfsstat3::NFS3ERR_ROFS)
    }

    async fn readdir(&self, dirid: fileid3, start_after: fileid3, max_entries: usize) -> Result<ReadDirResult, nfsstat3> {
        self.count();
        let dir = self.path_of(dirid)?;
        let (_, meta) = self.locate(&dir).ok_or(nfsstat3::NFS3ERR_STALE)?;
        if !meta.is_dir() {
            return Err(nfsstat3::NFS3ERR_NOTDIR);
        }
        let all: Vec<(Vec<u8>, PathBuf)> = self.entries(&dir).into_iter().collect();
        let start = match start_after {
            0 => 0,
            after => {
                let after_path = self.path_of(after)?;
                all.iter().position(|(_, p)| *p == after_path).map(|i| i + 1).ok_or(nfsstat3::NFS3ERR_BAD_COOKIE)?
            }
        };
        let mut result = ReadDirResult { entries: Vec::new(), end: false };
        for (name, rel) in &all[start..] {
            if result.entries.len() >= max_entries {
                return Ok(result);
            }
            let Some((_, meta)) = self.locate(rel) else { continue };
            let id = self.id_of(rel);
            result.entries.push(DirEntry { fileid: id, name: name.clone().into(), attr: attr(id, &meta) });
        }
        result.end = true;
        Ok(result)
    }

    async fn symlink(&self, _dirid: fileid3, _name: &filename3, _target: &nfspath3, _attr: &sattr3) -> Result<(fileid3, fattr3), nfsstat3> {
        self.count();
        Err(nfsstat3::NFS3ERR_ROFS)
    }

    async fn readlink(&self, id: fileid3) -> Result<nfspath3, nfsstat3> {
        self.count();
        let (path, meta) = self.stat(id)?;
        if !meta.file_type().is_symlink() {
            return Err(nfsstat3::NFS3ERR_INVAL);
        }
        let target = std::fs::read_link(path).map_err(|_| nfsstat3::NFS3ERR_IO)?;
        Ok(target.as_os_str().as_bytes().to_vec().into())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn name(s: &str) -> filename3 {
        s.as_bytes().to_vec().into()
    }

    /// base: installer/nixos.tar.gz, installer/nixos-image -> ./nixos.tar.gz, etc/os-release,
    /// escape -> ../../outside; top: installer/config (per test), etc/os-release (replaced).
    fn layers() -> (tempfile::TempDir, StackedExport) {
        let dir = tempfile::tempdir().unwrap();
        let (top, base) = (dir.path().join("top"), dir.path().join("base"));
        std::fs::create_dir_all(base.join("installer")).unwrap();
        std::fs::create_dir_all(base.join("etc")).unwrap();
        std::fs::create_dir_all(top.join("installer")).unwrap();
        std::fs::create_dir_all(top.join("etc")).unwrap();
        std::fs::write(base.join("installer/nixos.tar.gz"), vec![7u8; 100_000]).unwrap();
        std::os::unix::fs::symlink("./nixos.tar.gz", base.join("installer/nixos-image")).unwrap();
        std::os::unix::fs::symlink("../../outside", base.join("escape")).unwrap();
        std::fs::write(dir.path().join("outside"), "secret").unwrap();
        std::fs::write(base.join("etc/os-release"), "base").unwrap();
        std::fs::write(top.join("etc/os-release"), "top").unwrap();
        std::fs::write(top.join("installer/config"), "rootDevice=/dev/vda\n").unwrap();
        // The base layer is reached through a symlink, as a Nix `result` link would be.
        let base_link = dir.path().join("base-link");
        std::os::unix::fs::symlink(&base, &base_link).unwrap();
        let export = StackedExport::new(vec![top, base_link]);
        (dir, export)
    }

    async fn walk(fs: &StackedExport, path: &str) -> Result<fileid3, nfsstat3> {
        let mut id = fs.root_dir();
        for part in path.split('/') {
            id = fs.lookup(id, &name(part)).await?;
        }
        Ok(id)
    }

    #[tokio::test]
    async fn layers_merge_and_the_top_wins() {
        let (_dir, fs) = layers();
        let release = walk(&fs, "etc/os-release").await.unwrap();
        assert_eq!(fs.read(release, 0, 100).await.unwrap(), (b"top".to_vec(), true));
        let installer = walk(&fs, "installer").await.unwrap();
        let listing = fs.readdir(installer, 0, 100).await.unwrap();
        let names: Vec<String> = listing.entries.iter().map(|e| String::from_utf8(e.name.0.clone()).unwrap()).collect();
        assert_eq!(names, ["config", "nixos-image", "nixos.tar.gz"]);
        assert!(listing.end);
        let page = fs.readdir(installer, listing.entries[0].fileid, 1).await.unwrap();
        assert_eq!((page.entries.len(), page.end), (1, false));
        assert_eq!(page.entries[0].name.0, b"nixos-image");
    }

    #[tokio::test]
    async fn symlinks_are_served_as_symlinks() {
        let (_dir, fs) = layers();
        let image = walk(&fs, "installer/nixos-image").await.unwrap();
        assert!(matches!(fs.getattr(image).await.unwrap().ftype, ftype3::NF3LNK));
        assert_eq!(fs.readlink(image).await.unwrap().0, b"./nixos.tar.gz");
        assert!(matches!(fs.read(image, 0, 10).await.unwrap_err(), nfsstat3::NFS3ERR_INVAL), "not followed on the server");
        let tarball = walk(&fs, "installer/nixos.tar.gz").await.unwrap();
        let (data, eof) = fs.read(tarball, 99_990, 100).await.unwrap();
        assert_eq!((data.len(), eof), (10, true));
    }

    #[tokio::test]
    async fn nothing_outside_the_layers_is_reachable() {
        let (_dir, fs) = layers();
        let root = fs.root_dir();
        assert_eq!(fs.lookup(root, &name("..")).await.unwrap(), root, "the root is its own parent");
        assert!(matches!(walk(&fs, "../../outside").await.unwrap_err(), nfsstat3::NFS3ERR_NOENT));
        assert!(matches!(fs.lookup(root, &name("etc/os-release")).await.unwrap_err(), nfsstat3::NFS3ERR_INVAL));
        let escape = walk(&fs, "escape").await.unwrap();
        assert!(matches!(fs.lookup(escape, &name("x")).await.unwrap_err(), nfsstat3::NFS3ERR_NOTDIR));
        assert!(matches!(fs.read(escape, 0, 10).await.unwrap_err(), nfsstat3::NFS3ERR_INVAL));
        assert!(matches!(fs.getattr(9999).await.unwrap_err(), nfsstat3::NFS3ERR_STALE));
    }

    #[tokio::test]
    async fn writes_are_refused_read_only() {
        let (_dir, fs) = layers();
        let root = fs.root_dir();
        let release = walk(&fs, "etc/os-release").await.unwrap();
        assert!(matches!(fs.write(release, 0, b"x").await.unwrap_err(), nfsstat3::NFS3ERR_ROFS));
        assert!(matches!(fs.create_exclusive(root, &name("new")).await.unwrap_err(), nfsstat3::NFS3ERR_ROFS));
        assert!(matches!(fs.mkdir(root, &name("d")).await.unwrap_err(), nfsstat3::NFS3ERR_ROFS));
        assert!(matches!(fs.setattr(release, sattr3::default()).await.unwrap_err(), nfsstat3::NFS3ERR_ROFS));
        assert!(matches!(fs.remove(root, &name("etc")).await.unwrap_err(), nfsstat3::NFS3ERR_ROFS));
        assert!(matches!(fs.link_and_mknod(), nfsstat3::NFS3ERR_ROFS), "LINK and MKNOD too");
    }

    #[tokio::test]
    async fn a_read_larger_than_rtmax_is_cut_to_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big"), vec![1u8; 3 << 20]).unwrap();
        let fs = StackedExport::new(vec![dir.path().to_owned()]);
        let big = fs.lookup(fs.root_dir(), &name("big")).await.unwrap();
        let (data, eof) = fs.read(big, 0, u32::MAX).await.unwrap();
        assert_eq!((data.len(), eof), (RTMAX as usize, false));
    }
}
