//! What the fleet looks like, for every front end alike: the live agents with their task counts, one
//! agent by name (destroyed ones included, for pages that show a tombstone), the event timeline, and
//! whether the store answers.

use crate::core::Core;
use crate::error::Result;
use crate::store::{AgentRecord, EventRecord};

/// An agent with its task counts.
#[derive(Debug, Clone)]
pub struct FleetEntry {
    pub agent: AgentRecord,
    /// Tasks dispatched or running.
    pub running_tasks: u32,
    pub failed_tasks: u32,
}

impl Core {
    /// Every agent that is not destroyed, by name, with its task counts.
    pub fn fleet(&self) -> Result<Vec<FleetEntry>> {
        let running = self.store.open_task_counts()?;
        let failed = self.store.failed_task_counts()?;
        Ok(self
            .store
            .list_agents()?
            .into_iter()
            .map(|agent| FleetEntry {
                running_tasks: running.get(&agent.id).copied().unwrap_or(0),
                failed_tasks: failed.get(&agent.id).copied().unwrap_or(0),
                agent,
            })
            .collect())
    }

    /// One agent with its task counts.
    pub fn fleet_entry(&self, agent: AgentRecord) -> Result<FleetEntry> {
        let running = self.store.open_task_counts()?;
        let failed = self.store.failed_task_counts()?;
        Ok(FleetEntry {
            running_tasks: running.get(&agent.id).copied().unwrap_or(0),
            failed_tasks: failed.get(&agent.id).copied().unwrap_or(0),
            agent,
        })
    }

    /// Which node runs each agent (agent id → node hostname), where the driver has more than one
    /// place to run them. A listing must not fail because the scheduler did not answer: then it is
    /// empty, and logged.
    pub async fn placements(&self) -> std::collections::HashMap<String, String> {
        let by_container = match self.driver.placements(&self.settings.hub_id).await {
            Ok(map) if !map.is_empty() => map,
            Ok(_) => return Default::default(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read where the agents run");
                return Default::default();
            }
        };
        self.store
            .list_agents()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|a| {
                let container = a.container_id.as_deref().unwrap_or(&a.container_name);
                Some((a.id.clone(), by_container.get(container)?.clone()))
            })
            .collect()
    }

    /// The machines agents run on, each with how many of this hub's agents it runs.
    pub async fn nodes(&self) -> Result<Vec<(crate::driver::NodeInfo, u32)>> {
        let nodes = self.driver.nodes().await?;
        let placements = self.placements().await;
        let total = self.store.list_agents()?.len() as u32;
        let single = nodes.len() == 1 && placements.is_empty();
        Ok(nodes
            .into_iter()
            .map(|n| {
                let agents = if single {
                    total
                } else {
                    placements.values().filter(|h| **h == n.hostname).count() as u32
                };
                (n, agents)
            })
            .collect())
    }

    /// The live agent of this name, if there is one (`agent` fails when there is not).
    pub fn find_agent(&self, name: &str) -> Result<Option<AgentRecord>> {
        Ok(self.store.agent_by_name(name)?)
    }

    /// Every agent that is not destroyed, by name.
    pub fn agents(&self) -> Result<Vec<AgentRecord>> {
        Ok(self.store.list_agents()?)
    }

    /// The agent of this id, destroyed ones included.
    pub fn agent_by_id(&self, id: &str) -> Result<Option<AgentRecord>> {
        Ok(self.store.agent_by_id(id)?)
    }

    /// The name of the agent of this id ("" when there is none).
    pub fn agent_name(&self, id: &str) -> Result<String> {
        Ok(self.agent_by_id(id)?.map(|a| a.name).unwrap_or_default())
    }

    /// The newest `limit` lifecycle and connection events, of one agent or of all.
    pub fn events(&self, agent: Option<&str>, limit: u32) -> Result<Vec<EventRecord>> {
        Ok(self.store.recent_events(agent, limit)?)
    }

    /// Whether the store answers (readiness).
    pub fn store_answers(&self) -> Result<()> {
        Ok(self.store.ping()?)
    }
}
