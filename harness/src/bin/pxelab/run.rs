//! `pxelab run`, `pxelab matrix` and `pxelab bench`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use pxelab::artifacts::Provider;
use pxelab::jobs::{self, InstallOptions};
use pxelab::lab::Lab;

use crate::Bench;

/// Whether a run's lab outlives its job.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    No,
    Kept,
    /// Kept, with this terminal attached to the client's console from the start.
    Attached,
}

pub async fn run(name: &str, options: InstallOptions, given: Option<Provider>, keep: Keep, spinner: &indicatif::ProgressBar) -> ExitCode {
    let scenario = match jobs::scenario(name) {
        Ok(scenario) => scenario,
        Err(e) => {
            eprintln!("pxelab: {e} (nothing was created or removed)");
            return ExitCode::FAILURE;
        }
    };
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
    let result = scenario.run(&mut lab, options, given).await;
    spinner.finish_and_clear();
    // Raw mode (an attached terminal) needs its carriage returns.
    let crlf = |text: String| if terminal.as_ref().is_some_and(|t| !t.is_finished()) { text.replace('\n', "\r\n") } else { text };
    let failed = result.is_err();
    match result {
        Ok(report) => {
            println!("{}", crlf(report.stages.table()));
            for (what, value) in report.facts.rows() {
                println!("{}", crlf(format!("{what}: {value}")));
            }
        }
        Err(e) => {
            eprintln!("{}", crlf(lab.stage_table()));
            eprintln!("{}", crlf(format!("pxelab: {name} failed: {:#}", anyhow::Error::from(e))));
        }
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
pub async fn matrix(file: &std::path::Path, spinner: &indicatif::ProgressBar) -> ExitCode {
    let outcome = async {
        let matrix = pxelab::jobs::matrix::Matrix::load(file)?;
        let runs = pxelab::lab::runs_root();
        std::fs::create_dir_all(&runs).map_err(|source| pxelab::jobs::matrix::MatrixError::Write { path: runs.clone(), source })?;
        let outcome = pxelab::jobs::matrix::run(&matrix, &runs).await?;
        outcome.write(&runs)?;
        Ok::<_, pxelab::jobs::matrix::MatrixError>((outcome, runs))
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


/// `pxelab bench`.
pub async fn bench(what: Bench) -> ExitCode {
    let name = match what {
        Bench::Tftp { .. } => "tftp",
        Bench::Http { .. } => "http",
        Bench::Nfs { .. } => "nfs",
        Bench::Install { .. } => "install",
        Bench::Floor => "floor",
        Bench::Hostile { .. } => "hostile",
        Bench::Storm { .. } => "storm",
    };
    let result = async {
        let (report, artifacts) = match what {
            Bench::Tftp { runs } => {
                let mut lab = pxelab::jobs::bench::lab(name)?;
                (pxelab::jobs::bench::tftp(&mut lab, runs.max(1)).await?.report(), lab.dir().display().to_string())
            }
            Bench::Http { runs } => {
                let mut lab = pxelab::jobs::bench::lab(name)?;
                (pxelab::jobs::bench::http(&mut lab, runs.max(1)).await?.report(), lab.dir().display().to_string())
            }
            Bench::Nfs { runs, size_mib } => {
                let mut lab = pxelab::jobs::bench::lab(name)?;
                (pxelab::jobs::bench::nfs(&mut lab, runs.max(1), size_mib.max(1)).await?.report(), lab.dir().display().to_string())
            }
            Bench::Floor => {
                let mut lab = pxelab::jobs::bench::lab(name)?;
                let bench = pxelab::jobs::bench::floor(&mut lab, &InstallOptions::default()).await?;
                (bench.report(), lab.dir().display().to_string())
            }
            Bench::Storm { clients } => {
                let mut lab = pxelab::jobs::bench::lab(name)?;
                (pxelab::jobs::bench::storm(&mut lab, clients as usize).await?.report(), lab.dir().display().to_string())
            }
            Bench::Hostile { rate, secs, seed } => {
                let bench = pxelab::jobs::bench::hostile(rate, std::time::Duration::from_secs(secs), seed).await?;
                (bench.report(), "bench-hostile-alone and bench-hostile-flood beside the other runs".to_owned())
            }
            Bench::Install { runs, wait_out_boot_menus, cold_firmware } => {
                let options = InstallOptions { wait_out_boot_menus, cold_firmware, ..InstallOptions::default() };
                let bench = pxelab::jobs::bench::install(runs.max(1), &options).await?;
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

