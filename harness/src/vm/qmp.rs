//! QMP, QEMU's control protocol, on the VM's QMP socket (via the `qapi` crate).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use qapi::futures::{QapiService, QmpStreamTokio};
use qapi::qmp;
use tokio::io::WriteHalf;
use tokio::net::UnixStream;
use tokio::sync::Notify;
use tokio::time::Instant;

type Service = QapiService<QmpStreamTokio<WriteHalf<UnixStream>>>;

/// A QMP event as pxelab reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QmpEvent {
    /// The guest shut down (power off, or reboot with `-no-reboot`).
    Shutdown,
    /// The machine reset (a guest reboot, or `system_reset`).
    Reset,
}

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP handshake failed")]
    Handshake(#[source] std::io::Error),
    #[error("QMP command {command} failed: {message}")]
    Command { command: &'static str, message: String },
    #[error("timed out after {0:.1?} waiting for QMP event {1:?}")]
    EventTimeout(Duration, QmpEvent),
}

#[derive(Default)]
struct Events {
    seen: Mutex<Vec<QmpEvent>>,
    changed: Notify,
}

/// A negotiated QMP connection; a task collects events in the background.
pub struct Qmp {
    service: Service,
    events: Arc<Events>,
}

impl Qmp {
    /// Negotiate capabilities on a connected QMP socket.
    pub async fn connect(stream: UnixStream) -> Result<Self, QmpError> {
        let negotiation = QmpStreamTokio::open(stream).await.map_err(QmpError::Handshake)?;
        let stream = negotiation.negotiate().await.map_err(QmpError::Handshake)?;
        let (service, mut incoming) = stream.into_parts();
        let events = Arc::new(Events::default());
        let sink = events.clone();
        tokio::spawn(async move {
            while let Some(Ok(event)) = incoming.next().await {
                let event = match event {
                    qmp::Event::SHUTDOWN { .. } => QmpEvent::Shutdown,
                    qmp::Event::RESET { .. } => QmpEvent::Reset,
                    _ => continue,
                };
                sink.seen.lock().expect("events lock").push(event);
                sink.changed.notify_waiters();
            }
        });
        Ok(Qmp { service, events })
    }

    /// The run state QEMU reports (`running`, `paused`, `shutdown`, …).
    pub async fn status(&self) -> Result<String, QmpError> {
        let info = self.service.execute(qmp::query_status {}).await.map_err(|e| command_error("query-status", e))?;
        Ok(serde_json::to_value(info.status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default())
    }

    /// Press the reset button.
    pub async fn system_reset(&self) -> Result<(), QmpError> {
        self.service.execute(qmp::system_reset {}).await.map_err(|e| command_error("system_reset", e))?;
        Ok(())
    }

    /// Press the power button (ACPI): a guest that handles it shuts down cleanly.
    pub async fn system_powerdown(&self) -> Result<(), QmpError> {
        self.service.execute(qmp::system_powerdown {}).await.map_err(|e| command_error("system_powerdown", e))?;
        Ok(())
    }

    /// Stop QEMU at once.
    pub async fn quit(&self) -> Result<(), QmpError> {
        // QEMU may close the socket before answering; that is success too.
        let _ = self.service.execute(qmp::quit {}).await;
        Ok(())
    }

    /// Pause the guest.
    pub async fn stop(&self) -> Result<(), QmpError> {
        self.service.execute(qmp::stop {}).await.map_err(|e| command_error("stop", e))?;
        Ok(())
    }

    /// Resume a paused guest (after an outgoing migration too).
    pub async fn cont(&self) -> Result<(), QmpError> {
        self.service.execute(qmp::cont {}).await.map_err(|e| command_error("cont", e))?;
        Ok(())
    }

    /// Migrate the machine's state to `uri` (`exec:cat > file`) and wait until it is written.
    pub async fn migrate(&self, uri: &str, timeout: Duration) -> Result<(), QmpError> {
        let migrate = qmp::migrate { uri: Some(uri.to_owned()), channels: None, detach: None, resume: None };
        self.service.execute(migrate).await.map_err(|e| command_error("migrate", e))?;
        let deadline = Instant::now() + timeout;
        loop {
            let info = self.service.execute(qmp::query_migrate {}).await.map_err(|e| command_error("query-migrate", e))?;
            match info.status {
                Some(qmp::MigrationStatus::completed) => return Ok(()),
                Some(qmp::MigrationStatus::failed | qmp::MigrationStatus::cancelled) => {
                    let message = info.error_desc.unwrap_or_else(|| "no reason given".into());
                    return Err(QmpError::Command { command: "migrate", message });
                }
                _ if Instant::now() > deadline => {
                    return Err(QmpError::Command { command: "migrate", message: format!("not done after {timeout:?}") })
                }
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// How many times `event` has been seen since QEMU started.
    pub fn count(&self, event: QmpEvent) -> usize {
        self.events.seen.lock().expect("events lock").iter().filter(|&&e| e == event).count()
    }

    /// Wait until `event` has been seen more than `seen_before` times.
    pub async fn wait_for_event(&self, event: QmpEvent, seen_before: usize, timeout: Duration) -> Result<(), QmpError> {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.events.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.count(event) > seen_before {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(QmpError::EventTimeout(timeout, event));
            }
        }
    }
}

fn command_error(command: &'static str, e: qapi::ExecuteError) -> QmpError {
    QmpError::Command { command, message: e.to_string() }
}
