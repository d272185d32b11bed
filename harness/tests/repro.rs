//! Reproducing a failure by hand, through real QEMU processes: a kept run's console attached
//! from another process, and `pxelab serve` booting clients started from its printed lines.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// The `pxelab` binary: where nextest says at run time (a test archive run elsewhere), else
/// where Cargo built it.
fn pxelab_bin() -> std::path::PathBuf {
    std::env::var_os("NEXTEST_BIN_EXE_pxelab").map_or_else(|| env!("CARGO_BIN_EXE_pxelab").into(), Into::into)
}

/// A test's runs directory: a short temporary path (console sockets live under it, and a
/// socket's path is limited to 107 bytes), removed when the test passes and kept when it
/// fails, with its path and the end of each console log printed.
struct Runs(Option<tempfile::TempDir>);

impl Runs {
    fn new() -> Self {
        Runs(Some(tempfile::tempdir().unwrap()))
    }

    fn path(&self) -> &std::path::Path {
        self.0.as_ref().unwrap().path()
    }
}

impl Drop for Runs {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let dir = self.0.take().unwrap().keep();
        eprintln!("runs kept: {}", dir.display());
        let mut logs = Vec::new();
        let mut dirs = vec![dir];
        while let Some(d) = dirs.pop() {
            for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                match entry.path() {
                    p if p.is_dir() => dirs.push(p),
                    p if p.file_name().is_some_and(|n| n == "console.log" || n == "firmware.log" || n == "qemu.log") => logs.push(p),
                    _ => {}
                }
            }
        }
        logs.sort();
        for log in logs {
            let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("── {} (last 30 of {} lines)", log.display(), lines.len());
            for line in &lines[lines.len().saturating_sub(30)..] {
                eprintln!("{line}");
            }
        }
    }
}

/// A child process killed (and so its QEMUs, by their parent-death signal) if the test ends
/// without stopping it.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `pxelab` with its runs under `runs`, stdout piped and read line by line.
fn pxelab(runs: &std::path::Path, args: &[&str]) -> (Reaped, Receiver<String>) {
    let mut child = Command::new(pxelab_bin())
        .args(args)
        .env("PXELAB_RUNS_DIR", runs)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, receiver) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("pxelab> {line}");
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    (Reaped(child), receiver)
}

/// Lines from `lines` until one satisfies `done`; all of them, that one last.
fn read_until(lines: &Receiver<String>, timeout: Duration, mut done: impl FnMut(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let last = done(&line);
                seen.push(line);
                if last {
                    return seen;
                }
            }
            Err(e) => panic!("{e} after {timeout:?}; got:\n{}", seen.join("\n")),
        }
    }
}

/// QEMU processes whose parent is `parent`.
fn qemu_children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let Some((head, tail)) = stat.rsplit_once(')') else { return false };
            let ppid = tail.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
            head.contains("(qemu-system") && ppid == Some(parent) && !tail.trim_start().starts_with('Z')
        })
        .collect()
}

fn interrupt(child: &Reaped) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGINT) };
}

fn wait_exit(child: &mut Reaped, timeout: Duration) -> std::process::ExitStatus {
    let child = &mut child.0;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{} did not exit within {timeout:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `run --keep` keeps the VM after its job and says how to attach; `pxelab console` from
/// another process sees the shell, types into it and detaches on Ctrl-]; the console log
/// goes on; Ctrl-C on the kept run stops it and leaves no QEMU.
#[test]
fn a_kept_run_is_attached_to_from_another_process_and_stopped_by_ctrl_c() {
    let runs = Runs::new();
    let (mut run, lines) = pxelab(runs.path(), &["run", "uefi-boot", "--keep"]);
    // Longer than the job's own waits (GRUB 120 s, then the shell 240 s), so that a guest
    // that stalls fails the job, which names its stage, before this test gives up.
    let seen = read_until(&lines, Duration::from_secs(480), |l| l.starts_with("attach: "));
    assert_eq!(seen.last().unwrap(), "attach: pxelab console uefi-boot client   (Ctrl-] detaches)", "{seen:?}");
    assert!(seen.iter().any(|l| l.starts_with("kept: 1 VM(s) of uefi-boot")), "{seen:?}");
    let qemu = qemu_children_of(run.0.id());
    assert_eq!(qemu.len(), 1, "the kept VM runs on after its job");

    let mut console = Reaped(
        Command::new(pxelab_bin())
            .args(["console", "uefi-boot", "client"])
            .env("PXELAB_RUNS_DIR", runs.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut typing = console.0.stdin.take().unwrap();
    typing.write_all(b"echo attached-$((6*7))\n").unwrap();
    let stdout = console.0.stdout.take().unwrap();
    let (found, output) = channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            text.push_str(&line);
            text.push('\n');
            if line.contains("attached-42") {
                let _ = found.send(text.clone());
            }
        }
    });
    let seen = output.recv_timeout(Duration::from_secs(30)).expect("the shell's answer through the attached console");
    assert!(seen.contains("pxelab-fixture: shell ready"), "the last lines come first: {seen}");
    typing.write_all(&[0x1d]).unwrap();
    let status = wait_exit(&mut console, Duration::from_secs(10));
    assert!(status.success(), "console: {status}");
    let log = std::fs::read_to_string(runs.path().join("uefi-boot/client/console.log")).unwrap();
    assert!(log.contains("attached-42"), "the console log goes on while attached");
    assert_eq!(qemu_children_of(run.0.id()), qemu, "detaching leaves the VM running");

    interrupt(&run);
    wait_exit(&mut run, Duration::from_secs(20));
    let alive = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains("(qemu-system") && !s.contains(") Z"));
    assert!(!alive(qemu[0]), "Ctrl-C left QEMU {} running", qemu[0]);
}

/// `pxelab serve` prints a QEMU command line for each client; two QEMUs started from them at
/// once each get their own switch port, lease and boot files, which the terminal shows as
/// events; the pcap and the events are written as for a test.
#[test]
fn serve_boots_two_clients_started_from_its_printed_lines() {
    let runs = Runs::new();
    let (mut serve, lines) = pxelab(runs.path(), &["serve", "--clients", "2"]);
    let seen = read_until(&lines, Duration::from_secs(600), |l| l.starts_with("Ctrl-C stops the lab"));
    let commands: Vec<String> = seen.iter().filter_map(|l| l.strip_prefix("  ")).map(str::to_owned).collect();
    assert_eq!(commands.len(), 2, "{seen:?}");
    let dir = runs.path().join("serve");
    let clients: Vec<Reaped> = commands
        .iter()
        .enumerate()
        .map(|(i, command)| {
            assert!(command.starts_with("qemu-system-x86_64 ") && command.contains("addr.type=unix"), "{command}");
            let log = std::fs::File::create(dir.join(format!("client-{}/stdout.log", i + 1))).unwrap();
            Reaped(Command::new("sh").arg("-c").arg(format!("exec {command}")).stdin(Stdio::null()).stdout(log).stderr(Stdio::null()).spawn().unwrap())
        })
        .collect();
    let mut kernels = std::collections::BTreeSet::new();
    let seen = read_until(&lines, Duration::from_secs(300), |l| {
        if l.contains(" tftp ") && l.contains("nixos/bzImage Done") {
            let client = l.split_once("] ").and_then(|(_, event)| event.split_whitespace().nth(1));
            kernels.insert(client.unwrap_or_default().to_owned());
        }
        kernels.len() == 2
    });
    drop(clients);
    assert_eq!(kernels.into_iter().collect::<Vec<_>>(), ["192.0.2.10", "192.0.2.11"], "each declared client got its address and its kernel");
    assert_eq!(seen.iter().filter(|l| l.contains("a client connected on port")).count(), 2, "a port each: {seen:?}");
    for mac in ["52:54:00:1a:5e:01", "52:54:00:1a:5e:02"] {
        assert!(seen.iter().any(|l| l.contains(" dhcp ") && l.contains(mac) && l.contains("Ack")), "{mac}: {seen:?}");
    }
    interrupt(&serve);
    let seen = read_until(&lines, Duration::from_secs(30), |l| l.starts_with("stopped; report: "));
    assert!(wait_exit(&mut serve, Duration::from_secs(10)).success(), "{seen:?}");
    assert!(std::fs::metadata(dir.join("segment.pcap")).unwrap().len() > 1_000_000, "the kernels' frames are in the pcap");
    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    assert!(events.contains("52:54:00:1a:5e:01") && events.contains("52:54:00:1a:5e:02"), "{events}");
}

/// `run --interactive` attaches the terminal from the VM's start: the firmware's and the
/// kernel's lines come live, before the job's table, typed lines reach the shell, and Ctrl-]
/// detaches while the lab stays up.
#[test]
fn an_interactive_run_shows_the_boot_live_and_takes_input() {
    let runs = Runs::new();
    let mut run = Reaped(
        Command::new(pxelab_bin())
            .args(["run", "uefi-boot", "--interactive"])
            .env("PXELAB_RUNS_DIR", runs.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut typing = run.0.stdin.take().unwrap();
    let stdout = run.0.stdout.take().unwrap();
    let (sender, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            let line = String::from_utf8_lossy(&line).trim_end_matches('\r').to_owned();
            println!("pxelab> {line}");
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    // Longer than the job's own waits for GRUB and the shell (120 + 240 s).
    let boot = read_until(&lines, Duration::from_secs(420), |l| l.contains("pxelab-fixture: shell ready"));
    assert!(boot.iter().any(|l| l.contains("BdsDxe")), "the firmware's lines come live: {boot:?}");
    typing.write_all(b"echo typed-$((6*7))\n").unwrap();
    // The job's table and the shell's answer come in either order.
    let mut after = read_until(&lines, Duration::from_secs(60), |l| l.contains("typed-42"));
    if !after.iter().any(|l| l.starts_with("attach: ")) {
        after.extend(read_until(&lines, Duration::from_secs(60), |l| l.starts_with("attach: ")));
    }
    typing.write_all(&[0x1d]).unwrap();
    assert!(after.iter().any(|l| l.starts_with("uname -r: ")), "the job ran on beside the terminal: {after:?}");
    let qemu = qemu_children_of(run.0.id());
    assert_eq!(qemu.len(), 1, "kept after the job");
    interrupt(&run);
    wait_exit(&mut run, Duration::from_secs(20));
    assert!(qemu_children_of(run.0.id()).is_empty());
}
