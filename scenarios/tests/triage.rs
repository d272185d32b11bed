//! Flake triage: a failed stage says whether the host let the guest run. QEMU is stopped
//! (SIGSTOP) for 40 s right after the firmware's lease, inside `TFTP: GRUB` with its budget
//! scaled down to 18 s (`PXELAB_TIMEOUT_SCALE=0.15`): the stage fails, and its error classes
//! the failure as the host's (QEMU stopped, no CPU used), with how much of its budget the
//! stage used and the accelerator, not as the product's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pxelab::jobs::{self, InstallOptions};
use pxelab::lab::Lab;
use pxelab_scenarios::error_chain;

/// The QEMU whose command line names `dir` (the lab's directory).
fn qemu_of(dir: &Path) -> Option<i32> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc").ok()?.filter_map(|e| e.ok()).find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        (cmdline.starts_with("qemu-system") && cmdline.contains(&dir)).then_some(pid)
    })
}

/// Stop the lab's QEMU for `stop` once the firmware has its lease (`events.jsonl`).
async fn stop_after_the_lease(dir: PathBuf, stop: Duration) {
    loop {
        let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap_or_default();
        if events.lines().any(|l| l.contains("\"kind\":\"ack\"")) {
            if let Some(pid) = qemu_of(&dir) {
                // SAFETY: signals to the test's own QEMU child.
                unsafe { libc::kill(pid, libc::SIGSTOP) };
                tokio::time::sleep(stop).await;
                unsafe { libc::kill(pid, libc::SIGCONT) };
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_stopped_guest_is_classed_as_the_hosts_problem() {
    // SAFETY: nextest runs each test in a process of its own; nothing else reads the
    // environment concurrently this early.
    unsafe { std::env::set_var("PXELAB_TIMEOUT_SCALE", "0.15") };
    let mut lab = Lab::new("a_stopped_guest_is_classed_as_the_hosts_problem").unwrap();
    let stopper = tokio::spawn(stop_after_the_lease(lab.dir().to_owned(), Duration::from_secs(40)));
    let err = match jobs::install(&mut lab, &InstallOptions::default()).await {
        Ok(_) => panic!("installed with its QEMU stopped past the stage's budget"),
        Err(e) => e,
    };
    stopper.abort();
    let text = error_chain(&err);
    println!("{text}");
    assert_eq!(err.stage, "TFTP: GRUB", "{text}");
    let triage = err.triage.as_deref().expect("a triage line");
    assert!(triage.contains("QEMU is stopped") && triage.contains("an infrastructure problem, not the product's"), "{triage}");
    assert!(triage.contains("accelerator Tcg") || triage.contains("accelerator Kvm"), "{triage}");
    assert!(triage.contains("% of its 18s budget"), "{triage}");
    assert!(text.contains(triage), "the error shows it");
}
