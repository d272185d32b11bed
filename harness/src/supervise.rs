//! Server tasks that report how they ended: a lab's servers must run as long as the lab, so
//! a task that returns, fails or panics is a failure every current wait sees at once
//! (console and event waits alike), naming the service and the cause.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A lab service stopped while it should have been running.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the lab's {service} server stopped: {cause}")]
pub struct ServiceFailure {
    pub service: String,
    pub cause: String,
}

/// What a wait watches: the first failure, once there is one.
pub type FailureWatch = watch::Receiver<Option<ServiceFailure>>;

/// Resolve once `watch` reports a failure (never, if its supervisor is gone without one).
pub async fn failed(watch: &mut FailureWatch) -> ServiceFailure {
    loop {
        if let Some(failure) = watch.borrow_and_update().clone() {
            return failure;
        }
        if watch.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Spawns a lab's server tasks and aborts them when dropped.
#[derive(Debug)]
pub struct Supervisor {
    failure: Arc<watch::Sender<Option<ServiceFailure>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor { failure: Arc::new(watch::channel(None).0), tasks: Mutex::default() }
    }
}

impl Supervisor {
    /// A receiver of the first failure.
    pub fn watch(&self) -> FailureWatch {
        self.failure.subscribe()
    }

    /// Run `work` as the server `service`; its end (an error, a return, a panic) is a
    /// failure. Returns the task's handle so that a deliberate stop can abort it.
    pub fn spawn<F>(&self, service: &str, work: F) -> tokio::task::AbortHandle
    where
        F: Future<Output = std::io::Result<()>> + Send + 'static,
    {
        let (failure, service) = (self.failure.clone(), service.to_owned());
        let task = tokio::spawn(async move {
            let cause = match AssertUnwindSafe(work).catch_unwind().await {
                Ok(Ok(())) => "it returned".to_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(panic) => format!("it panicked: {}", panic_message(&*panic)),
            };
            tracing::error!("{service} server stopped: {cause}");
            failure.send_if_modified(|first| {
                first.is_none().then(|| *first = Some(ServiceFailure { service, cause })).is_some()
            });
        });
        let abort = task.abort_handle();
        self.tasks.lock().expect("tasks lock").push(task);
        abort
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        for task in self.tasks.lock().expect("tasks lock").drain(..) {
            task.abort();
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_owned(),
        (_, Some(s)) => s.clone(),
        _ => "(no message)".to_owned(),
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_panic_or_an_error_is_reported_once_with_its_cause() {
        let supervisor = Supervisor::default();
        let mut watch = supervisor.watch();
        supervisor.spawn("tftp", std::future::pending());
        supervisor.spawn("dhcp", async { panic!("index out of range") });
        let first = tokio::time::timeout(Duration::from_secs(5), failed(&mut watch)).await.unwrap();
        assert_eq!(first, ServiceFailure { service: "dhcp".into(), cause: "it panicked: index out of range".into() });
        supervisor.spawn("nfs", async { Err(std::io::Error::other("listener gone")) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(failed(&mut watch).await.service, "dhcp", "the first failure stays");
    }

    #[tokio::test]
    async fn an_aborted_task_is_not_a_failure() {
        let supervisor = Supervisor::default();
        let mut watch = supervisor.watch();
        supervisor.spawn("tftp", std::future::pending()).abort();
        assert!(tokio::time::timeout(Duration::from_millis(200), failed(&mut watch)).await.is_err());
    }
}
