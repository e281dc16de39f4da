//! Agent lifecycle operations after create (start, stop, restart, destroy) and the transitions every one of them goes through.

use crate::agent::names::secrets_volume_name;
use crate::core::Core;
use crate::core::bus::HubEvent;
use crate::driver::{DriverError, labels};
use crate::error::{HubError, Result};
use crate::lifecycle::{Connection, Lifecycle, LifecycleEvent, SetupPhase};
use crate::store::AgentRecord;

/// The lifecycle reason of an agent someone stopped (as opposed to one whose container died).
pub const STOPPED_BY_USER: &str = "stopped by user";

impl Core {
    /// When the agent's container last started (unix ms); 0 when the engine does not say.
    pub async fn container_started_at(&self, agent: &AgentRecord) -> Result<i64> {
        let container = agent
            .container_id
            .clone()
            .unwrap_or_else(|| agent.container_name.clone());
        Ok(self
            .driver
            .inspect_container(&container)
            .await?
            .map_or(0, |c| c.started_at_ms))
    }

    pub fn agent(&self, name: &str) -> Result<AgentRecord> {
        self.store
            .agent_by_name(name)?
            .ok_or_else(|| HubError::AgentNotFound(name.to_string()))
    }

    /// Applies a lifecycle event: the state machine decides, the store records, the bus announces.
    pub fn transition(
        &self,
        agent_id: &str,
        event: LifecycleEvent,
        reason: &str,
    ) -> Result<Option<Lifecycle>> {
        let _serial = self.transitions.lock().unwrap_or_else(|p| p.into_inner());
        let Some(agent) = self.store.agent_by_id(agent_id)? else {
            return Ok(None);
        };
        let next = agent.lifecycle.on(event)?;
        if next != agent.lifecycle || (!reason.is_empty() && reason != agent.lifecycle_reason) {
            self.store
                .set_lifecycle_of(agent_id, next, reason, SetupPhase::after(event))?;
            let detail = if reason.is_empty() {
                next.to_string()
            } else {
                format!("{next}: {reason}")
            };
            self.store.record_event(&agent.name, "lifecycle", &detail)?;
            tracing::info!(agent = %agent.name, from = %agent.lifecycle, to = %next, reason, "lifecycle");
            self.bus.publish_event(HubEvent::Lifecycle {
                agent_id: agent_id.to_string(),
                name: agent.name.clone(),
                state: next,
                reason: reason.to_string(),
            });
        }
        Ok(Some(next))
    }

    pub fn set_connection(&self, agent_id: &str, state: Connection) -> Result<()> {
        let Some(agent) = self.store.agent_by_id(agent_id)? else {
            return Ok(());
        };
        if agent.connection == state {
            return Ok(());
        }
        self.store.set_connection(agent_id, state)?;
        self.store
            .record_event(&agent.name, "connection", state.as_str())?;
        tracing::info!(agent = %agent.name, from = %agent.connection, to = %state, "connection");
        self.bus.publish_event(HubEvent::Connection {
            agent_id: agent_id.to_string(),
            name: agent.name,
            state,
        });
        Ok(())
    }

    /// Starts a stopped agent. An agent in start_error is restarted: its container may still run (a
    /// failed setup step, an agent that never dialled back), and only a new start makes the agent
    /// resume its setup at the failed step.
    pub async fn start_agent(&self, name: &str) -> Result<AgentRecord> {
        let mut agent = self.agent(name)?;
        if agent.lifecycle == Lifecycle::StartError {
            agent = self.stop_agent(name, Some(10)).await?;
        }
        match agent.lifecycle {
            Lifecycle::Ready | Lifecycle::Starting => return Ok(agent),
            Lifecycle::Stopped => {}
            other => {
                return Err(HubError::FailedPrecondition(format!(
                    "agent {name:?} is {other}; cannot start it now"
                )));
            }
        }
        let container = agent
            .container_id
            .clone()
            .unwrap_or_else(|| agent.container_name.clone());
        match self.driver.start_container(&container).await {
            Err(DriverError::NotFound(_)) => {
                return Err(HubError::FailedPrecondition(format!(
                    "the container of agent {name:?} is gone; destroy the agent and create it again"
                )));
            }
            other => other?,
        }
        self.transition(&agent.id, LifecycleEvent::ContainerStarted, "")?;
        self.wait_ready(&agent.id, self.settings.ready_timeout, &|_| {})
            .await
    }

    pub async fn stop_agent(&self, name: &str, timeout_secs: Option<u32>) -> Result<AgentRecord> {
        let agent = self.agent(name)?;
        if agent.lifecycle == Lifecycle::Stopped {
            return Ok(agent);
        }
        self.transition(&agent.id, LifecycleEvent::StopRequested, STOPPED_BY_USER)?;
        let container = agent
            .container_id
            .clone()
            .unwrap_or_else(|| agent.container_name.clone());
        match self.driver.stop_container(&container, timeout_secs).await {
            Ok(()) | Err(DriverError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        self.transition(&agent.id, LifecycleEvent::ContainerExited, STOPPED_BY_USER)?;
        self.set_connection(&agent.id, Connection::Disconnected)?;
        self.agent(name)
    }

    pub async fn restart_agent(
        &self,
        name: &str,
        timeout_secs: Option<u32>,
    ) -> Result<AgentRecord> {
        self.stop_agent(name, timeout_secs).await?;
        self.start_agent(name).await
    }

    /// Removes the container (and with `purge` the volume). The agent's row stays as a destroyed tombstone so
    /// its tasks and their output remain readable; unfinished tasks end as lost.
    pub async fn destroy_agent(&self, name: &str, purge: bool) -> Result<(bool, bool)> {
        let agent = self.agent(name)?;
        let container = agent
            .container_id
            .clone()
            .unwrap_or_else(|| agent.container_name.clone());
        // Never remove a container that lacks our labels, even if the name matches.
        let mut group = None;
        let (container_removed, container_gone) = match self
            .driver
            .inspect_container(&container)
            .await?
        {
            Some(state) if state.labels.get(labels::AGENT_ID) == Some(&agent.id) => {
                self.driver.remove_container(&state.id).await?;
                group = state.labels.get(labels::GROUP).cloned();
                (true, true)
            }
            Some(_) => {
                tracing::warn!(%container, "not removing a container without this agent's labels");
                (false, false)
            }
            None => (false, true),
        };
        self.transition(&agent.id, LifecycleEvent::Destroyed, "destroyed")?;
        self.registry.evict(&agent.id);
        if let Some(sockets) = &self.agent_sockets
            && container_gone
        {
            sockets.remove(&agent.id);
        }
        if let Some(group) = &group {
            self.leave_group(group).await;
        }
        self.health.forget(&agent.id);
        self.lose_tasks(&agent.id, "the agent was destroyed")?;
        self.bus.publish_event(HubEvent::Removed {
            agent_id: agent.id.clone(),
            name: agent.name.clone(),
        });
        // The credentials are worthless now; they go whether or not the workspace is purged.
        let secrets = secrets_volume_name(&agent.name);
        if container_gone
            && self.driver.volume_exists(&secrets).await?
            && let Err(e) = self.driver.remove_volume(&secrets).await
        {
            tracing::warn!(volume = %secrets, error = %e, "failed to remove an agent's credentials volume");
        }
        // The agent is gone whatever happens to its volume; a volume still in use is reported, not fatal
        // to the destroy.
        let volume_removed =
            if purge && self.driver.volume_exists(&agent.volume).await? {
                self.driver.remove_volume(&agent.volume).await.map_err(|e| {
                HubError::FailedPrecondition(format!(
                    "agent {name:?} was destroyed, but its volume {} could not be removed: {e}",
                    agent.volume
                ))
            })?;
                true
            } else {
                false
            };
        Ok((container_removed, volume_removed))
    }
}
