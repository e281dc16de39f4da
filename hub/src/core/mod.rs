//! The hub's shared state, handed to every service: store, driver, the registry of live agent links,
//! the buses, health history, profiles and images. Everything in the hub that does something is an
//! `impl Core` in the folder of its domain, above this one.

pub mod bus;
pub mod health;
pub mod registry;
pub mod stdin;

use std::sync::Arc;
use std::time::Duration;

use crate::driver::Driver;
use crate::image::ImageBuilder;
use crate::profile::ProfileCatalog;
use crate::store::Store;
use bus::Bus;
use registry::Registry;

/// Each agent's own socket directory, which its container mounts (served by `api::agents::sockets`).
pub trait SocketDirs: Send + Sync + std::fmt::Debug {
    /// Makes `agent_id`'s directory and serves its socket there; returns the directory to mount.
    fn open(&self, agent_id: &str) -> std::io::Result<std::path::PathBuf>;
    /// Stops serving `agent_id`'s socket and removes its directory (the agent is gone).
    fn remove(&self, agent_id: &str);
}

/// Values fixed at start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub hub_id: String,
    pub network: String,
    /// URL the agents dial, written into each container's command line.
    pub agent_url: String,
    pub heartbeat_interval: Duration,
    pub ready_timeout: Duration,
    /// Grace between TERM and KILL when a task is cancelled or times out.
    pub kill_grace: Duration,
    pub ca_pem: String,
    /// Passed to each agent as `--spool-bytes` when set.
    pub agent_spool_bytes: Option<u64>,
    pub data_dir: std::path::PathBuf,
    /// The user profile directory (added to and overriding the built-in profiles).
    pub profiles_dir: Option<std::path::PathBuf>,
    /// CPUs the engine has: the most a container can be given.
    pub engine_cpus: u32,
    /// How long a terminal session lives with nobody attached.
    pub session_timeout: Duration,
    /// How long ended tasks are kept, and how much of their output (`hub --retain-*`).
    pub retention: crate::store::Retention,
}

#[derive(Debug)]
pub struct Core {
    pub settings: Settings,
    pub store: Store,
    pub driver: Arc<dyn Driver>,
    pub registry: Registry,
    pub bus: Bus,
    pub images: ImageBuilder,
    /// Each agent's own socket; None: agents use the TCP port only (`--agent-socket=false`).
    pub agent_sockets: Option<Arc<dyn SocketDirs>>,
    pub health: crate::core::health::HealthHistory,
    /// Serialises lifecycle transitions, which read, decide and write.
    pub(crate) transitions: std::sync::Mutex<()>,
    /// Per agent: orders what goes onto its stream (see `Core::stream_lock`).
    pub(crate) stream_locks:
        std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Woken whenever tasks leave the queue, for senders waiting to follow a task.
    pub(crate) dispatched: tokio::sync::Notify,
    /// Per task with stdin: what the agent has not acknowledged yet (see `core::stdin`).
    pub stdin: stdin::StdinWindows,
    /// Per terminal task: how many clients are attached (see `sessions.rs`).
    pub(crate) attached: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

impl Core {
    /// The profiles as they are now: the user directory is read on every call, so edits apply at once.
    pub fn profiles(&self) -> ProfileCatalog {
        ProfileCatalog::load(self.settings.profiles_dir.as_deref())
    }
}

#[cfg(any(test, feature = "fuzzing"))]
impl Core {
    /// A core on an in-memory store and the given (fake) driver, for unit tests.
    pub fn for_tests(driver: Arc<dyn Driver>, dir: &std::path::Path) -> Arc<Self> {
        // The smallest file the image builder takes for a static agent: an ELF header with no program headers.
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        let agent = dir.join("docker-agent-agent");
        std::fs::write(&agent, elf).unwrap();
        Arc::new(Core {
            settings: Settings {
                hub_id: "testhub".into(),
                network: "net".into(),
                agent_url: "https://host.docker.internal:1".into(),
                heartbeat_interval: Duration::from_secs(1),
                ready_timeout: Duration::from_secs(1),
                kill_grace: Duration::from_secs(1),
                ca_pem: String::new(),
                agent_spool_bytes: None,
                data_dir: dir.to_path_buf(),
                profiles_dir: None,
                engine_cpus: 2,
                session_timeout: Duration::from_secs(1),
                retention: Default::default(),
            },
            store: Store::open_in_memory().unwrap(),
            images: ImageBuilder::new(
                driver.clone(),
                Some(agent),
                "base".into(),
                dir.join("build"),
            ),
            driver,
            agent_sockets: None,
            registry: Registry::default(),
            bus: Bus::default(),
            health: Default::default(),
            transitions: Default::default(),
            stream_locks: Default::default(),
            dispatched: Default::default(),
            stdin: Default::default(),
            attached: Default::default(),
        })
    }
}
