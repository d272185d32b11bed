//! The `pxelab` command: run scenarios, list them, check the host.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pxelab::artifacts::Provider;
use std::time::Duration;

use pxelab::jobs::{self, Hardware, InstallFaults, InstallOptions, JOBS};
use pxelab_fixtures::{Compression, SerialConsole};
use std::path::PathBuf;
use pxelab::vm::{DiskBus, NicModel};
use pxelab::net::fault::{Direction, Impairment};
use pxelab::lab::Lab;

#[derive(Parser)]
#[command(version, about = "End-to-end VM tests of PXE network installs")]
struct Cli {
    /// Log more: -v info, -vv debug (RUST_LOG overrides). Warnings and errors only by default.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario and print its stage timings.
    Run {
        /// Scenario name (see `pxelab list`).
        name: String,
        #[command(flatten)]
        artifacts: ArtifactArgs,
        /// Keep the network and the VMs running after the job, passed or failed, to look at
        /// them (`pxelab console`); Ctrl-C stops them.
        #[arg(long)]
        keep: bool,
        /// Attach this terminal to the client's console from its start, to watch the boot and
        /// type into GRUB or the installer (implies --keep). Ctrl-] detaches.
        #[arg(long)]
        interactive: bool,
        /// Wait out GRUB's menu countdown as a machine would, instead of pressing Enter at it.
        #[arg(long)]
        wait_out_boot_menus: bool,
        /// Power the firmware on from reset instead of from its snapshot.
        #[arg(long)]
        cold_firmware: bool,
        #[command(flatten)]
        hardware: HardwareArgs,
        #[command(flatten)]
        faults: FaultArgs,
    },
    /// Attach this terminal to the serial console of a VM in a running or kept lab: raw mode,
    /// Ctrl-] detaches; the console log goes on being written.
    Console {
        /// The run (its directory's name, e.g. install-default); default: the only one with a
        /// live console.
        run: Option<String>,
        /// The VM (e.g. client); default: the run's only one with a live console.
        vm: Option<String>,
    },
    /// Serve a lab's network alone (switch, DHCP, TFTP, NFS) on a unix socket, for QEMU
    /// clients you start yourself: prints a command line for each, then streams the lab's
    /// events; Ctrl-C stops it.
    Serve {
        #[command(flatten)]
        artifacts: ArtifactArgs,
        /// The artifacts to serve when neither --artifacts nor --nix-* is given.
        #[arg(long, value_parser = ["busybox", "nixos-shape"], default_value = "busybox")]
        flavour: String,
        /// How many clients to declare (MAC, address, host name) and print command lines for;
        /// other MACs get addresses from the pool.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=50))]
        clients: u8,
        #[command(flatten)]
        hardware: HardwareArgs,
    },
    /// Run artifact sets (one per release) × scenarios from a TOML file: a table with each
    /// cell's result and stage times against the baseline set; matrix.md, matrix.json and
    /// junit.xml beside the runs. Fails when a cell fails or a stage is more than 20 % and
    /// 2 s slower than the baseline's.
    Matrix {
        /// The matrix file (see README: "Regression-check releases").
        file: PathBuf,
    },
    /// Show the artifact cache (entries by last use, sizes), or prune what went unused.
    Cache {
        #[command(subcommand)]
        what: Option<CacheCommand>,
    },
    /// List runnable scenarios.
    List,
    /// Check that QEMU, OVMF, the fixture inputs and an accelerator are available.
    Doctor,
    /// Measure pxelab against a reference, side by side, and print figures and ratios.
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
}

/// Where an install's artifacts come from.
#[derive(clap::Args)]
#[command(next_help_heading = "Artifacts (install jobs)")]
struct ArtifactArgs {
    /// Install your prebuilt artifacts from this directory (boot-loader.tar.xz,
    /// nfsroot.tar.xz, nixos.tar.gz, config) instead of the fixture's.
    #[arg(long, conflicts_with_all = ["nix_installer", "nix_image"])]
    artifacts: Option<PathBuf>,
    /// Build the NFS root and boot loader with `nix-build <file>` (with --nix-image).
    #[arg(long, requires = "nix_image")]
    nix_installer: Option<PathBuf>,
    /// Build the install image and config with `nix-build <file>` (with --nix-installer).
    #[arg(long, requires = "nix_installer")]
    nix_image: Option<PathBuf>,
    /// The fixture image's compression (nixos.tar.gz, .xz or .zst).
    #[arg(long, value_parser = ["gzip", "xz", "zstd"], default_value = "gzip")]
    compression: String,
    /// Files to add to the export's `installer/` (per-host `config-<mac>` and such).
    #[arg(long, value_name = "DIR")]
    installer_dir: Option<PathBuf>,
}

impl ArtifactArgs {
    /// The artifacts' provider (`None`: the job's own).
    fn provider(&self) -> Option<Provider> {
        match (&self.artifacts, &self.nix_installer, &self.nix_image) {
            (Some(dir), _, _) => Some(Provider::Dir(dir.clone())),
            (None, Some(installer), Some(image)) => Some(Provider::Nix { installer: installer.clone(), image: image.clone() }),
            _ => None,
        }
    }

    /// The files of `--installer-dir` (name, contents), sorted by name.
    fn installer_files(&self) -> Result<Vec<(String, String)>, String> {
        let mut files = Vec::new();
        if let Some(dir) = &self.installer_dir {
            let read = |e: std::io::Error| format!("--installer-dir {}: {e}", dir.display());
            for entry in std::fs::read_dir(dir).map_err(read)? {
                let path = entry.map_err(read)?.path();
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let contents = std::fs::read_to_string(&path).map_err(|e| format!("--installer-dir: {}: {e}", path.display()))?;
                files.push((name, contents));
            }
            files.sort();
        }
        Ok(files)
    }

    fn compression(&self) -> Compression {
        match self.compression.as_str() {
            "xz" => Compression::Xz,
            "zstd" => Compression::Zstd,
            _ => Compression::Gzip,
        }
    }
}

/// The install client's hardware.
#[derive(clap::Args)]
#[command(next_help_heading = "Client hardware (install jobs)")]
struct HardwareArgs {
    /// NIC model [default: the one the artifacts' pxelab.toml names; e1000 for upstream's]
    #[arg(long, value_parser = ["virtio-net", "e1000", "e1000e"])]
    nic: Option<String>,
    /// Disk controller: virtio (/dev/vda), nvme (/dev/nvme0n1, partitionSeparator=p) or sata
    /// (/dev/sda). The install config's rootDevice must name that disk.
    #[arg(long, value_parser = ["virtio", "nvme", "sata"], default_value = "virtio")]
    disk_bus: String,
    /// Disk size in GiB (the protocol's layout needs more than 4.5).
    #[arg(long, default_value_t = 8)]
    disk_gib: u64,
    /// Memory in MiB.
    #[arg(long, default_value_t = 1024)]
    memory: u32,
    #[arg(long, default_value_t = 1)]
    cpus: u32,
}

impl HardwareArgs {
    fn hardware(&self) -> Hardware {
        let nic = self.nic.as_deref().map(|n| match n {
            "virtio-net" => NicModel::VirtioNet,
            "e1000e" => NicModel::E1000e,
            _ => NicModel::E1000,
        });
        let disk_bus = match self.disk_bus.as_str() {
            "nvme" => DiskBus::Nvme,
            "sata" => DiskBus::Sata,
            _ => DiskBus::Virtio,
        };
        Hardware { nic, disk_bus, disk_bytes: self.disk_gib << 30, memory_mib: self.memory, cpus: self.cpus }
    }
}

/// Faults injected on the install client's port and the lab's servers (seeded: the same
/// seed makes the same decisions; every fault is logged in events.jsonl).
#[derive(clap::Args)]
#[command(next_help_heading = "Fault injection (install jobs)")]
struct FaultArgs {
    /// Seed of the fault injector.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Frames lost, in percent.
    #[arg(long, value_name = "PERCENT", default_value_t = 0.0)]
    loss: f64,
    /// Delay of each frame (e.g. 50ms, 1s).
    #[arg(long, value_parser = parse_duration, default_value = "0ms")]
    delay: Duration,
    /// Each frame's delay varies by up to this much either way.
    #[arg(long, value_parser = parse_duration, default_value = "0ms")]
    jitter: Duration,
    /// Frames duplicated, in percent.
    #[arg(long, value_name = "PERCENT", default_value_t = 0.0)]
    duplicate: f64,
    /// Frames held back behind later ones, in percent.
    #[arg(long, value_name = "PERCENT", default_value_t = 0.0)]
    reorder: f64,
    /// Frames with one byte flipped, in percent.
    #[arg(long, value_name = "PERCENT", default_value_t = 0.0)]
    corrupt: f64,
    /// Which way the impairment applies: in (from the VM), out (to it) or both.
    #[arg(long, value_parser = ["in", "out", "both"], default_value = "both")]
    direction: String,
    /// Take the client's link down this long in the middle of the kernel's TFTP transfer.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    link_down_during_kernel: Option<Duration>,
    /// Stop the NFS server this long as the installer starts on the image.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    nfs_restart_during_unpack: Option<Duration>,
}

impl FaultArgs {
    fn install_faults(&self) -> InstallFaults {
        let impairment = Impairment {
            loss: self.loss / 100.0,
            delay: self.delay,
            jitter: self.jitter,
            duplicate: self.duplicate / 100.0,
            reorder: self.reorder / 100.0,
            corrupt: self.corrupt / 100.0,
        };
        let directions: &[Direction] = match self.direction.as_str() {
            "in" => &[Direction::In],
            "out" => &[Direction::Out],
            _ => &[Direction::In, Direction::Out],
        };
        let impair = if impairment == Impairment::default() { vec![] } else { directions.iter().map(|&d| (d, impairment)).collect() };
        InstallFaults {
            seed: self.seed,
            impair,
            link_down_during_kernel: self.link_down_during_kernel,
            nfs_restart_during_unpack: self.nfs_restart_during_unpack,
        }
    }
}

/// `50ms`, `2s`, `1.5s`, or a number of milliseconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "ms"),
    };
    let value: f64 = number.trim().parse().map_err(|_| format!("{text:?} is not a duration like 50ms or 2s"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        other => return Err(format!("unknown unit {other:?} in {text:?}: use ms or s")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Entries, least recently used first, with their sizes (the default).
    List,
    /// Remove entries unused for longer than --unused-for-days; an entry being built stays.
    Prune {
        #[arg(long, default_value_t = 30)]
        unused_for_days: u64,
        /// Say what would go, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// The 8 MB kernel from pxelab's TFTP server and from QEMU's slirp TFTP: loaded by GRUB (an ACK a block), and by OVMF as its NBP (windowed)
    Tftp {
        /// Runs of each server (alternating); the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// The full install cycle N times: min and median wall time against the goal, each
    /// stage's share.
    Install {
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Wait out GRUB's menu countdown instead of pressing Enter at it.
        #[arg(long)]
        wait_out_boot_menus: bool,
        /// Power the firmware on from reset instead of from its snapshot.
        #[arg(long)]
        cold_firmware: bool,
    },
    /// One install cycle beside its floors, measured in the same run: a slirp PXE boot of the
    /// same TFTP tree and a power-on of the installed disk, without pxelab in the way.
    Floor,
    /// Sequential read throughput of a large file from the NFS root, inside the guest.
    Nfs {
        /// Reads of the file; the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Size of the file in MiB.
        #[arg(long, default_value_t = 256)]
        size_mib: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // An attached terminal gets the console alone: no spinner over it.
    let attached = matches!(cli.command, Command::Run { interactive: true, .. } | Command::Console { .. });
    let spinner = init_logging(cli.verbose, attached);
    let code = dispatch(cli, &spinner);
    spinner.finish_and_clear();
    code
}

/// Logs to stderr at the chosen level, coloured only on a terminal; on a terminal, a spinner
/// shows the stage in progress (and what the cache is building) with its elapsed time.
fn init_logging(verbose: u8, attached: bool) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let level = match verbose {
        0 => "warn",
        1 => "pxelab=info,warn",
        _ => "pxelab=debug,info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into());
    let terminal = std::io::stderr().is_terminal();
    let spinner = match terminal && !attached {
        true => indicatif::ProgressBar::new_spinner(),
        false => indicatif::ProgressBar::hidden(),
    };
    spinner.set_style(indicatif::ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}").expect("a valid template"));
    spinner.enable_steady_tick(Duration::from_millis(120));
    let progress = StageSpinner(spinner.clone()).with_filter(
        tracing_subscriber::filter::Targets::new()
            .with_target("pxelab::lab::stages", tracing::Level::INFO)
            .with_target("pxelab::artifacts::cache", tracing::Level::INFO),
    );
    let log = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(terminal).with_filter(filter);
    tracing_subscriber::registry().with(progress).with(log).init();
    spinner
}

/// A tracing layer that shows stage starts (`stage` field) and builds (`building`) on a
/// spinner.
struct StageSpinner(indicatif::ProgressBar);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for StageSpinner {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        #[derive(Default)]
        struct Fields {
            stage: Option<String>,
            building: Option<String>,
        }
        impl tracing::field::Visit for Fields {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                self.record_debug(field, &format_args!("{value}"));
            }
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                match field.name() {
                    "stage" => self.stage = Some(format!("{value:?}")),
                    "building" => self.building = Some(format!("{value:?}")),
                    _ => {}
                }
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if let Some(stage) = fields.stage {
            self.0.reset_elapsed();
            self.0.set_message(stage);
        } else if let Some(recipe) = fields.building {
            self.0.set_message(format!("build artifacts: building {recipe} (cached afterwards)"));
        }
    }
}

fn dispatch(cli: Cli, spinner: &indicatif::ProgressBar) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    match cli.command {
        Command::List => {
            for job in JOBS {
                println!("{:<16} {}", job.name, job.about);
            }
            ExitCode::SUCCESS
        }
        Command::Doctor => doctor(&runtime),
        Command::Cache { what } => cache(what.unwrap_or(CacheCommand::List)),
        Command::Run { name, artifacts, keep, interactive, wait_out_boot_menus, cold_firmware, hardware, faults } => {
            let installer_files = match artifacts.installer_files() {
                Ok(files) => files,
                Err(why) => {
                    eprintln!("pxelab: {why} (nothing was created or removed)");
                    return ExitCode::FAILURE;
                }
            };
            let provider = artifacts.provider();
            let own = provider.is_some();
            let options = InstallOptions {
                provider: provider.unwrap_or(Provider::Fixture { compression: artifacts.compression() }),
                installer_files,
                faults: faults.install_faults(),
                hardware: hardware.hardware(),
                wait_out_boot_menus,
                cold_firmware,
                ..InstallOptions::default()
            };
            let keep = match (keep, interactive) {
                (_, true) => Keep::Attached,
                (true, false) => Keep::Kept,
                _ => Keep::No,
            };
            runtime.block_on(run(&name, options, own, keep, spinner))
        }
        Command::Console { run, vm } => runtime.block_on(console(run, vm)),
        Command::Matrix { file } => runtime.block_on(matrix(&file, spinner)),
        Command::Serve { artifacts, flavour, clients, hardware } => {
            let installer_files = match artifacts.installer_files() {
                Ok(files) => files,
                Err(why) => {
                    eprintln!("pxelab: {why} (nothing was created or removed)");
                    return ExitCode::FAILURE;
                }
            };
            let provider = artifacts.provider();
            let provider = provider.unwrap_or(match flavour.as_str() {
                "nixos-shape" => Provider::NixosShape { services: None, console: SerialConsole::UPSTREAM },
                _ => Provider::Fixture { compression: artifacts.compression() },
            });
            let options = InstallOptions { provider, installer_files, hardware: hardware.hardware(), ..InstallOptions::default() };
            runtime.block_on(serve(options, clients, spinner))
        }
        Command::Bench { what } => runtime.block_on(bench(what)),
    }
}

async fn bench(what: Bench) -> ExitCode {
    let name = match what {
        Bench::Tftp { .. } => "tftp",
        Bench::Nfs { .. } => "nfs",
        Bench::Install { .. } => "install",
        Bench::Floor => "floor",
    };
    let result = async {
        let (report, artifacts) = match what {
            Bench::Tftp { runs } => {
                let mut lab = pxelab::bench::lab(name)?;
                (pxelab::bench::tftp(&mut lab, runs.max(1)).await?.report(), lab.dir().display().to_string())
            }
            Bench::Nfs { runs, size_mib } => {
                let mut lab = pxelab::bench::lab(name)?;
                (pxelab::bench::nfs(&mut lab, runs.max(1), size_mib.max(1)).await?.report(), lab.dir().display().to_string())
            }
            Bench::Floor => {
                let mut lab = pxelab::bench::lab(name)?;
                let bench = pxelab::bench::floor(&mut lab, &InstallOptions::default()).await?;
                (bench.report(), lab.dir().display().to_string())
            }
            Bench::Install { runs, wait_out_boot_menus, cold_firmware } => {
                let options = InstallOptions { wait_out_boot_menus, cold_firmware, ..InstallOptions::default() };
                let bench = pxelab::bench::install(runs.max(1), &options).await?;
                (bench.report(), "one bench-install-<run> directory per run beside the other runs".to_owned())
            }
        };
        println!("{report}");
        println!("artifacts: {artifacts}");
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pxelab: bench {name} failed: {:?}", anyhow::anyhow!(e));
            ExitCode::FAILURE
        }
    }
}

/// Whether a run's lab outlives its job.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    No,
    Kept,
    /// Kept, with this terminal attached to the client's console from the start.
    Attached,
}

async fn run(name: &str, options: InstallOptions, own_artifacts: bool, keep: Keep, spinner: &indicatif::ProgressBar) -> ExitCode {
    if !JOBS.iter().any(|job| job.name == name) {
        eprintln!("pxelab: no job named {name:?}; `pxelab list` shows them (nothing was created or removed)");
        return ExitCode::FAILURE;
    }
    let mut lab = match Lab::new(name) {
        Ok(lab) => lab,
        Err(e) => {
            eprintln!("pxelab: {e}");
            return ExitCode::FAILURE;
        }
    };
    let keeper = (keep != Keep::No).then(|| lab.keep());
    let terminal = match keep {
        Keep::Attached => Some(tokio::spawn(attach_when_started(lab.dir().join("client/console.sock"), name.to_owned()))),
        _ => None,
    };
    let result = jobs::run(name, &mut lab, options, own_artifacts).await;
    spinner.finish_and_clear();
    // Raw mode (an attached terminal) needs its carriage returns.
    let crlf = |text: String| if terminal.as_ref().is_some_and(|t| !t.is_finished()) { text.replace('\n', "\r\n") } else { text };
    let failed = result.is_err();
    match result {
        Ok(report) => {
            println!("{}", crlf(report.stages.table()));
            for (what, value) in &report.facts {
                println!("{}", crlf(format!("{what}: {value}")));
            }
        }
        Err(e) => eprintln!("{}", crlf(format!("pxelab: {name} failed: {:#}", anyhow::Error::from(e)))),
    }
    let code = if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS };
    match lab.write_report() {
        Ok(page) => println!("{}", crlf(format!("report: {}", page.display()))),
        Err(e) => eprintln!("pxelab: cannot write the report: {e}"),
    }
    println!("{}", crlf(format!("artifacts: {}", lab.dir().display())));
    if let (true, Some(repro)) = (failed, lab.repro()) {
        eprintln!("{}", crlf(format!("reproduce: {repro}")));
    }
    let Some(keeper) = keeper else { return code };
    let kept = keeper.names();
    if kept.is_empty() {
        println!("{}", crlf("kept: nothing, no VM was started".into()));
        return code;
    }
    let mut lines = vec![format!("kept: {} VM(s) of {name} run on, with their network; Ctrl-C stops them", kept.len())];
    lines.extend(kept.iter().map(|vm| format!("attach: pxelab console {name} {vm}   (Ctrl-] detaches)")));
    println!("{}", crlf(lines.join("\n")));
    let _ = tokio::signal::ctrl_c().await;
    keeper.stop();
    code
}

/// Attach the terminal to the console behind `link` once it exists (the client has started).
async fn attach_when_started(link: PathBuf, run: String) {
    while std::fs::symlink_metadata(&link).is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("pxelab: attached to the client's console; Ctrl-] detaches (`pxelab console {run} client` attaches again)\r");
    match pxelab::console::attach::attach_terminal(&link).await {
        Ok(how) => eprintln!("\r\npxelab: detached ({how:?})\r"),
        Err(e) => eprintln!("pxelab: cannot attach to {}: {e}", link.display()),
    }
}

/// `pxelab matrix FILE`.
async fn matrix(file: &std::path::Path, spinner: &indicatif::ProgressBar) -> ExitCode {
    let outcome = async {
        let matrix = pxelab::matrix::Matrix::load(file)?;
        let runs = pxelab::lab::runs_root();
        std::fs::create_dir_all(&runs).map_err(|source| pxelab::matrix::MatrixError::Write { path: runs.clone(), source })?;
        let outcome = pxelab::matrix::run(&matrix, &runs).await?;
        outcome.write(&runs)?;
        Ok::<_, pxelab::matrix::MatrixError>((outcome, runs))
    }
    .await;
    spinner.finish_and_clear();
    match outcome {
        Ok((outcome, runs)) => {
            println!("{}", outcome.markdown());
            println!("matrix: {} (and matrix.json, junit.xml)", runs.join("matrix.md").display());
            if outcome.ok() {
                ExitCode::SUCCESS
            } else {
                eprintln!("pxelab: matrix: a cell failed or regressed");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("pxelab: {:#}", anyhow::Error::from(e));
            ExitCode::FAILURE
        }
    }
}

/// `pxelab cache`: list the artifact cache, or prune it.
fn cache(what: CacheCommand) -> ExitCode {
    use std::io::Write;
    let cache = pxelab::artifacts::Cache::new(&pxelab::artifacts::Cache::default_root());
    let now = std::time::SystemTime::now();
    let line = |e: &pxelab::artifacts::CacheEntry| format!("{:>9}  {:>10}  {}", size(e.bytes), ago(now, e.last_used), e.name);
    let (lines, result) = match what {
        CacheCommand::List => {
            let listing = cache.list();
            let lines = listing.as_ref().map_or_else(|_| vec![], |l| {
                let entries = plural(l.entries.len() as u64, "entry", "entries");
                let head = format!("{} ({} in {entries}, hard-linked files counted once)", cache.root().display(), size(l.bytes));
                [head, format!("{:>9}  {:>10}  entry", "size", "last used")].into_iter().chain(l.entries.iter().map(line)).collect()
            });
            (lines, listing.map(drop))
        }
        CacheCommand::Prune { unused_for_days, dry_run } => {
            let unused_for = Duration::from_secs(unused_for_days * 86_400);
            let gone = if dry_run { cache.prunable(unused_for) } else { cache.prune(unused_for) };
            let lines = gone.as_ref().map_or_else(|_| vec![], |gone| {
                let verb = if dry_run { "would remove" } else { "removed" };
                let freed: u64 = gone.iter().map(|e| e.bytes).sum();
                let (entries, days) = (plural(gone.len() as u64, "entry", "entries"), plural(unused_for_days, "day", "days"));
                let total = format!("{verb} {entries} unused for over {days} ({}) from {}", size(freed), cache.root().display());
                gone.iter().map(line).chain([total]).collect()
            });
            (lines, gone.map(drop))
        }
    };
    // A reader that stops early (`| head`) ends the output, not with a panic.
    let mut out = std::io::stdout().lock();
    let _ = lines.iter().try_for_each(|l| writeln!(out, "{l}"));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pxelab: cache: {:#}", anyhow::Error::from(e));
            ExitCode::FAILURE
        }
    }
}

/// `1 entry`, `2 entries`.
fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Bytes for people: `512 B`, `1.5 MB`, `6.5 GB`.
fn size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ => format!("{value:.1} {}", units[unit]),
    }
}

/// How long ago `then` was: `40 s ago`, `12 min ago`, `3 h ago`, `2 d ago`.
fn ago(now: std::time::SystemTime, then: std::time::SystemTime) -> String {
    let secs = now.duration_since(then).unwrap_or_default().as_secs();
    match secs {
        0..=119 => format!("{secs} s ago"),
        120..=7199 => format!("{} min ago", secs / 60),
        7200..=172_799 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86_400),
    }
}

/// `pxelab serve`: the lab on `<run dir>/switch.sock` until Ctrl-C.
async fn serve(options: InstallOptions, clients: u8, spinner: &indicatif::ProgressBar) -> ExitCode {
    let mut lab = match Lab::new("serve") {
        Ok(lab) => lab,
        Err(e) => {
            eprintln!("pxelab: {e}");
            return ExitCode::FAILURE;
        }
    };
    let socket = lab.dir().join("switch.sock");
    // A unix socket's path has at most 107 bytes.
    let listener = match tokio::net::UnixListener::bind(&socket) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("pxelab: serve: cannot listen on {}: {e} (a shorter PXELAB_RUNS_DIR helps if the path is long)", socket.display());
            return ExitCode::FAILURE;
        }
    };
    let hand = match jobs::serve(&mut lab, &options, clients, &socket).await {
        Ok(hand) => hand,
        Err(e) => {
            spinner.finish_and_clear();
            eprintln!("pxelab: serve failed: {:#}", anyhow::Error::from(e));
            return ExitCode::FAILURE;
        }
    };
    spinner.finish_and_clear();
    let network = lab.network();
    println!("serving on {} (DHCP, TFTP and NFS at {}); pcap and events in {}", socket.display(), network.server_ip(), lab.dir().display());
    for client in &hand {
        println!("{} ({}, {}, {}): start it with", client.name, pxelab::vm::mac_string(&client.mac), client.ip, client.hostname);
        println!("  {}", client.command);
    }
    println!("Ctrl-C stops the lab; the events follow.");
    let mut shown = 0;
    let mut ports = 0;
    loop {
        let events = network.events();
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    ports += 1;
                    let port = network.plug_stream(stream);
                    println!("[{:9.3}] switch  a client connected on port {port} ({ports} so far)", network.elapsed().as_secs_f64());
                }
                Err(e) => eprintln!("pxelab: serve: accept: {e}"),
            },
            () = events.wait_past(shown) => {
                let all = events.all();
                for (at, event) in &all[shown..] {
                    let (service, what) = pxelab::lab::describe_event(event);
                    let client = match event {
                        pxelab::services::ServiceEvent::Dhcp(d) => d.mac.clone(),
                        pxelab::services::ServiceEvent::Tftp(t) => t.client.to_string(),
                        pxelab::services::ServiceEvent::Nfs(n) => n.client.to_string(),
                        _ => String::new(),
                    };
                    println!("[{:9.3}] {service:<7} {client:<17} {what}", at.as_secs_f64());
                }
                shown = all.len();
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    match lab.write_report() {
        Ok(page) => println!("stopped; report: {}", page.display()),
        Err(e) => eprintln!("pxelab: cannot write the report: {e}"),
    }
    ExitCode::SUCCESS
}

/// `pxelab console`: find the live console of `run`/`vm` and attach to it.
async fn console(run: Option<String>, vm: Option<String>) -> ExitCode {
    let root = pxelab::lab::runs_root();
    let mut live = Vec::new();
    for run_dir in std::fs::read_dir(&root).into_iter().flatten().filter_map(|e| e.ok()) {
        let run_name = run_dir.file_name().to_string_lossy().into_owned();
        if run.as_ref().is_some_and(|r| *r != run_name) {
            continue;
        }
        for vm_dir in std::fs::read_dir(run_dir.path()).into_iter().flatten().filter_map(|e| e.ok()) {
            let vm_name = vm_dir.file_name().to_string_lossy().into_owned();
            let link = vm_dir.path().join("console.sock");
            let answers = std::fs::read_link(&link).is_ok_and(|socket| std::os::unix::net::UnixStream::connect(socket).is_ok());
            if answers && vm.as_ref().is_none_or(|v| *v == vm_name) {
                live.push((run_name.clone(), vm_name, link));
            }
        }
    }
    live.sort();
    let (run_name, vm_name, link) = match live.len() {
        1 => live.remove(0),
        0 => {
            let which = [run.as_deref(), vm.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(" ");
            eprintln!("pxelab: no live console{}{which} under {}: start a lab with `pxelab run JOB --keep`", if which.is_empty() { "" } else { " for " }, root.display());
            return ExitCode::FAILURE;
        }
        _ => {
            eprintln!("pxelab: several live consoles; name one:");
            for (r, v, _) in &live {
                eprintln!("  pxelab console {r} {v}");
            }
            return ExitCode::FAILURE;
        }
    };
    eprintln!("pxelab: attached to {vm_name} of {run_name}; Ctrl-] detaches\r");
    match pxelab::console::attach::attach_terminal(&link).await {
        Ok(how) => {
            eprintln!("\r\npxelab: {}\r", match how {
                pxelab::console::attach::Detached::ConsoleClosed => "the console closed (the VM stopped or its lab ended)",
                _ => "detached",
            });
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pxelab: cannot attach to {}: {e}", link.display());
            ExitCode::FAILURE
        }
    }
}

fn doctor(runtime: &tokio::runtime::Runtime) -> ExitCode {
    let mut ok = true;
    let mut check = |what: &str, result: Result<String, String>| match result {
        Ok(detail) => println!("ok    {what}: {detail}"),
        Err(why) => {
            ok = false;
            println!("FAIL  {what}: {why}");
        }
    };
    for (tool, package) in [("qemu-system-x86_64", "qemu-system-x86"), ("qemu-img", "qemu-utils"), ("grub-mkimage", "grub-common")] {
        let out = std::process::Command::new(tool).arg("--version").output();
        check(
            tool,
            match out {
                Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_owned()),
                _ => Err(format!("not runnable; install the Debian package {package}")),
            },
        );
    }
    check(
        "OVMF",
        pxelab_ovmf::discover().map(|f| format!("{} + {} ({})", f.code.display(), f.vars_template.display(), f.source)).map_err(|e| e.to_string()),
    );
    check(
        "fixture inputs",
        pxelab_fixtures::HostFiles::find()
            .map(|h| format!("kernel {}, busybox {}", h.kernel.display(), h.busybox.display()))
            .map_err(|e| e.to_string()),
    );
    if let Ok(firmware) = pxelab_ovmf::discover() {
        check(
            "accelerator",
            runtime
                .block_on(pxelab::vm::select_accel(&firmware, &pxelab::artifacts::Cache::default_root()))
                .map(|a| a.qemu_arg().to_owned())
                .map_err(|e| e.to_string()),
        );
    }
    let cache = pxelab::artifacts::Cache::new(&pxelab::artifacts::Cache::default_root());
    check(
        "artifact cache",
        cache
            .list()
            .map(|l| format!("{}: {} in {} (`pxelab cache` lists them)", cache.root().display(), size(l.bytes), plural(l.entries.len() as u64, "entry", "entries")))
            .map_err(|e| format!("{:#}", anyhow::Error::from(e))),
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
