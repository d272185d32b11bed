//! Benchmarks that measure pxelab's servers against a reference side by side, in one run.

use std::time::{Duration, Instant};

use pxelab_fixtures::nfs_root::NFS_ROOT_MARKER;
use pxelab_fixtures::{initramfs, HostFiles, NfsRoot, PxeTree};

use crate::jobs::{BenchError, Stage};
use crate::net::probe::ProbeAnswers;
use crate::net::Mac;
use crate::lab::{Lab, PxeConfig};
use crate::vm::{Cable, Disk, DiskFormat, Nic, NicModel, Rom, SlirpNet, VmBuilder};

/// A GRUB configuration that only times loading the kernel over TFTP.
const BENCH_GRUB_CFG: &str = "serial --speed=115200 --unit=0 --word=8 --parity=no --stop=1
terminal_input serial
terminal_output serial
echo pxelab-bench: fetching
linux $prefix/bzImage
echo pxelab-bench: fetched
";

const MAC: Mac = Mac([0x52, 0x54, 0x00, 0xbe, 0x4c, 0x01]);

/// Times of one TFTP benchmark run.
#[derive(Debug, Clone)]
pub struct TftpBench {
    /// The kernel's size in bytes.
    pub file_bytes: u64,
    /// GRUB's `linux`: blksize 1024 and no windowsize, each block ACKed; pxelab keeps
    /// blocks ahead of its ACKs ([`TransferLimits::send_ahead`]), slirp sends lockstep.
    ///
    /// [`TransferLimits::send_ahead`]: crate::services::tftp::TransferLimits::send_ahead
    pub ours: Vec<Duration>,
    /// Each slirp run's time, GRUB loading the kernel.
    pub slirp: Vec<Duration>,
    /// OVMF's own download of the same file as its NBP: pxelab grants its windowsize 4 with
    /// blksize 1468; slirp has no windowsize and sends lockstep.
    pub ours_windowed: Vec<Duration>,
    /// Each slirp run's time, OVMF loading the kernel as its NBP.
    pub slirp_windowed: Vec<Duration>,
}

impl TftpBench {
    /// The report `pxelab bench tftp` prints.
    pub fn report(&self) -> String {
        let mb = self.file_bytes as f64 / 1e6;
        let line = |name: &str, times: &[Duration]| {
            let m = median(times).as_secs_f64();
            let all: Vec<String> = times.iter().map(|t| format!("{:.2}", t.as_secs_f64())).collect();
            format!("{name:<12} median {m:>6.2} s  {:>6.2} MB/s  (runs: {} s)", mb / m, all.join(", "))
        };
        let ratio = |slirp: &[Duration], ours: &[Duration]| median(slirp).as_secs_f64() / median(ours).as_secs_f64();
        format!(
            "file: nixos/bzImage, {} bytes\n\
             loaded by GRUB's `linux` (blksize 1024, an ACK a block; pxelab sends blocks ahead, slirp lockstep)\n{}\n{}\nratio: {:.2}\n\
             loaded by OVMF as its NBP (blksize 1468; windowsize 4 from pxelab, lockstep from slirp)\n{}\n{}\nratio: {:.2}",
            self.file_bytes,
            line("pxelab TFTP", &self.ours),
            line("slirp TFTP", &self.slirp),
            ratio(&self.slirp, &self.ours),
            line("pxelab TFTP", &self.ours_windowed),
            line("slirp TFTP", &self.slirp_windowed),
            ratio(&self.slirp_windowed, &self.ours_windowed),
        )
    }
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

/// Have OVMF PXE-boot GRUB, and GRUB load the host kernel (8 MB), from pxelab's TFTP server
/// and from QEMU's slirp TFTP (`restrict=on`), `runs` times each, alternating.
pub async fn tftp(lab: &mut Lab, runs: usize) -> Result<TftpBench, BenchError> {
    let host = HostFiles::find()?;
    let tree = lab.cache().build(PxeTree { host: host.clone() }).await?;
    let root = lab.dir().join("tftp");
    let nixos = root.join("nixos");
    std::fs::create_dir_all(&nixos)?;
    std::fs::copy(tree.join(PxeTree::ROOT).join("nixos/bootx64.efi"), nixos.join("bootx64.efi"))?;
    std::fs::copy(&host.kernel, nixos.join("bzImage"))?;
    std::fs::write(nixos.join("grub.cfg"), BENCH_GRUB_CFG)?;
    lab.start_network(PxeConfig::new(vec![root.clone()]))?;
    let mut bench = TftpBench {
        file_bytes: std::fs::metadata(&host.kernel)?.len(),
        ours: vec![],
        slirp: vec![],
        ours_windowed: vec![],
        slirp_windowed: vec![],
    };
    let slirp = |lab: &Lab, name: &str| {
        lab.vm(name).nic(Nic {
            model: NicModel::VirtioNet,
            mac: MAC,
            rom: Rom::OvmfNative,
            bootindex: Some(2),
            cable: Cable::Slirp(SlirpNet::tftp(root.clone(), "nixos/bootx64.efi")),
        })
    };
    for run in 0..runs {
        let ours = lab.pxe_client(&format!("ours-{run}"), MAC, NicModel::VirtioNet, Rom::OvmfNative)?;
        bench.ours.push(time_fetch(ours).await?);
        bench.slirp.push(time_fetch(slirp(lab, &format!("slirp-{run}"))).await?);
    }
    // The kernel is an EFI application: OVMF downloads it as the NBP (and starts it).
    std::fs::copy(&host.kernel, nixos.join("bootx64.efi"))?;
    for run in 0..runs {
        let ours = lab.pxe_client(&format!("ours-windowed-{run}"), MAC, NicModel::VirtioNet, Rom::OvmfNative)?;
        bench.ours_windowed.push(time_nbp(ours).await?);
        bench.slirp_windowed.push(time_nbp(slirp(lab, &format!("slirp-windowed-{run}"))).await?);
    }
    Ok(bench)
}

async fn time_fetch(client: VmBuilder) -> Result<Duration, BenchError> {
    let vm = client.start().await?;
    vm.wait_for_console_text("pxelab-bench: fetching", Duration::from_secs(180)).await?;
    let started = Instant::now();
    vm.wait_for_console_text("pxelab-bench: fetched", Duration::from_secs(600)).await?;
    Ok(started.elapsed())
}

/// From OVMF's "Downloading NBP file" to its "downloaded successfully".
async fn time_nbp(client: VmBuilder) -> Result<Duration, BenchError> {
    let vm = client.start().await?;
    vm.firmware_console().wait_for_console_text("Downloading NBP file", Duration::from_secs(180)).await?;
    let started = Instant::now();
    vm.firmware_console().wait_for_console_text("NBP file downloaded successfully", Duration::from_secs(600)).await?;
    Ok(started.elapsed())
}

/// One large initrd moved three ways by iPXE, timed in the same run.
#[derive(Debug, Clone)]
pub struct HttpBench {
    /// The file's size in bytes.
    pub file_bytes: u64,
    /// iPXE's `imgfetch` from pxelab's HTTP server.
    pub http: Vec<Duration>,
    /// From pxelab's TFTP server (iPXE: blksize 1432, no window, an ACK a block).
    pub tftp: Vec<Duration>,
    /// From QEMU's slirp TFTP (`restrict=on`).
    pub slirp: Vec<Duration>,
}

impl HttpBench {
    /// The report `pxelab bench http` prints: MB/s of each way (median) and the ratios.
    pub fn report(&self) -> String {
        let mbs = |times: &[Duration]| self.file_bytes as f64 / 1e6 / median(times).as_secs_f64();
        let line = |what: &str, times: &[Duration]| {
            let all: Vec<String> = times.iter().map(|t| format!("{:.2} s", t.as_secs_f64())).collect();
            format!("{what:<28} {:>7.1} MB/s  ({})", mbs(times), all.join(", "))
        };
        format!(
            "file: the netboot-shape initrd, {} bytes, fetched by iPXE (`imgfetch`, the ROM of a virtio-net client) into memory\n{}\n{}\n{}\n\
             HTTP / pxelab TFTP: {:.2}\nHTTP / slirp TFTP: {:.2}\npxelab TFTP / slirp TFTP: {:.2}",
            self.file_bytes,
            line("iPXE, pxelab HTTP", &self.http),
            line("iPXE, pxelab TFTP", &self.tftp),
            line("iPXE, slirp TFTP", &self.slirp),
            mbs(&self.http) / mbs(&self.tftp),
            mbs(&self.http) / mbs(&self.slirp),
            mbs(&self.tftp) / mbs(&self.slirp),
        )
    }
}

/// An iPXE script that times fetching `url` between two console markers.
fn fetch_script(url: &str) -> String {
    format!("#!ipxe\necho pxelab-bench: fetching\nimgfetch {url} || shell\necho pxelab-bench: fetched\nshell\n")
}

/// Have iPXE (the virtio-net ROM) fetch the netboot-shape flavour's initrd (over 200 MB)
/// from pxelab's HTTP server, from its TFTP server and from QEMU's slirp TFTP
/// (`restrict=on`), `runs` times each, in turn.
pub async fn http(lab: &mut Lab, runs: usize) -> Result<HttpBench, BenchError> {
    let set = crate::artifacts::Provider::NetbootShape.provide_async(lab.cache()).await?;
    let initrd = set.tftp_root.join("initrd");
    let (ours, slirp_root) = (lab.dir().join("scripts"), lab.dir().join("slirp"));
    std::fs::create_dir_all(&ours)?;
    std::fs::create_dir_all(&slirp_root)?;
    // Each client its script: iPXE asks for `bench.ipxe`, which chains the one of its MAC.
    let (http_mac, tftp_mac) = (Mac([0x52, 0x54, 0x00, 0xbe, 0x48, 0x01]), Mac([0x52, 0x54, 0x00, 0xbe, 0x48, 0x02]));
    std::fs::write(ours.join("bench.ipxe"), "#!ipxe\nchain bench-${net0/mac:hexhyp}.ipxe\n")?;
    let hyphens = |mac: Mac| mac.to_string().replace(':', "-");
    std::fs::write(ours.join(format!("bench-{}.ipxe", hyphens(http_mac))), fetch_script("http://192.0.2.1/initrd"))?;
    std::fs::write(ours.join(format!("bench-{}.ipxe", hyphens(tftp_mac))), fetch_script("tftp://192.0.2.1/initrd"))?;
    std::fs::write(slirp_root.join("bench.ipxe"), fetch_script("tftp://10.0.2.2/initrd"))?;
    std::os::unix::fs::symlink(&initrd, slirp_root.join("initrd"))?;
    let mut config = PxeConfig::new(vec![ours, set.tftp_root.clone()]).http();
    config.dhcp.http_boot.ipxe_script = Some("bench.ipxe".into());
    lab.start_network(config)?;
    let mut bench = HttpBench { file_bytes: std::fs::metadata(&initrd)?.len(), http: vec![], tftp: vec![], slirp: vec![] };
    for run in 0..runs {
        let http = lab.pxe_client(&format!("http-{run}"), http_mac, NicModel::VirtioNet, Rom::Ipxe)?.memory_mib(1024);
        bench.http.push(time_fetch(http).await?);
        let tftp = lab.pxe_client(&format!("tftp-{run}"), tftp_mac, NicModel::VirtioNet, Rom::Ipxe)?.memory_mib(1024);
        bench.tftp.push(time_fetch(tftp).await?);
        let slirp = lab.vm(&format!("slirp-{run}")).memory_mib(1024).nic(Nic {
            model: NicModel::VirtioNet,
            mac: MAC,
            rom: Rom::Ipxe,
            bootindex: Some(2),
            cable: Cable::Slirp(SlirpNet::tftp(slirp_root.clone(), "bench.ipxe")),
        });
        bench.slirp.push(time_fetch(slirp).await?);
    }
    Ok(bench)
}

/// Sequential reads of one large file from the NFS root, inside the guest.
#[derive(Debug, Clone)]
pub struct NfsBench {
    /// The file's size in bytes.
    pub file_bytes: u64,
    /// Each read's time from pxelab's NFS server.
    pub runs: Vec<Duration>,
    /// TCP segments the lab's NFS server sent again over the whole run, and the run's NFS
    /// frames (both from the pcap).
    pub resent: (u64, u64),
    /// The same reads from nfs-ganesha, interleaved with pxelab's; or why there is no peer.
    pub peer: Result<PeerRuns, String>,
    /// The read and write sizes of the NFS root's mount (the lab's root path option), which
    /// the peer's mount is given too.
    pub sizes: String,
}

/// The reads from the real NFS server ([`crate::jobs::nfs_peer`]).
#[derive(Debug, Clone)]
pub struct PeerRuns {
    /// Ganesha's release, as `ganesha.nfsd -v` prints it.
    pub version: String,
    /// Each read's time.
    pub runs: Vec<Duration>,
}

impl NfsBench {
    /// The report `pxelab bench nfs` prints; its last line is the ratio of the medians
    /// (pxelab / ganesha), or why there is none.
    pub fn report(&self) -> String {
        let mbs = |t: &Duration| self.file_bytes as f64 / 1e6 / t.as_secs_f64();
        let all = |runs: &[Duration]| runs.iter().map(|t| format!("{:.2} s ({:.1} MB/s)", t.as_secs_f64(), mbs(t))).collect::<Vec<_>>().join(", ");
        let mut out = format!(
            "file: /data/big.bin, {} bytes, read with `cat > /dev/null` in the guest over NFSv3/TCP ({}; page cache dropped before each read)
pxelab (lab switch): {}
pxelab MB/s: {:.1}
NFS server TCP segments sent again: {} (of {} NFS frames in the run)",
            self.file_bytes,
            self.sizes,
            all(&self.runs),
            mbs(&median(&self.runs)),
            self.resent.0,
            self.resent.1,
        );
        match &self.peer {
            Ok(peer) => {
                out += &format!(
                    "\nnfs-ganesha {} (VFS, own namespaces; QEMU user-mode network, restrict=on, guestfwd): {}\nganesha MB/s: {:.1}\npxelab / ganesha: {:.2}",
                    peer.version,
                    all(&peer.runs),
                    mbs(&median(&peer.runs)),
                    median(&peer.runs).as_secs_f64() / median(&self.runs).as_secs_f64().max(f64::EPSILON),
                );
            }
            Err(why) => out += &format!("\npxelab / ganesha: no figure: {why}"),
        }
        out
    }
}

/// Where the guest mounts the peer's export.
const PEER_MOUNT: &str = "/peer";
/// The guest's NIC on the peer's slirp network.
const PEER_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x9e, 0x00, 0x01];

/// PXE-boot a client into the NFS root and time reading a `size_mib` file from it `runs`
/// times; each read is followed by one of the same file from nfs-ganesha
/// ([`crate::jobs::nfs_peer`]) when this machine can run it.
pub async fn nfs(lab: &mut Lab, runs: usize, size_mib: usize) -> Result<NfsBench, BenchError> {
    use crate::jobs::nfs_peer::{NfsPeer, NfsPeerError};
    let host = HostFiles::find()?;
    let tree = lab.cache().build(PxeTree { host: host.clone() }).await?;
    let base = lab.cache().build(NfsRoot { host }).await?.join(NfsRoot::ROOT);
    let top = lab.dir().join("nfs-top");
    std::fs::create_dir_all(top.join("data"))?;
    let file = top.join("data/big.bin");
    std::fs::write(&file, vec![0x5a; size_mib * 1024 * 1024])?;
    let peer = match NfsPeer::start(&top, &lab.dir().join("ganesha")).await {
        Ok(peer) => Ok(peer),
        Err(why @ (NfsPeerError::Missing { .. } | NfsPeerError::NotRoot)) => Err(why.to_string()),
        Err(other) => return Err(other.into()),
    };
    let config = PxeConfig::new(vec![tree.join(PxeTree::ROOT)]).nfs_root("/srv/nixos/nfsroot", vec![top, base]);
    lab.start_network(config)?;
    let mut client = lab.pxe_client("client", MAC, NicModel::VirtioNet, Rom::OvmfNative)?;
    if let Ok(peer) = &peer {
        let empty = lab.dir().join("peer-tftp");
        std::fs::create_dir_all(&empty)?;
        let net = peer.forwards().into_iter().fold(SlirpNet::tftp(empty, ""), |net, (guest, host)| net.forward(guest, host));
        client = client.nic(Nic { model: NicModel::VirtioNet, mac: PEER_MAC.into(), rom: Rom::OvmfNative, bootindex: None, cable: Cable::Slirp(net) });
    }
    let vm = client.start().await?;
    vm.wait_for_console_text(NFS_ROOT_MARKER, Duration::from_secs(300)).await?;
    vm.wait_for_console_text(initramfs::SHELL_MARKER, Duration::from_secs(60)).await?;
    let mut bench = NfsBench { file_bytes: std::fs::metadata(&file)?.len(), runs: vec![], resent: (0, 0), peer: Err(String::new()), sizes: String::new() };
    let root_options = vm.succeed("awk '$2 == \"/run/nfsroot\" { print $4 }' /proc/mounts").await?;
    bench.sizes = root_options.trim().split(',').filter(|o| o.starts_with("rsize=") || o.starts_with("wsize=")).collect::<Vec<_>>().join(",");
    let mut peer_runs = vec![];
    if let Ok(peer) = &peer {
        let mac = crate::net::Mac::from(PEER_MAC);
        vm.succeed(&format!(
            "dev=$(for d in /sys/class/net/*; do [ \"$(cat $d/address)\" = {mac} ] && echo ${{d##*/}}; done); \
             ip link set \"$dev\" up && ip addr add 10.0.2.15/24 dev \"$dev\" && {}",
            peer.mount_command(PEER_MOUNT, &bench.sizes)
        ))
        .await?;
    }
    let read = |path: String| {
        let vm = &vm;
        async move {
            vm.succeed("sync; echo 3 > /proc/sys/vm/drop_caches").await?;
            let started = Instant::now();
            vm.succeed(&format!("cat {path} > /dev/null")).await?;
            Ok::<_, BenchError>(started.elapsed())
        }
    };
    for _ in 0..runs {
        bench.runs.push(read("/data/big.bin".into()).await?);
        if peer.is_ok() {
            peer_runs.push(read(format!("{PEER_MOUNT}/data/big.bin")).await?);
        }
    }
    bench.peer = peer.map(|_| PeerRuns { version: NfsPeer::version(), runs: peer_runs });
    // The capture's writer drains every 20 ms.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let summary = crate::net::pcap::summarize(&lab.dir().join("segment.pcap"))?;
    let count = |list: &[(String, u64)]| list.iter().find(|(p, _)| p == "nfs").map_or(0, |(_, n)| *n);
    bench.resent = (count(&summary.server_resent), count(&summary.protocols));
    Ok(bench)
}

/// The full install cycle, several times.
#[derive(Debug, Clone)]
pub struct InstallBench {
    /// Each run's stages and durations (artifact building left out).
    pub runs: Vec<Vec<(String, Duration)>>,
}

/// The cycle's goal on this machine class (2 cores, TCG): issue "Performance".
pub const INSTALL_GOAL: Duration = Duration::from_secs(45);

/// Stages that prepare a run rather than take part in the cycle.
const NOT_THE_CYCLE: [Stage; 3] = [Stage::FindHostFiles, Stage::BuildArtifacts, Stage::CheckInputs];

impl InstallBench {
    /// Min and median wall time of the cycle, and each stage's median and share of it.
    pub fn report(&self) -> String {
        let totals: Vec<Duration> = self.runs.iter().map(|r| r.iter().map(|(_, d)| *d).sum()).collect();
        let min = totals.iter().min().copied().unwrap_or_default();
        let med = median(&totals);
        let mut out = format!(
            "runs: {} (QEMU start → login; artifact builds left out)\nmin: {:.1} s\nmedian: {:.1} s\ngoal: {:.1} s (median / goal: {:.2})\n{:<44} {:>8} {:>7}\n",
            self.runs.len(),
            min.as_secs_f64(),
            med.as_secs_f64(),
            INSTALL_GOAL.as_secs_f64(),
            med.as_secs_f64() / INSTALL_GOAL.as_secs_f64(),
            "stage",
            "median",
            "share"
        );
        for (stage, _) in self.runs.first().map(Vec::as_slice).unwrap_or_default() {
            let times: Vec<Duration> =
                self.runs.iter().filter_map(|r| r.iter().find(|(s, _)| s == stage).map(|(_, d)| *d)).collect();
            let m = median(&times);
            out += &format!("{stage:<44} {:>6.2} s {:>6.1}%\n", m.as_secs_f64(), 100.0 * m.as_secs_f64() / med.as_secs_f64());
        }
        out.trim_end().to_owned()
    }
}

/// Run the main job's full cycle `runs` times, each in a fresh lab (`options` as for
/// [`fn@crate::jobs::install`]).
pub async fn install(runs: usize, options: &crate::jobs::InstallOptions) -> Result<InstallBench, BenchError> {
    let mut bench = InstallBench { runs: Vec::new() };
    for run in 0..runs {
        let mut lab = lab(&format!("install-{run}"))?;
        let (report, vm) = crate::jobs::install(&mut lab, options).await?;
        drop(vm);
        bench.runs.push(cycle_of(&report));
    }
    Ok(bench)
}

/// The install cycle beside what its parts cost without pxelab in the way, measured in one run.
#[derive(Debug, Clone)]
pub struct FloorBench {
    /// The cycle's stages and durations (artifact building left out).
    pub cycle: Vec<(String, Duration)>,
    /// A slirp PXE boot of the same TFTP tree: power-on until GRUB has loaded the kernel.
    pub network_boot: Duration,
    /// A power-on of the installed disk with its NVRAM and NIC: until the login prompt.
    pub disk_boot: Duration,
}

/// The cycle's parts: a name, the stages it spans (by prefix), and its floor's source.
const FLOOR_PARTS: [(&str, fn(Stage) -> bool); 3] = [
    ("power-on → GRUB has the kernel", |s| matches!(s, Stage::StartNetworkAndQemu | Stage::FirmwareDhcp | Stage::TftpGrub | Stage::TftpKernel)),
    ("kernel → reboot (NFS root, installer)", |s| matches!(s, Stage::KernelNfsRoot | Stage::Installer(_))),
    ("reboot → login prompt", |s| matches!(s, Stage::FirmwareDisk | Stage::SystemBoots)),
];

impl FloorBench {
    fn span(&self, part: fn(Stage) -> bool) -> Duration {
        self.cycle.iter().filter(|(stage, _)| Stage::named(stage).is_some_and(part)).map(|(_, d)| *d).sum()
    }

    /// The report `pxelab bench floor` prints: each part's time in the cycle and its floor,
    /// their ratio, and the cycle against the sum of the floors.
    pub fn report(&self) -> String {
        let secs = |d: Duration| d.as_secs_f64();
        let total: Duration = self.cycle.iter().map(|(_, d)| *d).sum();
        let floors = [
            Some((self.network_boot, "a slirp PXE boot of the same TFTP tree (QEMU's TFTP, restrict=on; GRUB's timeout 0)")),
            None,
            Some((self.disk_boot, "a power-on of the installed disk with its NVRAM and NIC")),
        ];
        let mut out = format!("{:<40} {:>8} {:>8} {:>6}  floor measured by\n", "part", "cycle", "floor", "ratio");
        let (mut parts, mut floor_total) = (Duration::ZERO, Duration::ZERO);
        for ((part, stages), floor) in FLOOR_PARTS.iter().zip(floors) {
            let took = self.span(*stages);
            parts += took;
            let (floor, by) = floor.unwrap_or((took, "none: it runs on the lab's NFS root (the cycle's own time)"));
            floor_total += floor;
            out += &format!("{part:<40} {:>6.2} s {:>6.2} s {:>6.2}  {by}\n", secs(took), secs(floor), secs(took) / secs(floor));
        }
        let rest = total.saturating_sub(parts);
        floor_total += rest;
        out += &format!("{:<40} {:>6.2} s {:>6.2} s {:>6.2}  the cycle's own time\n", "the rest (login, command channel, ready)", secs(rest), secs(rest), 1.0);
        out += &format!(
            "cycle: {:.1} s\nfloor: {:.1} s\ncycle / floor: {:.2}\ngoal: {:.1} s (cycle / goal: {:.2})",
            secs(total),
            secs(floor_total),
            secs(total) / secs(floor_total),
            secs(INSTALL_GOAL),
            secs(total) / secs(INSTALL_GOAL)
        );
        out
    }
}

/// One install cycle of `options` in `lab`, then the floors of its network boot and of its
/// installed system's boot, each in a client of its own.
pub async fn floor(lab: &mut Lab, options: &crate::jobs::InstallOptions) -> Result<FloorBench, BenchError> {
    let (report, mut vm) = crate::jobs::install(lab, options).await?;
    let cycle = cycle_of(&report);
    let installed = vm.dir().to_owned();
    vm.shutdown(Duration::from_secs(120)).await?;
    drop(vm);
    let artifacts = options.provider.provide_async(lab.cache()).await?;

    // The same TFTP tree, served by slirp, with GRUB's countdown at 0 (the cycle presses Enter
    // at it) and a console line once `linux` has loaded the kernel.
    let tftp_root = lab.dir().join("floor-tftp");
    let nixos = tftp_root.join("nixos");
    std::fs::create_dir_all(&nixos)?;
    for entry in std::fs::read_dir(artifacts.tftp_root.join("nixos"))? {
        let path = entry?.path();
        if path.is_file() {
            std::fs::copy(&path, nixos.join(path.file_name().expect("a file name")))?;
        }
    }
    let grub = std::fs::read_to_string(nixos.join("grub.cfg"))?.replace("set timeout=5", "set timeout=0");
    std::fs::write(nixos.join("grub.cfg"), grub)?;
    std::fs::write(nixos.join("load-kernel.cfg"), "linux $prefix/bzImage\necho pxelab-bench: kernel loaded\n")?;
    let nic = options.hardware.nic.unwrap_or(artifacts.system.nic);
    let pxe = lab.vm("floor-pxe").nic(Nic {
        model: nic,
        mac: MAC,
        rom: nic.pxe_rom(),
        bootindex: Some(1),
        cable: Cable::Slirp(SlirpNet::tftp(tftp_root.clone(), "nixos/bootx64.efi")),
    });
    let network_boot = time_to(pxe, "pxelab-bench: kernel loaded").await?;

    // The installed disk and its NVRAM, powered on, with the same NIC (its firmware drivers
    // load at boot) on a restricted slirp network.
    let disk_dir = lab.dir().join("floor-disk");
    std::fs::create_dir_all(&disk_dir)?;
    std::fs::copy(installed.join("OVMF_VARS.fd"), disk_dir.join("OVMF_VARS.fd"))?;
    let base = Disk::Overlay { base: installed.join("disk0.qcow2"), format: DiskFormat::Qcow2 };
    let cable = Cable::Slirp(SlirpNet::tftp(tftp_root, ""));
    let disk = lab
        .vm("floor-disk")
        .keep_nvram()
        .disk_on(options.hardware.disk_bus, base, Some(1))
        .nic(Nic { model: nic, mac: options.client.mac, rom: nic.pxe_rom(), bootindex: Some(2), cable });
    let disk_boot = time_to(disk, &artifacts.system.login.prompt).await?;
    Ok(FloorBench { cycle, network_boot, disk_boot })
}

/// From QEMU's start to `pattern` on the console.
async fn time_to(client: VmBuilder, pattern: &str) -> Result<Duration, BenchError> {
    let started = Instant::now();
    let vm = client.start().await?;
    vm.wait_for_console_text(pattern, Duration::from_secs(300)).await?;
    Ok(started.elapsed())
}

/// An install beside a flooding neighbour against a lone one, measured in one run, and what
/// the flood cost the lab: `pxelab bench hostile`.
#[derive(Debug, Clone)]
pub struct HostileBench {
    /// The flood's frames a second.
    pub rate: u32,
    /// How long the flood ran in all.
    pub flood_for: Duration,
    /// The install cycle alone.
    pub lone: Duration,
    /// The install cycle beside the flood.
    pub flooded: Duration,
    /// Probes of the servers from a well-behaved client's port during the flood.
    pub during: Vec<ProbeAnswers>,
    /// The probe after the flood.
    pub after: ProbeAnswers,
    /// The switch's drops per port and reason.
    pub drops: Vec<(crate::net::switch::PortId, crate::net::segment::DropReason, u64)>,
    /// Events in all.
    pub events: usize,
    /// Events memory held at the end.
    pub events_held: usize,
    /// The harness process's resident memory (VmRSS, KiB): when the flood began, its peak,
    /// when the flood ended.
    pub rss_kib: (u64, u64, u64),
    /// Writing the report and stopping the lab after the flood.
    pub stop: Duration,
    /// `report.json` and `report.html`, bytes.
    pub report_bytes: (u64, u64),
}

/// The goal: an install beside the flood within this many times its lone time.
pub const HOSTILE_GOAL: f64 = 2.0;
/// The goal: the lab stops within this after any flood.
pub const STOP_GOAL: Duration = Duration::from_secs(2);

impl HostileBench {
    /// What `pxelab bench hostile` prints.
    pub fn report(&self) -> String {
        let secs = |d: Duration| d.as_secs_f64();
        let ratio = secs(self.flooded) / secs(self.lone);
        let answered = self.during.iter().filter(|p| p.complete()).count();
        let slowest = |pick: fn(&ProbeAnswers) -> Option<Duration>| {
            self.during.iter().filter_map(pick).max().map_or("none".to_owned(), |d| format!("{:.1} ms", secs(d) * 1000.0))
        };
        let mut out = format!(
            "flood: {} frames/s for {:.0} s (about {} frames), the seeded mix of net::flood\n\
             install alone: {:.1} s\n\
             install beside the flood: {:.1} s\n\
             flooded / alone: {:.2} (goal ≤ {HOSTILE_GOAL:.1})\n\
             probes during the flood answered: {answered}/{} (slowest DHCP offer {}, TFTP reply {}, TCP SYN-ACK {})\n\
             probe after the flood: {}\n\
             events: {} in all, {} held in memory\n\
             memory (VmRSS): {:.1} MiB at the flood's start, peak {:.1} MiB, {:.1} MiB at its end\n\
             stop after the flood (report + lab): {:.2} s (goal < {:.0} s)\n\
             report: report.json {} KiB, report.html {} KiB\n\
             switch drops:",
            self.rate,
            secs(self.flood_for),
            (f64::from(self.rate) * secs(self.flood_for)).round() as u64,
            secs(self.lone),
            secs(self.flooded),
            ratio,
            self.during.len(),
            slowest(|p| p.dhcp_offer),
            slowest(|p| p.tftp_reply),
            slowest(|p| p.tcp_syn_ack),
            self.after,
            self.events,
            self.events_held,
            self.rss_kib.0 as f64 / 1024.0,
            self.rss_kib.1 as f64 / 1024.0,
            self.rss_kib.2 as f64 / 1024.0,
            secs(self.stop),
            secs(STOP_GOAL),
            self.report_bytes.0 / 1024,
            self.report_bytes.1 / 1024,
        );
        for (port, reason, n) in &self.drops {
            out += &format!(" port {port} {reason:?} {n};");
        }
        out.trim_end_matches(';').to_owned()
    }
}

/// The harness process's resident memory, KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())))
        .unwrap_or(0)
}

/// An install alone, then one beside a neighbour flooding at `rate` frames a second for
/// `flood_for` in all (past the install's end if it is shorter), probing the servers from a
/// well-behaved client's port every 15 s of it and once after it; then the report is written
/// and the lab stopped, timed.
pub async fn hostile(rate: u32, flood_for: Duration, seed: u64) -> Result<HostileBench, BenchError> {
    let options = crate::jobs::InstallOptions::default();
    let total = |report: &crate::jobs::InstallReport| cycle_of(report).iter().map(|(_, d)| *d).sum::<Duration>();
    let lone = {
        let mut lab = lab("hostile-alone")?;
        let (report, vm) = crate::jobs::install(&mut lab, &options).await?;
        drop(vm);
        total(&report)
    };
    let mut lab = lab("hostile-flood")?;
    let flooded_options = crate::jobs::InstallOptions { faults: crate::jobs::InstallFaults { seed, flood: Some(rate), ..Default::default() }, ..options };
    let rss_start = rss_kib();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss_start));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let begun = Instant::now();
    let (report, vm) = crate::jobs::install(&mut lab, &flooded_options).await?;
    let flooded = total(&report);
    let mac = crate::jobs::INSTALL_CLIENT.0;
    // The rest of the flood, past the install, with probes.
    let flood = lab.network().start_flood(seed + 1, rate, mac);
    let mut during = Vec::new();
    while begun.elapsed() < flood_for {
        during.push(lab.network().probe(Duration::from_secs(10)).await);
        tokio::time::sleep(Duration::from_secs(15).min(flood_for.saturating_sub(begun.elapsed()))).await;
    }
    drop(flood);
    let flood_for = begun.elapsed();
    let rss_end = rss_kib();
    sampler.abort();
    let after = lab.network().probe(Duration::from_secs(10)).await;
    // The switch's latest totals, per port and reason, over both floods.
    let drops = super::install_stages::switch_drops(&lab);
    let (events, events_held) = (lab.network().events().count(), lab.network().events().all().len());
    drop(vm);
    let dir = lab.dir().to_owned();
    let stopping = Instant::now();
    lab.write_report()?;
    drop(lab);
    let stop = stopping.elapsed();
    let size = |f: &str| std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0);
    Ok(HostileBench {
        rate,
        flood_for,
        lone,
        flooded,
        during,
        after,
        drops,
        events,
        events_held,
        rss_kib: (rss_start, peak.load(std::sync::atomic::Ordering::Relaxed).max(rss_end), rss_end),
        stop,
        report_bytes: (size("report.json"), size("report.html")),
    })
}

/// A boot storm against a lone client, measured in one run: `pxelab bench storm`.
#[derive(Debug, Clone, Default)]
pub struct StormBench {
    /// The lone client's power-on to its NFS root.
    pub lone: Duration,
    /// The lone client's TFTP rate while it transferred, bytes/s.
    pub lone_tftp: f64,
    /// Each storm client's power-on to its NFS root.
    pub to_root: Vec<Duration>,
    /// The lone client's GRUB's load of the kernel and initramfs over TFTP
    /// ([`crate::jobs::storm::Booted::kernel_load`]).
    pub lone_kernel_load: Duration,
    /// Each storm client's.
    pub kernel_load: Vec<Duration>,
    /// Each client's in a storm of as many clients on QEMU's slirp TFTP (`restrict=on`),
    /// in the same run.
    pub slirp_kernel_load: Vec<Duration>,
    /// Storm clients whose firmware started from their snapshot.
    pub from_snapshot: usize,
    /// Storm clients whose lease is their declared address.
    pub declared: usize,
    /// The latency of each of the lab's DHCP offers to the storm's clients, from the request
    /// it answers (both as the pcap has them).
    pub offers: Vec<Duration>,
    /// The same for its acks.
    pub acks: Vec<Duration>,
    /// TFTP bytes to the storm's clients.
    pub tftp_bytes: u64,
    /// How long at least one of the storm's TFTP transfers was under way.
    pub tftp_span: Duration,
    /// Each storm client's TFTP rate while it transferred, bytes/s.
    pub tftp_per_client: Vec<f64>,
    /// NFS file-system operations over the storm.
    pub nfs_ops: u64,
    /// Power-on until the last client reached its root.
    pub wall: Duration,
    /// Frames the switch dropped over the storm, by port and reason.
    pub drops: Vec<(crate::net::switch::PortId, crate::net::segment::DropReason, u64)>,
    /// CPU time over the storm.
    pub cpu: crate::jobs::storm::CpuTime,
}

/// The goal: the lab's DHCP answers within this at the 99th percentile during a storm.
pub const STORM_DHCP_P99_GOAL: Duration = Duration::from_millis(10);

/// The value at quantile `q` (0..=1) of `values` (nearest rank); zero for none.
fn quantile(values: &[Duration], q: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or_default()
}

impl StormBench {
    /// What `pxelab bench storm` prints.
    pub fn report(&self) -> String {
        let n = self.to_root.len();
        let secs = |d: Duration| d.as_secs_f64();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mbs = |bps: f64| bps / 1e6;
        let median_root = quantile(&self.to_root, 0.5);
        let latency = |what: &str, v: &[Duration]| {
            format!(
                "DHCP {what} latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} paired in the pcap)",
                ms(quantile(v, 0.5)),
                ms(quantile(v, 0.99)),
                ms(quantile(v, 1.0)),
                v.len()
            )
        };
        let p99 = quantile(&[self.offers.clone(), self.acks.clone()].concat(), 0.99);
        let per_client: Vec<Duration> = self.tftp_per_client.iter().map(|r| Duration::from_secs_f64(*r)).collect();
        let total_tftp = self.tftp_bytes as f64 / secs(self.tftp_span).max(f64::EPSILON);
        let mut out = format!(
            "clients: {n} at once, each PXE → GRUB → kernel + initramfs → NFS root (busybox flavour), {} of them from their firmware snapshot\n\
             lone client to its NFS root: {:.1} s\n\
             storm, per client to its NFS root: min {:.1} s, median {:.1} s, p95 {:.1} s, max {:.1} s (median / lone: {:.2})\n\
             declared addresses: {}/{n} clients got theirs; NFS roots reached: {n}/{n}\n\
             GRUB's load of kernel + initramfs over TFTP: lone {:.1} s; storm on pxelab median {:.1} s (max {:.1} s); storm of {n} on slirp TFTP median {:.1} s (max {:.1} s); pxelab / slirp: {:.2}\n\
             {}\n\
             {}\n\
             DHCP p99: {:.2} ms (goal < {:.0} ms: {})\n\
             TFTP: {:.1} MB to the storm over {:.1} s with a transfer under way, {:.1} MB/s in all; per client while transferring: min {:.2}, median {:.2}, max {:.2} MB/s; lone client {:.2} MB/s (storm total / lone: {:.2})\n\
             NFS: {} file-system operations, {:.0} a second over the storm's {:.1} s\n\
             CPU over the storm: pxelab {:.1} s (switch, servers, capture), QEMU {:.1} s in all; pxelab's share {:.1}%; host busy {:.0}% of {} cores\n\
             switch drops:",
            self.from_snapshot,
            secs(self.lone),
            secs(quantile(&self.to_root, 0.0)),
            secs(median_root),
            secs(quantile(&self.to_root, 0.95)),
            secs(quantile(&self.to_root, 1.0)),
            secs(median_root) / secs(self.lone).max(f64::EPSILON),
            self.declared,
            secs(self.lone_kernel_load),
            secs(quantile(&self.kernel_load, 0.5)),
            secs(quantile(&self.kernel_load, 1.0)),
            secs(quantile(&self.slirp_kernel_load, 0.5)),
            secs(quantile(&self.slirp_kernel_load, 1.0)),
            secs(quantile(&self.kernel_load, 0.5)) / secs(quantile(&self.slirp_kernel_load, 0.5)).max(f64::EPSILON),
            latency("offer", &self.offers),
            latency("ack", &self.acks),
            ms(p99),
            ms(STORM_DHCP_P99_GOAL),
            if p99 < STORM_DHCP_P99_GOAL { "met" } else { "not met" },
            self.tftp_bytes as f64 / 1e6,
            secs(self.tftp_span),
            mbs(total_tftp),
            mbs(secs(quantile(&per_client, 0.0))),
            mbs(secs(quantile(&per_client, 0.5))),
            mbs(secs(quantile(&per_client, 1.0))),
            mbs(self.lone_tftp),
            total_tftp / self.lone_tftp.max(f64::EPSILON),
            self.nfs_ops,
            self.nfs_ops as f64 / secs(self.wall).max(f64::EPSILON),
            secs(self.wall),
            self.cpu.harness,
            self.cpu.qemu,
            100.0 * self.cpu.harness_share(),
            100.0 * self.cpu.host_busy / (secs(self.wall) * self.cpu.cores as f64).max(f64::EPSILON),
            self.cpu.cores,
        );
        if self.drops.is_empty() {
            out += " none";
        }
        for (port, reason, n) in &self.drops {
            out += &format!(" port {port} {reason:?} {n};");
        }
        out.trim_end_matches(';').to_owned()
    }
}

/// How long at least one of `spans` (start, end) was under way.
fn covered(mut spans: Vec<(Duration, Duration)>) -> Duration {
    spans.sort();
    let mut total = Duration::ZERO;
    let mut current: Option<(Duration, Duration)> = None;
    for (start, end) in spans {
        current = match current {
            Some((s, e)) if start <= e => Some((s, e.max(end))),
            Some((s, e)) => {
                total += e - s;
                Some((start, end))
            }
            None => Some((start, end)),
        };
    }
    total + current.map_or(Duration::ZERO, |(s, e)| e - s)
}

/// TFTP bytes to `ip` in the transfers done among `events` (from the lab's clock `since`),
/// and the time they took, summed.
fn tftp_to(events: &[(Duration, crate::services::ServiceEvent)], ip: std::net::Ipv4Addr, since: Duration) -> (u64, Duration) {
    events
        .iter()
        .filter(|(at, _)| *at >= since)
        .filter_map(|(_, e)| match e {
            crate::services::ServiceEvent::Tftp(t) if t.client == ip && t.outcome == crate::services::tftp::TftpOutcome::Done => Some((t.bytes, Duration::from_millis(t.millis))),
            _ => None,
        })
        .fold((0, Duration::ZERO), |(b, t), (bytes, took)| (b + bytes, t + took))
}

/// `clients` (their names and MACs) power on at once, each on a slirp network of its own
/// whose TFTP serves `tree` (`restrict=on`); each one's GRUB loads the kernel and initramfs
/// (Enter at its menu as in the lab's storm). Returns each one's load, as
/// [`crate::jobs::storm::Booted::kernel_load`]. They boot no further: slirp has no NFS.
async fn slirp_storm(lab: &Lab, clients: &[crate::jobs::storm::StormClient], tree: &std::path::Path, timeout: Duration) -> Result<Vec<Duration>, BenchError> {
    use super::install_stages::{GRUB_COUNTDOWN, KERNEL_STARTED, LOADING_KERNEL};
    let builders = clients.iter().map(|c| {
        lab.vm(&format!("slirp-{}", c.name)).memory_mib(512).nic(Nic {
            model: NicModel::VirtioNet,
            mac: c.mac,
            rom: Rom::OvmfNative,
            bootindex: Some(1),
            cable: Cable::Slirp(SlirpNet::tftp(tree.to_owned(), "nixos/bootx64.efi")),
        })
    });
    let vms = futures::future::try_join_all(builders.map(|b| b.start())).await?;
    let loads = vms.iter().map(|vm| async move {
        let countdown = vm.wait_for_console_text(GRUB_COUNTDOWN, timeout).await;
        // Enter until GRUB runs the entry (its first line), as [`crate::lab::Network::enter_at_grub_menu`] does.
        while countdown.is_ok() && vm.wait_for_console_text("Network status:", Duration::from_millis(250)).await.is_err() {
            vm.send_keys("\r").await?;
        }
        vm.wait_for_console_text(LOADING_KERNEL, timeout).await?;
        let loading = Instant::now();
        vm.wait_for_console_text(KERNEL_STARTED, timeout).await?;
        Ok::<_, BenchError>(loading.elapsed())
    });
    futures::future::try_join_all(loads).await
}

/// A lone client boots to its NFS root, then `n` clients at once
/// ([`crate::jobs::storm::boot`]), in one lab; the servers' side is read from the events,
/// the pcap and the CPU times.
pub async fn storm(lab: &mut Lab, n: usize) -> Result<StormBench, BenchError> {
    use crate::jobs::storm::{self, StormClient};
    let timeout = Duration::from_secs(300 + 60 * n as u64);
    let clients = storm::clients(n);
    let lone = StormClient { name: "lone".into(), mac: Mac([0x52, 0x54, 0x00, 0x57, 0x01, 0x00]), ip: std::net::Ipv4Addr::new(192, 0, 2, 99) };
    let all: Vec<StormClient> = clients.iter().cloned().chain([lone.clone()]).collect();
    let tree = storm::start_network(lab, &all).await?;
    let alone = storm::boot(lab, std::slice::from_ref(&lone), timeout).await?;
    let (bytes, took) = tftp_to(&lab.network().events().all(), lone.ip, alone.began);
    let (lone_time, lone_tftp) = (alone.booted[0].to_root, bytes as f64 / took.as_secs_f64().max(f64::EPSILON));
    let lone_kernel_load = alone.booted[0].kernel_load;
    drop(alone);
    let drops_before = super::install_stages::switch_drops(lab);
    let nfs_before = lab.network().operations(crate::lab::Server::Nfs).unwrap_or(0);
    let storm = storm::boot(lab, &clients, timeout).await?;
    let nfs_ops = lab.network().operations(crate::lab::Server::Nfs).unwrap_or(0) - nfs_before;
    let events = lab.network().events().all();
    let mut bench = StormBench { lone: lone_time, lone_tftp, lone_kernel_load, wall: storm.wall, cpu: storm.cpu, nfs_ops, ..Default::default() };
    let mut transfers = Vec::new();
    for (at, e) in &events {
        if let crate::services::ServiceEvent::Tftp(t) = e {
            if *at >= storm.began && clients.iter().any(|c| c.ip == t.client) {
                transfers.push((at.saturating_sub(Duration::from_millis(t.millis)), *at));
                bench.tftp_bytes += t.bytes;
            }
        }
    }
    bench.tftp_span = covered(transfers);
    for booted in &storm.booted {
        bench.to_root.push(booted.to_root);
        bench.kernel_load.push(booted.kernel_load);
        bench.from_snapshot += usize::from(booted.from_snapshot);
        bench.declared += usize::from(lab.network().lease_of(booted.client.mac) == Some(booted.client.ip));
        let (bytes, took) = tftp_to(&events, booted.client.ip, storm.began);
        bench.tftp_per_client.push(bytes as f64 / took.as_secs_f64().max(f64::EPSILON));
    }
    // The capture's writer drains every 20 ms.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answers = crate::net::pcap::dhcp_answers(&lab.dir().join("segment.pcap"), lab.network().server_ip())?;
    for answer in answers.iter().filter(|a| clients.iter().any(|c| c.mac == a.client)) {
        match answer.reply {
            dhcproto::v4::MessageType::Offer => bench.offers.push(answer.latency),
            dhcproto::v4::MessageType::Ack => bench.acks.push(answer.latency),
            _ => {}
        }
    }
    drop(storm);
    bench.slirp_kernel_load = slirp_storm(lab, &clients, &tree, timeout).await?;
    bench.drops = super::install_stages::switch_drops_since(lab, &drops_before);
    Ok(bench)
}

/// An install's stages and durations, the ones that prepare it left out ([`NOT_THE_CYCLE`]).
fn cycle_of(report: &crate::jobs::InstallReport) -> Vec<(String, Duration)> {
    let prepares = |name: &str| Stage::named(name).is_some_and(|s| NOT_THE_CYCLE.contains(&s));
    report.stages.durations().iter().filter(|(s, _)| !prepares(s)).cloned().collect()
}

/// Where `pxelab bench` keeps its runs.
pub fn lab(name: &str) -> Result<Lab, crate::lab::LabError> {
    Lab::new(&format!("bench-{name}"))
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn install_report_gives_min_median_and_shares() {
        let run = |a: u64, b: u64| vec![("firmware → DHCP".to_owned(), Duration::from_secs(a)), ("login".to_owned(), Duration::from_secs(b))];
        let report = InstallBench { runs: vec![run(6, 4), run(9, 1), run(3, 1)] }.report();
        assert!(report.contains("min: 4.0 s\nmedian: 10.0 s\ngoal: 45.0 s (median / goal: 0.22)"), "{report}");
        assert!(report.lines().any(|l| l.starts_with("firmware → DHCP") && l.ends_with("60.0%")), "{report}");
    }

    #[test]
    fn floor_report_sets_each_part_against_its_floor() {
        let stage = |s: &str, secs: u64| (s.to_owned(), Duration::from_secs(secs));
        let cycle = vec![
            stage("firmware → DHCP", 6),
            stage("TFTP: kernel", 4),
            stage("kernel → NFS root", 5),
            stage("installer: unpack image", 15),
            stage("firmware → disk", 5),
            stage("installed system boots", 7),
            stage("login", 3),
        ];
        let report = FloorBench { cycle, network_boot: Duration::from_secs(5), disk_boot: Duration::from_secs(8) }.report();
        let line = |part: &str| report.lines().find(|l| l.starts_with(part)).unwrap_or_else(|| panic!("{report}")).to_owned();
        assert!(line("power-on → GRUB has the kernel").contains(" 10.00 s   5.00 s   2.00  a slirp PXE boot"), "{report}");
        assert!(line("kernel → reboot").contains(" 20.00 s  20.00 s   1.00  none"), "{report}");
        assert!(line("reboot → login prompt").contains(" 12.00 s   8.00 s   1.50"), "{report}");
        assert!(report.ends_with("cycle: 45.0 s\nfloor: 36.0 s\ncycle / floor: 1.25\ngoal: 45.0 s (cycle / goal: 1.00)"), "{report}");
    }

    #[test]
    fn overlapping_transfers_are_counted_once() {
        let s = Duration::from_secs;
        assert_eq!(covered(vec![(s(5), s(7)), (s(0), s(2)), (s(1), s(3)), (s(6), s(9))]), s(7));
        assert_eq!(covered(vec![]), Duration::ZERO);
    }

    #[test]
    fn storm_report_sets_the_storm_against_the_lone_client() {
        let ms = Duration::from_millis;
        let bench = StormBench {
            lone: Duration::from_secs(20),
            lone_tftp: 10e6,
            to_root: [40, 50, 60, 100].map(Duration::from_secs).to_vec(),
            lone_kernel_load: Duration::from_secs(2),
            kernel_load: [10, 20, 30, 40].map(Duration::from_secs).to_vec(),
            slirp_kernel_load: [4, 5, 8, 9].map(Duration::from_secs).to_vec(),
            from_snapshot: 4,
            declared: 3,
            offers: (1..=100).map(ms).collect(),
            acks: vec![ms(1)],
            tftp_bytes: 80_000_000,
            tftp_span: Duration::from_secs(4),
            tftp_per_client: vec![4e6, 5e6, 6e6, 7e6],
            nfs_ops: 1000,
            wall: Duration::from_secs(100),
            drops: vec![],
            cpu: crate::jobs::storm::CpuTime { harness: 2.0, qemu: 198.0, host_busy: 190.0, cores: 2 },
        };
        let report = bench.report();
        assert!(report.contains("min 40.0 s, median 50.0 s, p95 100.0 s, max 100.0 s (median / lone: 2.50)"), "{report}");
        assert!(report.contains("declared addresses: 3/4 clients got theirs"), "{report}");
        assert!(report.contains("lone 2.0 s; storm on pxelab median 20.0 s (max 40.0 s); storm of 4 on slirp TFTP median 5.0 s (max 9.0 s); pxelab / slirp: 4.00"), "{report}");
        assert!(report.contains("DHCP offer latency: p50 50.00 ms, p99 99.00 ms, max 100.00 ms (100 paired"), "{report}");
        assert!(report.contains("DHCP p99: 99.00 ms (goal < 10 ms: not met)"), "{report}");
        assert!(report.contains("20.0 MB/s in all; per client while transferring: min 4.00, median 5.00, max 7.00 MB/s; lone client 10.00 MB/s (storm total / lone: 2.00)"), "{report}");
        assert!(report.contains("NFS: 1000 file-system operations, 10 a second"), "{report}");
        assert!(report.contains("pxelab's share 1.0%; host busy 95% of 2 cores"), "{report}");
        assert!(report.ends_with("switch drops: none"), "{report}");
    }

    #[test]
    fn nfs_report_sets_pxelab_against_ganesha_or_says_why_not() {
        let secs = |v: &[f64]| v.iter().map(|s| Duration::from_secs_f64(*s)).collect::<Vec<_>>();
        let mut bench = NfsBench {
            file_bytes: 100_000_000,
            runs: secs(&[2.0, 4.0, 3.0]),
            resent: (0, 1000),
            peer: Ok(PeerRuns { version: "V4.3".into(), runs: secs(&[5.0, 7.0, 6.0]) }),
            sizes: "rsize=32768,wsize=32768".into(),
        };
        let report = bench.report();
        assert!(report.contains("(rsize=32768,wsize=32768; page cache"), "{report}");
        assert!(report.contains("pxelab MB/s: 33.3\n"), "{report}");
        assert!(report.contains("ganesha MB/s: 16.7\n"), "{report}");
        assert!(report.ends_with("pxelab / ganesha: 2.00"), "{report}");
        bench.peer = Err("the NFS peer needs ganesha.nfsd".into());
        assert!(bench.report().ends_with("pxelab / ganesha: no figure: the NFS peer needs ganesha.nfsd"), "{}", bench.report());
    }

    #[test]
    fn http_report_gives_each_ways_rate_and_the_ratios() {
        let secs = |s: f64| vec![Duration::from_secs_f64(s)];
        let bench = HttpBench { file_bytes: 200_000_000, http: secs(5.0), tftp: secs(20.0), slirp: secs(10.0) };
        let report = bench.report();
        assert!(report.contains("iPXE, pxelab HTTP               40.0 MB/s  (5.00 s)"), "{report}");
        assert!(report.contains("iPXE, pxelab TFTP               10.0 MB/s"), "{report}");
        assert!(report.contains("HTTP / pxelab TFTP: 4.00\nHTTP / slirp TFTP: 2.00\npxelab TFTP / slirp TFTP: 0.50"), "{report}");
    }

    #[test]
    fn report_has_a_ratio_line_for_each_path() {
        let bench = TftpBench {
            file_bytes: 8_000_000,
            ours: vec![Duration::from_secs(4), Duration::from_secs(2), Duration::from_secs(3)],
            slirp: vec![Duration::from_secs(6)],
            ours_windowed: vec![Duration::from_secs(2)],
            slirp_windowed: vec![Duration::from_secs(1)],
        };
        let report = bench.report();
        let ratios: Vec<&str> = report.lines().filter(|l| l.starts_with("ratio: ")).collect();
        assert_eq!(ratios, ["ratio: 2.00", "ratio: 0.50"], "{report}");
        assert!(report.contains("median   3.00 s"), "{report}");
    }
}
