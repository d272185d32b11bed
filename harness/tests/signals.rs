//! `pxelab` killed by SIGTERM or SIGINT mid-boot takes its QEMU with it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The `pxelab` binary: where nextest says at run time (a test archive run elsewhere), else
/// where Cargo built it.
fn pxelab_bin() -> std::path::PathBuf {
    std::env::var_os("NEXTEST_BIN_EXE_pxelab").map_or_else(|| env!("CARGO_BIN_EXE_pxelab").into(), Into::into)
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// PIDs of QEMU processes whose parent is `parent`.
fn qemu_children_of(parent: u32) -> Vec<u32> {
    let entries = std::fs::read_dir("/proc").unwrap();
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let Some((head, tail)) = stat.rsplit_once(')') else { return false };
            head.contains("(qemu-system") && tail.split_whitespace().nth(1) == Some(&parent.to_string())
        })
        .collect()
}

fn gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

fn killed_mid_boot_leaves_no_qemu(signal: libc::c_int) {
    let runs = tempfile::tempdir().unwrap();
    let mut pxelab = Command::new(pxelab_bin())
        .args(["run", "uefi-boot"])
        .env("PXELAB_RUNS_DIR", runs.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let console = runs.path().join("uefi-boot/client/console.log");
    wait_until("GRUB to start in the guest", Duration::from_secs(120), || {
        std::fs::read_to_string(&console).unwrap_or_default().contains("GRUB loading")
    });
    let qemu = qemu_children_of(pxelab.id());
    assert_eq!(qemu.len(), 1, "pxelab runs one QEMU: {qemu:?}");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pxelab.id() as libc::pid_t, signal) };
    let status = pxelab.wait().unwrap();
    assert!(!status.success(), "pxelab was interrupted: {status}");
    // QEMU was killed before pxelab exited; as an orphan it is reaped by init right away.
    wait_until("QEMU to be gone", Duration::from_secs(5), || gone(qemu[0]));
}

#[test]
fn sigterm_mid_boot_leaves_no_qemu() {
    killed_mid_boot_leaves_no_qemu(libc::SIGTERM);
}

#[test]
fn sigint_mid_boot_leaves_no_qemu() {
    killed_mid_boot_leaves_no_qemu(libc::SIGINT);
}
