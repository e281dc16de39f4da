//! Creates started over HTTP (API and dashboard). Each runs to completion on its own task, so a client
//! that leaves never stops one half-way; the latest progress line and a failure stay here for the
//! dashboard, which has no stream to show them on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use crate::core::Core;
use crate::create::CreateRequest;
use crate::error::HubError;
use crate::image::Progress;
use crate::store::{AgentRecord, now_ms};

/// How long a failed create's message stays for the dashboard.
const KEEP_FAILURES: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateStatus {
    /// The latest progress line.
    pub message: String,
    pub error: Option<String>,
    pub at_ms: i64,
}

#[derive(Debug)]
pub struct Creates {
    status: Mutex<HashMap<String, CreateStatus>>,
    /// Names with a create running, so a second create of one name is refused before it can mistake
    /// the first one's agent for its own.
    running: Mutex<std::collections::HashSet<String>>,
    changed: watch::Sender<u64>,
}

impl Default for Creates {
    fn default() -> Self {
        Self {
            status: Mutex::default(),
            running: Mutex::default(),
            changed: watch::channel(0).0,
        }
    }
}

pub type CreateResult = Result<AgentRecord, HubError>;

impl Creates {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, CreateStatus>> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, name: &str, message: String, error: Option<String>) {
        self.map().insert(
            name.to_string(),
            CreateStatus {
                message,
                error,
                at_ms: now_ms(),
            },
        );
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Starts a create; the receiver gets its outcome.
    pub fn start(
        self: &Arc<Self>,
        core: Arc<Core>,
        req: CreateRequest,
    ) -> oneshot::Receiver<CreateResult> {
        let (tx, rx) = oneshot::channel();
        // Refused here rather than by the create itself, so `settle` never mistakes the existing agent
        // for the new one.
        let claimed = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(req.name.clone());
        if !claimed || matches!(core.find_agent(&req.name), Ok(Some(_))) {
            if claimed {
                self.release(&req.name);
            }
            let _ = tx.send(Err(HubError::AgentExists(req.name)));
            return rx;
        }
        let creates = self.clone();
        let name = req.name.clone();
        {
            let oldest = now_ms() - KEEP_FAILURES.as_millis() as i64;
            self.map().retain(|_, s| s.at_ms >= oldest);
        }
        self.set(&name, "creating".to_string(), None);
        tokio::spawn(async move {
            let progress = |p: Progress| creates.set(&name, p.message, None);
            let result = core.create_agent(req, &progress).await;
            match &result {
                Ok(_) => {
                    creates.map().remove(&name);
                    creates.changed.send_modify(|n| *n = n.wrapping_add(1));
                }
                Err(e) => creates.set(&name, String::new(), Some(e.public().1)),
            }
            creates.release(&name);
            let _ = tx.send(result);
        });
        rx
    }

    fn release(&self, name: &str) {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    /// The create of `name` in progress, or the failure of the last one.
    pub fn status(&self, name: &str) -> Option<CreateStatus> {
        self.map().get(name).cloned()
    }

    /// Changes whenever any create reports progress or ends.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// Where a create stands once it either exists or has ended.
#[derive(Debug)]
pub enum Settled {
    /// The agent exists and is still being made.
    Exists(AgentRecord),
    /// The create finished: the agent is ready.
    Ready(AgentRecord),
    /// The create failed (validation, image, Docker, setup); nothing is left of it.
    Failed(HubError),
}

impl Creates {
    /// Waits until the agent `name` exists or its create `done` has ended, whichever is first, so a
    /// caller can answer quickly yet still report a refused create (bad name, unknown profile).
    pub async fn settle(
        &self,
        core: &Core,
        name: &str,
        mut done: oneshot::Receiver<CreateResult>,
    ) -> Settled {
        let mut changes = self.subscribe();
        loop {
            match done.try_recv() {
                Ok(Ok(record)) => return Settled::Ready(record),
                Ok(Err(e)) => return Settled::Failed(e),
                Err(oneshot::error::TryRecvError::Closed) => {
                    return Settled::Failed(HubError::Internal(
                        "the create task ended without an outcome".into(),
                    ));
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            match core.find_agent(name) {
                Ok(Some(record)) => return Settled::Exists(record),
                Ok(None) => {}
                Err(e) => return Settled::Failed(e),
            }
            // Progress or the outcome wakes us; the timer covers the stretch before the first line.
            tokio::select! {
                _ = changes.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }
}
