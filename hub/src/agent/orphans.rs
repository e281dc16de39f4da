//! Orphans: containers with this hub's labels that no live agent owns (a crash between creating the
//! container and recording it, a cleanup Docker refused, a lost store). The hub never removes them
//! by itself; `docker-agent prune` lists them and removes them when asked.

use crate::core::Core;
use crate::driver::{ContainerState, labels};
use crate::error::Result;
use crate::lifecycle::Lifecycle;

impl Core {
    /// This hub's labelled containers that belong to no live agent.
    pub async fn orphans(&self) -> Result<Vec<ContainerState>> {
        let agents = self.store.list_agents()?;
        let containers = self.driver.list_managed(&self.settings.hub_id).await?;
        Ok(containers
            .into_iter()
            .filter(|c| {
                let owner = c
                    .labels
                    .get(labels::AGENT_ID)
                    .and_then(|id| agents.iter().find(|a| &a.id == id));
                // A live agent whose container was replaced (re-created) owns only its current one.
                !owner.is_some_and(|a| {
                    a.lifecycle != Lifecycle::Destroyed
                        && a.container_id.as_deref().is_none_or(|id| id == c.id)
                })
            })
            .collect())
    }

    /// Removes the orphans found now (re-checked, so an agent created meanwhile is never touched) and
    /// returns them; fails on the first removal Docker refuses.
    pub async fn remove_orphans(&self) -> Result<Vec<ContainerState>> {
        let orphans = self.orphans().await?;
        for c in &orphans {
            tracing::info!(container = %c.name, "removing an orphaned container");
            self.driver.remove_container(&c.id).await?;
        }
        Ok(orphans)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use crate::core::Core;
    use crate::driver::fake::FakeDriver;
    use crate::driver::{ContainerState, labels};

    fn labelled(id: &str, agent_id: &str) -> ContainerState {
        ContainerState {
            id: id.into(),
            name: format!("docker-agent-{id}"),
            started_at_ms: 0,
            running: false,
            status: "exited".into(),
            exit_code: 0,
            oom_killed: false,
            error: String::new(),
            labels: HashMap::from([
                (labels::MANAGED.to_string(), "true".to_string()),
                (labels::HUB.to_string(), "testhub".to_string()),
                (labels::AGENT_ID.to_string(), agent_id.to_string()),
            ]),
        }
    }

    #[tokio::test]
    async fn only_containers_without_a_live_owner_are_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let driver = Arc::new(FakeDriver::default());
        let core = Core::for_tests(driver.clone(), dir.path());
        let live = core
            .store
            .insert_agent(&crate::store::NewAgent {
                id: "a1".into(),
                name: "live".into(),
                profile: "minimal".into(),
                image: "img".into(),
                container_name: "docker-agent-live".into(),
                volume: "v".into(),
                token_hash: vec![1],
                cpus: 1.0,
                memory_bytes: 0,
                pids: 0,
                env: Default::default(),
                max_task_output: 0,
                max_agent_output: 0,
            })
            .unwrap();
        core.store.set_container_id(&live.id, "c-live").unwrap();
        driver.managed.lock().unwrap().extend([
            labelled("c-live", &live.id),
            labelled("c-stray", "no-such-agent"),
            labelled("c-old", &live.id),
        ]);
        let orphans = core.orphans().await.unwrap();
        let ids: Vec<&str> = orphans.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["c-stray", "c-old"]);
        let removed = core.remove_orphans().await.unwrap();
        assert_eq!(removed.len(), 2);
        assert!(core.orphans().await.unwrap().is_empty());
        let left: Vec<String> = driver
            .managed
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.id.clone())
            .collect();
        assert_eq!(left, ["c-live"]);
    }
}
