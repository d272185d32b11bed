//! `pxelab matrix`: artifact sets (one per release) × scenarios, each cell an install in a
//! lab of its own, with each stage's time against a baseline set's.
//!
//! The matrix file (TOML):
//!
//! ```toml
//! baseline = "busybox"          # the set others are compared against (default: the first)
//! parallel = 2                  # cells at once (default 2)
//! scenarios = ["install-default"]  # scenarios of `pxelab list` that take artifacts
//!
//! [[set]]
//! name = "busybox"
//! flavour = "busybox"           # or dir = "…", or nix-installer/nix-image (+ nixpkgs = "…")
//! ```

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::artifacts::{Cache, Provider};
use crate::jobs::{self, InstallOptions, Scenario};
use crate::lab::Lab;
use pxelab_fixtures::Compression;

/// A stage is a regression when it is this much slower than the baseline's, relatively…
pub const SLOWER_BY: f64 = 0.20;
/// …and absolutely.
pub const SLOWER_THAN: Duration = Duration::from_secs(2);

/// A matrix file.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matrix {
    /// The set the others are compared against (default: the first).
    pub baseline: Option<String>,
    #[serde(default = "two")]
    /// Cells run at once (default 2).
    pub parallel: usize,
    /// What each set runs.
    pub scenarios: Vec<CellScenario>,
    #[serde(rename = "set")]
    /// The artifact sets, one per release.
    pub sets: Vec<ArtifactSetSpec>,
}

fn two() -> usize {
    2
}

/// What a cell runs on its set's artifacts: a scenario of the registry that installs the
/// artifacts it is given ([`Scenario::takes_artifacts`]), named as `pxelab run` names it.
#[derive(Debug, Clone, Copy)]
pub struct CellScenario(pub &'static Scenario);

impl PartialEq for CellScenario {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for CellScenario {}

impl<'de> serde::Deserialize<'de> for CellScenario {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        let scenario = jobs::scenario(&name).map_err(serde::de::Error::custom)?;
        match scenario.takes_artifacts() {
            true => Ok(CellScenario(scenario)),
            false => {
                let fit: Vec<&str> = jobs::SCENARIOS.iter().filter(|s| s.takes_artifacts()).map(|s| s.name).collect();
                Err(serde::de::Error::custom(format!("{name} does not install a set's artifacts; a cell runs one of {}", fit.join(", "))))
            }
        }
    }
}

impl serde::Serialize for CellScenario {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.name)
    }
}

impl CellScenario {
    /// The scenario's name, as matrix files and `pxelab list` write it.
    pub fn name(self) -> &'static str {
        self.0.name
    }
}

/// One artifact set: a fixture flavour, a directory, or Nix expressions with their pin.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ArtifactSetSpec {
    /// The set's name (in cell names and tables).
    pub name: String,
    /// A fixture flavour: `busybox`, `nixos-shape` or `netboot-shape`.
    pub flavour: Option<String>,
    /// A directory of the user's artifacts.
    pub dir: Option<PathBuf>,
    /// `nix-build` this for the NFS root and boot loader (with `nix_image`).
    pub nix_installer: Option<PathBuf>,
    /// `nix-build` this for the image and config (with `nix_installer`).
    pub nix_image: Option<PathBuf>,
    /// `-I nixpkgs=<this>` for the set's `nix-build`s.
    pub nixpkgs: Option<String>,
}

/// A matrix file that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    #[error("cannot read the matrix file {}", path.display())]
    /// The file could not be read.
    Read {
        /// The matrix file.
        path: PathBuf,
        #[source]
        /// Why.
        source: std::io::Error,
    },
    #[error("the matrix file {} is not valid", path.display())]
    /// The file is not a valid matrix.
    Parse {
        /// The matrix file.
        path: PathBuf,
        #[source]
        /// Why.
        source: toml::de::Error,
    },
    #[error("matrix: {0}")]
    /// The matrix cannot run (the message says why).
    Invalid(String),
    #[error("matrix: cannot write {}", path.display())]
    /// An output could not be written.
    Write {
        /// The output.
        path: PathBuf,
        #[source]
        /// Why.
        source: std::io::Error,
    },
}

impl Matrix {
    /// Read and check a matrix file; relative paths in it are taken from its directory.
    pub fn load(path: &Path) -> Result<Self, MatrixError> {
        let text = std::fs::read_to_string(path).map_err(|source| MatrixError::Read { path: path.to_owned(), source })?;
        let mut matrix: Matrix = toml::from_str(&text).map_err(|source| MatrixError::Parse { path: path.to_owned(), source })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for set in &mut matrix.sets {
            for p in [&mut set.dir, &mut set.nix_installer, &mut set.nix_image].into_iter().flatten() {
                *p = base.join(&*p);
            }
        }
        matrix.check()?;
        Ok(matrix)
    }

    fn check(&self) -> Result<(), MatrixError> {
        let invalid = |why: String| Err(MatrixError::Invalid(why));
        if self.sets.is_empty() || self.scenarios.is_empty() {
            return invalid("it needs at least one [[set]] and one scenario".into());
        }
        for (i, set) in self.sets.iter().enumerate() {
            if self.sets[..i].iter().any(|s| s.name == set.name) {
                return invalid(format!("two sets are named {:?}", set.name));
            }
            let longest = jobs::SCENARIOS.iter().max_by_key(|s| s.name.len()).expect("scenarios");
            if !crate::lab::valid_name(&cell_name(&set.name, CellScenario(longest))) {
                return invalid(format!("set name {:?}: use letters, digits, '.', '_' and '-'", set.name));
            }
            set.provider()?;
        }
        if let Some(baseline) = &self.baseline {
            if !self.sets.iter().any(|s| &s.name == baseline) {
                return invalid(format!("the baseline {baseline:?} is not a set"));
            }
        }
        Ok(())
    }

    /// The set the others are compared against.
    pub fn baseline(&self) -> &str {
        self.baseline.as_deref().unwrap_or(&self.sets[0].name)
    }
}

impl ArtifactSetSpec {
    fn provider(&self) -> Result<Provider, MatrixError> {
        let invalid = |why: &str| MatrixError::Invalid(format!("set {:?}: {why}", self.name));
        match (&self.flavour, &self.dir, &self.nix_installer, &self.nix_image) {
            (Some(f), None, None, None) => match f.as_str() {
                "busybox" => Ok(Provider::Fixture { compression: Compression::Gzip }),
                "nixos-shape" => Ok(Provider::nixos_shape()),
                "netboot-shape" => Ok(Provider::NetbootShape),
                other => Err(invalid(&format!("no flavour {other:?} (busybox, nixos-shape, netboot-shape)"))),
            },
            (None, Some(dir), None, None) => Ok(Provider::Dir(dir.clone())),
            (None, None, Some(installer), Some(image)) => Ok(Provider::Nix { installer: installer.clone(), image: image.clone() }),
            _ => Err(invalid("give one of flavour, dir, or nix-installer with nix-image")),
        }
    }
}

fn cell_name(set: &str, scenario: CellScenario) -> String {
    format!("matrix-{set}-{}", scenario.name())
}

/// One cell's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Cell {
    /// The set's name.
    pub set: String,
    /// What it ran.
    pub scenario: CellScenario,
    /// Whether the install passed.
    pub passed: bool,
    /// The failing stage and its cause.
    pub failure: Option<(String, String)>,
    /// Wall time of the cell, in seconds.
    pub wall_secs: f64,
    /// Each completed stage and its time.
    pub stages: Vec<(String, f64)>,
    /// Stages slower than the baseline's past the threshold: stage, this, baseline.
    pub regressions: Vec<(String, f64, f64)>,
    /// The cell's report page.
    pub report: PathBuf,
}

/// The matrix's outcome.
#[derive(Debug, serde::Serialize)]
pub struct Outcome {
    /// The baseline set's name.
    pub baseline: String,
    /// Every cell, in the file's order.
    pub cells: Vec<Cell>,
}

impl Outcome {
    /// Whether every cell passed without a regression.
    pub fn ok(&self) -> bool {
        self.cells.iter().all(|c| c.passed && c.regressions.is_empty())
    }
}

/// Run every cell of `matrix`, `parallel` at once, after building each set once. Labs go
/// under `runs`.
pub async fn run(matrix: &Matrix, runs: &Path) -> Result<Outcome, MatrixError> {
    let cache = Cache::new(&Cache::default_root());
    for set in &matrix.sets {
        let provider = set.provider()?;
        let nixpkgs = set.nixpkgs.clone();
        // Builds block; they run apart from the runtime, one set after another.
        let cache = cache.clone();
        let built = tokio::task::spawn_blocking(move || with_nixpkgs(nixpkgs.as_deref(), || provider.provide(&cache).map(drop)))
            .await
            .map_err(|e| MatrixError::Invalid(e.to_string()))?;
        if let Err(e) = built {
            return Err(MatrixError::Invalid(format!("set {:?}: {}", set.name, crate::lab::chain(&e))));
        }
    }
    let cells = matrix.sets.iter().flat_map(|set| matrix.scenarios.iter().map(move |&scenario| (set, scenario)));
    let mut done: Vec<Cell> = futures::stream::iter(cells)
        .map(|(set, scenario)| run_cell(set, scenario, runs))
        .buffer_unordered(matrix.parallel.max(1))
        .collect()
        .await;
    let order = |c: &Cell| (matrix.sets.iter().position(|s| s.name == c.set), matrix.scenarios.iter().position(|s| *s == c.scenario));
    done.sort_by_key(order);
    let baseline = matrix.baseline().to_owned();
    let base: Vec<Cell> = done.iter().filter(|c| c.set == baseline).cloned().collect();
    for cell in done.iter_mut().filter(|c| c.set != baseline) {
        if let Some(b) = base.iter().find(|b| b.scenario == cell.scenario && b.passed) {
            cell.regressions = regressions(&cell.stages, &b.stages);
        }
    }
    Ok(Outcome { baseline, cells: done })
}

/// `nix-build` reads `NIX_PATH`: the set's pin goes there while its artifacts are built.
fn with_nixpkgs<T>(nixpkgs: Option<&str>, build: impl FnOnce() -> T) -> T {
    match nixpkgs {
        None => build(),
        Some(pin) => {
            let before = std::env::var_os("NIX_PATH");
            // SAFETY: set while this process runs no other thread that reads the environment
            // (builds are one at a time, before any cell starts).
            unsafe { std::env::set_var("NIX_PATH", format!("nixpkgs={pin}")) };
            let out = build();
            match before {
                // SAFETY: as above.
                Some(v) => unsafe { std::env::set_var("NIX_PATH", v) },
                None => unsafe { std::env::remove_var("NIX_PATH") },
            }
            out
        }
    }
}

async fn run_cell(set: &ArtifactSetSpec, scenario: CellScenario, runs: &Path) -> Cell {
    let name = cell_name(&set.name, scenario);
    let started = Instant::now();
    let mut cell = Cell {
        set: set.name.clone(),
        scenario,
        passed: false,
        failure: None,
        wall_secs: 0.0,
        stages: Vec::new(),
        regressions: Vec::new(),
        report: runs.join(&name).join("report.html"),
    };
    let mut lab = match Lab::in_dir(runs, &name) {
        Ok(lab) => lab,
        Err(e) => {
            cell.failure = Some(("lab".into(), e.to_string()));
            return cell;
        }
    };
    let provider = set.provider().expect("checked when loaded");
    match scenario.0.run(&mut lab, InstallOptions::default(), Some(provider)).await {
        Ok(report) => {
            cell.passed = true;
            cell.stages = report.stages.durations().iter().map(|(s, d)| (s.clone(), d.as_secs_f64())).collect();
        }
        Err(e) => cell.failure = Some((e.stage.clone(), crate::lab::chain(&e))),
    }
    cell.wall_secs = started.elapsed().as_secs_f64();
    if let Err(e) = lab.write_report() {
        tracing::warn!("{name}: cannot write the report: {e}");
    }
    cell
}

/// Stages of `cell` slower than the same stage of `base` by more than [`SLOWER_BY`] and
/// [`SLOWER_THAN`].
pub fn regressions(cell: &[(String, f64)], base: &[(String, f64)]) -> Vec<(String, f64, f64)> {
    cell.iter()
        .filter_map(|(stage, secs)| {
            let (_, was) = base.iter().find(|(s, _)| s == stage)?;
            (*secs > was * (1.0 + SLOWER_BY) && secs - was > SLOWER_THAN.as_secs_f64()).then(|| (stage.clone(), *secs, *was))
        })
        .collect()
}

impl Outcome {
    /// A Markdown table (for a terminal, or a CI step summary): a row per cell.
    pub fn markdown(&self) -> String {
        let mut out = format!("| set | scenario | result | wall | slower than {} (>{:.0} % and >{} s) | report |\n|---|---|---|---|---|---|\n", self.baseline, SLOWER_BY * 100.0, SLOWER_THAN.as_secs());
        for c in &self.cells {
            let result = match &c.failure {
                None => "passed".to_owned(),
                Some((stage, _)) => format!("**failed** in {stage}"),
            };
            let slower = match (c.set == self.baseline, c.regressions.is_empty()) {
                (true, _) => "(baseline)".to_owned(),
                (false, true) => "none".to_owned(),
                (false, false) => c.regressions.iter().map(|(s, now, was)| format!("**{s}** {now:.1} s vs {was:.1} s")).collect::<Vec<_>>().join("; "),
            };
            let _ = writeln!(out, "| {} | {} | {result} | {:.1} s | {slower} | {} |", c.set, c.scenario.name(), c.wall_secs, c.report.display());
        }
        out.push_str("\nStage times (s):\n\n");
        let mut stages: Vec<&str> = Vec::new();
        for c in &self.cells {
            for (s, _) in &c.stages {
                if !stages.contains(&s.as_str()) {
                    stages.push(s);
                }
            }
        }
        let _ = writeln!(out, "| stage | {} |", self.cells.iter().map(|c| format!("{} {}", c.set, c.scenario.name())).collect::<Vec<_>>().join(" | "));
        let _ = writeln!(out, "|---|{}", "---|".repeat(self.cells.len()));
        for stage in stages {
            let row: Vec<String> = self.cells.iter().map(|c| c.stages.iter().find(|(s, _)| s == stage).map_or("–".into(), |(_, t)| format!("{t:.1}"))).collect();
            let _ = writeln!(out, "| {stage} | {} |", row.join(" | "));
        }
        out
    }

    /// JUnit XML: a test case per cell; a failure or a regression fails it.
    pub fn junit(&self) -> String {
        use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
        let mut report = Report::new("pxelab-matrix");
        let mut suite = TestSuite::new("matrix");
        for c in &self.cells {
            let status = match (&c.failure, c.regressions.is_empty()) {
                (None, true) => TestCaseStatus::success(),
                (Some((stage, cause)), _) => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(format!("failed in stage {stage}")).set_description(cause.clone());
                    s
                }
                (None, false) => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    let slower: Vec<String> = c.regressions.iter().map(|(s, now, was)| format!("{s}: {now:.1} s vs {was:.1} s")).collect();
                    s.set_message(format!("slower than {}: {}", self.baseline, slower.join("; ")));
                    s
                }
            };
            let mut case = TestCase::new(format!("{}::{}", c.set, c.scenario.name()), status);
            case.set_time(Duration::from_secs_f64(c.wall_secs));
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
        report.to_string().unwrap_or_default()
    }

    /// Write `matrix.md`, `matrix.json` and `junit.xml` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), MatrixError> {
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|source| MatrixError::Write { path, source })
        };
        write("matrix.md", self.markdown())?;
        write("matrix.json", serde_json::to_string_pretty(self).unwrap_or_default())?;
        write("junit.xml", self.junit())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_stage_regresses_only_past_both_thresholds() {
        let base = [("boot".to_owned(), 10.0), ("unpack".to_owned(), 1.0), ("login".to_owned(), 5.0)];
        let cell = [("boot".to_owned(), 12.5), ("unpack".to_owned(), 2.9), ("login".to_owned(), 5.5), ("new".to_owned(), 9.0)];
        // boot: +25 % and +2.5 s; unpack: +190 % but +1.9 s; login: +10 %; new: no baseline.
        assert_eq!(regressions(&cell, &base), [("boot".to_owned(), 12.5, 10.0)]);
    }

    #[test]
    fn a_matrix_file_is_checked_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.toml");
        let load = |text: &str| {
            std::fs::write(&file, text).unwrap();
            Matrix::load(&file)
        };
        let ok = load("scenarios = [\"install-default\"]\n[[set]]\nname = \"a\"\nflavour = \"busybox\"\n[[set]]\nname = \"b\"\ndir = \"rel\"\n").unwrap();
        assert_eq!((ok.baseline(), ok.parallel), ("a", 2));
        assert_eq!(ok.sets[1].dir.as_deref(), Some(dir.path().join("rel").as_path()), "relative to the file");
        let err = |text: &str| load(text).unwrap_err().to_string();
        assert!(err("scenarios = [\"install-default\"]\n[[set]]\nname = \"a\"\nflavour = \"plan9\"\n").contains("no flavour \"plan9\""));
        assert!(err("scenarios = [\"install-default\"]\n[[set]]\nname = \"a\"\n").contains("give one of flavour, dir"));
        assert!(err("scenarios = [\"install-default\"]\nbaseline = \"z\"\n[[set]]\nname = \"a\"\nflavour = \"busybox\"\n").contains("baseline \"z\" is not a set"));
        assert!(err("scenarios = [\"install-default\"]\n[[set]]\nname = \"../x\"\nflavour = \"busybox\"\n").contains("set name"));
        assert!(err("scenarios = [\"reboot\"]\n[[set]]\nname = \"a\"\nflavour = \"busybox\"\n").contains("not valid"));
        let cli_only = err("scenarios = [\"uefi-boot\"]\n[[set]]\nname = \"a\"\nflavour = \"busybox\"\n");
        assert!(cli_only.contains("not valid"), "{cli_only}");
    }
}
