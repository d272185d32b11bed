//! The NixOS test driver's verbs, on a VM's root shell: wait for a unit or a port, retry a
//! command until it succeeds or fails, copy files in and out (checksummed), shut down or
//! crash. Each has its own timeout; an error quotes what it last saw.

#![warn(missing_docs)]

use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::{Digest, Sha256};

use super::{Vm, VmError};
use crate::console::ConsoleError;

/// How often a condition is tried again (the NixOS driver's pace).
const RETRY: Duration = Duration::from_secs(1);
/// Base64 characters typed per line, well inside a tty's 4096-byte line buffer.
const CHUNK: usize = 3000;
/// How many journal lines a failed unit's error quotes.
const JOURNAL_LINES: u32 = 30;

/// Quote `word` for the guest's shell.
pub fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

impl Vm {
    /// Run `command` every second until it exits 0; returns its output.
    pub async fn wait_until_succeeds(&self, command: &str, timeout: Duration) -> Result<String, ConsoleError> {
        self.retry(&format!("{command:?} to succeed"), timeout, || async {
            let (status, output) = self.execute(command).await?;
            Ok(if status == 0 { Ok(output) } else { Err(format!("exit status {status}: {output}")) })
        })
        .await
    }

    /// Run `command` every second until it exits non-zero; returns its output.
    pub async fn wait_until_fails(&self, command: &str, timeout: Duration) -> Result<String, ConsoleError> {
        self.retry(&format!("{command:?} to fail"), timeout, || async {
            let (status, output) = self.execute(command).await?;
            Ok(if status != 0 { Ok(output) } else { Err(format!("exit status 0: {output}")) })
        })
        .await
    }

    /// Run `command`, which must fail; returns its output.
    pub async fn fail(&self, command: &str) -> Result<String, ConsoleError> {
        match self.execute(command).await? {
            (0, output) => Err(ConsoleError::Succeeded { console: self.name.clone(), command: command.to_owned(), output }),
            (_, output) => Ok(output),
        }
    }

    /// Wait until systemd's `unit` is active. A unit that enters `failed` ends the wait at
    /// once, quoting `systemctl status` and the end of its journal.
    pub async fn wait_for_unit(&self, unit: &str, timeout: Duration) -> Result<(), ConsoleError> {
        let unit_q = shell_quote(unit);
        let state = format!("systemctl show -p ActiveState --value -- {unit_q}");
        self.retry(&format!("unit {unit} to be active"), timeout, || async {
            match self.succeed(&state).await?.trim() {
                "active" => Ok(Ok(())),
                "failed" => {
                    let (_, status) = self.execute(&format!("systemctl status --no-pager -l -n 0 -- {unit_q}")).await?;
                    let (_, journal) = self.execute(&format!("journalctl --no-pager -o short-monotonic -n {JOURNAL_LINES} -u {unit_q}")).await?;
                    Err(ConsoleError::UnitFailed { console: self.name.clone(), unit: unit.to_owned(), status, journal })
                }
                other => Ok(Err(format!("ActiveState={other}"))),
            }
        })
        .await
    }

    /// Wait until something listens on TCP `port` inside the guest (127.0.0.1).
    pub async fn wait_for_open_port(&self, port: u16, timeout: Duration) -> Result<(), ConsoleError> {
        self.wait_until_succeeds(&port_probe(port), timeout).await.map(drop)
    }

    /// Wait until nothing listens on TCP `port` inside the guest any more.
    pub async fn wait_for_closed_port(&self, port: u16, timeout: Duration) -> Result<(), ConsoleError> {
        self.wait_until_fails(&port_probe(port), timeout).await.map(drop)
    }

    /// Copy the guest's `path` to `host_path`; the content's SHA-256 must match the guest's.
    pub async fn copy_from_vm(&self, path: &str, host_path: &Path) -> Result<(), ConsoleError> {
        let path_q = shell_quote(path);
        let encoded = self.succeed(&format!("base64 -w 0 -- {path_q}")).await?;
        let data = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| self.copy_error(path, format!("the guest's base64 does not decode: {e}")))?;
        let want = self.succeed(&format!("sha256sum -- {path_q}")).await?;
        let want = want.split_whitespace().next().unwrap_or_default();
        let got = hex::encode(Sha256::digest(&data));
        if got != want {
            return Err(self.copy_error(path, format!("SHA-256 {got} on the host, {want} in the guest")));
        }
        std::fs::write(host_path, &data).map_err(|e| self.copy_error(path, format!("cannot write {}: {e}", host_path.display())))
    }

    /// Copy `host_path` to the guest's `path`; the SHA-256 the guest computes must match.
    pub async fn copy_to_vm(&self, host_path: &Path, path: &str) -> Result<(), ConsoleError> {
        let data = std::fs::read(host_path).map_err(|e| self.copy_error(path, format!("cannot read {}: {e}", host_path.display())))?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(&data);
        let (path_q, staging) = (shell_quote(path), shell_quote(&format!("{path}.b64")));
        self.succeed(&format!(": > {staging}")).await?;
        for chunk in encoded.as_bytes().chunks(CHUNK) {
            let chunk = std::str::from_utf8(chunk).expect("base64 is ASCII");
            self.succeed(&format!("printf %s {chunk} >> {staging}")).await?;
        }
        let got = self.succeed(&format!("base64 -d {staging} > {path_q} && rm -f {staging} && sha256sum -- {path_q}")).await?;
        let got = got.split_whitespace().next().unwrap_or_default();
        let want = hex::encode(Sha256::digest(&data));
        if got != want {
            return Err(self.copy_error(path, format!("SHA-256 {got} in the guest, {want} on the host")));
        }
        Ok(())
    }

    /// Power the guest off from its shell and wait until QEMU exits.
    pub async fn shutdown(&mut self, timeout: Duration) -> Result<ExitStatus, VmError> {
        self.send_line("poweroff").await.map_err(|source| VmError::Console { name: self.name.clone(), source })?;
        self.wait_for_shutdown(timeout).await
    }

    /// Reboot the guest from its shell; the caller waits for what the next boot prints.
    pub async fn reboot(&self) -> Result<(), ConsoleError> {
        self.send_line("reboot").await
    }

    /// Make the firmware boot `Boot####` entry `entry` next time only (UEFI `BootNext`),
    /// written from the guest's shell through efivarfs.
    pub async fn set_boot_next(&self, entry: u16) -> Result<(), ConsoleError> {
        // Attributes NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS, then the number (LE).
        let bytes = [7, 0, 0, 0, entry as u8, (entry >> 8) as u8];
        let octal: String = bytes.iter().map(|b| format!("\\{b:03o}")).collect();
        let var = "/sys/firmware/efi/efivars/BootNext-8be4df61-93ca-11d2-aa0d-00e098032b8c";
        let mount = "mountpoint -q /sys/firmware/efi/efivars || mount -t efivarfs efivarfs /sys/firmware/efi/efivars";
        self.succeed(&format!("{mount}; chattr -i {var} 2>/dev/null; printf '{octal}' > {var}")).await.map(drop)
    }

    /// A sudden power failure: QEMU quits at once, nothing is flushed.
    pub async fn crash(&mut self, timeout: Duration) -> Result<ExitStatus, VmError> {
        self.qmp.quit().await.map_err(|source| VmError::Qmp { name: self.name.clone(), source })?;
        self.wait_for_shutdown(timeout).await
    }

    /// Try `attempt` every [`RETRY`] until it gives `Ok(Ok(_))`, a hard error, or `timeout`
    /// passes; `Ok(Err(last))` is a try that did not hold yet, quoted if time runs out.
    async fn retry<T, F, Fut>(&self, what: &str, timeout: Duration, mut attempt: F) -> Result<T, ConsoleError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Result<T, String>, ConsoleError>>,
    {
        let started = Instant::now();
        loop {
            let last = match attempt().await? {
                Ok(value) => return Ok(value),
                Err(last) => last,
            };
            if started.elapsed() + RETRY > timeout {
                return Err(ConsoleError::Unsatisfied {
                    console: self.name.clone(),
                    what: what.to_owned(),
                    waited: started.elapsed(),
                    last,
                });
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    fn copy_error(&self, path: &str, why: String) -> ConsoleError {
        ConsoleError::Copy { console: self.name.clone(), path: path.to_owned(), why }
    }
}

/// Succeeds when a TCP connect to 127.0.0.1:`port` does: bash's `/dev/tcp`, else `nc -z`.
fn port_probe(port: u16) -> String {
    format!("(exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null || nc -z 127.0.0.1 {port}")
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn quoting_survives_the_shells_specials() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's $HOME"), r"'it'\''s $HOME'");
    }
}
