//! Waiting for an agent to be ready: connected, and its profile's setup done. `create` and `start`
//! both end here.

use std::time::Duration;

use tokio::sync::broadcast;

use crate::agent::ops::STOPPED_BY_USER;
use crate::core::Core;
use crate::error::{HubError, Result};
use crate::image::{Progress, ProgressFn};
use crate::lifecycle::{Connection, Lifecycle, LifecycleEvent, SetupPhase};
use crate::store::AgentRecord;

impl Core {
    /// Waits for the agent to become ready, passing on its setup progress. The timeout covers dialling
    /// back; once the agent is connected, its setup steps run for as long as they need (each can have
    /// its own timeout). After `timeout` without a connection the agent is marked start_error.
    pub async fn wait_ready(
        &self,
        agent_id: &str,
        timeout: Duration,
        progress: ProgressFn<'_>,
    ) -> Result<AgentRecord> {
        let mut events = self.bus.subscribe_events();
        let mut deadline = tokio::time::Instant::now() + timeout;
        let mut reported = String::new();
        loop {
            let agent = self
                .store
                .agent_by_id(agent_id)?
                .ok_or_else(|| HubError::AgentNotFound(agent_id.to_string()))?;
            match agent.lifecycle {
                Lifecycle::Ready => return Ok(agent),
                // The agent came up and said hello: the create worked. A stop or destroy that raced the
                // end of this wait was someone's decision about a working agent, not a failure to undo.
                Lifecycle::Stopping | Lifecycle::Stopped | Lifecycle::Destroyed
                    if !agent.instance_id.is_empty()
                        && (agent.lifecycle == Lifecycle::Destroyed
                            || agent.lifecycle_reason == STOPPED_BY_USER) =>
                {
                    return Ok(agent);
                }
                Lifecycle::Stopped | Lifecycle::Destroyed => {
                    return Err(HubError::FailedPrecondition(format!(
                        "agent {:?} stopped before it was ready ({})",
                        agent.name, agent.lifecycle_reason
                    )));
                }
                Lifecycle::StartError if agent.setup == SetupPhase::Failed => {
                    return Err(HubError::SetupFailed(format!(
                        "agent {:?} failed its setup: {}",
                        agent.name, agent.lifecycle_reason
                    )));
                }
                Lifecycle::Starting
                    if agent.setup == SetupPhase::Running && agent.lifecycle_reason != reported =>
                {
                    reported = agent.lifecycle_reason.clone();
                    progress(Progress::new("setup", reported.clone()));
                }
                _ => {}
            }
            // The timeout is for dialling back: it restarts whenever the agent is seen connected, and
            // does not run while a connected agent works through its setup steps (each may have a
            // timeout of its own). A setup whose agent loses its link is bounded again.
            let connected = agent.connection == Connection::Connected;
            if connected {
                deadline = tokio::time::Instant::now() + timeout;
            }
            let next = if connected && agent.setup == SetupPhase::Running {
                Ok(events.recv().await)
            } else {
                tokio::time::timeout_at(deadline, events.recv()).await
            };
            match next {
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    return Err(HubError::Internal("event bus closed".into()));
                }
                Err(_) => {
                    self.transition(
                        agent_id,
                        LifecycleEvent::ReadyTimeout,
                        "the agent did not connect in time",
                    )?;
                    return Err(HubError::Timeout(format!(
                        "agent {:?} did not connect within {}s",
                        agent.name,
                        timeout.as_secs()
                    )));
                }
            }
        }
    }
}
