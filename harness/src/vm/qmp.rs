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
        let handshake = async {
            let negotiation = QmpStreamTokio::open(stream).await?;
            negotiation.negotiate().await
        };
        let stream = match tokio::time::timeout(REPLY_TIMEOUT, handshake).await {
            Ok(negotiated) => negotiated.map_err(QmpError::Handshake)?,
            Err(_) => return Err(QmpError::Handshake(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("QEMU did not greet within {REPLY_TIMEOUT:?}")))),
        };
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
        let info = answered("query-status", self.service.execute(qmp::query_status {})).await?;
        Ok(serde_json::to_value(info.status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default())
    }

    /// Press the reset button.
    pub async fn system_reset(&self) -> Result<(), QmpError> {
        answered("system_reset", self.service.execute(qmp::system_reset {})).await?;
        Ok(())
    }

    /// Press the power button (ACPI): a guest that handles it shuts down cleanly.
    pub async fn system_powerdown(&self) -> Result<(), QmpError> {
        answered("system_powerdown", self.service.execute(qmp::system_powerdown {})).await?;
        Ok(())
    }

    /// Stop QEMU at once.
    pub async fn quit(&self) -> Result<(), QmpError> {
        // QEMU may close the socket before answering; that is success too.
        let _ = answered("quit", self.service.execute(qmp::quit {})).await;
        Ok(())
    }

    /// Pause the guest.
    pub async fn stop(&self) -> Result<(), QmpError> {
        answered("stop", self.service.execute(qmp::stop {})).await?;
        Ok(())
    }

    /// Resume a paused guest (after an outgoing migration too).
    pub async fn cont(&self) -> Result<(), QmpError> {
        answered("cont", self.service.execute(qmp::cont {})).await?;
        Ok(())
    }

    /// Migrate the machine's state to `uri` (`exec:cat > file`) and wait until it is written.
    pub async fn migrate(&self, uri: &str, timeout: Duration) -> Result<(), QmpError> {
        let migrate = qmp::migrate { uri: Some(uri.to_owned()), channels: None, detach: None, resume: None };
        answered("migrate", self.service.execute(migrate)).await?;
        let deadline = Instant::now() + timeout;
        loop {
            let info = answered("query-migrate", self.service.execute(qmp::query_migrate {})).await?;
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

/// How long QEMU may take to answer on its monitor: milliseconds, unless its main loop is
/// stuck, which then fails the VM's stage with this command named rather than hanging it.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// QEMU's answer to `command`, or why there is none.
async fn answered<T>(command: &'static str, reply: impl std::future::Future<Output = Result<T, qapi::ExecuteError>>) -> Result<T, QmpError> {
    match tokio::time::timeout(REPLY_TIMEOUT, reply).await {
        Ok(answer) => answer.map_err(|e| QmpError::Command { command, message: e.to_string() }),
        Err(_) => Err(QmpError::Command { command, message: format!("QEMU did not answer within {REPLY_TIMEOUT:?}") }),
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    /// A QEMU whose monitor greets and takes `qmp_capabilities`, then answers nothing.
    async fn mute_after_handshake(stream: UnixStream) {
        let (read, mut write) = tokio::io::split(stream);
        write.write_all(b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, \"package\": \"\"}, \"capabilities\": []}}\n").await.unwrap();
        let mut lines = BufReader::new(read).lines();
        let first = lines.next_line().await.unwrap().unwrap();
        let command: serde_json::Value = serde_json::from_str(&first).unwrap();
        assert_eq!(command["execute"], "qmp_capabilities");
        let reply = serde_json::json!({"return": {}, "id": command["id"]});
        write.write_all(format!("{reply}\n").as_bytes()).await.unwrap();
        while lines.next_line().await.unwrap().is_some() {}
    }

    #[tokio::test(start_paused = true)]
    async fn a_monitor_that_never_greets_fails_the_handshake_in_time() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let started = Instant::now();
        let err = Qmp::connect(ours).await.err().expect("no greeting");
        assert!(std::error::Error::source(&err).unwrap().to_string().contains("QEMU did not greet within 60s"), "{err:?}");
        assert_eq!(started.elapsed(), REPLY_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_command_qemu_never_answers_fails_naming_it() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        tokio::spawn(mute_after_handshake(theirs));
        let qmp = Qmp::connect(ours).await.unwrap();
        let started = Instant::now();
        let err = qmp.stop().await.unwrap_err().to_string();
        assert_eq!(err, "QMP command stop failed: QEMU did not answer within 60s");
        assert_eq!(started.elapsed(), REPLY_TIMEOUT);
    }
}
