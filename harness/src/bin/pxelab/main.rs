//! The `pxelab` command: run scenarios, list them, check the host.
//!
//! - `main.rs`: the command line and its dispatch;
//! - `run.rs`: `run`, `matrix` and `bench`;
//! - `serve.rs`: `serve` and `console`;
//! - `cache.rs`: `cache` and `doctor`.

mod cache;
mod run;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use pxelab::artifacts::Provider;
use pxelab::jobs::{ArtifactArgs, Hardware, InstallOptions, SCENARIOS};

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
        #[command(flatten)]
        install: InstallOptions,
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
        #[arg(long, value_enum, default_value_t = Flavour::Busybox)]
        flavour: Flavour,
        /// How many clients to declare (MAC, address, host name) and print command lines for;
        /// other MACs get addresses from the pool.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=50))]
        clients: u8,
        #[command(flatten)]
        hardware: Hardware,
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

/// A fixture flavour `serve` can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Flavour {
    /// The busybox fixture.
    Busybox,
    /// The upstream-shaped flavour.
    NixosShape,
}

#[derive(Subcommand)]
pub(crate) enum CacheCommand {
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
pub(crate) enum Bench {
    /// The 8 MB kernel from pxelab's TFTP server and from QEMU's slirp TFTP: loaded by GRUB (an ACK a block), and by OVMF as its NBP (windowed)
    Tftp {
        /// Runs of each server (alternating); the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// The netboot-shape initrd (over 200 MB) fetched by iPXE from pxelab's HTTP server, its
    /// TFTP server and QEMU's slirp TFTP: MB/s of each and the ratios
    Http {
        /// Runs of each way (in turn); the median is reported.
        #[arg(long, default_value_t = 1)]
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
    /// A boot storm: N clients power on at once and PXE-boot the busybox flavour to its NFS
    /// root, against a lone client, in one run: per-client times, DHCP latency (p50/p99),
    /// TFTP and NFS rates, the switch's drops and the CPU's split between pxelab and QEMU.
    Storm {
        /// Clients at once (at most 80).
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=80))]
        clients: u64,
    },
    /// An install beside a neighbour flooding the lab network, against a lone install, in one
    /// run: the ratio, probes of the servers during and after the flood, the switch's drops,
    /// memory, and the time to stop the lab after it.
    Hostile {
        /// The flood's frames a second.
        #[arg(long, default_value_t = 1900)]
        rate: u32,
        /// How long the flood runs in all, in seconds (past the install's end if longer).
        #[arg(long, default_value_t = 240)]
        secs: u64,
        /// The flood's seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
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
    let installer_files = |artifacts: &ArtifactArgs| {
        artifacts.installer_files().map_err(|why| {
            eprintln!("pxelab: {why} (nothing was created or removed)");
            ExitCode::FAILURE
        })
    };
    match cli.command {
        Command::List => {
            for scenario in SCENARIOS {
                println!("{:<20} {}", scenario.name, scenario.about);
            }
            ExitCode::SUCCESS
        }
        Command::Doctor => cache::doctor(&runtime),
        Command::Cache { what } => cache::cache(what.unwrap_or(CacheCommand::List)),
        Command::Run { name, artifacts, keep, interactive, install } => {
            let installer_files = match installer_files(&artifacts) {
                Ok(files) => files,
                Err(code) => return code,
            };
            let options = InstallOptions { provider: artifacts.provider(), installer_files, ..install };
            let keep = match (keep, interactive) {
                (_, true) => run::Keep::Attached,
                (true, false) => run::Keep::Kept,
                _ => run::Keep::No,
            };
            runtime.block_on(run::run(&name, options, artifacts.given(), keep, spinner))
        }
        Command::Console { run, vm } => runtime.block_on(serve::console(run, vm)),
        Command::Matrix { file } => runtime.block_on(run::matrix(&file, spinner)),
        Command::Serve { artifacts, flavour, clients, hardware } => {
            let installer_files = match installer_files(&artifacts) {
                Ok(files) => files,
                Err(code) => return code,
            };
            let provider = artifacts.given().unwrap_or(match flavour {
                Flavour::NixosShape => Provider::nixos_shape(),
                Flavour::Busybox => artifacts.provider(),
            });
            let options = InstallOptions { provider, installer_files, hardware, ..InstallOptions::default() };
            runtime.block_on(serve::serve(options, clients, spinner))
        }
        Command::Bench { what } => runtime.block_on(run::bench(what)),
    }
}

