//! `pxelab run NAME` with a name that is not a job, or a path, touches nothing on the host.

use std::process::Command;

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
        let out = Command::new(env!("CARGO_BIN_EXE_pxelab"))
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
