//! Named stages of a run, timed, and the table that reports them.

use std::fmt::Write;
use std::future::Future;
use std::time::{Duration, Instant};

/// A stage failed: which one, after how long, and why.
#[derive(Debug, thiserror::Error)]
#[error("stage '{stage}' failed after {elapsed:.1?}")]
pub struct StageError {
    pub stage: String,
    pub elapsed: Duration,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Times each stage of a run, in order.
#[derive(Debug)]
pub struct Stages {
    started: Instant,
    done: Vec<(String, Duration)>,
}

impl Default for Stages {
    fn default() -> Self {
        Stages { started: Instant::now(), done: Vec::new() }
    }
}

impl Stages {
    pub fn new() -> Self {
        Self::default()
    }

    /// Run one stage; its error is wrapped with the stage's name.
    pub async fn run<T, E>(&mut self, stage: &str, work: impl Future<Output = Result<T, E>>) -> Result<T, StageError>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        tracing::info!(stage, "stage started");
        let started = Instant::now();
        let result = work.await;
        let elapsed = started.elapsed();
        match result {
            Ok(value) => {
                self.done.push((stage.to_owned(), elapsed));
                Ok(value)
            }
            Err(e) => Err(StageError { stage: stage.to_owned(), elapsed, source: e.into() }),
        }
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

#[cfg(test)]
mod test {
    use super::*;

    #[tokio::test]
    async fn failing_stage_is_named_and_table_lists_done_ones() {
        let mut stages = Stages::new();
        stages.run("firmware", async { Ok::<_, std::io::Error>(()) }).await.unwrap();
        let err = stages.run("kernel", async { Err::<(), _>(std::io::Error::other("no kernel")) }).await.unwrap_err();
        assert_eq!(err.stage, "kernel");
        assert_eq!(err.source.to_string(), "no kernel");
        let table = stages.table();
        assert!(table.contains("firmware") && !table.contains("kernel"), "{table}");
        assert!(table.lines().last().unwrap().starts_with("total"));
    }
}
