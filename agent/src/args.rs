//! Command-line flags of the agent; the hub passes them as the container's Cmd, each also readable from a `DOCKER_AGENT_*` variable.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The in-container agent: dials the hub, runs tasks, streams their output, reports health.
#[derive(Debug, Clone, Parser)]
#[command(name = "docker-agent-agent", version, about)]
pub struct Args {
    /// Hub agent listener, as https://HOST:PORT.
    #[arg(long, env = "DOCKER_AGENT_HUB_URL")]
    pub hub_url: String,

    /// This agent's id, sent on every link.
    #[arg(long, env = "DOCKER_AGENT_AGENT_ID")]
    pub agent_id: String,

    /// File holding the agent's bearer token; read once at start.
    #[arg(
        long,
        env = "DOCKER_AGENT_TOKEN_FILE",
        default_value = "/etc/docker-agent/token"
    )]
    pub token_file: PathBuf,

    /// PEM file of the hub's CA; the only root trusted for the hub's certificate.
    #[arg(
        long,
        env = "DOCKER_AGENT_CA_FILE",
        default_value = "/etc/docker-agent/ca.pem"
    )]
    pub ca_file: PathBuf,

    /// The hub's agent socket (mounted by the hub), dialled first when present: the same TLS and token,
    /// without the network stack. When it fails, the agent dials `--hub-url`.
    #[arg(long, env = "DOCKER_AGENT_HUB_SOCKET")]
    pub hub_socket: Option<PathBuf>,

    /// Name to verify in the hub's certificate (and send as SNI); defaults to the URL's host.
    #[arg(long, env = "DOCKER_AGENT_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,

    /// User that tasks run as: a name or a numeric uid from /etc/passwd (`root` is allowed).
    #[arg(long, env = "DOCKER_AGENT_TASK_USER", default_value = "agent")]
    pub task_user: String,

    /// Extra supplementary groups (numeric gids, comma-separated) for the task user, e.g. the group of a
    /// mounted Docker socket, which the image's /etc/group does not know.
    #[arg(long, env = "DOCKER_AGENT_TASK_GROUPS", value_delimiter = ',')]
    pub task_groups: Vec<u32>,

    /// Working directory of tasks that do not name one; its filesystem is reported as the disk.
    #[arg(long, env = "DOCKER_AGENT_WORKDIR", default_value = "/workspace")]
    pub workdir: PathBuf,

    /// Bound on output not yet acknowledged by the hub, all tasks together; the oldest bytes are dropped past it.
    #[arg(long, env = "DOCKER_AGENT_SPOOL_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub spool_bytes: u64,

    /// Time between TERM and KILL when a task is stopped and the hub named no grace.
    #[arg(long, env = "DOCKER_AGENT_KILL_GRACE_MS", default_value_t = 5000)]
    pub kill_grace_ms: u64,

    /// The profile's setup steps (an encoded SetupPlan), run once before any task; absent: none.
    #[arg(
        long,
        env = "DOCKER_AGENT_SETUP_FILE",
        default_value = "/etc/docker-agent/setup.pb"
    )]
    pub setup_file: PathBuf,

    /// Where the agent keeps state across container restarts (how many setup steps succeeded).
    #[arg(
        long,
        env = "DOCKER_AGENT_STATE_DIR",
        default_value = "/var/lib/docker-agent"
    )]
    pub state_dir: PathBuf,

    /// Make link-local addresses (169.254.0.0/16: cloud metadata services) unreachable from the
    /// container, then give up CAP_NET_ADMIN. The hub sets it for every container it makes.
    #[arg(long, env = "DOCKER_AGENT_BLOCK_LINK_LOCAL")]
    pub block_link_local: bool,
}

/// `docker-agent-agent archive OP`: the container's side of `docker-agent cp` over the agent's link
/// (`archive`). The hub runs it as a task; it takes no flags, so it has no variables.
#[derive(Debug, Clone, Parser)]
#[command(name = "docker-agent-agent archive")]
pub struct ArchiveArgs {
    #[command(subcommand)]
    pub op: ArchiveOp,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ArchiveOp {
    /// Print `dir|file SIZE MODE` for PATH; exit 2 when nothing is there.
    Stat { path: PathBuf },
    /// Write a tar of PATH to stdout, its entries under PATH's base name.
    Create { path: PathBuf },
    /// Extract a tar from stdin into the directory DIR.
    Extract { dir: PathBuf },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Args::command().debug_assert();
        ArchiveArgs::command().debug_assert();
    }

    #[test]
    fn every_flag_has_a_docker_agent_env_var() {
        let cmd = Args::command();
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            let env = arg
                .get_env()
                .unwrap_or_else(|| panic!("--{id} has no env var"));
            assert!(
                env.to_string_lossy().starts_with("DOCKER_AGENT_"),
                "{id}: {env:?}"
            );
        }
    }
}
