//! A real NFS server beside the lab's, for `pxelab bench nfs`: Debian's nfs-ganesha (VFS
//! backend) exporting a host directory over NFSv3/TCP, which a guest reaches through QEMU's
//! restricted user-mode network.
//!
//! Ganesha will not start without an rpcbind to register with. So that nothing on the host
//! changes (no portmapper on port 111, nothing registered with one the host already runs,
//! no state under `/run` or `/var/lib/nfs`), ganesha and an rpcbind of its own run in fresh
//! network, mount and PID namespaces (`unshare`, root only), with tmpfs on `/run` and
//! `/var/lib/nfs`. When the peer drops, `unshare` ends, the kernel kills the namespace's init,
//! and with it every process inside.
//!
//! A guest's slirp network forwards two addresses ([`NfsPeer::forwards`]) to ports the harness
//! listens on, on the host's loopback; each connection accepted there is relayed to ganesha
//! through a socket the harness opened inside the namespace (`setns` on a thread of its own,
//! which ends once the socket exists: a socket keeps the namespace it was made in).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::vm::QemuProcess;

/// Where a guest on slirp reaches the peer's NFS and MOUNT services (slirp's 10.0.2.0/24).
pub const GUEST_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
/// The NFS port, inside the namespace and as the guest sees it.
pub const NFS_PORT: u16 = 2049;
/// The MOUNT port, inside the namespace and as the guest sees it.
pub const MOUNT_PORT: u16 = 20048;

const READY_WITHIN: Duration = Duration::from_secs(30);

/// Why the peer could not be started.
#[derive(Debug, thiserror::Error)]
pub enum NfsPeerError {
    /// A program it runs is not on `PATH`.
    #[error("the NFS peer needs {program}, which is not installed (Debian: apt-get install nfs-ganesha-vfs)")]
    Missing {
        /// The program.
        program: &'static str,
    },
    /// Not root: no namespaces of its own.
    #[error("the NFS peer runs ganesha in namespaces of its own, which needs root")]
    NotRoot,
    /// A file or process operation failed.
    #[error("the NFS peer: {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Ganesha took no connection in time (or exited).
    #[error("the NFS peer did not start within {}s; the end of ganesha's log ({}):\n{tail}", READY_WITHIN.as_secs(), log.display())]
    NotReady {
        /// Ganesha's log.
        log: PathBuf,
        /// Its last lines.
        tail: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NfsPeerError {
    let what = what.into();
    move |source| NfsPeerError::Io { what, source }
}

/// A running ganesha, exporting one directory read-only.
pub struct NfsPeer {
    /// `unshare`, whose child is the namespaces' init; dropping it ends them.
    _namespaces: QemuProcess,
    /// A process inside the namespaces, whose `ns/net` the relays enter.
    inside: u32,
    export: PathBuf,
    nfs: SocketAddrV4,
    mount: SocketAddrV4,
    relays: Vec<tokio::task::JoinHandle<()>>,
}

impl NfsPeer {
    /// Whether this machine can run the peer, and if not, why.
    pub fn available() -> Result<(), NfsPeerError> {
        for program in ["ganesha.nfsd", "rpcbind", "unshare"] {
            if crate::vm::on_path(program).is_none() {
                return Err(NfsPeerError::Missing { program });
            }
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(NfsPeerError::NotRoot);
        }
        Ok(())
    }

    /// Start ganesha exporting `export` (read-only, NFSv3 over TCP); its configuration and log
    /// go to `dir`. Returns once it answers on its NFS port.
    pub async fn start(export: &Path, dir: &Path) -> Result<NfsPeer, NfsPeerError> {
        Self::available()?;
        std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
        let export = std::fs::canonicalize(export).map_err(io(format!("cannot find {}", export.display())))?;
        let config = dir.join("ganesha.conf");
        std::fs::write(&config, ganesha_config(&export)).map_err(io(format!("cannot write {}", config.display())))?;
        let log = dir.join("ganesha.log");
        let script = format!(
            "set -e; ip link set lo up; mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /var/lib/nfs; \
             rpcbind -f -w & ganesha.nfsd -F -L {} -f {} -p /run/ganesha.pid -N NIV_EVENT",
            crate::vm::shell_quote(&log.to_string_lossy()),
            crate::vm::shell_quote(&config.to_string_lossy()),
        );
        let argv: Vec<String> = ["unshare", "--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc", "--", "sh", "-c", &script]
            .map(String::from)
            .to_vec();
        let process = QemuProcess::spawn(&argv, vec![], &dir.join("unshare.log")).map_err(io("cannot run unshare"))?;
        let pid = process.pid();
        let started = Instant::now();
        let not_ready = || NfsPeerError::NotReady { log: log.clone(), tail: tail(&log) };
        let inside = loop {
            if started.elapsed() > READY_WITHIN {
                return Err(not_ready());
            }
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
            if let Some(child) = children.split_whitespace().next().and_then(|c| c.parse::<u32>().ok()) {
                break child;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // Ready once both services take a connection inside the namespace.
        loop {
            let nfs = connect_inside(inside, NFS_PORT).await;
            let mount = connect_inside(inside, MOUNT_PORT).await;
            if nfs.is_ok() && mount.is_ok() {
                break;
            }
            if started.elapsed() > READY_WITHIN {
                return Err(not_ready());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut peer = NfsPeer { _namespaces: process, inside, export, nfs: loopback(), mount: loopback(), relays: vec![] };
        peer.nfs = peer.relay(NFS_PORT).await?;
        peer.mount = peer.relay(MOUNT_PORT).await?;
        Ok(peer)
    }

    /// The exported directory, as a guest names it in a mount (`10.0.2.100:<export>`).
    pub fn export(&self) -> &Path {
        &self.export
    }

    /// The slirp forwards that reach this peer: the guest's NFS and MOUNT addresses, each to
    /// the harness's relay on the host's loopback.
    pub fn forwards(&self) -> [(SocketAddrV4, SocketAddrV4); 2] {
        [(SocketAddrV4::new(GUEST_ADDRESS, NFS_PORT), self.nfs), (SocketAddrV4::new(GUEST_ADDRESS, MOUNT_PORT), self.mount)]
    }

    /// The guest's mount command for the export, read-only at `at`, with `options` (e.g.
    /// `rsize=32768`) added to the ones that reach the peer.
    pub fn mount_command(&self, at: &str, options: &str) -> String {
        let options = if options.is_empty() { String::new() } else { format!(",{options}") };
        format!(
            "mkdir -p {at} && mount -t nfs -o ro,nolock,vers=3,proto=tcp,port={NFS_PORT},mountport={MOUNT_PORT},mountproto=tcp,addr={GUEST_ADDRESS}{options} {GUEST_ADDRESS}:{} {at}",
            crate::vm::shell_quote(&self.export.to_string_lossy())
        )
    }

    /// The version `ganesha.nfsd -v` prints, for the report.
    pub fn version() -> String {
        std::process::Command::new("ganesha.nfsd")
            .arg("-v")
            .output()
            .ok()
            .and_then(|o| {
                let text = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
                text.split_whitespace().skip_while(|w| *w != "Release").nth(2).map(str::to_owned)
            })
            .unwrap_or_else(|| "?".into())
    }

    /// Listen on the host's loopback and relay each connection to `port` inside the namespace.
    async fn relay(&mut self, port: u16) -> Result<SocketAddrV4, NfsPeerError> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.map_err(io("cannot listen on the loopback"))?;
        let std::net::SocketAddr::V4(at) = listener.local_addr().map_err(io("cannot read the relay's address"))? else {
            unreachable!("bound to an IPv4 address")
        };
        let inside = self.inside;
        self.relays.push(tokio::spawn(async move {
            while let Ok((mut outside, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(mut peer) = connect_inside(inside, port).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut outside, &mut peer).await;
                });
            }
        }));
        Ok(at)
    }
}

impl Drop for NfsPeer {
    fn drop(&mut self) {
        for relay in &self.relays {
            relay.abort();
        }
        // The namespaces' init first: the kernel kills the rest of its PID namespace, and
        // unshare (which ignores SIGTERM while it waits) exits with it. Then `_namespaces`
        // drops and reaps unshare; had this kill missed, its SIGKILL on unshare reaches the
        // init through `--kill-child`.
        if let Ok(None) = self._namespaces.try_wait() {
            // SAFETY: kill has no memory preconditions. unshare still runs, so `inside`, its
            // child, has not been reaped and its PID is not another process's.
            unsafe { libc::kill(self.inside as libc::pid_t, libc::SIGKILL) };
        }
    }
}

fn loopback() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)
}

/// A TCP connection to `port` on the loopback of the network namespace `pid` is in.
async fn connect_inside(pid: u32, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let (send, receive) = tokio::sync::oneshot::channel();
    // A thread of its own: setns changes the calling thread's namespace for good.
    std::thread::spawn(move || {
        let result = (|| {
            let namespace = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
            // SAFETY: a valid descriptor of a network namespace; only this thread moves.
            if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let stream = std::net::TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(2))?;
            stream.set_nonblocking(true)?;
            stream.set_nodelay(true)?;
            Ok(stream)
        })();
        let _ = send.send(result);
    });
    let stream = receive.await.map_err(|_| std::io::Error::other("the namespace thread ended"))??;
    tokio::net::TcpStream::from_std(stream)
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.contains("SetComponentLogLevel")).collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Ganesha's configuration: NFSv3 over TCP only, on the fixed ports, `export` read-only with
/// root not squashed (the guest reads as root), no NLM or RQUOTA.
fn ganesha_config(export: &Path) -> String {
    format!(
        r#"NFS_CORE_PARAM {{
  NFS_Port = {NFS_PORT};
  MNT_Port = {MOUNT_PORT};
  Protocols = 3;
  Enable_NLM = false;
  Enable_RQUOTA = false;
}}
NFSV4 {{ Graceless = true; }}
EXPORT {{
  Export_Id = 1;
  Path = "{path}";
  Pseudo = "{path}";
  Access_Type = RO;
  Squash = No_Root_Squash;
  Protocols = 3;
  Transports = TCP;
  SecType = sys;
  FSAL {{ Name = VFS; }}
}}
LOG {{ Default_Log_Level = WARN; }}
"#,
        path = export.display()
    )
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn the_configuration_exports_the_directory_read_only_over_nfsv3_tcp_on_the_fixed_ports() {
        let config = ganesha_config(Path::new("/srv/run 1/top"));
        for line in ["NFS_Port = 2049;", "MNT_Port = 20048;", "Path = \"/srv/run 1/top\";", "Access_Type = RO;", "Transports = TCP;", "Protocols = 3;"] {
            assert!(config.contains(line), "{line} missing:\n{config}");
        }
    }
}
