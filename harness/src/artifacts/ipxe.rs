//! iPXE scripts for an artifact set in the protocol's GRUB shape, so that iPXE can boot it
//! over HTTP: each `load-kernel*.cfg` beside the boot loader becomes a `.ipxe` script that
//! loads the same kernel, command line and initrds by URL, and one entry script tries them
//! in GRUB's order (MAC, IP, host name, then the default). Pure: text in, text out.
//!
//! The scripts use iPXE's EFI conventions, as NixOS's `netboot.ipxe` does: an initrd is
//! named on the kernel's command line (`initrd=<name>`), which the kernel's EFI stub loads
//! from iPXE's image list.

use std::path::{Path, PathBuf};

/// The entry script's name at the HTTP root; DHCP gives iPXE its URL.
pub const ENTRY_SCRIPT: &str = "pxelab.ipxe";

/// A GRUB kernel file that has no iPXE translation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: line {line}: {cause}")]
pub struct TranslateError {
    pub file: String,
    pub line: usize,
    pub cause: String,
}

/// The iPXE script for the GRUB script `text` (a `load-kernel*.cfg`), whose `$prefix` is
/// `prefix_url`. `echo`, `linux`/`linuxefi`, `initrd`/`initrdefi` and `boot` carry over;
/// comments, blank lines and GRUB's display settings are dropped; anything else is an
/// error naming the line, since iPXE would not do what GRUB does.
pub fn translate(file: &str, text: &str, prefix_url: &str) -> Result<String, TranslateError> {
    let err = |line: usize, cause: String| TranslateError { file: file.to_owned(), line, cause };
    let url = |line: usize, word: &str| -> Result<String, TranslateError> {
        let path = word.strip_prefix("$prefix").or_else(|| word.strip_prefix("${prefix}")).ok_or_else(|| {
            err(line, format!("`{word}` is not under $prefix: only the boot tree is served over HTTP"))
        })?;
        Ok(format!("{}/{}", prefix_url.trim_end_matches('/'), path.trim_start_matches('/')))
    };
    let (mut kernel, mut initrds, mut echoes, mut boots) = (None::<(String, Vec<String>)>, Vec::new(), Vec::new(), false);
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let words: Vec<&str> = raw.split_whitespace().collect();
        let Some((&command, args)) = words.split_first() else { continue };
        if command.starts_with('#') {
            continue;
        }
        if args.iter().any(|a| a.contains('$') && !a.starts_with("$prefix") && !a.starts_with("${prefix}")) && command != "echo" {
            return Err(err(line, format!("`{}` uses a GRUB variable other than $prefix", raw.trim())));
        }
        match command {
            "echo" => echoes.push(raw.trim().trim_start_matches("echo").trim().trim_matches('"').replace("$prefix", prefix_url)),
            "linux" | "linuxefi" => {
                let (path, cmdline) = args.split_first().ok_or_else(|| err(line, "`linux` without a kernel".into()))?;
                kernel = Some((url(line, path)?, cmdline.iter().map(|s| s.to_string()).collect()));
            }
            "initrd" | "initrdefi" => {
                initrds = args.iter().map(|a| url(line, a)).collect::<Result<_, _>>()?;
            }
            "boot" => boots = true,
            "set" | "insmod" | "serial" | "terminal_input" | "terminal_output" | "terminal" => {}
            other => return Err(err(line, format!("GRUB command `{other}` has no iPXE translation"))),
        }
    }
    let Some((kernel, mut cmdline)) = kernel else {
        return Err(err(0, "no `linux` line: nothing to boot".into()));
    };
    let _ = boots; // GRUB boots at the end of its menu entry with or without it.
    let mut script = String::from("#!ipxe\n");
    for echo in echoes {
        script += &format!("echo {echo}\n");
    }
    for initrd in &initrds {
        cmdline.push(format!("initrd={}", name_of(initrd)));
    }
    script += &format!("kernel {kernel} {}\n", cmdline.join(" "));
    for initrd in &initrds {
        script += &format!("initrd {initrd}\n");
    }
    script += "boot\n";
    Ok(script)
}

/// What an iPXE script loads: its `kernel` image and its `initrd` images, as the script names
/// them (a URL, or a path relative to the script's). Options (`--name x`) are skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loads {
    pub kernel: String,
    pub initrds: Vec<String>,
}

/// How the lab serves an image a script loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A URL of the lab's HTTP server, or a relative name (iPXE fetches it beside the
    /// script, which the lab serves over HTTP).
    Http,
    /// A `tftp://` URL of the lab's server.
    Tftp,
}

/// An image a script loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// As the script names it.
    pub name: String,
    /// Whether it is the kernel (the others are initrds).
    pub kernel: bool,
    /// How the lab serves it and its path under the lab's root; `None`: a URL elsewhere,
    /// the user's to serve.
    pub served: Option<(Via, String)>,
}

impl Loads {
    /// Each image, the kernel first, and how the lab at `server` serves it: the one answer to
    /// "which files does this script need from the lab", for `check inputs` and the install's
    /// waits alike.
    pub fn images(&self, server: std::net::Ipv4Addr) -> Vec<Image> {
        let (http, tftp) = (format!("http://{server}/"), format!("tftp://{server}/"));
        let served = |name: &str| -> Option<(Via, String)> {
            let (via, path) = match (name.strip_prefix(http.as_str()), name.strip_prefix(tftp.as_str())) {
                (Some(path), _) => (Via::Http, path),
                (_, Some(path)) => (Via::Tftp, path),
                _ if name.contains("://") => return None,
                _ => (Via::Http, name),
            };
            Some((via, path.trim_start_matches('/').to_owned()))
        };
        std::iter::once((&self.kernel, true))
            .chain(self.initrds.iter().map(|i| (i, false)))
            .map(|(name, kernel)| Image { name: name.clone(), kernel, served: served(name) })
            .collect()
    }
}

/// The images `script` loads; `Err` says why it loads no kernel.
pub fn loads(script: &str) -> Result<Loads, String> {
    if !script.starts_with("#!ipxe") {
        return Err("it does not start with `#!ipxe`".into());
    }
    let image = |args: &[&str]| -> Option<String> {
        let mut words = args.iter();
        while let Some(word) = words.next() {
            match *word {
                "--name" | "-n" | "--timeout" | "-t" => {
                    words.next();
                }
                w if w.starts_with('-') => {}
                w => return Some(w.to_owned()),
            }
        }
        None
    };
    let (mut kernel, mut initrds) = (None, Vec::new());
    for line in script.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.split_first() {
            Some((&("kernel" | "imgselect" | "chain" | "boot"), args)) if kernel.is_none() && !args.is_empty() => kernel = image(args),
            Some((&("initrd" | "imgfetch" | "module"), args)) => initrds.extend(image(args)),
            _ => {}
        }
    }
    let kernel = kernel.ok_or("it loads no kernel (no `kernel` line)")?;
    Ok(Loads { kernel, initrds })
}

/// The last path segment of a URL: the name iPXE gives the image it downloads.
fn name_of(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

/// The entry script: the per-client scripts in GRUB's order (`load-kernel-<MAC>`, `-<IP>`,
/// `-<host name>`), then the default. `prefix_url` is the URL of the boot loader's
/// directory (`http://192.0.2.1/nixos`). The URLs are absolute: iPXE takes the colon of a
/// MAC in a relative one for a scheme's (`Operation not supported`).
pub fn entry_script(prefix_url: &str, has_default: bool) -> String {
    let at = |name: &str| format!("{}/{name}", prefix_url.trim_end_matches('/'));
    let mut script = String::from("#!ipxe\n");
    // iPXE's ${net0/mac} is GRUB's $net_default_mac form (lower-case, colons).
    for key in ["${net0/mac}", "${net0/ip}", "${hostname}"] {
        script += &format!("chain --autofree {} ||\n", at(&format!("load-kernel-{key}.ipxe")));
    }
    if has_default {
        script += &format!("chain --autofree {}\n", at("load-kernel.ipxe"));
    }
    script += "echo pxelab: no load-kernel script for this client\nexit 1\n";
    script
}

/// Write iPXE scripts for the GRUB boot tree `root` (whose boot loader is `boot_file`, e.g.
/// `nixos/bootx64.efi`) into `out` (a directory served before `root`): the entry script
/// [`ENTRY_SCRIPT`] and one script per `load-kernel*.cfg`. `prefix_url` is the URL of the
/// boot loader's directory. Returns the scripts written, relative to `out`.
pub fn write_scripts(root: &Path, boot_file: &str, out: &Path, server_url: &str) -> Result<Vec<PathBuf>, ScriptError> {
    let prefix = Path::new(boot_file).parent().unwrap_or(Path::new("")).to_path_buf();
    let dir = root.join(&prefix);
    let prefix_url = format!("{}/{}", server_url.trim_end_matches('/'), prefix.display()).trim_end_matches('/').to_owned();
    let mut written = Vec::new();
    let mut has_default = false;
    let mut entries: Vec<_> = std::fs::read_dir(&dir).map_err(|e| ScriptError::Io(dir.clone(), e.to_string()))?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    std::fs::create_dir_all(out.join(&prefix)).map_err(|e| ScriptError::Io(out.join(&prefix), e.to_string()))?;
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_prefix("load-kernel").and_then(|s| s.strip_suffix(".cfg")) else { continue };
        let text = std::fs::read_to_string(entry.path()).map_err(|e| ScriptError::Io(entry.path(), e.to_string()))?;
        let script = translate(&name, &text, &prefix_url)?;
        let target = prefix.join(format!("load-kernel{stem}.ipxe"));
        std::fs::write(out.join(&target), script).map_err(|e| ScriptError::Io(out.join(&target), e.to_string()))?;
        has_default |= stem.is_empty();
        written.push(target);
    }
    if written.is_empty() {
        return Err(ScriptError::NoKernelFile(dir));
    }
    std::fs::write(out.join(ENTRY_SCRIPT), entry_script(&prefix_url, has_default)).map_err(|e| ScriptError::Io(out.join(ENTRY_SCRIPT), e.to_string()))?;
    written.insert(0, PathBuf::from(ENTRY_SCRIPT));
    Ok(written)
}

/// Why no iPXE scripts could be written for a boot tree.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("{0}: {1}")]
    Io(PathBuf, String),
    #[error("{} has no load-kernel*.cfg to boot over HTTP", .0.display())]
    NoKernelFile(PathBuf),
    #[error(transparent)]
    Translate(#[from] TranslateError),
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn each_image_is_served_over_http_or_tftp_or_elsewhere() {
        let loads = Loads {
            kernel: "http://192.0.2.1/netboot/bzImage".into(),
            initrds: vec!["initrd".into(), "tftp://192.0.2.1//nixos/extra".into(), "https://cache.example/x.img".into()],
        };
        let served: Vec<(bool, Option<(Via, String)>)> = loads.images("192.0.2.1".parse().unwrap()).into_iter().map(|i| (i.kernel, i.served)).collect();
        assert_eq!(
            served,
            [
                (true, Some((Via::Http, "netboot/bzImage".into()))),
                (false, Some((Via::Http, "initrd".into()))),
                (false, Some((Via::Tftp, "nixos/extra".into()))),
                (false, None),
            ]
        );
        assert_eq!(loads.images("192.0.2.9".parse().unwrap())[0].served, None, "another server's URL is not the lab's");
    }

    #[test]
    fn a_kernel_file_becomes_a_script_that_names_its_initrd() {
        let grub = "echo \"load-kernel.cfg: loading kernel $prefix/bzImage ...\"\nlinux $prefix/bzImage console=ttyS0,115200n8 ip=::::::dhcp:: root=/dev/nfs init=/init\ninitrd $prefix/initrd\n";
        let script = translate("load-kernel.cfg", grub, "http://192.0.2.1/nixos").unwrap();
        assert_eq!(
            script,
            "#!ipxe\necho load-kernel.cfg: loading kernel http://192.0.2.1/nixos/bzImage ...\n\
             kernel http://192.0.2.1/nixos/bzImage console=ttyS0,115200n8 ip=::::::dhcp:: root=/dev/nfs init=/init initrd=initrd\n\
             initrd http://192.0.2.1/nixos/initrd\nboot\n"
        );
        // Upstream's shape: no initrd, an explicit boot.
        let upstream = "linux  $prefix/bzImage console=ttyS0 root=/dev/nfs init=/nix/store/x-nfsroot-setup.sh\nboot\n";
        assert_eq!(translate("load-kernel.cfg", upstream, "http://s/nixos/").unwrap(), "#!ipxe\nkernel http://s/nixos/bzImage console=ttyS0 root=/dev/nfs init=/nix/store/x-nfsroot-setup.sh\nboot\n");
    }

    #[test]
    fn a_scripts_images_are_read_as_ipxe_reads_them() {
        let netboot = "#!ipxe\n# comment\nkernel bzImage init=/nix/store/x/init initrd=initrd loglevel=4 ${cmdline}\ninitrd initrd\nboot\n";
        assert_eq!(loads(netboot), Ok(Loads { kernel: "bzImage".into(), initrds: vec!["initrd".into()] }));
        let named = "#!ipxe\nkernel --name k http://s/vmlinuz quiet\ninitrd -n i http://s/a.img\ninitrd http://s/b.img\nboot\n";
        assert_eq!(loads(named), Ok(Loads { kernel: "http://s/vmlinuz".into(), initrds: vec!["http://s/a.img".into(), "http://s/b.img".into()] }));
        assert!(loads("kernel bzImage\n").unwrap_err().contains("#!ipxe"));
        assert!(loads("#!ipxe\necho hi\n").unwrap_err().contains("no kernel"));
    }

    #[test]
    fn what_ipxe_would_not_do_as_grub_does_is_named() {
        let e = translate("load-kernel.cfg", "search --file /vmlinuz\nlinux $prefix/bzImage\n", "http://s").unwrap_err();
        assert_eq!((e.line, e.cause.contains("`search`")), (1, true), "{e}");
        let e = translate("load-kernel.cfg", "linux (hd0,1)/vmlinuz\n", "http://s").unwrap_err();
        assert!(e.cause.contains("not under $prefix"), "{e}");
        let e = translate("load-kernel.cfg", "linux $prefix/bzImage root=$root\n", "http://s").unwrap_err();
        assert!(e.cause.contains("variable"), "{e}");
        let e = translate("load-kernel.cfg", "echo nothing\n", "http://s").unwrap_err();
        assert!(e.cause.contains("no `linux`"), "{e}");
    }

    #[test]
    fn the_entry_script_tries_the_clients_own_scripts_first() {
        let dir = tempfile::tempdir().unwrap();
        let (root, out) = (dir.path().join("tftp"), dir.path().join("http"));
        std::fs::create_dir_all(root.join("nixos")).unwrap();
        std::fs::write(root.join("nixos/grub.cfg"), "set timeout=5\n").unwrap();
        std::fs::write(root.join("nixos/load-kernel.cfg"), "linux $prefix/bzImage a\n").unwrap();
        std::fs::write(root.join("nixos/load-kernel-52:54:00:00:00:01.cfg"), "linux $prefix/bzImage b\n").unwrap();
        let written = write_scripts(&root, "nixos/bootx64.efi", &out, "http://192.0.2.1").unwrap();
        let names: Vec<_> = written.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(names, ["pxelab.ipxe", "nixos/load-kernel-52:54:00:00:00:01.ipxe", "nixos/load-kernel.ipxe"]);
        let entry = std::fs::read_to_string(out.join(ENTRY_SCRIPT)).unwrap();
        let mac = entry.find("chain --autofree http://192.0.2.1/nixos/load-kernel-${net0/mac}.ipxe ||").unwrap();
        let default = entry.find("chain --autofree http://192.0.2.1/nixos/load-kernel.ipxe\n").unwrap();
        assert!(mac < default, "{entry}");
        assert_eq!(std::fs::read_to_string(out.join("nixos/load-kernel-52:54:00:00:00:01.ipxe")).unwrap(), "#!ipxe\nkernel http://192.0.2.1/nixos/bzImage b\nboot\n");
        std::fs::remove_file(root.join("nixos/load-kernel.cfg")).unwrap();
        std::fs::remove_file(root.join("nixos/load-kernel-52:54:00:00:00:01.cfg")).unwrap();
        assert!(matches!(write_scripts(&root, "nixos/bootx64.efi", &out, "http://192.0.2.1"), Err(ScriptError::NoKernelFile(_))));
    }
}
