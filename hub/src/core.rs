//! The hub's shared state, handed to every service: store, driver, sessions, buses, profiles and images.

use std::sync::Arc;
use std::time::Duration;

use crate::bus::Bus;
use crate::driver::Driver;
use crate::image::ImageBuilder;
use crate::profile::ProfileSet;
use crate::registry::Registry;
use crate::store::Store;

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
    pub data_dir: std::path::PathBuf,
}

#[derive(Debug)]
pub struct Core {
    pub settings: Settings,
    pub store: Store,
    pub driver: Arc<dyn Driver>,
    pub registry: Registry,
    pub bus: Bus,
    pub profiles: ProfileSet,
    pub images: ImageBuilder,
    /// Serialises lifecycle transitions, which read, decide and write.
    pub(crate) transitions: std::sync::Mutex<()>,
}
