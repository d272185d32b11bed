//! Named stages of a run, timed, and the table that reports them.

use std::fmt::Write;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A stage failed: which one, after how long, and why.
#[derive(Debug, thiserror::Error)]
#[error("stage '{stage}' failed after {elapsed:.1?}{}", triage.as_deref().map(|t| format!("\n{t}")).unwrap_or_default())]
pub struct StageError {
    pub stage: String,
    pub elapsed: Duration,
    /// Whether the host let the guest run during the stage, and how close the stage came to
    /// its budget ([`Stages::watch`]): an infrastructure problem told from a product bug.
    pub triage: Option<String>,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Samples the VM's process for [`StageError::triage`]; the accelerator's name.
pub type HostWatch = (Arc<dyn Fn() -> Option<crate::vm::HostSample> + Send + Sync>, String);
/// A stage's budget by its name, when it has one.
pub type BudgetOf = Arc<dyn Fn(&str) -> Option<Duration> + Send + Sync>;

/// One stage as it ran, on its lab's clock (time since the lab started).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StageRecord {
    pub name: String,
    #[serde(serialize_with = "seconds")]
    pub start: Duration,
    #[serde(serialize_with = "seconds")]
    pub end: Duration,
    /// Why it failed (the whole error chain); `None` when it passed.
    pub error: Option<String>,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

/// What a lab's runs recorded: every stage of every [`Stages`] made by the lab, and the facts
/// the jobs read from the guests. The run report is written from it.
#[derive(Debug, Default)]
pub struct RunLog {
    pub stages: Vec<StageRecord>,
    pub facts: Vec<(String, String)>,
}

impl RunLog {
    /// Every stage run so far, the failed one too: how long each took, when it ended since
    /// the lab started, and `FAILED` against the one that failed. What a failed run prints
    /// beside its error.
    pub fn table(&self) -> String {
        let width = self.stages.iter().map(|s| s.name.chars().count()).max().unwrap_or(5).max(5);
        let mut out = format!("{:<width$}  {:>9}  {:>9}", "stage", "took", "at");
        for stage in &self.stages {
            let took = stage.end.saturating_sub(stage.start).as_secs_f64();
            let mark = if stage.error.is_some() { "  FAILED" } else { "" };
            let _ = write!(out, "\n{:<width$}  {took:>8.2}s  {:>8.2}s{mark}", stage.name, stage.end.as_secs_f64());
        }
        out
    }
}

impl StageError {
    /// `stage` failed with `cause` before it started any work.
    pub fn before(stage: impl AsRef<str>, cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        StageError { stage: stage.as_ref().to_owned(), elapsed: Duration::ZERO, triage: None, source: cause.into() }
    }
}

/// Times each stage of a run, in order.
pub struct Stages {
    epoch: Instant,
    started: Instant,
    done: Vec<(String, Duration)>,
    log: Arc<Mutex<RunLog>>,
    /// Put before each stage's name in the log (`client-2: `), for runs of several clients.
    prefix: String,
    watch: Option<HostWatch>,
    budget_of: Option<BudgetOf>,
}

impl std::fmt::Debug for Stages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stages").field("done", &self.done).field("prefix", &self.prefix).field("watched", &self.watch.is_some()).finish()
    }
}

impl Default for Stages {
    fn default() -> Self {
        Stages::recording(Instant::now(), Arc::default())
    }
}

impl Stages {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stages that also record into `log`, timed from `epoch` (see [`crate::lab::Lab::stages`]).
    pub fn recording(epoch: Instant, log: Arc<Mutex<RunLog>>) -> Self {
        Stages { epoch, started: Instant::now(), done: Vec::new(), log, prefix: String::new(), watch: None, budget_of: None }
    }

    /// Sample the VM's process at each stage's start and end, and say in a failed stage's
    /// error whether the host let the guest run, and how much of its budget it used.
    pub fn watch(&mut self, watch: HostWatch, budget_of: BudgetOf) {
        self.watch = Some(watch);
        self.budget_of = Some(budget_of);
    }

    /// Log each stage as `<prefix>: <stage>`.
    pub fn prefixed(mut self, prefix: &str) -> Self {
        self.prefix = format!("{prefix}: ");
        self
    }

    /// Run one stage; its error is wrapped with the stage's name.
    pub async fn run<T, E>(&mut self, stage: impl AsRef<str>, work: impl Future<Output = Result<T, E>>) -> Result<T, StageError>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stage = stage.as_ref();
        let name = format!("{}{stage}", self.prefix);
        tracing::info!(stage = %name, "stage started");
        let started = Instant::now();
        let sampled = self.watch.as_ref().and_then(|(sample, _)| sample());
        let result = work.await;
        let elapsed = started.elapsed();
        let (start, end) = (started - self.epoch, started - self.epoch + elapsed);
        let mut record = StageRecord { name: name.clone(), start, end, error: None };
        let outcome = match result {
            Ok(value) => {
                self.done.push((stage.to_owned(), elapsed));
                Ok(value)
            }
            Err(e) => {
                let mut triage = match (&self.watch, sampled) {
                    (Some((sample, accel)), Some(before)) => sample().map(|after| before.triage(&after, elapsed, accel)),
                    _ => None,
                };
                if let Some(budget) = self.budget_of.as_ref().and_then(|b| b(stage)) {
                    let used = format!("the stage used {:.0} % of its {:.0?} budget", 100.0 * elapsed.as_secs_f64() / budget.as_secs_f64().max(0.001), budget);
                    triage = Some(triage.map_or(used.clone(), |t| format!("{t}; {used}")));
                }
                let error = StageError { stage: name, elapsed, triage, source: e.into() };
                let why = chain(error.source.as_ref());
                record.error = Some(error.triage.as_ref().map_or(why.clone(), |t| format!("{why}\n{t}")));
                Err(error)
            }
        };
        self.log.lock().expect("run log lock").stages.push(record);
        outcome
    }

    /// Record what the run read from a guest (it goes into the run's report).
    pub fn fact(&self, what: &str, value: &str) {
        self.log.lock().expect("run log lock").facts.push((what.to_owned(), value.to_owned()));
    }

    /// Completed stages and their durations.
    pub fn durations(&self) -> &[(String, Duration)] {
        &self.done
    }

    /// A table of stage, duration and time since the start.
    pub fn table(&self) -> String {
        let width = self.done.iter().map(|(s, _)| s.len()).max().unwrap_or(5).max(5);
        let mut out = format!("{:<width$}  {:>9}  {:>9}\n", "stage", "took", "at");
        let mut at = Duration::ZERO;
        for (stage, took) in &self.done {
            at += *took;
            let _ = writeln!(out, "{stage:<width$}  {:>8.2}s  {:>8.2}s", took.as_secs_f64(), at.as_secs_f64());
        }
        let _ = write!(out, "{:<width$}  {:>8.2}s", "total", self.started.elapsed().as_secs_f64());
        out
    }
}

/// An error and its sources, one per line.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let _ = write!(text, "\n{e}");
        source = e.source();
    }
    text
}

#[cfg(test)]
mod test {
    use super::*;

    /// A failed run's table lists the stages that passed and marks the one that failed.
    #[test]
    fn the_run_logs_table_marks_the_failed_stage() {
        let stage = |name: &str, start: u64, end: u64, error: Option<&str>| StageRecord {
            name: name.into(),
            start: Duration::from_millis(start),
            end: Duration::from_millis(end),
            error: error.map(str::to_owned),
        };
        let log = RunLog { stages: vec![stage("firmware → DHCP", 100, 2_100, None), stage("TFTP: GRUB", 2_100, 9_600, Some("timed out"))], facts: vec![] };
        assert_eq!(
            log.table(),
            "stage                 took         at\nfirmware → DHCP      2.00s      2.10s\nTFTP: GRUB           7.50s      9.60s  FAILED"
        );
    }

    #[tokio::test]
    async fn failing_stage_is_named_and_table_lists_done_ones() {
        let log = Arc::new(Mutex::new(RunLog::default()));
        let mut stages = Stages::recording(Instant::now(), log.clone());
        stages.run("firmware", async { Ok::<_, std::io::Error>(()) }).await.unwrap();
        let err = stages.run("kernel", async { Err::<(), _>(std::io::Error::other("no kernel")) }).await.unwrap_err();
        assert_eq!(err.stage, "kernel");
        assert_eq!(err.source.to_string(), "no kernel");
        let table = stages.table();
        assert!(table.contains("firmware") && !table.contains("kernel"), "{table}");
        assert!(table.lines().last().unwrap().starts_with("total"));
        let log = log.lock().unwrap();
        let recorded: Vec<_> = log.stages.iter().map(|s| (s.name.as_str(), s.error.as_deref())).collect();
        assert_eq!(recorded, [("firmware", None), ("kernel", Some("no kernel"))]);
        assert!(log.stages[0].end <= log.stages[1].start);
    }
}
