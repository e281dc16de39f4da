//! The Docker Swarm implementation of [`Driver`]: each agent is a replicated service of one task,
//! placed by Swarm. Images, networks and builds go to the manager's engine (images are then pushed
//! to the registry and pinned by digest, so every node runs the same bytes); what only the engine
//! running a container can do (its files, its log, commit) goes to that node's engine, reached at the
//! node's Swarm address on the manager's port with the manager's TLS.

mod spec;
mod tasks;

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine as _;
use bollard::models::SecretSpec;
use bollard::query_parameters::{
    InspectServiceOptions, ListSecretsOptions, PushImageOptions, TagImageOptions,
    UpdateServiceOptions,
};
use bytes::Bytes;
use futures::StreamExt;

use super::docker::{EngineAddress, map_err};
use super::{
    ByteStream, ContainerSpec, ContainerState, DockerDriver, Driver, DriverError, EventStream,
    FileSpec, ImageInfo, LineStream, LogStream, LogsOptions, NetworkInfo, NetworkSpec, NodeInfo,
    PathStat, Result, VolumeDriver,
};
use spec::{Pending, SERVICE_LABEL};
use tasks::Nodes;

/// Talks to a Swarm manager, and to its nodes' engines for what only they can do.
#[derive(Debug)]
pub struct SwarmDriver {
    manager: DockerDriver,
    /// `host:port` of the registry every node pulls from.
    registry: String,
    /// Creates between `create_container` and their service's creation at `start_container`.
    pending: Mutex<HashMap<String, Pending>>,
    /// Labels and driver of the volumes a create asked for: Swarm makes them on the node, from the mount.
    volume_labels: Mutex<HashMap<String, spec::VolumeOptions>>,
    /// Local image tag → the registry reference, pinned by digest, that services use.
    pushed: tokio::sync::Mutex<HashMap<String, String>>,
    nodes: Nodes,
}

impl SwarmDriver {
    /// Connects to the manager at `engine` and checks that it is one.
    pub async fn connect(engine: &EngineAddress, registry: &str) -> Result<Self> {
        let manager = DockerDriver::connect(engine).await?;
        let info = manager
            .client()
            .info()
            .await
            .map_err(map_err(format!("the Docker engine at {engine}")))?;
        let is_manager = info
            .swarm
            .as_ref()
            .and_then(|s| s.control_available)
            .unwrap_or(false);
        if !is_manager {
            return Err(DriverError::Engine(format!(
                "the engine at {engine} is not a Swarm manager (run `docker swarm init` there, or use --driver docker)"
            )));
        }
        let manager_client = manager.client().clone();
        Ok(Self {
            manager,
            registry: registry.trim_end_matches('/').to_string(),
            pending: Mutex::default(),
            volume_labels: Mutex::default(),
            pushed: Default::default(),
            nodes: Nodes::new(manager_client, engine.clone()),
        })
    }

    fn docker(&self) -> &bollard::Docker {
        self.manager.client()
    }

    /// Pushes a local image to the registry once and returns it pinned by digest.
    async fn distribute(&self, image: &str) -> Result<String> {
        let mut pushed = self.pushed.lock().await;
        if let Some(reference) = pushed.get(image) {
            return Ok(reference.clone());
        }
        let (repo, tag) = image.rsplit_once(':').unwrap_or((image, "latest"));
        let remote = format!("{}/{repo}", self.registry);
        let what = || format!("image {image} to registry {}", self.registry);
        self.docker()
            .tag_image(
                image,
                Some(TagImageOptions {
                    repo: Some(remote.clone()),
                    tag: Some(tag.to_string()),
                }),
            )
            .await
            .map_err(map_err(what()))?;
        let mut push = self.docker().push_image(
            &remote,
            Some(PushImageOptions {
                tag: Some(tag.to_string()),
                ..Default::default()
            }),
            None,
        );
        while let Some(step) = push.next().await {
            step.map_err(|e| match map_err(what())(e) {
                DriverError::Engine(m) | DriverError::Unreachable(m) => DriverError::Engine(
                    format!("cannot push {image} to registry {}: {m}", self.registry),
                ),
                other => other,
            })?;
        }
        let inspect = self
            .docker()
            .inspect_image(&format!("{remote}:{tag}"))
            .await
            .map_err(map_err(what()))?;
        let digest = inspect
            .repo_digests
            .unwrap_or_default()
            .into_iter()
            .find_map(|d| d.strip_prefix(&format!("{remote}@")).map(str::to_string))
            .ok_or_else(|| {
                DriverError::Engine(format!(
                    "registry {} gave no digest for {image}",
                    self.registry
                ))
            })?;
        let reference = format!("{remote}:{tag}@{digest}");
        pushed.insert(image.to_string(), reference.clone());
        Ok(reference)
    }

    /// Makes the service of a pending create: its image in the registry, its files as secrets.
    async fn create_service(&self, service: &str, pending: Pending) -> Result<()> {
        let image = self.distribute(&pending.spec.image).await?;
        let mut secrets = Vec::new();
        for secret in spec::secret_files(service, &pending.files) {
            let mut labels = pending.spec.labels.clone();
            labels.insert(SERVICE_LABEL.into(), service.to_string());
            let created = self
                .docker()
                .create_secret(SecretSpec {
                    name: Some(secret.name.clone()),
                    labels: Some(labels),
                    data: Some(
                        base64::engine::general_purpose::STANDARD.encode(&secret.file.contents),
                    ),
                    ..Default::default()
                })
                .await;
            let id = match created {
                Ok(created) => created.id,
                // Content-addressed: the same file from an earlier attempt.
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 409, ..
                }) => secret.name.clone(),
                Err(e) => {
                    self.remove_secrets(service).await;
                    return Err(map_err(format!("secret {}", secret.name))(e));
                }
            };
            secrets.push((id, secret.name, secret.file));
        }
        let volume_labels = self
            .volume_labels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let spec = spec::service_spec(&pending, &image, &secrets, &volume_labels);
        if let Err(e) = self.docker().create_service(spec, None).await {
            self.remove_secrets(service).await;
            return Err(map_err(format!("service {service}"))(e));
        }
        // Swarm takes a service no node can run and keeps its task pending forever: say so now,
        // and leave nothing behind, instead of waiting for an agent that will never dial.
        if let Err(e) =
            tasks::wait_until_placed(self.docker(), service, &pending.spec.placement).await
        {
            let _ = self.docker().delete_service(service).await;
            self.remove_secrets(service).await;
            return Err(e);
        }
        Ok(())
    }

    async fn remove_secrets(&self, service: &str) {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{SERVICE_LABEL}={service}")],
        )]);
        let Ok(list) = self
            .docker()
            .list_secrets(Some(ListSecretsOptions {
                filters: Some(filters),
            }))
            .await
        else {
            return;
        };
        for secret in list {
            if let Some(id) = secret.id
                && let Err(e) = self.docker().delete_secret(&id).await
            {
                tracing::warn!(service, secret = id, error = %e, "cannot remove a secret");
            }
        }
    }

    /// Sets the service's replica count (0 stops the agent, 1 starts it).
    async fn scale(&self, service: &str, replicas: i64) -> Result<()> {
        // Swarm refuses an update made against an old version: read it again and retry.
        for _ in 0..5 {
            let current = self
                .docker()
                .inspect_service(service, None::<InspectServiceOptions>)
                .await
                .map_err(map_err(format!("service {service}")))?;
            let version = current.version.and_then(|v| v.index).unwrap_or(0);
            let mut spec = current.spec.unwrap_or_default();
            spec.mode = Some(bollard::models::ServiceSpecMode {
                replicated: Some(bollard::models::ServiceSpecModeReplicated {
                    replicas: Some(replicas),
                }),
                ..Default::default()
            });
            match self
                .docker()
                .update_service(
                    service,
                    spec,
                    UpdateServiceOptions {
                        version: version as i32,
                        ..Default::default()
                    },
                    None,
                )
                .await
            {
                Ok(_) => return Ok(()),
                Err(bollard::errors::Error::DockerResponseServerError { message, .. })
                    if message.contains("out of sequence") => {}
                Err(e) => return Err(map_err(format!("service {service}"))(e)),
            }
        }
        Err(DriverError::Conflict(format!(
            "service {service}: kept changing while being scaled"
        )))
    }

    fn take_pending(&self, service: &str) -> Option<Pending> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(service)
    }
}

#[async_trait::async_trait]
impl Driver for SwarmDriver {
    async fn ping(&self) -> Result<()> {
        self.manager.ping().await
    }

    async fn engine_cpus(&self) -> Result<u32> {
        self.manager.engine_cpus().await
    }

    async fn network_exists(&self, name: &str) -> Result<bool> {
        self.manager.network_exists(name).await
    }

    async fn inspect_network(&self, name: &str) -> Result<Option<NetworkInfo>> {
        self.manager.inspect_network(name).await
    }

    async fn ensure_network(&self, spec: &NetworkSpec) -> Result<NetworkInfo> {
        self.manager.ensure_network(spec).await
    }

    async fn remove_network(&self, name: &str) -> Result<()> {
        self.manager.remove_network(name).await
    }

    async fn image_id(&self, reference: &str) -> Result<Option<String>> {
        self.manager.image_id(reference).await
    }

    async fn inspect_image(&self, reference: &str) -> Result<Option<ImageInfo>> {
        self.manager.inspect_image(reference).await
    }

    async fn list_images(&self, labels: &[String]) -> Result<Vec<ImageInfo>> {
        self.manager.list_images(labels).await
    }

    async fn remove_image(&self, reference: &str) -> Result<()> {
        self.manager.remove_image(reference).await
    }

    async fn commit_container(
        &self,
        container: &str,
        repo: &str,
        tag: Option<&str>,
        labels: HashMap<String, String>,
        changes: &str,
    ) -> Result<String> {
        let (node, id) = self.nodes.locate(container).await?;
        node.commit_container(&id, repo, tag, labels, changes).await
    }

    /// A manager cannot archive a container on another node; `cp` goes over the agent's link. The
    /// calls below (through the node's own engine, where the hub can reach it) serve snapshots.
    fn archives_through_engine(&self) -> bool {
        false
    }

    fn download_archive(&self, container: &str, path: &str) -> ByteStream {
        let (nodes, container, path) =
            (self.nodes.clone(), container.to_string(), path.to_string());
        Box::pin(
            futures::stream::once(async move { nodes.locate(&container).await })
                .map(move |located| match located {
                    Ok((node, id)) => node.download_archive(&id, &path),
                    Err(e) => Box::pin(futures::stream::once(async move {
                        Err(std::io::Error::other(e.to_string()))
                    })) as ByteStream,
                })
                .flatten(),
        )
    }

    async fn path_stat(&self, container: &str, path: &str) -> Result<Option<PathStat>> {
        let (node, id) = self.nodes.locate(container).await?;
        node.path_stat(&id, path).await
    }

    async fn upload_archive(&self, container: &str, path: &str, tar: ByteStream) -> Result<()> {
        let (node, id) = self.nodes.locate(container).await?;
        node.upload_archive(&id, path, tar).await
    }

    async fn import_rootfs(
        &self,
        reference: &str,
        tar: ByteStream,
        changes: Vec<String>,
    ) -> Result<()> {
        self.manager.import_rootfs(reference, tar, changes).await
    }

    fn build_image<'a>(
        &'a self,
        reference: &'a str,
        context: Bytes,
        build_args: HashMap<String, String>,
    ) -> LineStream<'a> {
        self.manager.build_image(reference, context, build_args)
    }

    async fn create_volume(
        &self,
        name: &str,
        labels: HashMap<String, String>,
        driver: Option<&VolumeDriver>,
    ) -> Result<()> {
        // Swarm makes a service's volume on whichever node runs it, from the mount's options.
        self.volume_labels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), (labels, driver.cloned()));
        Ok(())
    }

    async fn remove_volume(&self, name: &str) -> Result<()> {
        self.volume_labels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        // It is on the nodes that ran the agent: remove it wherever it is.
        for node in tasks::node_ids(self.docker()).await? {
            let engine = self.nodes.engine(&node).await?;
            tasks::remove_volume_when_free(&engine, name).await?;
        }
        Ok(())
    }

    async fn volume_exists(&self, name: &str) -> Result<bool> {
        if self
            .volume_labels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(name)
        {
            return Ok(true);
        }
        for node in tasks::node_ids(self.docker()).await? {
            if self.nodes.engine(&node).await?.volume_exists(name).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String> {
        let exists = self
            .docker()
            .inspect_service(&spec.name, None::<InspectServiceOptions>)
            .await
            .is_ok();
        if exists {
            return Err(DriverError::Conflict(format!(
                "service {} already exists",
                spec.name
            )));
        }
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                spec.name.clone(),
                Pending {
                    spec: spec.clone(),
                    files: Vec::new(),
                },
            );
        Ok(spec.name.clone())
    }

    async fn upload_files(&self, container: &str, _dir: &str, files: &[FileSpec]) -> Result<()> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let Some(create) = pending.get_mut(container) else {
            return Err(DriverError::Conflict(format!(
                "service {container}: files go in before its first start on Swarm"
            )));
        };
        create.files.extend_from_slice(files);
        Ok(())
    }

    async fn connect_network(&self, container: &str, network: &str) -> Result<()> {
        self.take_pending(container);
        Err(DriverError::Engine(format!(
            "network {network}: a profile's own network is not supported with --driver swarm yet"
        )))
    }

    async fn start_container(&self, container: &str) -> Result<()> {
        match self.take_pending(container) {
            Some(pending) => self.create_service(container, pending).await,
            None => self.scale(container, 1).await,
        }
    }

    async fn stop_container(&self, container: &str, timeout_secs: Option<u32>) -> Result<()> {
        self.scale(container, 0).await?;
        let grace = std::time::Duration::from_secs(u64::from(timeout_secs.unwrap_or(10)) + 15);
        tasks::wait_until_stopped(self.docker(), container, grace).await
    }

    async fn remove_container(&self, container: &str) -> Result<()> {
        self.take_pending(container);
        match self.docker().delete_service(container).await {
            Ok(()) => {}
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(map_err(format!("service {container}"))(e)),
        }
        self.remove_secrets(container).await;
        Ok(())
    }

    async fn inspect_container(&self, container: &str) -> Result<Option<ContainerState>> {
        tasks::service_state(self.docker(), container).await
    }

    async fn logs_tail(&self, container: &str, lines: usize) -> Result<Vec<String>> {
        let (node, id) = self.nodes.locate(container).await?;
        node.logs_tail(&id, lines).await
    }

    fn logs(&self, container: &str, options: LogsOptions) -> LogStream {
        let (nodes, container) = (self.nodes.clone(), container.to_string());
        Box::pin(
            futures::stream::once(async move { nodes.locate(&container).await })
                .map(move |located| match located {
                    Ok((node, id)) => node.logs(&id, options.clone()),
                    Err(e) => Box::pin(futures::stream::once(async move { Err(e) })) as LogStream,
                })
                .flatten(),
        )
    }

    async fn list_managed(&self, hub_id: &str) -> Result<Vec<ContainerState>> {
        Ok(tasks::services_now(self.docker(), hub_id)
            .await?
            .into_iter()
            .map(tasks::container_state)
            .collect())
    }

    fn events(&self, hub_id: &str) -> EventStream {
        tasks::events(self.manager.clone(), hub_id.to_string())
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        tasks::nodes(self.docker()).await
    }

    async fn placements(&self, hub_id: &str) -> Result<HashMap<String, String>> {
        tasks::placements(self.docker(), hub_id).await
    }
}
