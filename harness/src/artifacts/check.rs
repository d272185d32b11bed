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
}
