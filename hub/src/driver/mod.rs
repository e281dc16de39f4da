//! The container driver: everything the hub asks of a container engine, behind one trait. Docker (bollard) is the one implementation today; a remote engine or Kubernetes would be another.

mod docker;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fake;
mod swarm;

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;

pub use docker::{DockerDriver, EngineAddress};
pub use swarm::SwarmDriver;

/// Labels on every container the hub makes (brief §3). The hub never touches a container without them.
pub mod labels {
    pub const MANAGED: &str = "dev.docker-agent.managed";
    pub const AGENT: &str = "dev.docker-agent.agent";
    pub const AGENT_ID: &str = "dev.docker-agent.agent-id";
    pub const PROFILE: &str = "dev.docker-agent.profile";
    pub const HUB: &str = "dev.docker-agent.hub";
    /// The resolved profile as JSON, so a snapshot can carry it whatever happens to the profile file.
    pub const PROFILE_JSON: &str = "dev.docker-agent.profile-json";
    /// On snapshot images: the tag, the agent it was taken from, and when (unix ms).
    pub const SNAPSHOT: &str = "dev.docker-agent.snapshot";
    pub const SNAPSHOT_OF: &str = "dev.docker-agent.snapshot-of";
    pub const CREATED: &str = "dev.docker-agent.created";
    /// On agents of a group, and on the group's network: the group's name.
    pub const GROUP: &str = "dev.docker-agent.group";
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(
        "the Docker engine is not reachable ({0}); is dockerd running, and --engine (or DOCKER_HOST) right?"
    )]
    Unreachable(String),
    #[error("{0} not found")]
    NotFound(String),
    /// A name taken, or an object in use; the text says which.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Engine(String),
}

pub type Result<T> = std::result::Result<T, DriverError>;

pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;
pub type LineStream<'a> = Pin<Box<dyn Stream<Item = Result<String>> + Send + 'a>>;
pub type EventStream = Pin<Box<dyn Stream<Item = Result<ContainerEvent>> + Send>>;

/// A bridge network the hub wants.
#[derive(Debug, Clone, Default)]
pub struct NetworkSpec {
    pub name: String,
    pub labels: HashMap<String, String>,
    /// No traffic between the network's containers (Docker's `enable_icc=false`); each still reaches
    /// the host (the gateway) and, through it, what the host routes.
    pub isolated: bool,
}

#[derive(Debug, Clone)]
pub struct NetworkInfo {
    pub id: String,
    /// The host's address on the network; agents reach the hub through it.
    pub gateway: IpAddr,
    /// Whether its containers are kept from reaching each other (it may predate the hub asking).
    pub isolated: bool,
    /// Containers attached now.
    pub containers: usize,
    pub labels: HashMap<String, String>,
}

/// A file (or, with `dir`, a directory) placed into a container before it starts.
#[derive(Debug, Clone, Default)]
pub struct FileSpec {
    /// Absolute path inside the container.
    pub path: String,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub contents: Vec<u8>,
    pub dir: bool,
}

/// A bind mount or a named volume besides the workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// True: `source` is a host path; false: a volume name.
    pub bind: bool,
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

/// A volume driver and its options (`docker volume create --driver NAME --opt K=V`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeDriver {
    pub name: String,
    pub options: HashMap<String, String>,
}

/// What `logs` asks for.
#[derive(Debug, Clone, Default)]
pub struct LogsOptions {
    pub follow: bool,
    /// Only the last N lines (None: all).
    pub tail: Option<u64>,
    /// Unix seconds; only lines after it.
    pub since: Option<i64>,
    pub timestamps: bool,
}

/// A piece of a container's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    pub stderr: bool,
    pub data: Bytes,
}

pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogChunk>> + Send>>;

/// A path in a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathStat {
    pub is_dir: bool,
    pub size: i64,
    /// Permission bits.
    pub mode: u32,
}

/// An image as listings show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub id: String,
    pub tags: Vec<String>,
    pub labels: HashMap<String, String>,
    pub size_bytes: i64,
}

#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub labels: HashMap<String, String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub network: String,
    /// `name:ip` entries for the container's /etc/hosts.
    pub extra_hosts: Vec<String>,
    /// Named volume mounted at `volume_target`.
    pub volume: String,
    pub volume_target: String,
    pub nano_cpus: i64,
    pub memory_bytes: i64,
    pub pids_limit: i64,
    pub cap_add: Vec<String>,
    pub hostname: String,
    pub mounts: Vec<MountSpec>,
    /// Supplementary groups of the container's processes (numeric gids).
    pub group_add: Vec<String>,
    /// A read-only root filesystem, with an empty tmpfs at each of `tmpfs`.
    pub read_only_root: bool,
    pub tmpfs: Vec<String>,
    /// Swarm placement constraints; a single engine ignores them.
    pub placement: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    pub id: String,
    pub name: String,
    /// When its main process last started (unix ms; 0: never, or not known).
    pub started_at_ms: i64,
    pub running: bool,
    /// Docker's status word: created, running, exited, …
    pub status: String,
    pub exit_code: i64,
    pub oom_killed: bool,
    pub error: String,
    pub labels: HashMap<String, String>,
}

/// A machine agents run on: the one engine's host, or a Swarm node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInfo {
    pub id: String,
    pub hostname: String,
    /// "manager" or "worker" on a Swarm; "engine" for a single engine.
    pub role: String,
    /// ready, down, unknown, disconnected.
    pub state: String,
    /// active, pause, drain.
    pub availability: String,
    pub cpus: u32,
    pub memory_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerEventKind {
    Start,
    /// The main process ended.
    Die {
        exit_code: i64,
    },
    Oom,
    Destroy,
    /// The scheduler replaced the container with one on another node (Swarm); `why` says which node
    /// it left, for which one, and why.
    Rescheduled {
        why: String,
        /// When the replacement was made (unix ms): an agent that said hello since is already it.
        since_ms: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    pub container_id: String,
    pub labels: HashMap<String, String>,
    pub kind: ContainerEventKind,
}

#[async_trait::async_trait]
pub trait Driver: Send + Sync + std::fmt::Debug {
    /// A cheap call that proves the engine answers.
    async fn ping(&self) -> Result<()>;
    /// The number of CPUs the engine can give containers.
    async fn engine_cpus(&self) -> Result<u32>;

    async fn network_exists(&self, name: &str) -> Result<bool>;
    async fn inspect_network(&self, name: &str) -> Result<Option<NetworkInfo>>;
    /// The network, created as `spec` says when missing. An existing one is returned as it is.
    async fn ensure_network(&self, spec: &NetworkSpec) -> Result<NetworkInfo>;
    /// Removes a network; fails with Conflict while containers are attached.
    async fn remove_network(&self, name: &str) -> Result<()>;

    /// The image's id, if the engine has it.
    async fn image_id(&self, reference: &str) -> Result<Option<String>>;
    async fn inspect_image(&self, reference: &str) -> Result<Option<ImageInfo>>;
    /// Images carrying every one of `labels` (`key=value`).
    async fn list_images(&self, labels: &[String]) -> Result<Vec<ImageInfo>>;
    /// Removes an image (by id or tag); fails with Conflict while a container uses it.
    async fn remove_image(&self, reference: &str) -> Result<()>;
    /// Commits a container's filesystem (not its volumes) to `repo:tag`, or to an untagged image when
    /// `tag` is None, applying Dockerfile `changes` (one instruction per line); returns the image id.
    async fn commit_container(
        &self,
        container: &str,
        repo: &str,
        tag: Option<&str>,
        labels: HashMap<String, String>,
        changes: &str,
    ) -> Result<String>;
    /// Whether the hub's engine connection reaches every container's files (the archive calls below).
    /// On Swarm only the container's node's engine does, so `cp` goes over the agent's own link.
    fn archives_through_engine(&self) -> bool {
        true
    }
    /// A tar stream of `path` in a container (running or not; volumes included).
    fn download_archive(&self, container: &str, path: &str) -> ByteStream;
    /// What is at `path` in a container (None: nothing).
    async fn path_stat(&self, container: &str, path: &str) -> Result<Option<PathStat>>;
    /// Extracts a tar stream into a created or running container at `path`.
    async fn upload_archive(&self, container: &str, path: &str, tar: ByteStream) -> Result<()>;
    /// Imports a root filesystem tarball as an image (`docker import`).
    async fn import_rootfs(
        &self,
        reference: &str,
        tar: ByteStream,
        changes: Vec<String>,
    ) -> Result<()>;
    /// Builds an image from a tar build context, yielding the build log line by line.
    fn build_image<'a>(
        &'a self,
        reference: &'a str,
        context: Bytes,
        build_args: HashMap<String, String>,
    ) -> LineStream<'a>;

    /// Creates a named volume, with the engine's default driver unless `driver` names one.
    async fn create_volume(
        &self,
        name: &str,
        labels: HashMap<String, String>,
        driver: Option<&VolumeDriver>,
    ) -> Result<()>;
    async fn remove_volume(&self, name: &str) -> Result<()>;
    async fn volume_exists(&self, name: &str) -> Result<bool>;

    /// Creates (does not start) a container; returns its id.
    async fn create_container(&self, spec: &ContainerSpec) -> Result<String>;
    /// Writes `files` (absolute paths under `dir`) into the container, extracting them at `dir`: a
    /// read-only root filesystem takes files only through a volume, so `dir` is then a volume's mount point.
    async fn upload_files(&self, container: &str, dir: &str, files: &[FileSpec]) -> Result<()>;
    /// Connects a created container to another existing network.
    async fn connect_network(&self, container: &str, network: &str) -> Result<()>;
    async fn start_container(&self, container: &str) -> Result<()>;
    async fn stop_container(&self, container: &str, timeout_secs: Option<u32>) -> Result<()>;
    async fn remove_container(&self, container: &str) -> Result<()>;
    async fn inspect_container(&self, container: &str) -> Result<Option<ContainerState>>;
    /// The last `lines` lines the container's main process wrote (both streams, in order).
    async fn logs_tail(&self, container: &str, lines: usize) -> Result<Vec<String>>;
    /// The container's log as it is written; with `follow`, until the container stops.
    fn logs(&self, container: &str, options: LogsOptions) -> LogStream;
    /// Containers carrying `labels::MANAGED` and `labels::HUB == hub_id`, running or not.
    async fn list_managed(&self, hub_id: &str) -> Result<Vec<ContainerState>>;
    /// Container events for this hub's containers, from now on.
    fn events(&self, hub_id: &str) -> EventStream;

    /// The machines agents can run on.
    async fn nodes(&self) -> Result<Vec<NodeInfo>>;
    /// Which node runs each of this hub's containers (container id → node hostname); empty where
    /// there is only one place to run.
    async fn placements(&self, _hub_id: &str) -> Result<HashMap<String, String>> {
        Ok(HashMap::new())
    }
}
