//! Load mode for benchmarks: thousands of simulated agents in one process, each running the real
//! connection code (dial, TLS, Hello, heartbeats, tasks, reconnects) under its own identity, with no container.
//!
//! What is simulated is only what a container would give each agent: its own process and health
//! counters. The agents here share one health sample and one runtime; their tasks are real processes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use docker_agent_proto::v1::Health;

use crate::agent::connect_forever;
use crate::config::{Config, HubTarget, Token};
use crate::health::{HealthSampler, HealthSource};
use crate::link::Identity;
use crate::state::{ExecSettings, Shared};
use crate::users::TaskUser;
use crate::{reaper, spawn, system};

/// How often the shared health sample is refreshed, at most.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Each simulated agent's bound on unacknowledged output (a real agent's default is 64 MiB; here
/// thousands share one process, and benchmark tasks print little).
const SPOOL_BYTES: u64 = 1 << 20;

/// One simulated agent: the id and token the hub issued for it.
#[derive(Debug, Clone)]
pub struct SimulatedAgent {
    pub id: String,
    pub token: Token,
}

/// Where the hub is and whom to simulate.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub hub: HubTarget,
    pub ca_pem: Vec<u8>,
    /// Tasks run as this user, in `workdir`.
    pub task_user: TaskUser,
    pub workdir: std::path::PathBuf,
    pub agents: Vec<SimulatedAgent>,
    /// New links opened per second while ramping up, so the hub is not hit by one burst of handshakes.
    pub connects_per_sec: u32,
}

/// One health sample for every simulated agent, refreshed at most once a second: sampling per agent
/// would measure this process reading /proc ten thousand times, not the hub.
#[derive(Clone)]
struct SharedHealth {
    inner: Arc<Mutex<Cache>>,
}

/// The sampler and its latest sample, with when it was taken.
type Cache = (HealthSampler, Option<(Instant, Health)>);

impl HealthSource for SharedHealth {
    fn sample(&mut self, running_tasks: u32, _idle: bool) -> Health {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (sampler, cached) = &mut *guard;
        let fresh = match cached {
            Some((at, h)) if at.elapsed() < SAMPLE_EVERY => *h,
            _ => {
                let h = sampler.sample(0);
                *cached = Some((Instant::now(), h));
                h
            }
        };
        Health {
            running_tasks,
            ..fresh
        }
    }
}

/// Starts every simulated agent (ramping at `connects_per_sec`) and keeps them connected forever.
pub async fn run(load: LoadConfig) -> std::io::Result<()> {
    reaper::spawn()?;
    let exec = ExecSettings {
        user: load.task_user.clone(),
        workdir: load.workdir.clone(),
        base_env: spawn::base_env(std::env::vars_os()),
        kill_grace: Duration::from_secs(5),
        oom_score_adj: spawn::task_oom_score_adj(),
    };
    let health = SharedHealth {
        inner: Arc::new(Mutex::new((HealthSampler::new(&load.workdir), None))),
    };
    let system = system::system_info();
    let pause = Duration::from_secs(1) / load.connects_per_sec.max(1);
    let mut next = tokio::time::Instant::now();
    for agent in load.agents {
        let config = Config {
            hub: load.hub.clone(),
            agent_id: agent.id,
            token: agent.token,
            ca_pem: load.ca_pem.clone(),
            task_user: load.task_user.clone(),
            workdir: load.workdir.clone(),
            spool_bytes: SPOOL_BYTES,
            kill_grace: exec.kill_grace,
            setup_file: std::path::PathBuf::new(),
            state_dir: std::path::PathBuf::new(),
        };
        let identity = Identity {
            instance_id: hex::encode(rand::random::<[u8; 16]>()),
            system: system.clone(),
        };
        let shared = Arc::new(Shared::new(SPOOL_BYTES, exec.clone()));
        tokio::spawn(connect_forever(shared, config, identity, health.clone()));
        next += pause;
        tokio::time::sleep_until(next).await;
    }
    std::future::pending().await
}
