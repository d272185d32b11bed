//! The QEMU child process: spawned with its sockets, always reaped.
//!
//! QEMU dies with the harness in every case: when its [`QemuProcess`] drops (normal end or a
//! test's panic unwinding), when the harness gets SIGINT/SIGTERM/SIGHUP (a handler kills every
//! registered child, then lets the signal take its default course), and when the harness is
//! killed outright (the child asked the kernel for SIGKILL on parent death). QEMU stays in the
//! harness's process group, so nextest's timeout signal reaches it too.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

/// PIDs of live QEMU children, for the signal handler.
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static HANDLERS: Once = Once::new();

const GRACE: Duration = Duration::from_secs(3);

/// A running QEMU. Dropping it terminates QEMU (SIGTERM, grace, SIGKILL) and reaps it.
#[derive(Debug)]
pub struct QemuProcess {
    /// Taken when the process is dropped.
    child: Option<tokio::process::Child>,
    pid: u32,
}

impl QemuProcess {
    /// Spawn `argv`, keeping `pass_fds` open in the child; stdout/stderr go to `log`.
    pub fn spawn(argv: &[String], pass_fds: Vec<OwnedFd>, log: &Path) -> std::io::Result<Self> {
        install_signal_handlers();
        let log = std::fs::File::create(log)?;
        let raw: Vec<RawFd> = pass_fds.iter().map(|fd| fd.as_raw_fd()).collect();
        let mut command = std::process::Command::new(&argv[0]);
        command.args(&argv[1..]).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        // SAFETY: only async-signal-safe calls (fcntl, prctl, getppid) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                for &fd in &raw {
                    if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() == 1 {
                    return Err(std::io::Error::other("harness died before QEMU started"));
                }
                Ok(())
            });
        }
        let mut live = LIVE.lock().expect("live list");
        let child = tokio::process::Command::from(command).spawn()?;
        let pid = child.id().expect("a just-spawned child has a pid");
        live.push(pid);
        drop(live);
        drop(pass_fds);
        Ok(QemuProcess { child: Some(child), pid })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Move the process out, leaving an empty value whose drop does nothing.
    pub fn take(&mut self) -> QemuProcess {
        QemuProcess { child: self.child.take(), pid: self.pid }
    }

    fn child(&mut self) -> &mut tokio::process::Child {
        self.child.as_mut().expect("only Drop takes the child")
    }

    /// Whether QEMU has exited, without waiting.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child().try_wait()
    }

    /// Wait for QEMU to exit on its own.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let status = self.child().wait().await;
        forget(self.pid);
        status
    }
}

impl Drop for QemuProcess {
    /// On a runtime, the grace period and the reaping run on its blocking pool, never on the
    /// thread that carries the lab's network and consoles; the runtime's shutdown waits for
    /// them, so QEMU is gone when the test ends.
    fn drop(&mut self) {
        let Some(child) = self.child.take() else { return };
        let reaper = Reaper { child, pid: self.pid };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || reaper.reap())),
            Err(_) => reaper.reap(),
        }
    }
}

/// Ends a QEMU and reaps it. A runtime shutting down drops blocking tasks that have not
/// started yet: then its `Drop` kills QEMU at once instead, so no path leaves QEMU running.
struct Reaper {
    child: tokio::process::Child,
    pid: u32,
}

impl Reaper {
    /// SIGTERM, then SIGKILL after a grace period; returns once QEMU is reaped. Blocking.
    fn reap(mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        signal(self.pid, libc::SIGTERM);
        let deadline = Instant::now() + GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(pid = self.pid, "QEMU ignored SIGTERM for {GRACE:?}: killing it");
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            signal(self.pid, libc::SIGKILL);
            while let Ok(None) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        forget(self.pid);
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on our own, not yet reaped, child.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Whether process `pid` exists and is not a zombie.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

fn forget(pid: u32) {
    LIVE.lock().expect("live list").retain(|&p| p != pid);
}

/// On SIGINT, SIGTERM or SIGHUP: kill every live QEMU, then die of the signal as usual.
fn install_signal_handlers() {
    HANDLERS.call_once(|| {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
            Ok(signals) => signals,
            Err(e) => return tracing::warn!("cannot install signal handlers: {e}"),
        };
        std::thread::Builder::new()
            .name("pxelab-signals".into())
            .spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    let live: Vec<u32> = LIVE.lock().expect("live list").clone();
                    for &pid in &live {
                        signal(pid, libc::SIGKILL);
                    }
                    // A killed process takes a moment to die (longer on a loaded machine): exit
                    // only once each is gone or a zombie, so that none outlives this process.
                    let deadline = Instant::now() + Duration::from_secs(5);
                    for &pid in &live {
                        while running(pid) && Instant::now() < deadline {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                    let _ = signal_hook::low_level::emulate_default_handler(sig);
                    std::process::exit(128 + sig);
                }
            })
            .expect("spawn signal thread");
    });
}

/// How a process has used the host so far, from `/proc`: CPU time (all its threads), time
/// its threads waited on a run queue for a CPU, and whether it is stopped (SIGSTOP, a
/// debugger). Two samples tell a starved or stopped guest from one that ran and failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostSample {
    pub cpu: Duration,
    pub waited: Duration,
    pub stopped: bool,
}

impl HostSample {
    /// The sample of process `pid`, or `None` when it is gone.
    pub fn of(pid: u32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After the command's closing parenthesis: state, then fields 4…; utime and stime
        // are fields 14 and 15, in clock ticks.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        // SAFETY: sysconf has no preconditions.
        let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok().filter(|&h| h > 0).unwrap_or(100);
        let cpu = Duration::from_millis((ticks(11) + ticks(12)) * 1000 / hz);
        let stopped = matches!(fields.first(), Some(&"T") | Some(&"t"));
        let waited = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().nth(1).and_then(|w| w.parse::<u64>().ok()))
            .map(Duration::from_nanos)
            .sum();
        Some(HostSample { cpu, waited, stopped })
    }

    /// What the host did to the process between `self` and `after`, over `wall`: a sentence
    /// that says whether the guest ran, was starved of CPU, or was stopped.
    pub fn triage(&self, after: &HostSample, wall: Duration, accel: &str) -> String {
        if wall < Duration::from_secs(1) && !after.stopped {
            // A check that failed at once: the host had no time to matter.
            return format!("host: not in question, the stage failed after {:.2} s; accelerator {accel}", wall.as_secs_f64());
        }
        let cpu = after.cpu.saturating_sub(self.cpu);
        let waited = after.waited.saturating_sub(self.waited);
        let share = |d: Duration| 100.0 * d.as_secs_f64() / wall.as_secs_f64().max(0.001);
        let figures = format!("QEMU ran {:.1} s of CPU in the stage's {:.1} s ({:.0} %) and waited {:.1} s for a CPU ({:.0} %); accelerator {accel}", cpu.as_secs_f64(), wall.as_secs_f64(), share(cpu), waited.as_secs_f64(), share(waited));
        let verdict = if after.stopped {
            "QEMU is stopped (SIGSTOP or a debugger): the guest did not run, an infrastructure problem, not the product's"
        } else if share(cpu) < 20.0 && share(waited) >= 20.0 {
            "the host starved the guest of CPU (another load on the machine): an infrastructure problem, not the product's"
        } else if share(cpu) < 5.0 && wall > Duration::from_secs(5) {
            "the guest barely ran, and not for want of a CPU: it waited (on the network, a device, or stopped for a while)"
        } else {
            "the guest had its CPU: not a starved host"
        };
        format!("host: {verdict}; {figures}")
    }
}

#[cfg(test)]
mod host_test {
    use super::*;

    /// A live process runs; once it exited it does not, reaped or a zombie.
    #[test]
    fn a_zombie_or_a_reaped_process_no_longer_runs() {
        assert!(running(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        while running(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!running(pid), "a zombie, not reaped yet, has ended");
        child.wait().unwrap();
        assert!(!running(pid), "reaped");
    }

    /// A stopped process reads as stopped, and two samples of a running one as the guest
    /// having its CPU; a stopped guest is classed as an infrastructure problem.
    #[test]
    fn a_stopped_process_is_triaged_as_the_host_not_the_product() {
        /// Killed however the test ends: a failed assertion must not leave a spinning shell.
        struct Spinner(std::process::Child);
        impl Drop for Spinner {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let child = Spinner(std::process::Command::new("sh").arg("-c").arg("while :; do :; done").spawn().unwrap());
        let pid = child.0.id();
        let before = HostSample::of(pid).unwrap();
        std::thread::sleep(Duration::from_millis(600));
        let running = HostSample::of(pid).unwrap();
        assert!(running.cpu > before.cpu, "{before:?} {running:?}");
        assert!(running.triage(&running, Duration::from_secs(1), "TCG").contains("QEMU ran 0.0 s"));
        assert_eq!(running.triage(&running, Duration::from_millis(150), "TCG"), "host: not in question, the stage failed after 0.15 s; accelerator TCG");
        let verdict = before.triage(&running, Duration::from_secs(1), "TCG");
        assert!(verdict.contains("the guest had its CPU"), "{verdict}");
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        std::thread::sleep(Duration::from_millis(300));
        let stopped = HostSample::of(pid).unwrap();
        assert!(stopped.stopped);
        assert!(running.triage(&stopped, Duration::from_secs(10), "TCG").contains("QEMU is stopped"));
        let starved = HostSample { cpu: before.cpu + Duration::from_millis(500), waited: before.waited + Duration::from_secs(6), stopped: false };
        assert!(before.triage(&starved, Duration::from_secs(10), "TCG").contains("starved the guest"));
        drop(child);
        assert_eq!(HostSample::of(pid), None, "gone");
    }
}
