//! Benchmarks that measure pxelab's servers against a reference side by side, in one run.

use std::time::{Duration, Instant};

use pxelab_fixtures::nfs_root::NFS_ROOT_MARKER;
use pxelab_fixtures::{initramfs, HostFiles, NfsRoot, PxeTree};

use crate::lab::{Lab, PxeConfig};
use crate::vm::{Cable, Nic, NicModel, Rom, VmBuilder};

/// A GRUB configuration that only times loading the kernel over TFTP.
const BENCH_GRUB_CFG: &str = "serial --speed=115200 --unit=0 --word=8 --parity=no --stop=1
terminal_input serial
terminal_output serial
echo pxelab-bench: fetching
linux $prefix/bzImage
echo pxelab-bench: fetched
";

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xbe, 0x4c, 0x01];

/// Times of one TFTP benchmark run.
#[derive(Debug, Clone)]
pub struct TftpBench {
    pub file_bytes: u64,
    pub ours: Vec<Duration>,
    pub slirp: Vec<Duration>,
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
        let ratio = median(&self.slirp).as_secs_f64() / median(&self.ours).as_secs_f64();
        format!(
            "file: nixos/bzImage, {} bytes, loaded by GRUB's `linux` (blksize 1024, no window)\n{}\n{}\nratio: {ratio:.2}",
            self.file_bytes,
            line("pxelab TFTP", &self.ours),
            line("slirp TFTP", &self.slirp)
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
pub async fn tftp(lab: &mut Lab, runs: usize) -> Result<TftpBench, Box<dyn std::error::Error + Send + Sync>> {
    let host = HostFiles::find()?;
    let tree = lab.cache().get_or_build(&PxeTree { host: host.clone() })?;
    let root = lab.dir().join("tftp");
    let nixos = root.join("nixos");
    std::fs::create_dir_all(&nixos)?;
    std::fs::copy(tree.join(PxeTree::ROOT).join("nixos/bootx64.efi"), nixos.join("bootx64.efi"))?;
    std::fs::copy(&host.kernel, nixos.join("bzImage"))?;
    std::fs::write(nixos.join("grub.cfg"), BENCH_GRUB_CFG)?;
    lab.start_network(PxeConfig::new(vec![root.clone()]))?;
    let mut bench = TftpBench { file_bytes: std::fs::metadata(&host.kernel)?.len(), ours: vec![], slirp: vec![] };
    for run in 0..runs {
        let ours = lab.pxe_client(&format!("ours-{run}"), MAC, NicModel::VirtioNet, Rom::OvmfNative)?;
        bench.ours.push(time_fetch(ours).await?);
        let slirp = lab.vm(&format!("slirp-{run}")).nic(Nic {
            model: NicModel::VirtioNet,
            mac: MAC,
            rom: Rom::OvmfNative,
            bootindex: Some(2),
            cable: Cable::Slirp { tftp_root: root.clone(), bootfile: "nixos/bootx64.efi".into() },
        });
        bench.slirp.push(time_fetch(slirp).await?);
    }
    Ok(bench)
}

async fn time_fetch(client: VmBuilder) -> Result<Duration, Box<dyn std::error::Error + Send + Sync>> {
    let vm = client.start().await?;
    vm.wait_for_console_text("pxelab-bench: fetching", Duration::from_secs(180)).await?;
    let started = Instant::now();
    vm.wait_for_console_text("pxelab-bench: fetched", Duration::from_secs(600)).await?;
    Ok(started.elapsed())
}

/// Sequential reads of one large file from the NFS root, inside the guest.
#[derive(Debug, Clone)]
pub struct NfsBench {
    pub file_bytes: u64,
    pub runs: Vec<Duration>,
}

impl NfsBench {
    /// The report `pxelab bench nfs` prints; its last line is `MB/s: <median>`.
    pub fn report(&self) -> String {
        let mbs = |t: &Duration| self.file_bytes as f64 / 1e6 / t.as_secs_f64();
        let all: Vec<String> = self.runs.iter().map(|t| format!("{:.2} s ({:.1} MB/s)", t.as_secs_f64(), mbs(t))).collect();
        format!(
            "file: /data/big.bin, {} bytes, read with `cat > /dev/null` in the guest over NFSv3/TCP (page cache dropped before each run)
runs: {}
MB/s: {:.1}",
            self.file_bytes,
            all.join(", "),
            mbs(&median(&self.runs))
        )
    }
}

/// PXE-boot a client into the NFS root and time reading a `size_mib` file from it `runs` times.
pub async fn nfs(lab: &mut Lab, runs: usize, size_mib: usize) -> Result<NfsBench, Box<dyn std::error::Error + Send + Sync>> {
    let host = HostFiles::find()?;
    let tree = lab.cache().get_or_build(&PxeTree { host: host.clone() })?;
    let base = lab.cache().get_or_build(&NfsRoot { host })?.join(NfsRoot::ROOT);
    let top = lab.dir().join("nfs-top");
    std::fs::create_dir_all(top.join("data"))?;
    let file = top.join("data/big.bin");
    std::fs::write(&file, vec![0x5a; size_mib * 1024 * 1024])?;
    let config = PxeConfig::new(vec![tree.join(PxeTree::ROOT)]).nfs_root("/srv/nixos/nfsroot", vec![top, base]);
    lab.start_network(config)?;
    let vm = lab.pxe_client("client", MAC, NicModel::VirtioNet, Rom::OvmfNative)?.start().await?;
    vm.wait_for_console_text(NFS_ROOT_MARKER, Duration::from_secs(300)).await?;
    vm.wait_for_console_text(initramfs::SHELL_MARKER, Duration::from_secs(60)).await?;
    let mut bench = NfsBench { file_bytes: std::fs::metadata(&file)?.len(), runs: vec![] };
    for _ in 0..runs {
        vm.succeed("sync; echo 3 > /proc/sys/vm/drop_caches").await?;
        let started = Instant::now();
        vm.succeed("cat /data/big.bin > /dev/null").await?;
        bench.runs.push(started.elapsed());
    }
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
const NOT_THE_CYCLE: &[&str] = &["find host files", "build artifacts", "check inputs"];

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
/// [`crate::jobs::install`]).
pub async fn install(runs: usize, options: &crate::jobs::InstallOptions) -> Result<InstallBench, Box<dyn std::error::Error + Send + Sync>> {
    let mut bench = InstallBench { runs: Vec::new() };
    for run in 0..runs {
        let mut lab = lab(&format!("install-{run}"))?;
        let (report, vm) = crate::jobs::install(&mut lab, options).await?;
        drop(vm);
        let cycle = report.stages.durations().iter().filter(|(s, _)| !NOT_THE_CYCLE.contains(&s.as_str())).cloned().collect();
        bench.runs.push(cycle);
    }
    Ok(bench)
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
    fn report_has_the_ratio_line() {
        let bench = TftpBench {
            file_bytes: 8_000_000,
            ours: vec![Duration::from_secs(4), Duration::from_secs(2), Duration::from_secs(3)],
            slirp: vec![Duration::from_secs(6)],
        };
        let report = bench.report();
        assert!(report.lines().any(|l| l == "ratio: 2.00"), "{report}");
        assert!(report.contains("median   3.00 s"), "{report}");
    }
}
