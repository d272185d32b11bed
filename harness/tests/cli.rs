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
        assert!(stderr.contains("no scenario named"), "{name:?}: {stderr}");
    }
    assert_eq!(std::fs::read_to_string(victim.join("canary")).unwrap(), "keep");
    assert_eq!(std::fs::read_to_string(runs.join("canary")).unwrap(), "keep");
    assert_eq!(std::fs::read_dir(&runs).unwrap().count(), 1, "no run directory was made");
}

/// `pxelab list` lists the registry's scenarios, each once, and `pxelab run` takes each name
/// it lists; a scenario with artifacts of its own refuses given ones before anything runs.
#[test]
fn list_and_run_name_the_registrys_scenarios() {
    let out = Command::new(pxelab_bin()).arg("list").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let listed: Vec<&str> = stdout.lines().filter_map(|l| l.split_whitespace().next()).collect();
    let registry: Vec<&str> = pxelab::jobs::SCENARIOS.iter().map(|s| s.name).collect();
    assert_eq!(listed, registry, "{stdout}");
    let runs = tempfile::tempdir().unwrap();
    let out = Command::new(pxelab_bin())
        .args(["run", "install-nixos-shape", "--artifacts", "/nonexistent"])
        .env("PXELAB_RUNS_DIR", runs.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("stage 'select job' failed"), "{stderr}");
    assert!(stderr.contains("install-nixos-shape builds its own artifacts"), "{stderr}");
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

/// `pxelab cache` lists `PXELAB_CACHE_DIR`'s entries least recently used first; `prune
/// --dry-run` names the stale ones and removes nothing; `prune` removes only them.
#[test]
fn cache_lists_by_last_use_and_prunes_only_what_went_unused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    for name in ["old-0123456789abcdef", "new-0123456789abcdef"] {
        std::fs::create_dir_all(cache.join(name)).unwrap();
        std::fs::write(cache.join(name).join("file"), vec![1u8; 100_000]).unwrap();
    }
    std::fs::write(cache.join("CACHEDIR.TAG"), "Signature: 8a477f597d28d172789f06886806bc55\n").unwrap();
    let forty_days = std::time::Duration::from_secs(40 * 86_400);
    std::fs::File::open(cache.join("old-0123456789abcdef")).unwrap().set_modified(std::time::SystemTime::now() - forty_days).unwrap();
    let pxelab = |args: &[&str]| {
        let out = Command::new(pxelab_bin()).args(args).env("PXELAB_CACHE_DIR", &cache).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed = pxelab(&["cache"]);
    let (old, new) = (listed.find("old-0123456789abcdef").unwrap(), listed.find("new-0123456789abcdef").unwrap());
    assert!(old < new, "least recently used first:\n{listed}");
    assert!(listed.contains("40 d ago") && listed.contains("in 2 entries"), "{listed}");
    let dry = pxelab(&["cache", "prune", "--dry-run"]);
    assert!(dry.contains("would remove 1 entry unused for over 30 days") && dry.contains("old-0123456789abcdef") && !dry.contains("new-"), "{dry}");
    assert!(cache.join("old-0123456789abcdef").exists(), "a dry run removes nothing");
    let pruned = pxelab(&["cache", "prune", "--unused-for-days", "30"]);
    assert!(pruned.contains("removed 1 entry"), "{pruned}");
    let mut left: Vec<_> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().file_name()).collect();
    left.sort();
    assert_eq!(left, ["CACHEDIR.TAG", "new-0123456789abcdef"]);
}
