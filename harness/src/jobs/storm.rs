//! A boot storm: many clients power on at once and PXE-boot the busybox flavour to its NFS
//! root, as a rack does after a power cut. `pxelab bench storm` measures it against a lone
//! client; the scenario `boot_storm` checks each client's lease, TFTP transfers and mount.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use pxelab::jobs::storm;
//!
//! let mut lab = pxelab::lab::Lab::new("my-storm")?;
//! let clients = storm::clients(8);
//! storm::start_network(&mut lab, &clients).await?;
//! let storm = storm::boot(&lab, &clients, std::time::Duration::from_secs(600)).await?;
//! for booted in &storm.booted {
//!     println!("{} reached its NFS root in {:.1} s", booted.client.name, booted.to_root.as_secs_f64());
//! }
//! # Ok(()) }
//! ```

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use pxelab_fixtures::nfs_root::NFS_ROOT_MARKER;
use pxelab_fixtures::{initramfs, NfsRoot, PxeTree};

use crate::jobs::BenchError;
use super::install_stages::{KERNEL_STARTED, LOADING_KERNEL};
use crate::lab::{Lab, PxeConfig};
use crate::net::Mac;
use crate::vm::{Disk, NicModel, Rom, Vm};

/// Where the busybox flavour's NFS root is exported.
pub const EXPORT: &str = "/srv/nixos/nfsroot";
/// The most clients [`clients`] declares: their addresses lie below the DHCP pool (`.100`).
pub const MAX_CLIENTS: usize = 80;
/// Each client's memory: the busybox flavour needs little, and a storm has many.
const MEMORY_MIB: u32 = 512;

/// A declared client of a storm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StormClient {
    /// Its VM's name and its declared host name.
    pub name: String,
    /// Its NIC's MAC.
    pub mac: Mac,
    /// Its declared address.
    pub ip: Ipv4Addr,
}

/// `n` clients (at most [`MAX_CLIENTS`]): `node-01`, `node-02`, … with MACs
/// `52:54:00:57:00:01`, … and addresses `192.0.2.11`, … each declared to DHCP.
pub fn clients(n: usize) -> Vec<StormClient> {
    clients_from(1, n)
}

/// `n` clients numbered from `first` (see [`clients`]).
pub fn clients_from(first: usize, n: usize) -> Vec<StormClient> {
    (first..=MAX_CLIENTS)
        .take(n)
        .map(|i| StormClient { name: format!("node-{i:02}"), mac: Mac([0x52, 0x54, 0x00, 0x57, 0x00, i as u8]), ip: Ipv4Addr::new(192, 0, 2, 10 + i as u8) })
        .collect()
}

/// Start `lab`'s network serving the busybox flavour (GRUB, kernel, initramfs over TFTP; its
/// NFS root at [`EXPORT`]), with `clients` declared. Returns the TFTP root it serves.
pub async fn start_network(lab: &mut Lab, clients: &[StormClient]) -> Result<std::path::PathBuf, BenchError> {
    let host = crate::artifacts::host_files_async(lab.cache()).await?;
    let tree = lab.cache().build(PxeTree { host: host.clone() }).await?;
    let root = lab.cache().build(NfsRoot { host }).await?.join(NfsRoot::ROOT);
    let tftp_root = tree.join(PxeTree::ROOT);
    let mut config = PxeConfig::new(vec![tftp_root.clone()]).nfs_root(EXPORT, vec![root]);
    for client in clients {
        config = config.host(client.mac, client.ip, &client.name);
    }
    lab.start_network(config)?;
    Ok(tftp_root)
}

/// One client of a storm, at its NFS root's shell.
pub struct Booted {
    /// Which client.
    pub client: StormClient,
    /// Its VM, at the NFS root's shell.
    pub vm: Vm,
    /// From the storm's power-on to the NFS root's init.
    pub to_root: Duration,
    /// GRUB's load of the kernel and initramfs over TFTP: from its `loading kernel` line to
    /// the kernel's first.
    pub kernel_load: Duration,
    /// Whether its firmware started from its snapshot.
    pub from_snapshot: bool,
}

/// CPU time over a storm, seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTime {
    /// The harness process: the switch, the servers, the capture, the console matchers.
    pub harness: f64,
    /// Every client's QEMU, over its whole life.
    pub qemu: f64,
    /// The host's busy time over the storm, every process's.
    pub host_busy: f64,
    /// The host's cores.
    pub cores: usize,
}

impl CpuTime {
    /// The harness's share of the CPU that the storm used (harness and QEMUs).
    pub fn harness_share(&self) -> f64 {
        self.harness / (self.harness + self.qemu).max(f64::EPSILON)
    }
}

/// A storm's clients and what it cost.
pub struct Storm {
    /// Each client, in the order asked.
    pub booted: Vec<Booted>,
    /// The storm's power-on, on the lab's event clock ([`crate::lab::Network::elapsed`]).
    pub began: Duration,
    /// Power-on until the last client reached its root.
    pub wall: Duration,
    /// CPU time over the storm.
    pub cpu: CpuTime,
}

/// Power `clients` on at once, each a PXE client with a blank disk first in its boot order,
/// starting from its firmware snapshot; press Enter at each one's GRUB menu
/// ([`crate::lab::Network::enter_at_grub_menu`]) and wait until each is at its NFS root's
/// shell, at most `timeout`. A client that fails fails the storm, naming it.
pub async fn boot(lab: &Lab, clients: &[StormClient], timeout: Duration) -> Result<Storm, BenchError> {
    let mut builders = Vec::new();
    for client in clients {
        let builder = lab
            .pxe_client(&client.name, client.mac, NicModel::VirtioNet, Rom::OvmfNative)?
            .memory_mib(MEMORY_MIB)
            .disk(Disk::Blank { bytes: 1 << 30 }, Some(1))
            .from_firmware_snapshot();
        builders.push(builder);
    }
    let host_before = host_cpu();
    let harness_before = process_cpu("self");
    let began = lab.network().elapsed();
    let started = Instant::now();
    let vms = futures::future::try_join_all(builders.into_iter().map(|b| b.start())).await?;
    let waits = vms.iter().zip(clients).map(|(vm, client)| async move {
        let enter = async {
            lab.network().enter_at_grub_menu(vm, client.mac, timeout).await;
            std::future::pending::<()>().await
        };
        let reach = async {
            vm.wait_for_console_text(LOADING_KERNEL, timeout).await?;
            let loading = started.elapsed();
            vm.wait_for_console_text(KERNEL_STARTED, timeout).await?;
            let kernel_load = started.elapsed() - loading;
            vm.wait_for_console_text(NFS_ROOT_MARKER, timeout).await?;
            let at = started.elapsed();
            vm.wait_for_console_text(initramfs::SHELL_MARKER, Duration::from_secs(120)).await?;
            Ok::<_, crate::console::ConsoleError>((at, kernel_load))
        };
        tokio::select! {
            reached = reach => reached,
            () = enter => unreachable!("pending"),
        }
    });
    let times = futures::future::join_all(waits).await;
    let wall = started.elapsed();
    let qemu: f64 = vms.iter().map(|vm| process_cpu(&vm.pid().to_string())).sum();
    let cpu = CpuTime {
        harness: process_cpu("self") - harness_before,
        qemu,
        host_busy: host_cpu().0 - host_before.0,
        cores: host_before.1,
    };
    let mut booted = Vec::new();
    for ((client, vm), time) in clients.iter().zip(vms).zip(times) {
        let (to_root, kernel_load) = time.map_err(|e| BenchError::Measure(format!("{} did not reach its NFS root: {e}", client.name)))?;
        let from_snapshot = matches!(vm.firmware_start(), crate::vm::FirmwareStart::Restored(_));
        booted.push(Booted { client: client.clone(), vm, to_root, kernel_load, from_snapshot });
    }
    Ok(Storm { booted, began, wall, cpu })
}

/// A process's CPU time so far, seconds: `pid` is a number or `self`; 0 if it is gone.
fn process_cpu(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces), from the 3rd: utime is the 14th.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks: u64 = fields.get(11..13).map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
    ticks as f64 / clock_ticks()
}

/// The host's busy CPU time so far, seconds (all but idle and I/O wait), and its cores.
fn host_cpu() -> (f64, usize) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cores = stat.lines().filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)).count();
    let busy = stat.lines().next().map_or(0, |total| {
        let v: Vec<u64> = total.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
        // user nice system idle iowait irq softirq steal
        v.iter().take(8).sum::<u64>() - v.get(3).copied().unwrap_or(0) - v.get(4).copied().unwrap_or(0)
    });
    (busy as f64 / clock_ticks(), cores.max(1))
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf reads a constant of the system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn clients_are_declared_below_the_pool_with_their_own_macs() {
        let all = clients(MAX_CLIENTS + 5);
        assert_eq!(all.len(), MAX_CLIENTS);
        assert_eq!(all[0], StormClient { name: "node-01".into(), mac: Mac([0x52, 0x54, 0, 0x57, 0, 1]), ip: Ipv4Addr::new(192, 0, 2, 11) });
        assert_eq!(all.last().unwrap().ip, Ipv4Addr::new(192, 0, 2, 90));
        let macs: std::collections::HashSet<Mac> = all.iter().map(|c| c.mac).collect();
        assert_eq!(macs.len(), all.len());
        assert_eq!(clients_from(80, 3).len(), 1, "numbers stop at {MAX_CLIENTS}");
        assert!(clients_from(81, 3).is_empty());
    }

    #[test]
    fn this_process_has_used_some_cpu_and_the_host_has_cores() {
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {
            std::hint::black_box(spin.elapsed());
        }
        assert!(process_cpu("self") > 0.0);
        assert_eq!(process_cpu("999999999"), 0.0);
        let (busy, cores) = host_cpu();
        assert!(busy > 0.0 && cores >= 1);
    }
}
