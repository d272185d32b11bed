//! Terminals attached to a VM's serial console, live, while the harness keeps reading it.
//!
//! Each console listens on a unix socket of its own in a private directory
//! (`$TMPDIR/pxelab-<uid>/`, mode 0700: the console is a root shell), and the VM's directory
//! holds `console.sock`, a link to it (socket paths are limited to 108 bytes; run directories
//! are not). A terminal that connects gets the last lines, then the console's raw bytes as they
//! come; what it types goes to the serial port. The transcript and `console.log` go on as before.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast::error::RecvError;

use super::Shared;

/// The byte that detaches a terminal: Ctrl-] (as telnet's and virsh console's).
pub const ESCAPE: u8 = 0x1d;
/// Lines of earlier output a terminal gets when it attaches.
const CONTEXT_LINES: usize = 20;

/// Serves one console to terminals until dropped; then its socket and link are removed.
pub struct AttachServer {
    task: tokio::task::JoinHandle<()>,
    socket: PathBuf,
    link: PathBuf,
}

impl AttachServer {
    pub(super) fn start(link: &Path, shared: Arc<Shared>, writer: Arc<tokio::sync::Mutex<OwnedWriteHalf>>) -> std::io::Result<Self> {
        let socket = socket_for(link)?;
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket)?;
        let _ = std::fs::remove_file(link);
        std::os::unix::fs::symlink(&socket, link)?;
        let task = tokio::spawn(async move {
            // Dropping the set (the server's end) ends every terminal's connection.
            let mut terminals = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                terminals.spawn(serve_terminal(stream, shared.clone(), writer.clone()));
                while terminals.try_join_next().is_some() {}
            }
        });
        Ok(AttachServer { task, socket, link: link.to_owned() })
    }
}

impl Drop for AttachServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.link);
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The private socket behind `link`: `$TMPDIR/pxelab-<uid>/<hash of link>.sock`.
fn socket_for(link: &Path) -> std::io::Result<PathBuf> {
    // SAFETY: getuid(2) cannot fail.
    let uid = unsafe { libc::getuid() };
    let dir = std::env::temp_dir().join(format!("pxelab-{uid}"));
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let absolute = std::path::absolute(link)?;
    let hash = hex::encode(&sha2::Sha256::digest(absolute.as_os_str().as_encoded_bytes())[..8]);
    Ok(dir.join(format!("{hash}.sock")))
}

async fn serve_terminal(stream: UnixStream, shared: Arc<Shared>, writer: Arc<tokio::sync::Mutex<OwnedWriteHalf>>) {
    let mut raw = shared.raw.subscribe();
    let context = shared.transcript.lock().expect("console lock").0.tail(CONTEXT_LINES);
    let (mut from_terminal, mut to_terminal) = stream.into_split();
    if to_terminal.write_all(context.replace('\n', "\r\n").as_bytes()).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 4096];
    loop {
        tokio::select! {
            bytes = raw.recv() => match bytes {
                Ok(bytes) => if to_terminal.write_all(&bytes).await.is_err() { return },
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            n = from_terminal.read(&mut buf) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if writer.lock().await.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            },
        }
    }
}

/// Why [`attach_terminal`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detached {
    /// The user pressed [`ESCAPE`].
    Escape,
    /// Standard input ended.
    InputClosed,
    /// The console went away: the VM stopped or its lab ended.
    ConsoleClosed,
}

/// Attach this process's terminal (standard input and output) to the console behind `link`
/// until [`ESCAPE`], the end of input, or the console's end. A terminal is put in raw mode
/// (keys go to the guest as typed, Ctrl-C included) and restored afterwards.
pub async fn attach_terminal(link: &Path) -> std::io::Result<Detached> {
    let target = std::fs::read_link(link).unwrap_or_else(|_| link.to_owned());
    let stream = UnixStream::connect(&target).await?;
    let (mut from_console, mut to_console) = stream.into_split();
    let _raw = RawMode::enter();
    let mut input = stdin_chunks();
    let mut out = std::io::stdout();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            n = from_console.read(&mut buf) => match n {
                Ok(0) | Err(_) => return Ok(Detached::ConsoleClosed),
                Ok(n) => {
                    out.write_all(&buf[..n])?;
                    out.flush()?;
                }
            },
            chunk = input.recv() => match chunk {
                None => return Ok(Detached::InputClosed),
                Some(chunk) => {
                    let (typed, escaped) = match chunk.iter().position(|&b| b == ESCAPE) {
                        Some(at) => (&chunk[..at], true),
                        None => (&chunk[..], false),
                    };
                    if to_console.write_all(typed).await.is_err() {
                        return Ok(Detached::ConsoleClosed);
                    }
                    if escaped {
                        return Ok(Detached::Escape);
                    }
                }
            },
        }
    }
}

/// Standard input in chunks, read by a thread of its own (a blocking read on the runtime's
/// pool would hold the runtime's shutdown until the next key).
fn stdin_chunks() -> tokio::sync::mpsc::Receiver<Vec<u8>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    let spawned = std::thread::Builder::new().name("pxelab-stdin".into()).spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 1024];
        while let Ok(n @ 1..) = stdin.read(&mut buf) {
            if sender.blocking_send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("cannot read standard input: {e}");
    }
    receiver
}

/// A terminal on standard input in raw mode; restored when dropped. Not a terminal: nothing.
struct RawMode(Option<libc::termios>);

impl RawMode {
    fn enter() -> Self {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios they fill in.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::isatty(0) != 1 || libc::tcgetattr(0, &mut saved) != 0 {
                return RawMode(None);
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(0, libc::TCSANOW, &raw) != 0 {
                return RawMode(None);
            }
            RawMode(Some(saved))
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = self.0 {
            // SAFETY: restores the attributes read in `enter`.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, &saved);
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::console::Console;
    use std::time::Duration;

    #[tokio::test]
    async fn a_terminal_sees_output_types_input_and_the_log_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (ours, guest) = UnixStream::pair().unwrap();
        let console = Console::attach("vm1", ours, &dir.path().join("console.log"), tokio::time::Instant::now()).unwrap();
        let (mut guest_rd, mut guest_wr) = guest.into_split();
        guest_wr.write_all(b"earlier line\r\n").await.unwrap();
        console.wait_for_console_text("earlier line", Duration::from_secs(5)).await.unwrap();
        let link = dir.path().join("console.sock");
        let server = console.serve_terminals(&link).unwrap();
        let mut terminal = UnixStream::connect(std::fs::read_link(&link).unwrap()).await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        while !String::from_utf8_lossy(&seen).contains("earlier line") {
            let n = terminal.read(&mut buf).await.unwrap();
            seen.extend_from_slice(&buf[..n]);
        }
        guest_wr.write_all(b"live output\r\n").await.unwrap();
        while !String::from_utf8_lossy(&seen).contains("live output") {
            let n = terminal.read(&mut buf).await.unwrap();
            seen.extend_from_slice(&buf[..n]);
        }
        terminal.write_all(b"typed\r").await.unwrap();
        let mut typed = [0u8; 6];
        guest_rd.read_exact(&mut typed).await.unwrap();
        assert_eq!(&typed, b"typed\r");
        console.wait_for_console_text("live output", Duration::from_secs(5)).await.unwrap();
        let log = std::fs::read_to_string(dir.path().join("console.log")).unwrap();
        assert!(log.contains("live output"), "{log}");
        let socket = std::fs::read_link(&link).unwrap();
        drop(server);
        assert!(!link.exists() && !socket.exists(), "the socket and its link are removed");
    }
}
