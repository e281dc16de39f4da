//! Keeping the store true to Docker: reconciliation at start, the Docker events stream (no polling), and the heartbeat sweeper.

use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use futures::StreamExt;

use crate::core::Core;
use crate::driver::{ContainerEvent, ContainerEventKind, labels};
use crate::error::Result;
use crate::lifecycle::{Connection, Lifecycle, LifecycleEvent};

impl Core {
    /// Matches stored agents against their containers. Adopts what runs, marks what is missing or stopped,
    /// reports labelled containers without a record, and never deletes anything.
    pub async fn reconcile(&self) -> Result<()> {
        let agents = self.store.list_agents()?;
        for agent in &agents {
            let container = agent
                .container_id
                .clone()
                .unwrap_or_else(|| agent.container_name.clone());
            let state = self.driver.inspect_container(&container).await?;
            match state {
                Some(s) if s.running => {
                    self.transition(&agent.id, LifecycleEvent::ContainerStarted, "")?;
                    if !self.registry.is_connected(&agent.id) {
                        self.set_connection(&agent.id, Connection::Connecting)?;
                    }
                }
                Some(s) => {
                    if let Some(reason) = exit_reason(s.exit_code, s.oom_killed, agent.lifecycle) {
                        self.transition(&agent.id, LifecycleEvent::ContainerExited, &reason)?;
                    }
                    self.set_connection(&agent.id, Connection::Disconnected)?;
                }
                None => {
                    tracing::warn!(agent = %agent.name, %container, "the agent's container is missing");
                    self.transition(
                        &agent.id,
                        LifecycleEvent::ContainerExited,
                        "the container is missing",
                    )?;
                    self.set_connection(&agent.id, Connection::Disconnected)?;
                }
            }
        }
        for c in self.driver.list_managed(&self.settings.hub_id).await? {
            let known = c
                .labels
                .get(labels::AGENT_ID)
                .is_some_and(|id| agents.iter().any(|a| &a.id == id));
            if !known {
                tracing::warn!(container = %c.name, "labelled container with no agent record; left alone");
            }
        }
        Ok(())
    }

    async fn on_container_event(&self, event: ContainerEvent) -> Result<()> {
        let Some(agent_id) = event.labels.get(labels::AGENT_ID) else {
            return Ok(());
        };
        let Some(agent) = self.store.agent_by_id(agent_id)? else {
            return Ok(());
        };
        if agent.lifecycle == Lifecycle::Destroyed {
            return Ok(());
        }
        match event.kind {
            ContainerEventKind::Start => {
                self.transition(agent_id, LifecycleEvent::ContainerStarted, "")?;
                if !self.registry.is_connected(agent_id) {
                    self.set_connection(agent_id, Connection::Connecting)?;
                }
            }
            ContainerEventKind::Die { exit_code } => {
                let oom = match self.driver.inspect_container(&event.container_id).await {
                    // Already running again (a restart, or Docker's restart policy): this die is history,
                    // and applying it now would undo the start that followed it.
                    Ok(Some(s)) if s.running => return Ok(()),
                    Ok(Some(s)) => s.oom_killed,
                    _ => false,
                };
                // Re-read: the inspect above awaited, and a transition may have happened meanwhile.
                let Some(agent) = self.store.agent_by_id(agent_id)? else {
                    return Ok(());
                };
                // A destroy finished meanwhile (its own stop is usually what this die reports).
                if agent.lifecycle == Lifecycle::Destroyed {
                    return Ok(());
                }
                if let Some(reason) = exit_reason(exit_code, oom, agent.lifecycle) {
                    self.transition(agent_id, LifecycleEvent::ContainerExited, &reason)?;
                }
                self.set_connection(agent_id, Connection::Disconnected)?;
            }
            ContainerEventKind::Rescheduled { why, since_ms } => {
                self.store.record_event(&agent.name, "rescheduled", &why)?;
                // The replacement's agent may have dialed in before the move was seen: then the move
                // is history, and the agent is ready where it is.
                let arrived =
                    self.registry.is_connected(agent_id) && agent.instance_since >= since_ms;
                if !arrived {
                    self.transition(agent_id, LifecycleEvent::Rescheduled, &why)?;
                    self.set_connection(agent_id, Connection::Disconnected)?;
                }
            }
            ContainerEventKind::Oom => {
                self.store.record_event(
                    &agent.name,
                    "oom",
                    "a process in the container ran out of memory",
                )?;
            }
            ContainerEventKind::Destroy => {
                self.transition(
                    agent_id,
                    LifecycleEvent::ContainerExited,
                    "the container was removed outside docker-agent",
                )?;
                self.set_connection(agent_id, Connection::Disconnected)?;
            }
        }
        Ok(())
    }

    /// Follows Docker's event stream for this hub's containers, reconciling after every (re)subscription so
    /// nothing that happened while the stream was down is missed.
    pub async fn watch_docker(self: Arc<Self>) {
        let mut backoff = backoff();
        loop {
            let mut events = self.driver.events(&self.settings.hub_id);
            if let Err(e) = self.reconcile().await {
                tracing::error!(error = %e, "reconcile failed");
            }
            while let Some(item) = events.next().await {
                match item {
                    Ok(event) => {
                        backoff = self::backoff();
                        if let Err(e) = self.on_container_event(event).await {
                            tracing::error!(error = %e, "failed to apply a Docker event");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Docker event stream failed; resubscribing");
                        break;
                    }
                }
            }
            let delay = backoff.next().unwrap_or(Duration::from_secs(10));
            tokio::time::sleep(delay).await;
        }
    }

    /// Marks agents whose heartbeats stopped (three intervals) as timed out.
    pub async fn sweep_heartbeats(self: Arc<Self>) {
        let interval = self.settings.heartbeat_interval;
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            for (agent_id, generation) in self.registry.silent_for(interval * 3) {
                let connected = self
                    .store
                    .agent_by_id(&agent_id)
                    .ok()
                    .flatten()
                    .is_some_and(|a| a.connection == Connection::Connected);
                if connected && self.registry.is_current(&agent_id, generation) {
                    tracing::warn!(agent_id, "no heartbeat for three intervals");
                    if let Err(e) = self.set_connection(&agent_id, Connection::Timeout) {
                        tracing::error!(error = %e, "failed to record a heartbeat timeout");
                    }
                }
            }
        }
    }
}

fn backoff() -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Why a container is no longer running, or None when the stored state already says it (a user's stop).
fn exit_reason(exit_code: i64, oom_killed: bool, before: Lifecycle) -> Option<String> {
    if oom_killed {
        Some(format!("killed: out of memory (exit code {exit_code})"))
    } else if before == Lifecycle::Stopped {
        None
    } else if before == Lifecycle::Stopping {
        Some(crate::agent::ops::STOPPED_BY_USER.into())
    } else {
        Some(format!("container exited with code {exit_code}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_reasons() {
        assert_eq!(
            exit_reason(137, true, Lifecycle::Ready).unwrap(),
            "killed: out of memory (exit code 137)"
        );
        assert_eq!(
            exit_reason(0, false, Lifecycle::Stopping).unwrap(),
            "stopped by user"
        );
        assert_eq!(
            exit_reason(2, false, Lifecycle::Ready).unwrap(),
            "container exited with code 2"
        );
        assert_eq!(exit_reason(0, false, Lifecycle::Stopped), None);
    }
}
