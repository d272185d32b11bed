//! Checks of an artifact set before anything boots: what would fail minutes into an install
//! (a GRUB script that does not parse, a custom `load-kernel-<x>.cfg` that lets a later file
//! load another kernel, a truncated image, a serial line other than the artifact set's
//! console) is refused at once, naming the file and the cause.

use std::path::{Path, PathBuf};

use pxelab_fixtures::SerialConsole;

/// An artifact that cannot work, found before the install.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{}: GRUB cannot parse it (grub-script-check: {output})", file.display())]
    GrubScript { file: PathBuf, output: String },
    #[error(
        "{}: loads a kernel but has no `boot`: GRUB's configfile returns, and the next file in the chain \
         (load-kernel.cfg at the latest) loads another kernel over it; end it with `boot`",
        file.display()
    )]
    NoBoot { file: PathBuf },
    #[error(
        "{}: `{found}` is not on the artifact set's console {console} (`console` in pxelab.toml; upstream's is \
         ttyS0,115200): pxelab reads the console on ttyS{}; make the two agree",
        file.display(), console.unit
    )]
    Console { file: PathBuf, found: String, console: SerialConsole },
    #[error("{}: the image is damaged or truncated ({tool} -t: {output}); the installer would fail unpacking it", file.display())]
    Image { file: PathBuf, tool: &'static str, output: String },
    #[error("{}: {cause}", file.display())]
    NetbootScript { file: PathBuf, cause: String },
    #[error("{}: names {name}, which is not in {}; it holds: {holds}", file.display(), dir.display())]
    NetbootMissing { file: PathBuf, name: String, dir: PathBuf, holds: String },
    #[error("{}: the kernel is truncated: {cause}", file.display())]
    Kernel { file: PathBuf, cause: String },
    #[error("{}: the initrd is damaged or truncated: {cause}; the kernel would panic unpacking it, or boot without its root", file.display())]
    Initrd { file: PathBuf, cause: String },
    #[error("cannot check {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Check the boot scripts in the TFTP root's `nixos/` against the artifact set's `console`,
/// and the image the NFS layers hold.
pub async fn check(tftp_root: &Path, nfs_layers: &[PathBuf], console: SerialConsole) -> Result<(), ArtifactError> {
    boot_scripts(&tftp_root.join("nixos"), console).await?;
    if let Some(image) = image_of(nfs_layers) {
        image_intact(&image).await?;
    }
    Ok(())
}

/// A set in netboot.nix's shape: its iPXE `script` in `dir` parses and loads a kernel, each
/// image it names is in `dir` (by a relative path or a URL of the lab's `server`; a URL
/// elsewhere is the user's to serve), the kernel is whole
/// (its bzImage header's sizes) and each initrd is (a newc archive to its trailer, or a
/// compressed stream to its end).
pub async fn check_netboot(dir: &Path, script: &str, server: std::net::Ipv4Addr) -> Result<(), ArtifactError> {
    let file = dir.join(script);
    let text = std::fs::read_to_string(&file).map_err(|source| ArtifactError::Io { path: file.clone(), source })?;
    let loads = super::ipxe::loads(&text).map_err(|cause| ArtifactError::NetbootScript { file: file.clone(), cause })?;
    for image in loads.images(server) {
        let Some((_, served)) = &image.served else { continue };
        let (path, name, kernel) = (dir.join(served), image.name, image.kernel);
        if !path.is_file() {
            let mut holds: Vec<String> = std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
            holds.sort();
            return Err(ArtifactError::NetbootMissing { file: file.clone(), name, dir: dir.to_owned(), holds: holds.join(", ") });
        }
        let (path2, check) = (path.clone(), if kernel { kernel_whole as fn(&Path) -> Result<(), String> } else { initrd_whole });
        let checked = tokio::task::spawn_blocking(move || check(&path2)).await.map_err(|e| ArtifactError::Io { path: path.clone(), source: std::io::Error::other(e) })?;
        checked.map_err(|cause| match kernel {
            true => ArtifactError::Kernel { file: path.clone(), cause },
            false => ArtifactError::Initrd { file: path.clone(), cause },
        })?;
    }
    Ok(())
}

/// A bzImage holds its setup sectors and protected-mode code whole (Linux boot protocol:
/// `setup_sects` at 0x1f1, `HdrS` at 0x202, `syssize` in 16-byte units at 0x1f4).
fn kernel_whole(path: &Path) -> Result<(), String> {
    let mut head = [0u8; 0x210];
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    std::io::Read::read_exact(&mut file, &mut head).map_err(|_| format!("{len} bytes, shorter than a bzImage header"))?;
    if &head[0x202..0x206] != b"HdrS" {
        return Err("no bzImage header (HdrS at 0x202): not a Linux kernel image".into());
    }
    let setup = u64::from(if head[0x1f1] == 0 { 4 } else { head[0x1f1] });
    let syssize = u64::from(u32::from_le_bytes([head[0x1f4], head[0x1f5], head[0x1f6], head[0x1f7]]));
    let want = (setup + 1) * 512 + syssize * 16;
    match len < want {
        true => Err(format!("{len} bytes of the {want} its header announces")),
        false => Ok(()),
    }
}

/// An initrd reads to its end: newc archives (concatenated, zero-padded) to their trailers,
/// a gzip stream decompressed whole; zstd and xz by their tools' own test.
fn initrd_whole(path: &Path) -> Result<(), String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut magic = [0u8; 6];
    let n = file.read(&mut magic).map_err(|e| e.to_string())?;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    match &magic[..n] {
        [0x1f, 0x8b, ..] => {
            let mut gz = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file));
            newc_whole(&mut gz)
        }
        [0xfd, b'7', b'z', b'X', b'Z', 0] | [0x28, 0xb5, 0x2f, 0xfd, ..] => {
            let tool = if magic[0] == 0xfd { "xz" } else { "zstd" };
            let out = std::process::Command::new(tool).args(["-t", "-q"]).arg(path).output().map_err(|e| format!("{tool}: {e}"))?;
            match out.status.success() {
                true => Ok(()),
                false => Err(format!("{tool} -t: {}", String::from_utf8_lossy(&out.stderr).trim())),
            }
        }
        [b'0', b'7', b'0', b'7', b'0', b'1' | b'2'] => newc_whole(&mut std::io::BufReader::new(file)),
        _ => Ok(()), // lz4, bzip2, …: left to the kernel
    }
}

/// Walk newc archives to their trailers; what follows a trailer is padding or another archive.
fn newc_whole(input: &mut dyn std::io::Read) -> Result<(), String> {
    use std::io::Read;
    let mut input = std::io::BufReader::with_capacity(1 << 20, input);
    let mut offset: u64 = 0;
    let skip = |input: &mut dyn Read, n: u64, offset: &mut u64| -> Result<(), String> {
        let copied = std::io::copy(&mut input.take(n), &mut std::io::sink()).map_err(|e| format!("at byte {offset}: {e}"))?;
        *offset += copied;
        if copied < n {
            return Err(format!("it ends at byte {offset}, inside an entry"));
        }
        Ok(())
    };
    let (mut archives, mut in_archive) = (0, false);
    loop {
        // Zero padding between archives, or the end.
        let mut header = [0u8; 110];
        let mut got = 0;
        while got == 0 {
            let mut first = [0u8; 1];
            match input.read(&mut first).map_err(|e| format!("at byte {offset}: {e}"))? {
                0 if in_archive => return Err(format!("it ends at byte {offset}, before its archive's trailer (TRAILER!!!)")),
                0 if archives > 0 => return Ok(()),
                0 => return Err("it holds no cpio archive".into()),
                _ if first[0] == 0 => offset += 1,
                _ => {
                    header[0] = first[0];
                    got = 1;
                }
            }
        }
        input.read_exact(&mut header[1..]).map_err(|_| format!("it ends at byte {offset}, inside an entry's header"))?;
        offset += 110;
        if &header[..5] != b"07070" {
            return Err(format!("at byte {}: no newc header where one should be", offset - 110));
        }
        let field = |i: usize| u64::from_str_radix(std::str::from_utf8(&header[6 + i * 8..14 + i * 8]).unwrap_or("x"), 16).map_err(|_| format!("at byte {}: a damaged header", offset - 110));
        let (size, name_len) = (field(6)?, field(11)?);
        let name_pad = (4 - (110 + name_len) % 4) % 4;
        let mut name = vec![0u8; name_len as usize];
        input.read_exact(&mut name).map_err(|_| format!("it ends at byte {offset}, inside an entry's name"))?;
        offset += name_len;
        skip(&mut input, name_pad + size + (4 - size % 4) % 4, &mut offset)?;
        in_archive = !name.starts_with(b"TRAILER!!!");
        archives += usize::from(!in_archive);
    }
}

/// Every `*.cfg` parses (`grub-script-check`), puts its serial line and kernel console on
/// `console`, and every custom `load-kernel-<x>.cfg` that loads a kernel also boots it.
async fn boot_scripts(dir: &Path, console: SerialConsole) -> Result<(), ArtifactError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ArtifactError::Io { path, source }
    };
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "cfg"))
        .collect();
    scripts.sort();
    for script in scripts {
        let out = tokio::process::Command::new("grub-script-check").arg(&script).output().await.map_err(io(Path::new("grub-script-check")))?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).trim().replace('\n', "; ");
            let output = if text.is_empty() { format!("exit status {} (an unterminated block?)", out.status) } else { text };
            return Err(ArtifactError::GrubScript { file: script, output });
        }
        let text = std::fs::read_to_string(&script).map_err(io(&script))?;
        if let Some(found) = off_console(&text, console) {
            return Err(ArtifactError::Console { file: script, found, console });
        }
        let name = script.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with("load-kernel-") && loads_without_boot(&text) {
            return Err(ArtifactError::NoBoot { file: script });
        }
    }
    Ok(())
}

/// Whether a GRUB script runs `linux` and never `boot` (comments and quoted words aside,
/// by first word of each command).
fn loads_without_boot(script: &str) -> bool {
    let commands: Vec<&str> = script
        .lines()
        .flat_map(|line| line.split(';'))
        .filter_map(|command| command.split_whitespace().next())
        .filter(|word| !word.starts_with('#'))
        .collect();
    commands.iter().any(|c| matches!(*c, "linux" | "linuxefi")) && !commands.contains(&"boot")
}

/// The first GRUB `serial` command or kernel `console=ttyS…` in a script whose port, or
/// speed where it gives one, is not `console`'s. A `serial --port=` line names no unit and
/// passes.
fn off_console(script: &str, console: SerialConsole) -> Option<String> {
    let agrees = |unit: Option<u8>, speed: Option<u32>| unit == Some(console.unit) && speed.is_none_or(|s| s == console.speed);
    for command in script.lines().flat_map(|line| line.split(';')) {
        let words: Vec<&str> = command.split_whitespace().collect();
        let value = |word: &str, key: &str| word.strip_prefix(key).map(str::to_owned);
        match words.first() {
            Some(&"serial") if !words.iter().any(|w| w.starts_with("--port=")) => {
                let unit = words.iter().find_map(|w| value(w, "--unit=")).map_or(Some(0), |u| u.parse().ok());
                let speed = words.iter().find_map(|w| value(w, "--speed=")).map(|s| s.parse().unwrap_or(0));
                if !agrees(unit, speed) {
                    return Some(command.trim().to_owned());
                }
            }
            Some(&("linux" | "linuxefi")) => {
                // The kernel's /dev/console is the last console= it is given.
                let Some(param) = words.iter().rev().find(|w| w.starts_with("console=ttyS")) else { continue };
                let value = &param["console=".len()..];
                let speed_given = value.contains(',');
                let ok = match value.parse::<SerialConsole>() {
                    Ok(c) => agrees(Some(c.unit), speed_given.then_some(c.speed)),
                    Err(_) => false,
                };
                if !ok {
                    return Some((*param).to_owned());
                }
            }
            _ => {}
        }
    }
    None
}

/// The image the installer unpacks: `installer/nixos-image` in the first layer that has it,
/// its link followed.
fn image_of(layers: &[PathBuf]) -> Option<PathBuf> {
    layers.iter().map(|l| l.join("installer").join("nixos-image")).find_map(|p| std::fs::canonicalize(p).ok())
}

/// Decompress the image to nowhere with its compressor's own test.
async fn image_intact(image: &Path) -> Result<(), ArtifactError> {
    let name = image.to_string_lossy();
    let tool = match () {
        _ if name.ends_with(".gz") => "gzip",
        _ if name.ends_with(".xz") => "xz",
        _ if name.ends_with(".zst") => "zstd",
        _ => return Ok(()),
    };
    let out = tokio::process::Command::new(tool)
        .args(["-t", "-q"])
        .arg(image)
        .output()
        .await
        .map_err(|source| ArtifactError::Io { path: tool.into(), source })?;
    match out.status.success() {
        true => Ok(()),
        false => Err(ArtifactError::Image { file: image.to_owned(), tool, output: String::from_utf8_lossy(&out.stderr).trim().replace('\n', "; ") }),
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_script_that_loads_a_kernel_must_boot_it() {
        assert!(loads_without_boot("echo custom\nlinux $prefix/bzImage console=ttyS0\n"));
        assert!(!loads_without_boot("linux $prefix/bzImage\nboot\n"));
        assert!(!loads_without_boot("echo 'linux is not here'\n"));
        assert!(!loads_without_boot("linux $prefix/bzImage; boot\n"));
        assert!(loads_without_boot("linux $prefix/bzImage\n# boot\n"));
    }

    #[test]
    fn a_serial_line_or_kernel_console_off_the_artifact_sets_console_is_named() {
        let upstream = SerialConsole::UPSTREAM;
        let moved = SerialConsole { unit: 1, speed: 57_600 };
        let grub = "serial --speed=115200 --unit=0 --word=8 --parity=no --stop=1\nterminal_input serial\n";
        assert_eq!(off_console(grub, upstream), None);
        assert_eq!(off_console(grub, moved).as_deref(), Some("serial --speed=115200 --unit=0 --word=8 --parity=no --stop=1"));
        assert_eq!(off_console(&moved.grub_serial(), moved), None);
        assert_eq!(off_console("serial --unit=1", moved), None, "no speed given: GRUB's default is not checked");
        assert_eq!(off_console("serial", upstream), None, "unit 0 by default");
        assert_eq!(off_console("serial --port=0x3f8 --speed=9600", moved), None);
        let linux = "linux  $prefix/bzImage console=tty0 console=ttyS0,115200n8 ip=::::::dhcp::\nboot\n";
        assert_eq!(off_console(linux, upstream), None);
        assert_eq!(off_console(linux, moved).as_deref(), Some("console=ttyS0,115200n8"));
        assert_eq!(off_console("linux /bzImage console=ttyS1", moved), None);
        assert_eq!(off_console("linux /bzImage console=ttyS1,9600", moved).as_deref(), Some("console=ttyS1,9600"));
        assert_eq!(off_console("linux /bzImage root=/dev/nfs", moved), None, "no serial console named");
        assert_eq!(off_console("echo 'serial --unit=3'", upstream), None);
    }

    #[tokio::test]
    async fn bad_scripts_and_truncated_images_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let nixos = dir.path().join("tftp/nixos");
        std::fs::create_dir_all(&nixos).unwrap();
        std::fs::write(nixos.join("grub.cfg"), "set timeout=5\nif [ x ]; then\n echo\nfi fi\n").unwrap();
        let err = boot_scripts(&nixos, SerialConsole::UPSTREAM).await.unwrap_err();
        assert!(matches!(&err, ArtifactError::GrubScript { file, output } if file.ends_with("grub.cfg") && output.contains("line 4")), "{err}");
        std::fs::write(nixos.join("grub.cfg"), "set timeout=5\n").unwrap();
        std::fs::write(nixos.join("load-kernel-52:54:00:1a:5e:01.cfg"), "linux $prefix/bzImage\n").unwrap();
        let err = boot_scripts(&nixos, SerialConsole::UPSTREAM).await.unwrap_err();
        assert!(matches!(err, ArtifactError::NoBoot { .. }), "{err}");

        let layer = dir.path().join("layer/installer");
        std::fs::create_dir_all(&layer).unwrap();
        let data: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut gz = std::process::Command::new("gzip").arg("-c").stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
        std::io::Write::write_all(gz.stdin.as_mut().unwrap(), &data).unwrap();
        drop(gz.stdin.take());
        let whole = gz.wait_with_output().unwrap().stdout;
        std::fs::write(layer.join("nixos.tar.gz"), &whole[..whole.len() / 2]).unwrap();
        std::os::unix::fs::symlink("nixos.tar.gz", layer.join("nixos-image")).unwrap();
        let err = image_intact(&image_of(&[dir.path().join("layer")]).unwrap()).await.unwrap_err();
        assert!(matches!(&err, ArtifactError::Image { tool: "gzip", output, .. } if output.contains("unexpected end of file")), "{err}");
        std::fs::write(layer.join("nixos.tar.gz"), &whole).unwrap();
        image_intact(&image_of(&[dir.path().join("layer")]).unwrap()).await.unwrap();
    }

    /// A bzImage-shaped file: `HdrS`, one setup sector, `syssize` 16-byte units of code.
    fn bzimage(syssize: u32, len: usize) -> Vec<u8> {
        let mut k = vec![0u8; len];
        k[0x1f1] = 1;
        k[0x1f4..0x1f8].copy_from_slice(&syssize.to_le_bytes());
        k[0x202..0x206].copy_from_slice(b"HdrS");
        k
    }

    fn newc(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, body) in entries.iter().copied().chain([("TRAILER!!!", &b""[..])]) {
            let header = format!("070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}", 1, 0o100644, 0, 0, 1, 0, body.len(), 0, 0, 0, 0, name.len() + 1, 0);
            out.extend(header.as_bytes());
            out.extend(name.as_bytes());
            out.push(0);
            while out.len() % 4 != 0 {
                out.push(0);
            }
            out.extend(body);
            while out.len() % 4 != 0 {
                out.push(0);
            }
        }
        out
    }

    const LAB: std::net::Ipv4Addr = std::net::Ipv4Addr::new(192, 0, 2, 1);

    #[tokio::test]
    async fn a_netboot_set_that_cannot_boot_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let script = "#!ipxe\nkernel bzImage init=/nix/store/x/init initrd=initrd\ninitrd initrd\nboot\n";
        std::fs::write(d.join("netboot.ipxe"), script).unwrap();
        std::fs::write(d.join("bzImage"), bzimage(64, 1024 + 64 * 16)).unwrap();
        let initrd = newc(&[("init", b"#!/bin/sh\n"), ("big", &[7u8; 5000])]);
        std::fs::write(d.join("initrd"), &initrd).unwrap();
        check_netboot(d, "netboot.ipxe", LAB).await.unwrap();
        // Two archives, zero-padded between them, as concatenated initrds are.
        let two = [initrd.clone(), vec![0; 512], newc(&[("extra", b"x")])].concat();
        std::fs::write(d.join("initrd"), &two).unwrap();
        check_netboot(d, "netboot.ipxe", LAB).await.unwrap();

        std::fs::write(d.join("initrd"), &initrd[..initrd.len() - 200]).unwrap();
        let err = check_netboot(d, "netboot.ipxe", LAB).await.unwrap_err();
        assert!(matches!(err, ArtifactError::Initrd { .. }) && err.to_string().contains("ends at byte"), "{err}");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &initrd).unwrap();
        let gz = gz.finish().unwrap();
        std::fs::write(d.join("initrd"), &gz).unwrap();
        check_netboot(d, "netboot.ipxe", LAB).await.unwrap();
        std::fs::write(d.join("initrd"), &gz[..gz.len() / 2]).unwrap();
        assert!(matches!(check_netboot(d, "netboot.ipxe", LAB).await, Err(ArtifactError::Initrd { .. })));
        std::fs::write(d.join("initrd"), &initrd).unwrap();

        std::fs::write(d.join("bzImage"), bzimage(64, 1024 + 63 * 16)).unwrap();
        let err = check_netboot(d, "netboot.ipxe", LAB).await.unwrap_err();
        assert!(err.to_string().contains("2032 bytes of the 2048"), "{err}");
        std::fs::write(d.join("bzImage"), bzimage(64, 1024 + 64 * 16)).unwrap();

        std::fs::write(d.join("netboot.ipxe"), script.replace("initrd initrd", "initrd initrd.zst")).unwrap();
        let err = check_netboot(d, "netboot.ipxe", LAB).await.unwrap_err();
        assert!(err.to_string().contains("names initrd.zst") && err.to_string().contains("holds: bzImage, initrd, netboot.ipxe"), "{err}");
        // A URL of the lab's own server is the same file; another server's is not checked.
        std::fs::write(d.join("netboot.ipxe"), script.replace("initrd initrd\n", "initrd http://192.0.2.1/missing\ninitrd http://198.51.100.7/x\n")).unwrap();
        let err = check_netboot(d, "netboot.ipxe", LAB).await.unwrap_err();
        assert!(err.to_string().contains("names http://192.0.2.1/missing"), "{err}");
        std::fs::write(d.join("netboot.ipxe"), script.replace("initrd initrd\n", "initrd http://198.51.100.7/x\n")).unwrap();
        check_netboot(d, "netboot.ipxe", LAB).await.unwrap();
        std::fs::write(d.join("netboot.ipxe"), "kernel bzImage\n").unwrap();
        assert!(matches!(check_netboot(d, "netboot.ipxe", LAB).await, Err(ArtifactError::NetbootScript { .. })));
    }
}
