//! The probe's command line: one subcommand per probe.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "docker-agent-probe",
    about = "Probes run inside an agent container by the end-to-end tests"
)]
pub struct Args {
    #[command(subcommand)]
    pub probe: Probe,
}

/// Where a probe connects: the agent socket mounted in the container, or a TCP address.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// A Unix socket (the agent socket: /run/docker-agent/hub/agent.sock).
    #[arg(long, env = "DOCKER_AGENT_PROBE_SOCKET")]
    pub socket: Option<PathBuf>,
    /// HOST:PORT; HOST is an IP or a name in /etc/hosts (host.docker.internal).
    #[arg(long, env = "DOCKER_AGENT_PROBE_TCP")]
    pub tcp: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Hold {
    /// Connect and send nothing.
    Silent,
    /// Send the first bytes of a TLS ClientHello and nothing more: a handshake that never finishes.
    PartialTls,
    /// Finish the TLS handshake (without checking the hub's certificate), then send nothing.
    Tls,
}

#[derive(Debug, Subcommand)]
pub enum Probe {
    /// Accept TCP connections on PORT and answer each with one line naming this host. Prints
    /// "listening" once bound.
    Listen {
        #[arg(env = "DOCKER_AGENT_PROBE_PORT")]
        port: u16,
    },
    /// Connect to HOST:PORT and print the first line the server sends; exit 1 when it cannot.
    Connect {
        #[arg(env = "DOCKER_AGENT_PROBE_ADDRESS")]
        address: String,
        /// Give up after this many milliseconds.
        #[arg(long, env = "DOCKER_AGENT_PROBE_TIMEOUT_MS", default_value_t = 3000)]
        timeout_ms: u64,
        /// Succeed once the connection is made, without waiting for a line (a TLS server sends none).
        #[arg(long, env = "DOCKER_AGENT_PROBE_CONNECT_ONLY")]
        connect_only: bool,
    },
    /// Hold as many connections open as the hub lets in, for SECONDS, opening a new one whenever one
    /// is closed: the connection flood of a hostile sandbox.
    Flood {
        #[command(flatten)]
        target: Target,
        /// What each connection does once open.
        #[arg(
            long,
            value_enum,
            env = "DOCKER_AGENT_PROBE_HOLD",
            default_value = "tls"
        )]
        hold: Hold,
        /// Connections to keep open at once.
        #[arg(long, env = "DOCKER_AGENT_PROBE_CONNECTIONS", default_value_t = 2000)]
        connections: usize,
        #[arg(long, env = "DOCKER_AGENT_PROBE_SECONDS", default_value_t = 30)]
        seconds: u64,
    },
    /// With this container's agent credentials (readable when tasks run as root), open sessions as the
    /// agent and send messages of MESSAGE_BYTES as fast as the hub takes them, for SECONDS.
    Impersonate {
        #[command(flatten)]
        target: Target,
        #[arg(long, env = "DOCKER_AGENT_PROBE_MESSAGE_BYTES", default_value_t = 4 << 20)]
        message_bytes: usize,
        #[arg(long, env = "DOCKER_AGENT_PROBE_SECONDS", default_value_t = 30)]
        seconds: u64,
    },
}
