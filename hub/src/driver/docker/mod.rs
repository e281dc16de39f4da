//! The Docker implementation of [`Driver`], on bollard. No `docker` CLI anywhere.

mod engine;
mod images;
mod logs;

use std::collections::HashMap;
use std::net::IpAddr;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountType, NetworkConnectRequest,
    NetworkCreateRequest, RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, EventsOptions, InspectContainerOptions, ListContainersOptions,
    RemoveContainerOptions, RemoveVolumeOptions, StopContainerOptions, UploadToContainerOptions,
};
use bytes::Bytes;
use futures::StreamExt;

pub use engine::EngineAddress;

use super::{
    ByteStream, ContainerEvent, ContainerEventKind, ContainerSpec, ContainerState, Driver,
    DriverError, EventStream, FileSpec, ImageInfo, LineStream, LogStream, LogsOptions, NetworkInfo,
    NetworkSpec, NodeInfo, PathStat, Result, VolumeDriver, labels,
};

/// The bridge driver's option that lets (or, "false", keeps) containers of a network talk to each other.
const ENABLE_ICC: &str = "com.docker.network.bridge.enable_icc";

/// Talks to one Docker engine through its API socket.
#[derive(Debug, Clone)]
pub struct DockerDriver {
    docker: Docker,
}

impl DockerDriver {
    /// Connects to `engine` and agrees on an API version it supports, so old engines (API 1.41) work.
    pub async fn connect(engine: &EngineAddress) -> Result<Self> {
        let docker = engine
            .connect()?
            .negotiate_version()
            .await
            .map_err(map_err(format!("the Docker engine at {engine}")))
            .map_err(|e| match (e, engine) {
                // Which engine matters most when it is not the local one.
                (
                    DriverError::Unreachable(why),
                    EngineAddress::Unix(_) | EngineAddress::Tcp { .. },
                ) => DriverError::Unreachable(format!("{engine}: {why}")),
                (e, _) => e,
            })?;
        Ok(Self { docker })
    }

    /// The bollard client, for the Swarm driver's calls to the same engine.
    pub(in crate::driver) fn client(&self) -> &Docker {
        &self.docker
    }
}

/// Docker's RFC 3339 timestamps (nanoseconds, `Z`) as unix milliseconds; its zero time is None.
pub(in crate::driver) fn unix_ms(text: &str) -> Option<i64> {
    let at = humantime::parse_rfc3339_weak(text).ok()?;
    let ms = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
    i64::try_from(ms).ok().filter(|ms| *ms > 0)
}

/// Turns a bollard error into ours, naming the object the call was about.
pub(in crate::driver) fn map_err(
    what: impl Into<String>,
) -> impl FnOnce(BollardError) -> DriverError {
    let what = what.into();
    move |err| {
        count(match err {
            BollardError::DockerResponseServerError {
                status_code: 404, ..
            } => DriverError::NotFound(what),
            BollardError::DockerResponseServerError {
                status_code: 409,
                message,
            } => DriverError::Conflict(format!("{what}: {message}")),
            BollardError::DockerResponseServerError { message, .. } => DriverError::Engine(message),
            BollardError::DockerStreamError { error } => DriverError::Engine(error),
            BollardError::IOError { err } => DriverError::Unreachable(err.to_string()),
            BollardError::SocketNotFoundError(path) => {
                DriverError::Unreachable(format!("no socket at {path}"))
            }
            BollardError::HyperResponseError { err } => DriverError::Unreachable(err.to_string()),
            BollardError::HyperLegacyError { err } => DriverError::Unreachable(err.to_string()),
            BollardError::RequestTimeoutError => {
                DriverError::Unreachable("request timed out".into())
            }
            other => {
                let text = other.to_string();
                if text.contains("connect") || text.contains("Connection refused") {
                    DriverError::Unreachable(text)
                } else {
                    DriverError::Engine(text)
                }
            }
        })
    }
}

fn count(err: DriverError) -> DriverError {
    let kind = match &err {
        DriverError::NotFound(_) => "not_found",
        DriverError::Conflict(_) => "conflict",
        DriverError::Unreachable(_) => "unreachable",
        DriverError::Engine(_) => "engine",
    };
    crate::metrics::metrics().docker_error(kind);
    err
}

fn label_filter(hub_id: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_string(),
        vec![
            format!("{}=true", labels::MANAGED),
            format!("{}={hub_id}", labels::HUB),
        ],
    )])
}

/// A tar archive of `files`, with absolute paths made relative to `/`.
fn tar_files(dir: &str, files: &[FileSpec]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let dir = std::path::Path::new(dir);
    for f in files {
        let path = std::path::Path::new(&f.path)
            .strip_prefix(dir)
            .map_err(|_| {
                std::io::Error::other(format!("{} is not under {}", f.path, dir.display()))
            })?;
        let mut header = tar::Header::new_gnu();
        header.set_size(if f.dir { 0 } else { f.contents.len() as u64 });
        header.set_mode(f.mode);
        header.set_uid(f.uid);
        header.set_gid(f.gid);
        header.set_mtime(0);
        header.set_entry_type(if f.dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        let contents: &[u8] = if f.dir { &[] } else { &f.contents };
        builder.append_data(&mut header, path, contents)?;
    }
    builder.into_inner()
}

#[async_trait::async_trait]
impl Driver for DockerDriver {
    async fn ping(&self) -> Result<()> {
        self.docker
            .ping()
            .await
            .map_err(map_err("the Docker engine"))?;
        Ok(())
    }

    async fn engine_cpus(&self) -> Result<u32> {
        let info = self
            .docker
            .info()
            .await
            .map_err(map_err("the Docker engine"))?;
        Ok(info.ncpu.unwrap_or(1).max(1) as u32)
    }

    async fn network_exists(&self, name: &str) -> Result<bool> {
        match self.docker.inspect_network(name, None).await {
            Ok(_) => Ok(true),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(map_err(format!("network {name}"))(e)),
        }
    }

    async fn inspect_network(&self, name: &str) -> Result<Option<NetworkInfo>> {
        let inspect = match self.docker.inspect_network(name, None).await {
            Ok(n) => n,
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(e) => return Err(map_err(format!("network {name}"))(e)),
        };
        let gateway = inspect
            .ipam
            .and_then(|ipam| ipam.config)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| c.gateway)
            .filter_map(|g| g.parse::<IpAddr>().ok())
            .find(IpAddr::is_ipv4)
            .ok_or_else(|| DriverError::Engine(format!("network {name} has no IPv4 gateway")))?;
        let isolated = inspect
            .options
            .as_ref()
            .and_then(|o| o.get(ENABLE_ICC))
            .is_some_and(|v| v == "false");
        Ok(Some(NetworkInfo {
            id: inspect.id.unwrap_or_default(),
            gateway,
            isolated,
            containers: inspect.containers.map_or(0, |c| c.len()),
            labels: inspect.labels.unwrap_or_default(),
        }))
    }

    async fn ensure_network(&self, spec: &NetworkSpec) -> Result<NetworkInfo> {
        let name = &spec.name;
        if let Some(network) = self.inspect_network(name).await? {
            return Ok(network);
        }
        let options = spec
            .isolated
            .then(|| HashMap::from([(ENABLE_ICC.to_string(), "false".to_string())]));
        let request = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            labels: Some(spec.labels.clone()),
            options,
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            // Another hub made it between our inspect and create.
            Ok(_)
            | Err(BollardError::DockerResponseServerError {
                status_code: 409, ..
            }) => {}
            Err(e) => return Err(map_err(format!("network {name}"))(e)),
        }
        self.inspect_network(name)
            .await?
            .ok_or_else(|| DriverError::NotFound(format!("network {name}")))
    }

    async fn remove_network(&self, name: &str) -> Result<()> {
        match self.docker.remove_network(name).await {
            Ok(()) => Ok(()),
            // 403: "has active endpoints".
            Err(BollardError::DockerResponseServerError {
                status_code: 403,
                message,
            }) => Err(DriverError::Conflict(format!("network {name}: {message}"))),
            Err(e) => Err(map_err(format!("network {name}"))(e)),
        }
    }

    async fn image_id(&self, reference: &str) -> Result<Option<String>> {
        Ok(self.image(reference).await?.map(|i| i.id))
    }

    async fn inspect_image(&self, reference: &str) -> Result<Option<ImageInfo>> {
        self.image(reference).await
    }

    async fn list_images(&self, labels: &[String]) -> Result<Vec<ImageInfo>> {
        self.images_labelled(labels).await
    }

    async fn remove_image(&self, reference: &str) -> Result<()> {
        self.remove_image_ref(reference).await
    }

    async fn commit_container(
        &self,
        container: &str,
        repo: &str,
        tag: Option<&str>,
        labels: HashMap<String, String>,
        changes: &str,
    ) -> Result<String> {
        self.commit(container, repo, tag, labels, changes).await
    }

    fn download_archive(&self, container: &str, path: &str) -> ByteStream {
        self.download(container, path)
    }

    async fn path_stat(&self, container: &str, path: &str) -> Result<Option<PathStat>> {
        self.stat(container, path).await
    }

    async fn upload_archive(&self, container: &str, path: &str, tar: ByteStream) -> Result<()> {
        self.upload(container, path, tar).await
    }

    async fn import_rootfs(
        &self,
        reference: &str,
        tar: ByteStream,
        changes: Vec<String>,
    ) -> Result<()> {
        self.import(reference, tar, changes).await
    }

    fn build_image<'a>(
        &'a self,
        reference: &'a str,
        context: Bytes,
        build_args: HashMap<String, String>,
    ) -> LineStream<'a> {
        self.build(reference, context, build_args)
    }

    async fn create_volume(
        &self,
        name: &str,
        vol_labels: HashMap<String, String>,
        driver: Option<&VolumeDriver>,
    ) -> Result<()> {
        let request = VolumeCreateRequest {
            name: Some(name.into()),
            labels: Some(vol_labels),
            driver: driver.map(|d| d.name.clone()),
            driver_opts: driver.map(|d| d.options.clone()),
            ..Default::default()
        };
        self.docker
            .create_volume(request)
            .await
            .map_err(map_err(format!("volume {name}")))?;
        Ok(())
    }

    async fn remove_volume(&self, name: &str) -> Result<()> {
        match self
            .docker
            .remove_volume(name, None::<RemoveVolumeOptions>)
            .await
        {
            Ok(())
            | Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(map_err(format!("volume {name}"))(e)),
        }
    }

    async fn volume_exists(&self, name: &str) -> Result<bool> {
        match self.docker.inspect_volume(name).await {
            Ok(_) => Ok(true),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(map_err(format!("volume {name}"))(e)),
        }
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String> {
        let host_config = HostConfig {
            network_mode: Some(spec.network.clone()),
            extra_hosts: (!spec.extra_hosts.is_empty()).then(|| spec.extra_hosts.clone()),
            mounts: Some(
                (!spec.volume.is_empty())
                    .then(|| Mount {
                        target: Some(spec.volume_target.clone()),
                        source: Some(spec.volume.clone()),
                        typ: Some(MountType::VOLUME),
                        ..Default::default()
                    })
                    .into_iter()
                    .chain(spec.mounts.iter().map(|m| Mount {
                        target: Some(m.target.clone()),
                        source: Some(m.source.clone()),
                        typ: Some(if m.bind {
                            MountType::BIND
                        } else {
                            MountType::VOLUME
                        }),
                        read_only: Some(m.read_only),
                        ..Default::default()
                    }))
                    .collect(),
            ),
            group_add: (!spec.group_add.is_empty()).then(|| spec.group_add.clone()),
            // Explicit, so `logs` works whatever the engine's default driver, and bounded (100 MB).
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), "20m".to_string()),
                    ("max-file".to_string(), "5".to_string()),
                ])),
            }),
            nano_cpus: (spec.nano_cpus > 0).then_some(spec.nano_cpus),
            memory: (spec.memory_bytes > 0).then_some(spec.memory_bytes),
            pids_limit: (spec.pids_limit > 0).then_some(spec.pids_limit),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            cap_drop: Some(vec!["ALL".into()]),
            cap_add: Some(spec.cap_add.clone()),
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            readonly_rootfs: spec.read_only_root.then_some(true),
            // nosuid and nodev like Docker's own /dev/shm; exec stays, since build scripts run from /tmp.
            tmpfs: (!spec.tmpfs.is_empty()).then(|| {
                spec.tmpfs
                    .iter()
                    .map(|path| (path.clone(), "rw,nosuid,nodev,mode=1777".to_string()))
                    .collect()
            }),
            init: Some(false),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: (!spec.cmd.is_empty()).then(|| spec.cmd.clone()),
            env: Some(spec.env.clone()),
            labels: Some(spec.labels.clone()),
            hostname: (!spec.hostname.is_empty()).then(|| spec.hostname.clone()),
            host_config: Some(host_config),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(map_err(format!("container {}", spec.name)))?;
        Ok(created.id)
    }

    async fn upload_files(&self, container: &str, dir: &str, files: &[FileSpec]) -> Result<()> {
        let archive = tar_files(dir, files)
            .map_err(|e| DriverError::Engine(format!("cannot pack files: {e}")))?;
        let options = UploadToContainerOptions {
            path: dir.into(),
            ..Default::default()
        };
        self.docker
            .upload_to_container(container, Some(options), bollard::body_full(archive.into()))
            .await
            .map_err(map_err(format!("container {container}")))
    }

    async fn connect_network(&self, container: &str, network: &str) -> Result<()> {
        let request = NetworkConnectRequest {
            container: container.to_string(),
            endpoint_config: None,
        };
        self.docker
            .connect_network(network, request)
            .await
            .map_err(map_err(format!("network {network}")))
    }

    async fn start_container(&self, container: &str) -> Result<()> {
        match self.docker.start_container(container, None).await {
            Ok(())
            | Err(BollardError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(map_err(format!("container {container}"))(e)),
        }
    }

    async fn stop_container(&self, container: &str, timeout_secs: Option<u32>) -> Result<()> {
        let options = StopContainerOptions {
            t: timeout_secs.map(|t| t as i32),
            ..Default::default()
        };
        match self.docker.stop_container(container, Some(options)).await {
            Ok(())
            | Err(BollardError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(map_err(format!("container {container}"))(e)),
        }
    }

    async fn remove_container(&self, container: &str) -> Result<()> {
        let options = RemoveContainerOptions {
            force: true,
            v: false,
            ..Default::default()
        };
        match self.docker.remove_container(container, Some(options)).await {
            Ok(())
            | Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(map_err(format!("container {container}"))(e)),
        }
    }

    async fn inspect_container(&self, container: &str) -> Result<Option<ContainerState>> {
        let inspect = match self
            .docker
            .inspect_container(container, None::<InspectContainerOptions>)
            .await
        {
            Ok(i) => i,
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(e) => return Err(map_err(format!("container {container}"))(e)),
        };
        let state = inspect.state.unwrap_or_default();
        Ok(Some(ContainerState {
            id: inspect.id.unwrap_or_default(),
            name: inspect
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string(),
            started_at_ms: state.started_at.as_deref().and_then(unix_ms).unwrap_or(0),
            running: state.running.unwrap_or(false),
            status: state.status.map(|s| s.to_string()).unwrap_or_default(),
            exit_code: state.exit_code.unwrap_or(0),
            oom_killed: state.oom_killed.unwrap_or(false),
            error: state.error.unwrap_or_default(),
            labels: inspect.config.and_then(|c| c.labels).unwrap_or_default(),
        }))
    }

    async fn logs_tail(&self, container: &str, lines: usize) -> Result<Vec<String>> {
        self.tail_lines(container, lines).await
    }

    fn logs(&self, container: &str, options: LogsOptions) -> LogStream {
        self.log_stream(container, options)
    }

    async fn list_managed(&self, hub_id: &str) -> Result<Vec<ContainerState>> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(label_filter(hub_id)),
            ..Default::default()
        };
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(map_err("containers"))?;
        Ok(list
            .into_iter()
            .map(|c| {
                let status = c.state.map(|s| s.to_string()).unwrap_or_default();
                ContainerState {
                    // Listings do not say; inspect does.
                    started_at_ms: 0,
                    id: c.id.unwrap_or_default(),
                    name: c
                        .names
                        .and_then(|n| n.into_iter().next())
                        .unwrap_or_default()
                        .trim_start_matches('/')
                        .to_string(),
                    running: status == "running",
                    status,
                    exit_code: 0,
                    oom_killed: false,
                    error: String::new(),
                    labels: c.labels.unwrap_or_default(),
                }
            })
            .collect())
    }

    fn events(&self, hub_id: &str) -> EventStream {
        let mut filters = label_filter(hub_id);
        filters.insert("type".into(), vec!["container".into()]);
        filters.insert(
            "event".into(),
            vec!["start".into(), "die".into(), "oom".into(), "destroy".into()],
        );
        let options = EventsOptions {
            filters: Some(filters),
            ..Default::default()
        };
        let stream = self
            .docker
            .events(Some(options))
            .filter_map(|item| async move {
                let msg = match item {
                    Ok(m) => m,
                    Err(e) => return Some(Err(map_err("the Docker event stream")(e))),
                };
                let actor = msg.actor.unwrap_or_default();
                let attributes = actor.attributes.unwrap_or_default();
                let kind = match msg.action.as_deref()? {
                    "start" => ContainerEventKind::Start,
                    "die" => ContainerEventKind::Die {
                        exit_code: attributes
                            .get("exitCode")
                            .and_then(|c| c.parse().ok())
                            .unwrap_or(-1),
                    },
                    "oom" => ContainerEventKind::Oom,
                    "destroy" => ContainerEventKind::Destroy,
                    _ => return None,
                };
                Some(Ok(ContainerEvent {
                    container_id: actor.id.unwrap_or_default(),
                    labels: attributes,
                    kind,
                }))
            });
        Box::pin(stream)
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        let info = self
            .docker
            .info()
            .await
            .map_err(map_err("the Docker engine"))?;
        Ok(vec![NodeInfo {
            id: info.id.unwrap_or_default(),
            hostname: info.name.unwrap_or_default(),
            role: "engine".into(),
            state: "ready".into(),
            availability: "active".into(),
            cpus: info.ncpu.unwrap_or(1).max(1) as u32,
            memory_bytes: info.mem_total.unwrap_or(0).max(0) as u64,
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_timestamps_are_read_to_the_millisecond() {
        assert_eq!(
            unix_ms("2026-12-04T17:47:46.123456789Z"),
            Some(1_796_406_466_123)
        );
        assert_eq!(unix_ms("2026-12-04T17:47:46Z"), Some(1_796_406_466_000));
        // Docker's "never started".
        assert_eq!(unix_ms("0001-01-01T00:00:00Z"), None);
        assert_eq!(unix_ms("nonsense"), None);
    }

    #[test]
    fn files_are_packed_with_modes_and_owners() {
        let files = vec![FileSpec {
            path: "/etc/docker-agent/token".into(),
            mode: 0o400,
            uid: 0,
            gid: 0,
            contents: b"secret".to_vec(),
            dir: false,
        }];
        let archive = tar_files("/", &files).unwrap();
        let mut reader = tar::Archive::new(archive.as_slice());
        let entry = reader.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(
            entry.path().unwrap().to_str().unwrap(),
            "etc/docker-agent/token"
        );
        assert_eq!(entry.header().mode().unwrap(), 0o400);
        assert_eq!(entry.header().uid().unwrap(), 0);
        // Relative to a volume's mount point, as a read-only root needs; nothing outside it.
        let archive = tar_files("/etc/docker-agent", &files).unwrap();
        let mut reader = tar::Archive::new(archive.as_slice());
        let entry = reader.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(entry.path().unwrap().to_str().unwrap(), "token");
        assert!(tar_files("/workspace", &files).is_err());
    }
}
