//! Agent lifecycle operations: create, start, stop, restart, destroy. Each drives the Docker driver and advances the state machine; a failed create undoes everything it made.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::sync::broadcast;

use crate::bus::HubEvent;
use crate::core::Core;
use crate::credentials;
use crate::driver::{ContainerSpec, DriverError, FileSpec, labels};
use crate::error::{HubError, Result};
use crate::image::{Progress, ProgressFn};
use crate::lifecycle::{Connection, Lifecycle, LifecycleEvent};
use crate::store::{AgentRecord, NewAgent};

/// Where the agent finds its credentials; root-only, so tasks (uid 1000) cannot read them.
const TOKEN_PATH: &str = "/etc/docker-agent/token";
const CA_PATH: &str = "/etc/docker-agent/ca.pem";
const WORKSPACE: &str = "/workspace";

/// Capabilities the agent needs after `cap-drop ALL`: switch to the task user, signal its processes,
/// and prepare /workspace. Task processes run as uid 1000 and keep none of them.
const AGENT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "SETUID",
    "SETGID",
    "KILL",
];

/// Words `docker-agent task` takes as subcommands; an agent with such a name could not be given tasks.
const RESERVED_NAMES: &[&str] = &["run", "get", "logs", "list", "cancel"];

/// Agent names become container names and hostnames: lower-case DNS labels.
pub fn validate_name(name: &str) -> Result<()> {
    if RESERVED_NAMES.contains(&name) {
        return Err(HubError::InvalidArgument(format!(
            "invalid agent name {name:?}: it is reserved (a `docker-agent task` subcommand)"
        )));
    }
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(HubError::InvalidArgument(format!(
            "invalid agent name {name:?}: use 1-63 lower-case letters, digits and '-', not starting or ending with '-'"
        )))
    }
}

pub fn container_name(name: &str) -> String {
    format!("docker-agent-{name}")
}

pub fn volume_name(name: &str) -> String {
    format!("docker-agent-{name}-workspace")
}

/// What a create asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub name: String,
    pub profile: String,
    pub env: BTreeMap<String, String>,
    pub ready_timeout: Option<Duration>,
}

/// Docker objects a create made so far, to undo on failure.
#[derive(Default)]
struct Undo {
    container: Option<String>,
    volume: Option<String>,
    record: Option<String>,
}

impl Core {
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
            self.store.set_lifecycle(agent_id, next, reason)?;
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

    /// Creates an agent and waits until it is ready. On any failure before the container runs, every
    /// Docker object it made and its store row are removed again.
    pub async fn create_agent(
        &self,
        req: CreateRequest,
        progress: ProgressFn<'_>,
    ) -> Result<AgentRecord> {
        validate_name(&req.name)?;
        for key in req.env.keys() {
            if key.is_empty() || key.contains('=') || key.starts_with("DOCKER_AGENT_") {
                return Err(HubError::InvalidArgument(format!(
                    "invalid environment variable {key:?} (empty, contains '=', or reserved DOCKER_AGENT_ prefix)"
                )));
            }
        }
        let profile_name = if req.profile.is_empty() {
            crate::profile::DEFAULT_PROFILE
        } else {
            &req.profile
        };
        let profile = self.profiles.get(profile_name)?.clone();
        if let Some(existing) = self.store.agent_by_name(&req.name)? {
            return Err(HubError::AgentExists(existing.name));
        }
        // Fails before anything exists when the agent binary is missing or not static.
        let (tag, _) = self.images.image_tag(&profile)?;

        let token = credentials::new_token();
        let mut env = profile.environment.clone();
        env.extend(req.env.clone());
        let new = NewAgent {
            id: uuid::Uuid::new_v4().simple().to_string(),
            name: req.name.clone(),
            profile: profile.name.clone(),
            image: tag,
            container_name: container_name(&req.name),
            volume: volume_name(&req.name),
            token_hash: credentials::hash_token(&token),
            cpus: profile.cpus,
            memory_bytes: profile.memory_bytes,
            pids: profile.pids,
            env,
        };
        // The row claims the name first, so two concurrent creates of one name cannot both proceed.
        let record = match self.store.insert_agent(&new) {
            Ok(r) => r,
            Err(_) if self.store.agent_by_name(&req.name)?.is_some() => {
                return Err(HubError::AgentExists(req.name));
            }
            Err(e) => return Err(e.into()),
        };
        let mut undo = Undo {
            record: Some(record.id.clone()),
            ..Default::default()
        };
        let timeout = req.ready_timeout.unwrap_or(self.settings.ready_timeout);
        let created = match self.provision(&record, &token, progress, &mut undo).await {
            Ok(()) => self.wait_ready(&record.id, timeout).await,
            Err(e) => Err(e),
        };
        match created {
            Ok(agent) => Ok(agent),
            Err(e) => Err(self.undo(undo, e).await),
        }
    }

    async fn provision(
        &self,
        record: &AgentRecord,
        token: &str,
        progress: ProgressFn<'_>,
        undo: &mut Undo,
    ) -> Result<()> {
        let started = std::time::Instant::now();
        let step = |name: &str| tracing::debug!(agent = %record.name, step = name, elapsed_ms = started.elapsed().as_millis() as u64, "create");
        let profile = self.profiles.get(&record.profile)?.clone();
        // Independent lookups, concurrently: each is an engine round trip on the create's critical path.
        let (image, existing, volume_exists, network) = tokio::try_join!(
            async {
                self.images
                    .ensure(&profile, progress)
                    .await
                    .map_err(HubError::from)
            },
            async {
                Ok(self
                    .driver
                    .inspect_container(&record.container_name)
                    .await?)
            },
            async { Ok(self.driver.volume_exists(&record.volume).await?) },
            async {
                Ok(self
                    .driver
                    .ensure_network(&self.settings.network, HashMap::new())
                    .await?)
            },
        )?;
        if image != record.image {
            return Err(HubError::Internal(format!(
                "image tag changed during create ({} → {image})",
                record.image
            )));
        }
        if let Some(existing) = existing {
            return Err(HubError::Conflict(format!(
                "a container named {} already exists ({}); remove it or choose another name",
                existing.name,
                if existing.labels.get(labels::HUB) == Some(&self.settings.hub_id) {
                    "left by this hub"
                } else {
                    "not made by this hub"
                }
            )));
        }
        let labels = self.labels(record);
        // A volume kept by `destroy` (without --purge) is reattached, which is the point of keeping it.
        if volume_exists {
            progress(Progress {
                stage: "volume",
                message: format!("reusing volume {}", record.volume),
            });
        } else {
            self.driver
                .create_volume(&record.volume, labels.clone())
                .await?;
            undo.volume = Some(record.volume.clone());
        }
        progress(Progress {
            stage: "container",
            message: format!("creating container {}", record.container_name),
        });
        let spec = ContainerSpec {
            name: record.container_name.clone(),
            image: record.image.clone(),
            labels,
            cmd: self.agent_args(record),
            env: record.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            network: self.settings.network.clone(),
            extra_hosts: vec![format!(
                "{}:{}",
                crate::tls::AGENT_HOSTNAME,
                network.gateway
            )],
            volume: record.volume.clone(),
            volume_target: WORKSPACE.into(),
            nano_cpus: (record.cpus * 1e9) as i64,
            memory_bytes: record.memory_bytes as i64,
            pids_limit: record.pids,
            cap_add: AGENT_CAPS.iter().map(|c| c.to_string()).collect(),
            hostname: record.name.clone(),
        };
        step("lookups and volume");
        let id = self.driver.create_container(&spec).await?;
        step("container created");
        undo.container = Some(id.clone());
        self.store.set_container_id(&record.id, &id)?;
        self.driver
            .upload_files(
                &id,
                &[
                    FileSpec {
                        path: TOKEN_PATH.into(),
                        mode: 0o400,
                        uid: 0,
                        gid: 0,
                        contents: token.as_bytes().to_vec(),
                    },
                    FileSpec {
                        path: CA_PATH.into(),
                        mode: 0o444,
                        uid: 0,
                        gid: 0,
                        contents: self.settings.ca_pem.as_bytes().to_vec(),
                    },
                ],
            )
            .await?;
        step("credentials uploaded");
        progress(Progress {
            stage: "start",
            message: "starting container".into(),
        });
        self.driver.start_container(&id).await?;
        step("container started");
        self.transition(&record.id, LifecycleEvent::ContainerStarted, "")?;
        progress(Progress {
            stage: "connect",
            message: "waiting for the agent to dial back".into(),
        });
        Ok(())
    }

    /// Removes what a failed create made and returns the error to report, with the agent's last log
    /// line when it ran but never became ready. If Docker refuses the cleanup, the row is kept (in
    /// start_error) so `destroy` can finish the job; nothing is left that the hub does not know about.
    async fn undo(&self, undo: Undo, error: HubError) -> HubError {
        let mut hint = String::new();
        if let Some(container) = &undo.container
            && matches!(
                error,
                HubError::Timeout(_) | HubError::FailedPrecondition(_)
            )
            && let Ok(lines) = self.driver.logs_tail(container, 5).await
            && let Some(last) = lines.iter().rev().find(|l| !l.trim().is_empty())
        {
            hint = format!("; the agent's last log line: {}", last.trim());
        }
        let mut cleanup_errors = Vec::new();
        if let Some(container) = &undo.container
            && let Err(e) = self.driver.remove_container(container).await
        {
            tracing::error!(%container, error = %e, "failed to remove the container of a failed create");
            cleanup_errors.push(format!("container: {e}"));
        }
        if let Some(volume) = &undo.volume
            && let Err(e) = self.driver.remove_volume(volume).await
        {
            tracing::error!(%volume, error = %e, "failed to remove the volume of a failed create");
            cleanup_errors.push(format!("volume: {e}"));
        }
        if let Some(id) = &undo.record {
            self.registry.evict(id);
            if cleanup_errors.is_empty() {
                if let Err(e) = self.store.delete_agent(id) {
                    tracing::error!(agent_id = %id, error = %e, "failed to forget a failed create");
                }
            } else {
                let reason = format!(
                    "create failed and cleanup failed ({})",
                    cleanup_errors.join("; ")
                );
                let _ = self.store.set_lifecycle(id, Lifecycle::StartError, &reason);
            }
        }
        let kept = if cleanup_errors.is_empty() {
            "; nothing was kept".to_string()
        } else {
            format!(
                "; cleanup failed ({}): remove the rest with `docker-agent destroy`",
                cleanup_errors.join("; ")
            )
        };
        match error {
            HubError::Timeout(m) => HubError::Timeout(format!("{m}{hint}{kept}")),
            HubError::FailedPrecondition(m) => {
                HubError::FailedPrecondition(format!("{m}{hint}{kept}"))
            }
            other if !cleanup_errors.is_empty() => HubError::Internal(format!("{other}{kept}")),
            other => other,
        }
    }

    /// The agent's command line: where to dial and who it is. Nothing secret goes here (it shows in
    /// `docker inspect`); the token is a file.
    fn agent_args(&self, record: &AgentRecord) -> Vec<String> {
        let mut args = vec![
            "--hub-url".to_string(),
            self.settings.agent_url.clone(),
            "--agent-id".to_string(),
            record.id.clone(),
        ];
        if let Some(bytes) = self.settings.agent_spool_bytes {
            args.extend(["--spool-bytes".to_string(), bytes.to_string()]);
        }
        args
    }

    fn labels(&self, record: &AgentRecord) -> HashMap<String, String> {
        HashMap::from([
            (labels::MANAGED.to_string(), "true".to_string()),
            (labels::AGENT.to_string(), record.name.clone()),
            (labels::AGENT_ID.to_string(), record.id.clone()),
            (labels::PROFILE.to_string(), record.profile.clone()),
            (labels::HUB.to_string(), self.settings.hub_id.clone()),
        ])
    }

    /// Waits for the agent to become ready; after `timeout` it is marked start_error.
    async fn wait_ready(&self, agent_id: &str, timeout: Duration) -> Result<AgentRecord> {
        let mut events = self.bus.subscribe_events();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let agent = self
                .store
                .agent_by_id(agent_id)?
                .ok_or_else(|| HubError::AgentNotFound(agent_id.to_string()))?;
            match agent.lifecycle {
                Lifecycle::Ready => return Ok(agent),
                Lifecycle::Stopped | Lifecycle::Destroyed => {
                    return Err(HubError::FailedPrecondition(format!(
                        "agent {:?} stopped before it was ready ({})",
                        agent.name, agent.lifecycle_reason
                    )));
                }
                _ => {}
            }
            match tokio::time::timeout_at(deadline, events.recv()).await {
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

    pub async fn start_agent(&self, name: &str) -> Result<AgentRecord> {
        let agent = self.agent(name)?;
        match agent.lifecycle {
            Lifecycle::Ready | Lifecycle::Starting => return Ok(agent),
            Lifecycle::Stopped | Lifecycle::StartError => {}
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
        self.wait_ready(&agent.id, self.settings.ready_timeout)
            .await
    }

    pub async fn stop_agent(&self, name: &str, timeout_secs: Option<u32>) -> Result<AgentRecord> {
        let agent = self.agent(name)?;
        if agent.lifecycle == Lifecycle::Stopped {
            return Ok(agent);
        }
        self.transition(&agent.id, LifecycleEvent::StopRequested, "stopped by user")?;
        let container = agent
            .container_id
            .clone()
            .unwrap_or_else(|| agent.container_name.clone());
        match self.driver.stop_container(&container, timeout_secs).await {
            Ok(()) | Err(DriverError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        self.transition(
            &agent.id,
            LifecycleEvent::ContainerExited,
            "stopped by user",
        )?;
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
        let container_removed = match self.driver.inspect_container(&container).await? {
            Some(state) if state.labels.get(labels::AGENT_ID) == Some(&agent.id) => {
                self.driver.remove_container(&state.id).await?;
                true
            }
            Some(_) => {
                tracing::warn!(%container, "not removing a container without this agent's labels");
                false
            }
            None => false,
        };
        self.transition(&agent.id, LifecycleEvent::Destroyed, "destroyed")?;
        self.registry.evict(&agent.id);
        self.lose_tasks(&agent.id, "the agent was destroyed")?;
        self.bus.publish_event(HubEvent::Removed {
            agent_id: agent.id.clone(),
            name: agent.name.clone(),
        });
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn names() {
        for good in ["demo", "a", "build-01", "x".repeat(63).as_str()] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Demo",
            "-a",
            "a-",
            "a_b",
            "a.b",
            "a b",
            &"x".repeat(64),
            "../x",
        ] {
            let err = validate_name(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid agent name"), "{bad}: {err}");
        }
    }

    use crate::driver::fake::{FailAt, FakeDriver};

    fn create_request(name: &str) -> CreateRequest {
        CreateRequest {
            name: name.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_create_failing_after_the_container_exists_removes_everything() {
        let dir = tempfile::tempdir().unwrap();
        let driver = Arc::new(FakeDriver::failing(FailAt::Start));
        let core = Core::for_tests(driver.clone(), dir.path());
        let err = core
            .create_agent(create_request("demo"), &|_| {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
        assert!(
            driver.containers.lock().unwrap().is_empty(),
            "container left behind"
        );
        assert!(
            driver.volumes.lock().unwrap().is_empty(),
            "volume left behind"
        );
        assert!(
            core.store.agent_by_name("demo").unwrap().is_none(),
            "row left behind"
        );
        // The name is free again.
        *driver.fail.lock().unwrap() = FailAt::Nothing;
        let err = core
            .create_agent(create_request("demo"), &|_| {})
            .await
            .unwrap_err();
        // No agent dials back in a unit test: the ready timeout, with everything removed again.
        assert!(err.to_string().contains("did not connect"), "{err}");
        assert!(err.to_string().contains("nothing was kept"), "{err}");
        assert!(driver.containers.lock().unwrap().is_empty());
        assert!(core.store.agent_by_name("demo").unwrap().is_none());
    }

    #[tokio::test]
    async fn a_failed_cleanup_keeps_the_row_so_destroy_can_finish() {
        let dir = tempfile::tempdir().unwrap();
        let driver = Arc::new(FakeDriver::failing(FailAt::StartAndRemove));
        let core = Core::for_tests(driver.clone(), dir.path());
        let err = core
            .create_agent(create_request("demo"), &|_| {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains("cleanup failed"), "{err}");
        let kept = core.store.agent_by_name("demo").unwrap().expect("row kept");
        assert_eq!(kept.lifecycle, Lifecycle::StartError);
        assert_eq!(driver.containers.lock().unwrap().len(), 1);
        *driver.fail.lock().unwrap() = FailAt::Nothing;
        core.destroy_agent("demo", true).await.unwrap();
        assert!(driver.containers.lock().unwrap().is_empty());
        assert!(driver.volumes.lock().unwrap().is_empty());
    }

    #[test]
    fn docker_object_names() {
        assert_eq!(container_name("demo"), "docker-agent-demo");
        assert_eq!(volume_name("demo"), "docker-agent-demo-workspace");
    }
}
