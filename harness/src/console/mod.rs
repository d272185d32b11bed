//! Expect-style access to a VM's serial console.
//!
//! Why not expectrl/rexpect: they match raw bytes of a process's pty, whereas pxelab needs to
//! match ANSI-stripped text from a socket, keep the whole transcript (timestamped, on disk)
//! with a cursor that matches consume, and check fail-fast patterns on every wait. That is a
//! small matcher over [`Transcript`]; one reader task feeds it.

mod ansi;
pub mod attach;
mod shell;
mod transcript;

pub use ansi::PlainText;
pub use attach::AttachServer;
pub use transcript::{FailFast, Match, Transcript};

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use regex::Regex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::supervise::{failed, FailureWatch, ServiceFailure};

/// Console lines that end any wait at once: the boot or install has failed.
pub const DEFAULT_FAIL_FAST: &[&str] = &[
    r"Kernel panic - not syncing",
    r"Something went wrong, starting interactive shell",
    r"You are in emergency mode",
    r"Dropping to a shell!",
    r"\(initramfs\) $",
    // Secure Boot refusals (see `diagnose::secure_boot_refusal`): the firmware refused an image
    // it loaded, or shim's lock refused the kernel GRUB loaded.
    r"BdsDxe: failed to load Boot[0-9A-F]{4} .*: Access Denied",
    r"error: bad shim signature",
];

/// How many console lines an error quotes.
pub const TAIL_LINES: usize = 40;
/// How a failure labels the console lines it shows.
pub const TAIL_LABEL: &str = "last console lines";

/// Why a console wait or command failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("Invalid console pattern {pattern:?}")]
    BadPattern {
        pattern: String,
        #[source]
        source: regex::Error,
    },
    #[error("{console}: timed out after {waited:.1?} waiting for {pattern:?}\n{}", banner(TAIL_LABEL, tail))]
    Timeout { console: String, pattern: String, waited: Duration, tail: String },
    #[error(
        "{console}: failed fast after {waited:.1?} waiting for {pattern:?}: console printed {line:?} \
         (fail-fast pattern {fail_fast:?})\n{}", banner(TAIL_LABEL, tail)
    )]
    FailFast { console: String, pattern: String, fail_fast: String, line: String, waited: Duration, tail: String },
    #[error("{console}: console closed (QEMU exited) while waiting for {pattern:?}\n{}", banner(TAIL_LABEL, tail))]
    Closed { console: String, pattern: String, tail: String },
    #[error("{console}: gave up waiting for {pattern:?} after {waited:.1?}\n{}", banner(TAIL_LABEL, tail))]
    ServiceStopped {
        console: String,
        pattern: String,
        waited: Duration,
        tail: String,
        #[source]
        failure: ServiceFailure,
    },
    #[error("{console}: cannot write to the console")]
    Write {
        console: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{console}: command {command:?} failed with exit status {status}\n{}", banner("output", output))]
    CommandFailed { console: String, command: String, status: i32, output: String },
    #[error("{console}: command {command:?} succeeded, and it should have failed\n{}", banner("output", output))]
    Succeeded { console: String, command: String, output: String },
    #[error("{console}: gave up after {waited:.1?} waiting for {what}\n{}", banner("last try", last))]
    Unsatisfied { console: String, what: String, waited: Duration, last: String },
    #[error("{console}: unit {unit} failed\n{}\n{}", banner("systemctl status", status), banner("journal", journal))]
    UnitFailed { console: String, unit: String, status: String, journal: String },
    #[error("{console}: copying {path}: {why}")]
    Copy { console: String, path: String, why: String },
}

/// Format a labelled block for failure output.
pub fn banner(label: &str, body: &str) -> String {
    format!("==== Start {label} ====\n{body}\n==== End {label} ====")
}

struct Shared {
    transcript: Mutex<(Transcript, bool)>,
    changed: Notify,
    /// The console's raw bytes as they come, for terminals attached to it.
    raw: tokio::sync::broadcast::Sender<Vec<u8>>,
}

/// A VM's serial console: one reader task keeps the transcript, waits match against it.
pub struct Console {
    name: String,
    shared: Arc<Shared>,
    writer: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    fail_fast: Vec<Regex>,
    command_timeout: Duration,
    next_command: AtomicU64,
    log_path: PathBuf,
    services: Option<FailureWatch>,
}

impl Console {
    /// Attach to a connected console socket; the plain-text transcript with timestamps
    /// relative to `started` is appended to `log_path`.
    pub fn attach(name: &str, stream: UnixStream, log_path: &Path, started: Instant) -> std::io::Result<Self> {
        // Appended to: a VM restarted in the same directory keeps one transcript.
        let log = std::fs::File::options().create(true).append(true).open(log_path)?;
        let raw = tokio::sync::broadcast::channel(256).0;
        let shared = Arc::new(Shared { transcript: Mutex::new((Transcript::default(), false)), changed: Notify::new(), raw });
        let (reader, writer) = stream.into_split();
        tokio::spawn(read_console(reader, shared.clone(), log, started));
        Ok(Console {
            name: name.to_owned(),
            shared,
            writer: Arc::new(tokio::sync::Mutex::new(writer)),
            fail_fast: DEFAULT_FAIL_FAST.iter().map(|p| Regex::new(p).expect("valid default")).collect(),
            command_timeout: Duration::from_secs(300),
            next_command: AtomicU64::new(1),
            log_path: log_path.to_owned(),
            services: None,
        })
    }

    /// Replace the fail-fast patterns checked during every wait.
    pub fn set_fail_fast(&mut self, patterns: &[&str]) -> Result<(), ConsoleError> {
        self.fail_fast = patterns.iter().map(|p| compile(p)).collect::<Result<_, _>>()?;
        Ok(())
    }

    /// End every wait at once, with [`ConsoleError::ServiceStopped`], when a lab server that
    /// this VM depends on stops.
    pub fn fail_on(&mut self, services: FailureWatch) {
        self.services = Some(services);
    }

    /// How long [`Console::execute`] waits for a command to finish.
    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    /// Set how long [`Console::execute`] waits for a command to finish.
    pub fn set_command_timeout(&mut self, timeout: Duration) {
        self.command_timeout = timeout;
    }

    /// Serve this console to terminals (`pxelab console`) on a unix socket that `link`
    /// points to, until the returned server drops (see [`attach`]).
    pub fn serve_terminals(&self, link: &Path) -> std::io::Result<AttachServer> {
        AttachServer::start(link, self.shared.clone(), self.writer.clone())
    }

    /// Where the timestamped plain-text transcript is written.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the console printed so far, as plain text (ANSI codes stripped), consumed
    /// or not: for asserting on a boot after it happened.
    pub fn text(&self) -> String {
        self.shared.transcript.lock().expect("console lock").0.text().to_owned()
    }

    /// Wait until the console has received any byte at all (a terminal control sequence
    /// too, which the transcript leaves out). False: none within `timeout`, or it closed.
    pub async fn wait_for_output(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let guard = self.shared.transcript.lock().expect("console lock");
                if guard.0.received() > 0 {
                    return true;
                }
                if guard.1 {
                    return false;
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return false;
            }
        }
    }

    /// The last `n` lines the console printed.
    pub fn tail(&self, n: usize) -> String {
        self.shared.transcript.lock().expect("console lock").0.tail(n)
    }

    /// The last [`TAIL_LINES`] lines the console printed, as a labelled block for a failure.
    pub fn tail_block(&self) -> String {
        banner(&format!("{} {TAIL_LABEL}", self.name), &self.tail(TAIL_LINES))
    }

    /// Wait until `pattern` (a regex) appears in output not yet consumed by an earlier wait.
    ///
    /// Output arrives in pieces, and a match is taken as soon as it exists: a pattern that
    /// ends in a variable-length part (`(\S+)`) must end with `\n` to see the whole line.
    pub async fn wait_for_console_text(&self, pattern: &str, timeout: Duration) -> Result<Match, ConsoleError> {
        self.wait_for_console_text_before(pattern, &[], timeout).await
    }

    /// [`Console::wait_for_console_text`], failing fast as well if one of the `later`
    /// patterns appears first: output that says the awaited text was missed.
    pub async fn wait_for_console_text_before(&self, pattern: &str, later: &[String], timeout: Duration) -> Result<Match, ConsoleError> {
        let want = compile(pattern)?;
        let fail_fast: Vec<Regex> = self.fail_fast.iter().cloned().map(Ok).chain(later.iter().map(|p| compile(p))).collect::<Result<_, _>>()?;
        let started = Instant::now();
        let deadline = started + timeout;
        let mut services = self.services.clone();
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut guard = self.shared.transcript.lock().expect("console lock");
                let (transcript, closed) = &mut *guard;
                match transcript.find(&want, &fail_fast) {
                    Some(Ok(found)) => return Ok(found),
                    Some(Err(FailFast { pattern: fail_fast, line })) => {
                        return Err(ConsoleError::FailFast {
                            console: self.name.clone(),
                            pattern: pattern.to_owned(),
                            fail_fast,
                            line,
                            waited: started.elapsed(),
                            tail: transcript.tail(TAIL_LINES),
                        })
                    }
                    None if *closed => {
                        return Err(ConsoleError::Closed {
                            console: self.name.clone(),
                            pattern: pattern.to_owned(),
                            tail: transcript.tail(TAIL_LINES),
                        })
                    }
                    None => {}
                }
            }
            let stopped = async {
                match services.as_mut() {
                    Some(watch) => failed(watch).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = changed => {}
                failure = stopped => {
                    return Err(ConsoleError::ServiceStopped {
                        console: self.name.clone(),
                        pattern: pattern.to_owned(),
                        waited: started.elapsed(),
                        tail: self.tail(TAIL_LINES),
                        failure,
                    });
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(ConsoleError::Timeout {
                        console: self.name.clone(),
                        pattern: pattern.to_owned(),
                        waited: timeout,
                        tail: self.tail(TAIL_LINES),
                    });
                }
            }
        }
    }

    /// Type a line into the console.
    pub async fn send_line(&self, line: &str) -> Result<(), ConsoleError> {
        self.send_keys(&format!("{line}\n")).await
    }

    /// Type `keys` as they are (`"\r"`: Enter at a boot menu).
    pub async fn send_keys(&self, keys: &str) -> Result<(), ConsoleError> {
        let mut writer = self.writer.lock().await;
        writer.write_all(keys.as_bytes()).await.map_err(|source| ConsoleError::Write { console: self.name.clone(), source })
    }

    /// Run `command` in the root shell on the console; returns its exit status and output
    /// (stdout and stderr).
    pub async fn execute(&self, command: &str) -> Result<(i32, String), ConsoleError> {
        let id = self.next_command.fetch_add(1, Ordering::Relaxed);
        let frame = shell::Frame::new(id);
        self.send_line(&frame.command_line(command)).await?;
        self.wait_for_console_text(&frame.begin_pattern(), self.command_timeout).await?;
        let end = self.wait_for_console_text(&frame.end_pattern(), self.command_timeout).await?;
        let status = end.groups[0].as_deref().and_then(|s| s.parse().ok()).unwrap_or(-1);
        Ok((status, shell::output(&end.before)))
    }

    /// Run `command` and return its output; a non-zero exit status is an error.
    pub async fn succeed(&self, command: &str) -> Result<String, ConsoleError> {
        match self.execute(command).await? {
            (0, output) => Ok(output),
            (status, output) => Err(ConsoleError::CommandFailed {
                console: self.name.clone(),
                command: command.to_owned(),
                status,
                output,
            }),
        }
    }
}

fn compile(pattern: &str) -> Result<Regex, ConsoleError> {
    Regex::new(pattern).map_err(|source| ConsoleError::BadPattern { pattern: pattern.to_owned(), source })
}

/// The reader task: append to the transcript, write the timestamped log, wake waiters.
async fn read_console(mut reader: OwnedReadHalf, shared: Arc<Shared>, log: std::fs::File, started: Instant) {
    let mut log = TimestampedLog { file: std::io::BufWriter::new(log), at_line_start: true };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = reader.read(&mut buf).await.unwrap_or(0);
        let mut guard = shared.transcript.lock().expect("console lock");
        if n == 0 {
            guard.1 = true;
            drop(guard);
            shared.changed.notify_waiters();
            let _ = log.file.flush();
            return;
        }
        let added = guard.0.push(&buf[..n]);
        drop(guard);
        let _ = shared.raw.send(buf[..n].to_vec());
        log.write(&added, started.elapsed());
        shared.changed.notify_waiters();
    }
}

struct TimestampedLog {
    file: std::io::BufWriter<std::fs::File>,
    at_line_start: bool,
}

impl TimestampedLog {
    fn write(&mut self, text: &str, at: Duration) {
        for piece in text.split_inclusive('\n') {
            if self.at_line_start {
                let _ = write!(self.file, "[{:9.3}] ", at.as_secs_f64());
            }
            let _ = self.file.write_all(piece.as_bytes());
            self.at_line_start = piece.ends_with('\n');
        }
        let _ = self.file.flush();
    }
}

#[cfg(test)]
mod test {
    use super::*;

    async fn pair() -> (Console, UnixStream, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs) = UnixStream::pair().unwrap();
        let console = Console::attach("vm1", ours, &dir.path().join("console.log"), Instant::now()).unwrap();
        (console, theirs, dir)
    }

    #[tokio::test]
    async fn wait_sees_text_written_later_in_pieces() {
        let (console, mut guest, dir) = pair().await;
        let writer = tokio::spawn(async move {
            for piece in [&b"Booting \x1b[1m"[..], b"Linux", b"\x1b[0m...\r\nlogin: "] {
                tokio::time::sleep(Duration::from_millis(20)).await;
                guest.write_all(piece).await.unwrap();
            }
            guest
        });
        let m = console.wait_for_console_text(r"Booting (\w+)\.\.\.", Duration::from_secs(5)).await.unwrap();
        assert_eq!(m.groups[0].as_deref(), Some("Linux"));
        console.wait_for_console_text("login: ", Duration::from_secs(5)).await.unwrap();
        let _guest = writer.await.unwrap();
        let log = std::fs::read_to_string(dir.path().join("console.log")).unwrap();
        assert!(regex::Regex::new(r"^\[ +\d+\.\d{3}\] Booting Linux\.\.\.\n\[ +\d+\.\d{3}\] login: $").unwrap().is_match(&log), "{log:?}");
    }

    #[tokio::test]
    async fn timeout_names_pattern_and_quotes_the_console() {
        let (console, mut guest, _dir) = pair().await;
        guest.write_all(b"almost there\n").await.unwrap();
        let err = console.wait_for_console_text("login:", Duration::from_millis(200)).await.unwrap_err();
        assert!(matches!(err, ConsoleError::Timeout { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("\"login:\"") && text.contains("almost there"), "{text}");
    }

    #[tokio::test]
    async fn fail_fast_ends_the_wait_before_its_timeout() {
        let (console, mut guest, _dir) = pair().await;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            guest.write_all(b"[    2.1] Kernel panic - not syncing: Attempted to kill init!\r\n").await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let started = std::time::Instant::now();
        let err = console.wait_for_console_text("shell ready", Duration::from_secs(30)).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        match err {
            ConsoleError::FailFast { line, .. } => assert!(line.contains("Attempted to kill init"), "{line}"),
            other => panic!("expected fail-fast, got {other}"),
        }
    }

    #[tokio::test]
    async fn a_later_text_first_ends_the_wait_and_an_earlier_one_is_still_found() {
        let (console, mut guest, _dir) = pair().await;
        guest.write_all(b"step one...done\r\nstep two...done\r\n").await.unwrap();
        let later = vec!["step two".to_owned()];
        let first = console.wait_for_console_text_before("step one\\.\\.\\.done", &later, Duration::from_secs(5)).await.unwrap();
        assert_eq!(first.matched, "step one...done");
        guest.write_all(b"step four...done\r\n").await.unwrap();
        let later = vec!["step four".to_owned()];
        let err = console.wait_for_console_text_before("step three", &later, Duration::from_secs(30)).await.unwrap_err();
        match err {
            ConsoleError::FailFast { line, fail_fast, .. } => assert_eq!((line.trim_end(), fail_fast.as_str()), ("step four...done", "step four")),
            other => panic!("expected fail-fast, got {other}"),
        }
    }

    #[tokio::test]
    async fn a_stopped_lab_server_ends_the_wait_at_once() {
        let (mut console, _guest, _dir) = pair().await;
        let supervisor = crate::supervise::Supervisor::default();
        console.fail_on(supervisor.watch());
        supervisor.spawn("nfs", async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Err(std::io::Error::other("listener gone"))
        });
        let started = std::time::Instant::now();
        let err = console.wait_for_console_text("installer start", Duration::from_secs(600)).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        match err {
            ConsoleError::ServiceStopped { failure, .. } => assert_eq!((failure.service.as_str(), failure.cause.as_str()), ("nfs", "listener gone")),
            other => panic!("expected a stopped service, got {other}"),
        }
    }

    #[tokio::test]
    async fn closed_console_ends_the_wait() {
        let (console, guest, _dir) = pair().await;
        drop(guest);
        let err = console.wait_for_console_text("never", Duration::from_secs(30)).await.unwrap_err();
        assert!(matches!(err, ConsoleError::Closed { .. }), "{err}");
    }

    /// A fake shell on the other end: echoes typed lines like a tty, then answers the frame.
    #[tokio::test]
    async fn execute_parses_status_and_output_despite_echo() {
        let (console, guest, _dir) = pair().await;
        tokio::spawn(async move {
            let (mut rd, mut wr) = guest.into_split();
            let mut buf = vec![0u8; 4096];
            let mut n_commands = 0;
            loop {
                let n = rd.read(&mut buf).await.unwrap();
                if n == 0 {
                    return;
                }
                let line = String::from_utf8_lossy(&buf[..n]).into_owned();
                n_commands += 1;
                wr.write_all(format!("pxelab# {}\r\n", line.trim_end()).as_bytes()).await.unwrap();
                let (output, status) = if n_commands == 1 { ("6.1.0-56-amd64\r\n", 0) } else { ("nope\r\n", 3) };
                let id = n_commands;
                wr.write_all(format!("PXLB{id}\r\n{output}PXLE{id}:{status}\r\npxelab# ").as_bytes()).await.unwrap();
            }
        });
        assert_eq!(console.succeed("uname -r").await.unwrap(), "6.1.0-56-amd64");
        let err = console.succeed("false").await.unwrap_err();
        assert!(matches!(err, ConsoleError::CommandFailed { status: 3, .. }), "{err}");
    }
}
