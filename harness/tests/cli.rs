//! `pxelab run NAME` with a name that is not a job, or a path, touches nothing on the host.

use std::process::Command;

/// The `pxelab` binary: where nextest says at run time (a test archive run elsewhere), else
/// where Cargo built it.
fn pxelab_bin() -> std::path::PathBuf {
    std::env::var_os("NEXTEST_BIN_EXE_pxelab").map_or_else(|| env!("CARGO_BIN_EXE_pxelab").into(), Into::into)
}

#[test]
fn run_with_a_path_or_an_unknown_job_leaves_every_directory_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (runs, victim) = (dir.path().join("runs"), dir.path().join("victim"));
    std::fs::create_dir_all(&runs).unwrap();
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("canary"), "keep").unwrap();
    std::fs::write(runs.join("canary"), "keep").unwrap();
    let victim_arg = victim.display().to_string();
    for name in [victim_arg.as_str(), "..", ".", "~", "no-such-job"] {
        let out = Command::new(pxelab_bin())
            .args(["run", name])
            .env("PXELAB_RUNS_DIR", &runs)
            .current_dir(&runs)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name:?} ran");
        assert!(stderr.contains("no job named"), "{name:?}: {stderr}");
    }
    assert_eq!(std::fs::read_to_string(victim.join("canary")).unwrap(), "keep");
    assert_eq!(std::fs::read_to_string(runs.join("canary")).unwrap(), "keep");
    assert_eq!(std::fs::read_dir(&runs).unwrap().count(), 1, "no run directory was made");
}

/// Not on a terminal, `pxelab run` prints no colour codes and no progress, logs nothing below
/// a warning, and ends with the stage table, the facts and where the run's files are.
#[test]
fn a_run_off_a_terminal_prints_the_table_and_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(pxelab_bin())
        .args(["run", "uefi-boot"])
        .env("PXELAB_RUNS_DIR", dir.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!stdout.contains('\x1b') && !stderr.contains('\x1b'), "colour codes:\n{stdout}\n{stderr}");
    assert!(!stderr.contains(" INFO "), "info logs without -v:\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("stage") && lines.iter().any(|l| l.starts_with("total")), "{stdout}");
    assert!(lines.iter().any(|l| l.starts_with("uname -r: ")), "{stdout}");
    assert!(lines.last().unwrap().starts_with("artifacts: "), "{stdout}");
    let report = lines.iter().find_map(|l| l.strip_prefix("report: ")).unwrap_or_else(|| panic!("no report line: {stdout}"));
    let json = std::fs::read_to_string(std::path::Path::new(report).with_file_name("report.json")).unwrap();
    assert!(json.contains(r#""result": "passed""#) && json.contains(r#""name": "kernel → shell""#), "{json}");
}

/// A failed run ends with the line that reproduces it (artifacts, options, seed, `--keep`);
/// that line, run as it is, fails the same way.
#[test]
fn a_failure_ends_with_a_repro_line_that_fails_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-artifacts");
    let run = |args: &[&str]| {
        let out = Command::new(pxelab_bin()).args(args).env("PXELAB_RUNS_DIR", dir.path().join("runs")).output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing_arg = missing.display().to_string();
    let stderr = run(&["run", "install-default", "--artifacts", &missing_arg, "--seed", "7", "--loss", "5", "--nic", "e1000", "--disk-bus", "nvme"]);
    let last = stderr.lines().last().unwrap();
    let expected = format!("reproduce: pxelab run install-default --artifacts '{missing_arg}' --nic e1000 --disk-bus nvme --seed 7 --loss 5 --direction both --keep");
    assert_eq!(last, expected, "{stderr}");
    assert!(stderr.contains("stage 'build artifacts' failed"), "{stderr}");
    let words: Vec<String> = last.trim_start_matches("reproduce: pxelab ").split(' ').map(|w| w.trim_matches('\'').to_owned()).collect();
    let again = run(&words.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(again.contains("stage 'build artifacts' failed") && again.contains(&missing_arg), "{again}");
    assert_eq!(again.lines().last().unwrap(), expected, "the same run again: {again}");
}
