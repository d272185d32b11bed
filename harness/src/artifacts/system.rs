//! What an installed system is like, so that generic jobs can drive it: the NIC its kernel
//! has a driver for, how to log in, how its shell prompts, how to read its version.
//!
//! It comes with the artifact set: a `pxelab.toml` beside a user's artifacts, with upstream
//! NixOS's defaults for whatever it leaves out, or a fixture flavour's own.
//!
//! ```toml
//! nic = "e1000"                # virtio-net, e1000 or e1000e
//! console = "ttyS0,115200"    # grub.cfg's serial line and the kernel's console=, install and installed
//! version_command = "nixos-version"
//! ready_command = "systemctl is-system-running --wait"
//! diagnose_command = "systemctl --failed …"  # its output is quoted when the ready command fails
//! backdoor = false  # a root shell on the command port; left out: looked for for 2 s after login
//! hostname = "nixos" # what the installed system calls itself; "dhcp": the lab's DHCP host name
//!
//! [login]
//! prompt = '(?m)^(\S+ )?login: $'  # regexes, matched on the ANSI-stripped console
//! user = "root"
//! password_prompt = "Password: "
//! password = "root"
//! shell_prompt = "# $"
//! ```

use std::path::{Path, PathBuf};

use pxelab_fixtures::SerialConsole;

use crate::vm::NicModel;

/// systemd's failed units, each with the end of its journal.
const FAILED_UNITS: &str = "systemctl --no-pager --failed; \
    for unit in $(systemctl --failed --plain --no-legend | awk '{ print $1 }'); do \
    echo \"--- journal of $unit\"; journalctl --no-pager -o cat -n 20 -u \"$unit\"; done";

/// The file beside the artifacts that describes the installed system.
pub const SYSTEM_FILE: &str = "pxelab.toml";

/// The installed system's contract with the harness.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InstalledSystem {
    /// The client NIC model. Upstream's kernel has e1000, e1000e and igb built in and
    /// virtio-net only as a module it cannot load before its NFS root: e1000.
    pub nic: NicModel,
    /// The serial console of the artifact set, as on the kernel command line: where GRUB's
    /// `serial` line and the kernel's `console=` put it, for the installer and the installed
    /// system. The harness reads the console there; the firmware always writes to `ttyS0`.
    #[serde(deserialize_with = "serial_console")]
    pub console: SerialConsole,
    pub login: Login,
    /// A shell command whose output is the system's version.
    pub version_command: String,
    /// A shell command that waits until the system has finished booting and fails unless it
    /// came up whole (systemd's: no failed unit).
    pub ready_command: String,
    /// A shell command whose output explains a failed ready command (systemd's: the failed
    /// units and the end of each one's journal).
    pub diagnose_command: String,
    /// Whether the system runs a root shell on its command port (`ttyS1`, `ttyS2` when the
    /// console is on `ttyS1`), as the NixOS test driver's backdoor: `true`, the harness waits
    /// for it and fails without it; `false`, commands go to the console's login shell at
    /// once; `None`, the harness looks for one for 2 s.
    pub backdoor: Option<bool>,
    /// What the installed system calls itself: a name ([`UPSTREAM_HOSTNAME`], upstream's
    /// default image's `networking.hostName`, when left out), or [`DHCP_HOSTNAME`] for the
    /// host name the lab's DHCP server gives the client (an installer that writes it into the
    /// system's configuration, as pxelab's fixtures do).
    pub hostname: String,
}

/// Upstream's default image calls itself this.
pub const UPSTREAM_HOSTNAME: &str = "nixos";
/// `hostname = "dhcp"`: the system takes the lab's DHCP host name.
pub const DHCP_HOSTNAME: &str = "dhcp";

impl InstalledSystem {
    /// The name the installed system must have, for a client whose DHCP host name is `dhcp`.
    pub fn expected_hostname<'a>(&'a self, dhcp: Option<&'a str>) -> Option<&'a str> {
        match self.hostname.as_str() {
            DHCP_HOSTNAME => dhcp,
            name => Some(name),
        }
    }
}

/// How to log in on the serial console.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Login {
    pub prompt: String,
    pub user: String,
    pub password_prompt: String,
    pub password: String,
    /// The shell's prompt once logged in (a regex; `$` anchors it at the end of the output).
    pub shell_prompt: String,
}

impl Default for InstalledSystem {
    /// Upstream NixOS's install image.
    fn default() -> Self {
        InstalledSystem {
            nic: NicModel::E1000,
            console: SerialConsole::UPSTREAM,
            login: Login::default(),
            version_command: "nixos-version".into(),
            ready_command: "systemctl is-system-running --wait".into(),
            diagnose_command: FAILED_UNITS.into(),
            backdoor: None,
            hostname: UPSTREAM_HOSTNAME.into(),
        }
    }
}

fn serial_console<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SerialConsole, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(d)?;
    text.parse().map_err(serde::de::Error::custom)
}

impl Default for Login {
    /// Upstream's default image: root with the password root.
    fn default() -> Self {
        Login {
            // A getty's prompt, `<hostname> login: ` at a line's start and the end of the output,
            // not `/usr/sbin/nologin: No such file or directory`.
            prompt: r"(?m)^(\S+ )?login: $".into(),
            user: "root".into(),
            password_prompt: "Password: ".into(),
            password: "root".into(),
            shell_prompt: "# $".into(),
        }
    }
}

/// `pxelab.toml` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SystemFileError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a valid {SYSTEM_FILE}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
}

impl InstalledSystem {
    /// The contract in the first of `dirs` that has a [`SYSTEM_FILE`]; upstream's defaults
    /// when none has.
    pub fn find(dirs: &[PathBuf]) -> Result<Self, SystemFileError> {
        match dirs.iter().map(|d| d.join(SYSTEM_FILE)).find(|f| f.is_file()) {
            Some(path) => Self::read(&path),
            None => Ok(Self::default()),
        }
    }

    pub fn read(path: &Path) -> Result<Self, SystemFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| SystemFileError::Read { path: path.to_owned(), source })?;
        toml::from_str(&text).map_err(|source| SystemFileError::Parse { path: path.to_owned(), source })
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn what_the_file_leaves_out_is_upstreams_default() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(InstalledSystem::find(&[dir.path().to_owned()]).unwrap(), InstalledSystem::default());
        std::fs::write(dir.path().join(SYSTEM_FILE), "nic = \"virtio-net\"\n[login]\nshell_prompt = 'box# $'\n").unwrap();
        let system = InstalledSystem::find(&[dir.path().to_owned()]).unwrap();
        assert_eq!((system.nic, system.login.shell_prompt.as_str()), (NicModel::VirtioNet, "box# $"));
        assert_eq!((system.login.password.as_str(), system.version_command.as_str()), ("root", "nixos-version"));
        assert_eq!(system.console, SerialConsole::UPSTREAM);
        std::fs::write(dir.path().join(SYSTEM_FILE), "console = \"ttyS1,57600n8\"\n").unwrap();
        assert_eq!(InstalledSystem::find(&[dir.path().to_owned()]).unwrap().console, SerialConsole { unit: 1, speed: 57_600 });
        assert_eq!(system.backdoor, None, "looked for unless the file says");
        std::fs::write(dir.path().join(SYSTEM_FILE), "backdoor = false\n").unwrap();
        assert_eq!(InstalledSystem::find(&[dir.path().to_owned()]).unwrap().backdoor, Some(false));
    }

    /// Upstream's system calls itself `nixos` whatever the lab's DHCP says (a check that took
    /// the DHCP host name failed an upstream-built install); `dhcp` takes the DHCP name.
    #[test]
    fn the_installed_systems_name_comes_from_the_artifact_set() {
        let upstream = InstalledSystem::default();
        assert_eq!(upstream.expected_hostname(Some("nixos-pxe-1")), Some("nixos"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SYSTEM_FILE), "hostname = \"dhcp\"\n").unwrap();
        let fixture = InstalledSystem::find(&[dir.path().to_owned()]).unwrap();
        assert_eq!(fixture.expected_hostname(Some("nixos-pxe-1")), Some("nixos-pxe-1"));
        assert_eq!(fixture.expected_hostname(None), None, "no DHCP host name, nothing to check");
        std::fs::write(dir.path().join(SYSTEM_FILE), "hostname = \"rack1-node4\"\n").unwrap();
        assert_eq!(InstalledSystem::find(&[dir.path().to_owned()]).unwrap().expected_hostname(Some("x")), Some("rack1-node4"));
    }

    #[test]
    fn the_default_login_prompt_is_a_gettys_not_any_line_with_login_in_it() {
        let prompt = regex::Regex::new(&Login::default().prompt).unwrap();
        assert!(prompt.is_match("\r\n<<< Welcome to NixOS 24.05 (x86_64) - ttyS0 >>>\n\nnixos login: "));
        assert!(prompt.is_match("boot done\nlogin: "));
        assert!(!prompt.is_match("busybox: /usr/sbin/nologin: No such file or directory\n"));
        assert!(!prompt.is_match("nixos login: root\nPassword: "), "a prompt already answered");
    }

    #[test]
    fn a_misspelt_key_or_an_unknown_nic_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SYSTEM_FILE), "nic = \"rtl8139\"\n").unwrap();
        let err = InstalledSystem::find(&[dir.path().to_owned()]).unwrap_err();
        assert!(matches!(err, SystemFileError::Parse { .. }), "{err}");
        std::fs::write(dir.path().join(SYSTEM_FILE), "[login]\npasword = \"x\"\n").unwrap();
        let err = InstalledSystem::find(&[dir.path().to_owned()]).unwrap_err();
        assert!(format!("{:?}", err).contains("pasword"), "{err:?}");
        std::fs::write(dir.path().join(SYSTEM_FILE), "console = \"ttyUSB0\"\n").unwrap();
        let err = InstalledSystem::find(&[dir.path().to_owned()]).unwrap_err();
        let why = std::error::Error::source(&err).unwrap().to_string();
        assert!(why.contains("\"ttyUSB0\" is not a serial console"), "{why}");
    }
}
