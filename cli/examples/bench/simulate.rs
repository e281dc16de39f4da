//! `bench simulate FILE`: the load process of the scale benchmark. It runs the agent's load mode
//! (`docker_agent_agent::load`) for the agents listed in FILE, until killed.

use std::path::{Path, PathBuf};

use docker_agent_agent::config::{HubTarget, Token, parse_hub_url};
use docker_agent_agent::load::{LoadConfig, SimulatedAgent};
use serde::{Deserialize, Serialize};

/// What the scale benchmark hands its load process.
#[derive(Debug, Serialize, Deserialize)]
pub struct LoadFile {
    pub hub_url: String,
    pub ca_pem: String,
    pub workdir: PathBuf,
    pub connects_per_sec: u32,
    /// (agent id, token)
    pub agents: Vec<(String, String)>,
}

pub fn main(file: &Path) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DOCKER_AGENT_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    // Every simulated agent holds a socket.
    docker_agent_hub::api::limits::raise_fd_limit();
    let load: LoadFile =
        serde_json::from_slice(&std::fs::read(file).expect("read the load file")).expect("json");
    let (host, port) = parse_hub_url(&load.hub_url).expect("hub url");
    let uid = nix_uid();
    let config = LoadConfig {
        // The URL names the host as containers reach it; this process is on the host itself.
        hub: HubTarget {
            url: load.hub_url.clone(),
            server_name: host,
            host: "127.0.0.1".into(),
            port,
            // Simulated agents are processes on the host: they dial the TCP port, as remote ones would.
            socket: None,
        },
        ca_pem: load.ca_pem.into_bytes(),
        task_user: docker_agent_agent::users::lookup(&uid.to_string()).expect("task user"),
        workdir: load.workdir,
        agents: load
            .agents
            .into_iter()
            .map(|(id, token)| SimulatedAgent {
                id,
                token: Token::new(token),
            })
            .collect(),
        connects_per_sec: load.connects_per_sec,
    };
    // One thread, as in a real agent: the load process should not outweigh the hub on a small machine.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(docker_agent_agent::load::run(config))
        .expect("load mode");
}

fn nix_uid() -> u32 {
    nix::unistd::getuid().as_raw()
}
