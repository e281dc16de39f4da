//! Creating an agent: resolve its profile (or snapshot), make the volume and container with everything the profile says, start it and wait until the agent is ready. A create that fails before the agent runs undoes everything it made.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

mod container;
mod files;

use crate::agent::names::{container_name, secrets_volume_name, validate_name, volume_name};
use crate::core::Core;
use crate::credentials;
use crate::driver::{NetworkInfo, VolumeDriver, labels};
use crate::error::{HubError, Result};
use crate::image::{Progress, ProgressFn};
use crate::lifecycle::{Lifecycle, LifecycleEvent};
use crate::profile::{DEFAULT_PROFILE, Profile};
use crate::store::{AgentRecord, NewAgent};

/// What a create asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub name: String,
    pub profile: String,
    pub env: BTreeMap<String, String>,
    pub ready_timeout: Option<Duration>,
    /// Start from this snapshot (its tag) instead of a profile's image.
    pub from_snapshot: Option<String>,
    /// The caller accepts that the profile mounts the host's Docker socket (root on the host).
    pub allow_docker_socket: bool,
    /// Join this group of agents, which share a network (instead of the profile's group).
    pub group: Option<String>,
}

/// What the agent will be made from.
struct Plan {
    profile: Profile,
    image: String,
    /// The group the agent joins (the request's, else the profile's).
    group: Option<String>,
    /// A snapshot already holds the profile's files and the record of its setup.
    from_snapshot: bool,
}

/// Docker objects a create made so far, to undo on failure.
#[derive(Default)]
struct Undo {
    container: Option<String>,
    volume: Option<String>,
    secrets: Option<String>,
    record: Option<String>,
    /// The agent's socket directory.
    socket: Option<String>,
    /// A group whose network the agent joined (removed again if the agent was its only member).
    group: Option<String>,
}

impl Core {
    /// Creates an agent and waits until it is ready. On any failure before the agent runs, every
    /// Docker object it made and its store row are removed again. A failed setup step is different:
    /// the agent stays, in start_error, so its logs and container can be inspected.
    pub async fn create_agent(
        &self,
        req: CreateRequest,
        progress: ProgressFn<'_>,
    ) -> Result<AgentRecord> {
        validate_name(&req.name)?;
        if let Some(group) = &req.group {
            crate::profile::validate_group(group).map_err(HubError::InvalidArgument)?;
        }
        for key in req.env.keys() {
            if key.is_empty() || key.contains('=') || key.starts_with("DOCKER_AGENT_") {
                return Err(HubError::InvalidArgument(format!(
                    "invalid environment variable {key:?} (empty, contains '=', or reserved DOCKER_AGENT_ prefix)"
                )));
            }
        }
        let plan = self.plan(&req).await?;
        let profile = &plan.profile;
        let sockets = profile.docker_socket_mounts();
        if !sockets.is_empty() && !req.allow_docker_socket {
            return Err(HubError::InvalidArgument(format!(
                "profile {} mounts {} (a host socket, or a directory holding the Docker socket), which gives the agent root on this host; pass --allow-docker-socket to create it anyway",
                profile.name, sockets[0].source
            )));
        }
        if let Some(existing) = self.store.agent_by_name(&req.name)? {
            return Err(HubError::AgentExists(existing.name));
        }
        // Docker would accept joining a missing network at create and fail only at start.
        if let Some(network) = &profile.network
            && !self.driver.network_exists(network).await?
        {
            return Err(HubError::InvalidArgument(format!(
                "profile {}: network {network:?} does not exist (create it first)",
                profile.name
            )));
        }
        let cpus = if profile.cpus > f64::from(self.settings.engine_cpus) {
            progress(Progress::new(
                "container",
                format!(
                    "profile {} asks for {} CPUs; the engine has {}, so the agent gets {}",
                    profile.name,
                    profile.cpus,
                    self.settings.engine_cpus,
                    self.settings.engine_cpus
                ),
            ));
            f64::from(self.settings.engine_cpus)
        } else {
            profile.cpus
        };

        let token = credentials::new_token();
        let mut env = profile.environment.clone();
        env.extend(req.env.clone());
        let new = NewAgent {
            id: uuid::Uuid::new_v4().simple().to_string(),
            name: req.name.clone(),
            profile: profile.name.clone(),
            image: plan.image.clone(),
            container_name: container_name(&req.name),
            volume: volume_name(&req.name),
            token_hash: credentials::hash_token(&token),
            cpus,
            memory_bytes: profile.memory_bytes,
            pids: profile.pids,
            env,
            max_task_output: profile.max_output,
            max_agent_output: profile.max_agent_output,
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
        let created = match self
            .provision(&record, &plan, &token, progress, &mut undo)
            .await
        {
            Ok(()) => self.wait_ready(&record.id, timeout, progress).await,
            Err(e) => Err(e),
        };
        match created {
            Ok(agent) => Ok(agent),
            Err(HubError::SetupFailed(m)) => Err(HubError::SetupFailed(format!(
                "{m}; the agent is kept in start_error: see `docker-agent logs {0}`, fix the cause and `docker-agent start {0}` to resume at the failed step, or `docker-agent destroy {0}`",
                record.name
            ))),
            Err(e) => Err(self.undo(undo, e).await),
        }
    }

    /// Resolves the profile and image a create uses, failing before anything exists.
    async fn plan(&self, req: &CreateRequest) -> Result<Plan> {
        if let Some(tag) = &req.from_snapshot {
            if !req.profile.is_empty() {
                return Err(HubError::InvalidArgument(
                    "--profile and --from-snapshot cannot be combined: an agent made from a snapshot keeps the snapshot's profile".into(),
                ));
            }
            let snapshot = self.snapshot(tag).await?;
            return Ok(Plan {
                group: req.group.clone().or_else(|| snapshot.profile.group.clone()),
                profile: snapshot.profile,
                image: snapshot.image,
                from_snapshot: true,
            });
        }
        let name = if req.profile.is_empty() {
            DEFAULT_PROFILE
        } else {
            &req.profile
        };
        let profile = self.profiles().get(name)?.clone();
        // Fails here when the agent binary is missing or not static.
        let (image, _) = self.images.image_tag(&profile).await?;
        Ok(Plan {
            group: req.group.clone().or_else(|| profile.group.clone()),
            profile,
            image,
            from_snapshot: false,
        })
    }

    /// Makes the agent's volumes, container and networks, writes its credentials and files into it,
    /// and starts it. Everything made is noted in `undo`.
    async fn provision(
        &self,
        record: &AgentRecord,
        plan: &Plan,
        token: &str,
        progress: ProgressFn<'_>,
        undo: &mut Undo,
    ) -> Result<()> {
        let started = std::time::Instant::now();
        let step = |name: &str| tracing::debug!(agent = %record.name, step = name, elapsed_ms = started.elapsed().as_millis() as u64, "create");
        let (network, volume_exists) = self.look_before_making(record, plan, progress).await?;
        let mut labels = self.labels(record);
        labels.insert(labels::PROFILE_JSON.to_string(), plan.profile.to_json());
        if let Some(group) = &plan.group {
            labels.insert(labels::GROUP.to_string(), group.clone());
        }
        let secrets = self
            .make_volumes(record, plan, &labels, volume_exists, progress, undo)
            .await?;
        progress(Progress::new(
            "container",
            format!("creating container {}", record.container_name),
        ));
        // The agent's own socket directory (mounted into the container); without one it dials the port.
        let socket_dir = match &self.agent_sockets {
            Some(sockets) => match sockets.open(&record.id) {
                Ok(dir) => {
                    undo.socket = Some(record.id.clone());
                    Some(dir)
                }
                Err(e) => {
                    tracing::warn!(agent = %record.name, error = %e, "no agent socket for this agent; it will use the port");
                    None
                }
            },
            None => None,
        };
        let spec = self.container_spec(
            record,
            &plan.profile,
            labels,
            &secrets,
            socket_dir.as_deref(),
            network.gateway,
        );
        step("lookups and volume");
        let id = self.driver.create_container(&spec).await?;
        step("container created");
        undo.container = Some(id.clone());
        self.store.set_container_id(&record.id, &id)?;
        self.join_networks(&id, plan, undo).await?;
        self.upload_agent_files(&id, &plan.profile, plan.from_snapshot, token)
            .await?;
        step("files uploaded");
        progress(Progress::new("start", "starting container"));
        self.driver.start_container(&id).await?;
        step("container started");
        self.transition(&record.id, LifecycleEvent::ContainerStarted, "")?;
        progress(Progress::new(
            "connect",
            "waiting for the agent to dial back",
        ));
        Ok(())
    }

    /// Builds the image if needed and checks, before anything is made, that the name is free. Returns
    /// the agents' network and whether the agent's workspace volume exists already.
    async fn look_before_making(
        &self,
        record: &AgentRecord,
        plan: &Plan,
        progress: ProgressFn<'_>,
    ) -> Result<(NetworkInfo, bool)> {
        // Independent lookups, concurrently: each is an engine round trip on the create's critical path.
        let (image, existing, volume_exists, network) = tokio::try_join!(
            async {
                if plan.from_snapshot {
                    return Ok(plan.image.clone());
                }
                self.images
                    .ensure(&plan.profile, progress)
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
            crate::agent::networks::ensure_agents_network(
                self.driver.as_ref(),
                &self.settings.network
            ),
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
        // A volume kept by `destroy` (without --purge) is reattached, which is the point of keeping it;
        // but Docker fills only a new, empty volume from the image, so a snapshot's files need one.
        if volume_exists && plan.from_snapshot {
            return Err(HubError::FailedPrecondition(format!(
                "volume {} is kept from an earlier agent {:?}; an agent made from a snapshot needs a new one: choose another name, or remove the volume (docker volume rm {0})",
                record.volume, record.name
            )));
        }
        Ok((network, volume_exists))
    }

    /// The workspace volume (made, or a kept one reused) and a fresh credentials volume; returns the
    /// latter's name.
    async fn make_volumes(
        &self,
        record: &AgentRecord,
        plan: &Plan,
        labels: &HashMap<String, String>,
        volume_exists: bool,
        progress: ProgressFn<'_>,
        undo: &mut Undo,
    ) -> Result<String> {
        debug_assert!(!(volume_exists && plan.from_snapshot));
        if volume_exists {
            progress(Progress::new(
                "volume",
                format!("reusing volume {}", record.volume),
            ));
        } else {
            let driver = plan.profile.workspace.as_ref().map(|w| VolumeDriver {
                name: w.driver.clone(),
                options: w.options.clone().into_iter().collect(),
            });
            self.driver
                .create_volume(&record.volume, labels.clone(), driver.as_ref())
                .await?;
            undo.volume = Some(record.volume.clone());
        }
        // A fresh credentials volume: one left by an earlier agent of this name holds its stale files.
        let secrets = secrets_volume_name(&record.name);
        if self.driver.volume_exists(&secrets).await? {
            self.driver.remove_volume(&secrets).await?;
        }
        self.driver
            .create_volume(&secrets, labels.clone(), None)
            .await?;
        undo.secrets = Some(secrets.clone());
        Ok(secrets)
    }

    /// The profile's extra network and the agent's group's, which a created container joins.
    async fn join_networks(&self, id: &str, plan: &Plan, undo: &mut Undo) -> Result<()> {
        let profile = &plan.profile;
        if let Some(network) = &profile.network {
            self.driver
                .connect_network(id, network)
                .await
                .map_err(|e| match e {
                    crate::driver::DriverError::NotFound(_) => HubError::InvalidArgument(format!(
                        "profile {}: network {network:?} does not exist (create it first)",
                        profile.name
                    )),
                    other => other.into(),
                })?;
        }
        if let Some(group) = &plan.group {
            undo.group = Some(group.clone());
            self.join_group(id, group).await?;
        }
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
        for volume in undo.volume.iter().chain(&undo.secrets) {
            let Err(e) = self.driver.remove_volume(volume).await else {
                continue;
            };
            tracing::error!(%volume, error = %e, "failed to remove the volume of a failed create");
            cleanup_errors.push(format!("volume: {e}"));
        }
        if let Some(group) = &undo.group
            && cleanup_errors.is_empty()
        {
            self.leave_group(group).await;
        }
        if let (Some(id), Some(sockets)) = (&undo.socket, &self.agent_sockets)
            && cleanup_errors.is_empty()
        {
            sockets.remove(id);
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
            HubError::InvalidArgument(m) => HubError::InvalidArgument(format!("{m}{kept}")),
            other if !cleanup_errors.is_empty() => HubError::Internal(format!("{other}{kept}")),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests;
