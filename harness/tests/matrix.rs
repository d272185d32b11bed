//! `pxelab matrix` on the example file: two artifact sets that differ (the busybox fixture and
//! the upstream-shaped nixos-shape flavour), each installed once, side by side.

use std::process::Command;

/// The `pxelab` binary: where nextest says at run time (a test archive run elsewhere), else
/// where Cargo built it.
fn pxelab_bin() -> std::path::PathBuf {
    std::env::var_os("NEXTEST_BIN_EXE_pxelab").map_or_else(|| env!("CARGO_BIN_EXE_pxelab").into(), Into::into)
}

#[test]
fn the_example_matrix_runs_both_sets_and_flags_the_slower_stages() {
    let runs = tempfile::tempdir().unwrap();
    // The working directory is the crate's (nextest sets it, in an archive run too).
    let example = std::path::Path::new("../ci/matrix-example.toml");
    let out = Command::new(pxelab_bin()).arg("matrix").arg(example).env("PXELAB_RUNS_DIR", runs.path()).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // The nixos-shape image is ten times the busybox one and boots systemd: some of its
    // stages are past the threshold, and a regression fails the matrix.
    assert!(!out.status.success() && stderr.contains("a cell failed or regressed"), "{stdout}\n{stderr}");

    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(runs.path().join("matrix.json")).unwrap()).unwrap();
    assert_eq!(json["baseline"], "busybox");
    let cells = json["cells"].as_array().unwrap();
    assert_eq!(cells.iter().map(|c| c["set"].as_str().unwrap()).collect::<Vec<_>>(), ["busybox", "nixos-shape"], "{json}");
    for cell in cells {
        assert_eq!(cell["passed"], true, "{cell}");
        assert!(cell["stages"].as_array().unwrap().len() > 15, "{cell}");
        assert!(std::path::Path::new(cell["report"].as_str().unwrap()).is_file(), "each cell has its report");
    }
    assert!(cells[0]["regressions"].as_array().unwrap().is_empty(), "the baseline is not compared");
    let slower: Vec<&str> = cells[1]["regressions"].as_array().unwrap().iter().map(|r| r[0].as_str().unwrap()).collect();
    assert!(slower.contains(&"installer: unpack image"), "{slower:?}");

    let md = std::fs::read_to_string(runs.path().join("matrix.md")).unwrap();
    assert!(md.contains("| busybox | install-default | passed |") && md.contains("(baseline)"), "{md}");
    assert!(md.contains("| nixos-shape | install-default | passed |") && md.contains("**installer: unpack image**"), "{md}");
    assert!(stdout.contains(&md.lines().next().unwrap().to_owned()), "the table is on the terminal too");
    let junit = std::fs::read_to_string(runs.path().join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<testcase ").count(), 2, "{junit}");
    assert!(junit.contains(r#"name="nixos-shape::install-default""#) && junit.contains("slower than busybox: "), "{junit}");
}
