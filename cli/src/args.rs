//! Command-line arguments (clap derive). Every flag also reads a `DOCKER_AGENT_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use docker_agent_hub::{AgentListen, DriverKind};

/// Run fleets of isolated agent containers from one hub.
#[derive(Debug, Parser)]
#[command(
    name = "docker-agent",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// The hub's data directory (SQLite store, TLS material, admin token).
    #[arg(long, global = true, env = "DOCKER_AGENT_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// The hub's operator address (host:port); default: the one the local hub wrote into its data dir.
    #[arg(long, global = true, env = "DOCKER_AGENT_HUB", value_name = "ADDR")]
    pub hub: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the hub (the server every other command talks to).
    Hub(Box<HubArgs>),
    /// Create an agent container and wait until its agent is ready.
    Create(CreateArgs),
    /// List agents.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// List the machines agents run on: a Swarm's nodes (state, availability, CPUs, memory, this
    /// hub's agents on each), or the one engine's host.
    Nodes(ListArgs),
    /// Show one agent in detail.
    Status(StatusArgs),
    /// Start a stopped agent.
    Start(NameArg),
    /// Stop an agent's container (its /workspace volume stays).
    Stop(StopArgs),
    /// Stop and start an agent.
    Restart(StopArgs),
    /// Remove an agent's container; --purge also removes its /workspace volume.
    #[command(visible_alias = "rm")]
    Destroy(DestroyArgs),
    /// Run a command in an agent, streaming its output; exits with the command's exit code.
    Exec(ExecArgs),
    /// An interactive login shell (or CMD) in an agent, on a pseudo-terminal; exits with its exit code.
    Shell(ShellArgs),
    /// List an agent's running shell sessions (to re-attach with `shell NAME --attach ID`).
    Sessions(StatusArgs),
    /// Submit a JSON task, or inspect tasks (get, logs, list, cancel).
    Task(TaskArgs),
    /// Stop a task's whole process group: TERM, then KILL after the grace period; or send one signal.
    Kill(KillArgs),
    /// Copy files or directories between an agent and this machine: `cp NAME:PATH LOCAL` or `cp LOCAL NAME:PATH`.
    Cp(CpArgs),
    /// List the profiles the hub offers, or show one as the hub resolved it.
    Profiles(ProfilesArgs),
    /// Print an agent's container log: the agent's own messages and its profile's setup steps.
    Logs(LogsArgs),
    /// Commit an agent's filesystem and /workspace to a snapshot image.
    Snapshot(SnapshotArgs),
    /// List snapshots, or remove them.
    Snapshots(SnapshotsArgs),
    /// List containers with this hub's labels that no agent owns; remove them with --force.
    Prune(PruneArgs),
    /// Build agent images ahead of time.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct HubArgs {
    /// Address for the CLI/API listener. Loopback by default: containers cannot reach it.
    #[arg(
        long,
        env = "DOCKER_AGENT_OPERATOR_LISTEN",
        default_value = "127.0.0.1:7080"
    )]
    pub operator_listen: SocketAddr,

    /// Address for the agent listener: gateway:PORT binds on the agents' network gateway, or IP:PORT.
    #[arg(
        long,
        env = "DOCKER_AGENT_AGENT_LISTEN",
        default_value = "gateway:7443"
    )]
    pub agent_listen: AgentListen,

    /// URL the agents dial (default https://host.docker.internal:<agent port>).
    #[arg(long, env = "DOCKER_AGENT_AGENT_URL")]
    pub agent_url: Option<String>,

    /// Also serve agents on a Unix socket in the data dir, mounted into each new container, so agents on
    /// this host skip the network stack (still TLS; they fall back to the URL when it fails).
    #[arg(long, env = "DOCKER_AGENT_AGENT_SOCKET", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub agent_socket: bool,

    /// The Docker network agents live on (created if missing).
    #[arg(long, env = "DOCKER_AGENT_NETWORK", default_value = "docker-agent")]
    pub network: String,

    /// The Docker engine the agents run on: unix:///PATH or tcp://HOST:PORT (default: DOCKER_HOST, else
    /// the local socket). A remote engine needs --agent-listen IP:PORT and --agent-url.
    #[arg(long, env = "DOCKER_AGENT_ENGINE", value_name = "URL")]
    pub engine: Option<String>,

    /// docker: agents are containers on the one engine. swarm: agents are services of a Swarm whose
    /// manager is --engine, with images pushed to --registry.
    #[arg(
        long,
        env = "DOCKER_AGENT_DRIVER",
        default_value = "docker",
        value_name = "docker|swarm"
    )]
    pub driver: DriverKind,

    /// The registry (HOST:PORT) Swarm nodes pull the agents' images from; --driver swarm only.
    #[arg(long, env = "DOCKER_AGENT_REGISTRY", value_name = "HOST:PORT")]
    pub registry: Option<String>,

    /// TLS for a tcp:// engine: a directory with ca.pem, cert.pem and key.pem, as `docker --tlsverify` uses.
    #[arg(long, env = "DOCKER_AGENT_ENGINE_TLS_DIR", value_name = "DIR")]
    pub engine_tls_dir: Option<PathBuf>,

    #[command(flatten)]
    pub image: ImageSource,

    #[command(flatten)]
    pub profiles: ProfilesDir,

    /// Interval the agents send heartbeats at.
    #[arg(long, env = "DOCKER_AGENT_HEARTBEAT_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// How long `create` and `start` wait for the agent to dial back.
    #[arg(long, env = "DOCKER_AGENT_READY_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    pub ready_timeout: Duration,

    /// How long a shell session lives with no terminal attached before it is ended.
    #[arg(long, env = "DOCKER_AGENT_SESSION_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub session_timeout: Duration,

    /// Delete ended tasks (their records and output) this long after they ended; 0: keep them.
    #[arg(long, env = "DOCKER_AGENT_RETAIN_TASKS", default_value = "30d", value_parser = parse_duration)]
    pub retain_tasks: Duration,

    /// Past this much stored task output, delete ended tasks oldest first; 0: no bound.
    #[arg(long, env = "DOCKER_AGENT_RETAIN_OUTPUT", default_value = "20g", value_parser = parse_bytes)]
    pub retain_output: u64,

    /// How long a dashboard login lasts unused (it ends 24 h after login whatever its use); 0: only
    /// the 24 h.
    #[arg(long, env = "DOCKER_AGENT_WEB_IDLE", default_value = "12h", value_parser = parse_duration)]
    pub web_idle: Duration,

    /// Where xterm.js's stylesheet and addons are installed (Debian's libjs-xterm), for the
    /// dashboard's terminal.
    #[arg(long, env = "DOCKER_AGENT_XTERM_DIR", default_value = docker_agent_hub::config::DEFAULT_XTERM_DIR)]
    pub xterm_dir: PathBuf,

    /// Where xterm.js's modules are installed (Debian's node-xterm); the hub bundles them for the
    /// browser.
    #[arg(long, env = "DOCKER_AGENT_XTERM_LIB_DIR", default_value = docker_agent_hub::config::DEFAULT_XTERM_LIB_DIR)]
    pub xterm_lib_dir: PathBuf,

    /// Grace between SIGTERM and SIGKILL when a task is cancelled or times out.
    #[arg(long, env = "DOCKER_AGENT_KILL_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub kill_grace: Duration,

    /// Bound of each agent's spool of output not yet acknowledged by the hub (e.g. 64m); beyond it, output
    /// produced while the hub is unreachable is dropped (and flagged on the task). Default: the agent's, 64m.
    #[arg(long, env = "DOCKER_AGENT_AGENT_SPOOL", value_parser = parse_bytes)]
    pub agent_spool: Option<u64>,

    /// How long an agent (or an address on the agents' network) that keeps breaking the protocol —
    /// floods, stalled handshakes, bad tokens, other agents' tasks — is refused once cut off.
    #[arg(long, env = "DOCKER_AGENT_AGENT_COOLDOWN", default_value = "30s", value_parser = parse_duration)]
    pub agent_cooldown: Duration,

    /// Output stored per task (stdout and stderr together); past it the rest is dropped and the task
    /// says so. A profile's `resources.max_output` replaces it for its agents.
    #[arg(long, env = "DOCKER_AGENT_MAX_TASK_OUTPUT", default_value = "2g", value_parser = parse_bytes)]
    pub max_task_output: u64,

    /// Output stored per agent over all its tasks; past it new output is dropped and flagged. A
    /// profile's `resources.max_agent_output` replaces it for its agents.
    #[arg(long, env = "DOCKER_AGENT_MAX_AGENT_OUTPUT", default_value = "16g", value_parser = parse_bytes)]
    pub max_agent_output: u64,

    /// Free space the data dir's file system keeps: below it the hub stores no new task output (it
    /// says so loudly and flags the tasks) instead of failing every write.
    #[arg(long, env = "DOCKER_AGENT_MIN_FREE_DISK", default_value = "1g", value_parser = parse_bytes)]
    pub min_free_disk: u64,

    /// Log filter (tracing env-filter syntax).
    #[arg(long, env = "DOCKER_AGENT_LOG", default_value = "info")]
    pub log: String,
}

/// Where user profiles live.
#[derive(Debug, Clone, Args)]
pub struct ProfilesDir {
    /// Directory of user profiles (*.toml, *.json) that add to and override the built-in ones
    /// (default: <home>/profiles).
    #[arg(long, env = "DOCKER_AGENT_PROFILES_DIR", value_name = "DIR")]
    pub profiles_dir: Option<PathBuf>,
}

/// Where image builds get the agent binary and the base root filesystem.
#[derive(Debug, Clone, Args)]
pub struct ImageSource {
    /// The static agent binary to bake into images (default: next to this executable or cargo's cross-target dir).
    #[arg(long, env = "DOCKER_AGENT_AGENT_BINARY", value_name = "PATH")]
    pub agent_binary: Option<PathBuf>,

    /// Base image: `debootstrap` builds one from Debian's packages; or an image already on the engine.
    #[arg(long, env = "DOCKER_AGENT_BASE_IMAGE", default_value = "debootstrap")]
    pub base_image: String,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Agent name: lower-case letters, digits and '-'.
    pub name: String,
    /// Profile to create from (see `docker-agent profiles`).
    #[arg(long, short, env = "DOCKER_AGENT_PROFILE")]
    pub profile: Option<String>,
    /// Extra environment for the container, KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// How long to wait for the agent to dial back (default: the hub's).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Start from a snapshot (see `docker-agent snapshots`) instead of a profile's image.
    #[arg(long, value_name = "TAG", conflicts_with = "profile")]
    pub from_snapshot: Option<String>,
    /// Accept a profile that mounts the host's Docker socket, which gives the agent root on this host.
    #[arg(long, env = "DOCKER_AGENT_ALLOW_DOCKER_SOCKET")]
    pub allow_docker_socket: bool,
    /// Join a group of agents that share a network and can reach each other (default: the profile's
    /// group). Agents outside a group cannot reach any other agent.
    #[arg(long, env = "DOCKER_AGENT_GROUP", value_name = "GROUP")]
    pub group: Option<String>,
    #[command(flatten)]
    pub json: JsonArg,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ProfilesArgs {
    #[command(subcommand)]
    pub command: Option<ProfilesCommand>,
    #[command(flatten)]
    pub json: JsonArg,
}

#[derive(Debug, Subcommand)]
pub enum ProfilesCommand {
    /// List the profiles (the default).
    #[command(visible_alias = "ls")]
    List {
        #[command(flatten)]
        json: JsonArg,
    },
    /// Print one profile as the hub resolved it (TOML; --json for JSON), with the image it builds to.
    Show {
        name: String,
        #[command(flatten)]
        json: JsonArg,
    },
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// NAME:PATH (in the agent; relative paths are under /workspace) or a local path.
    pub source: String,
    /// NAME:PATH or a local path; exactly one side is in the agent.
    pub destination: String,
    /// Keep the local owners (uid/gid) instead of giving copied-in files to the task user.
    #[arg(long, short)]
    pub archive: bool,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// The task id (see `docker-agent task list`).
    pub task: String,
    /// Send only this signal (a name such as HUP or SIGUSR1, or a number) to the task's process group,
    /// instead of TERM-then-KILL.
    #[arg(long, short, value_parser = parse_signal)]
    pub signal: Option<i32>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub name: String,
    /// Keep printing new output until the container stops.
    #[arg(long, short)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long, short = 'n', value_name = "N")]
    pub tail: Option<u64>,
    /// Only output after this: a duration ago (10m, 2h) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN", value_parser = parse_since)]
    pub since: Option<i64>,
    /// Prefix every line with its time.
    #[arg(long, short)]
    pub timestamps: bool,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// The agent to snapshot.
    pub name: String,
    /// The snapshot's tag (default NAME-YYYYMMDD-HHMMSS).
    #[arg(long, short)]
    pub tag: Option<String>,
    #[command(flatten)]
    pub json: JsonArg,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove the orphaned containers, or with --tasks the ended tasks (without it, they are only
    /// listed or counted).
    #[arg(long, short)]
    pub force: bool,
    /// Ended tasks (their records and output) instead of orphaned containers; running tasks are never
    /// touched. The hub also does this on its own (`hub --retain-tasks`, `--retain-output`).
    #[arg(long)]
    pub tasks: bool,
    /// With --tasks: only tasks that ended at least this long ago (default: every ended task).
    #[arg(long, value_parser = parse_duration, requires = "tasks")]
    pub older_than: Option<Duration>,
    #[command(flatten)]
    pub json: JsonArg,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SnapshotsArgs {
    #[command(subcommand)]
    pub command: Option<SnapshotsCommand>,
    #[command(flatten)]
    pub json: JsonArg,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotsCommand {
    /// List snapshots (the default).
    #[command(visible_alias = "ls")]
    List {
        #[command(flatten)]
        json: JsonArg,
    },
    /// Remove snapshots; refused while an agent made from one exists.
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        tags: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub json: JsonArg,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    pub name: String,
    #[command(flatten)]
    pub json: JsonArg,
}

#[derive(Debug, Args)]
pub struct NameArg {
    pub name: String,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    pub name: String,
    /// Seconds to wait for the container to stop before killing it.
    #[arg(long, short)]
    pub time: Option<u32>,
}

#[derive(Debug, Args)]
pub struct DestroyArgs {
    pub name: String,
    /// Also remove the agent's /workspace volume (its data is gone for good).
    #[arg(long)]
    pub purge: bool,
}

#[derive(Debug, Clone, Copy, Args)]
pub struct JsonArg {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Keep stdin open and forward it (implied when stdin is not a terminal).
    #[arg(long, short)]
    pub interactive: bool,
    /// Run the command on a pseudo-terminal, with this terminal in raw mode (implies -i).
    #[arg(long, short)]
    pub tty: bool,
    /// Environment for the command, KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// Working directory inside the container (default /workspace).
    #[arg(long, short = 'w')]
    pub workdir: Option<String>,
    /// Kill the command (its whole process group) after this long. Default: no timeout.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// The agent to run in.
    pub name: String,
    /// The command and its arguments, run as an argv as `docker exec` runs them. Exactly one argument
    /// with whitespace in it (`exec NAME "npm --version"`) is a command line, run by `/bin/sh -c` as
    /// `ssh HOST "CMD"` runs it.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
    /// A running terminal session to attach to instead (`shell --attach`).
    #[arg(skip)]
    pub attach: Option<String>,
}

#[derive(Debug, Args)]
pub struct ShellArgs {
    /// Environment for the shell, KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// Working directory inside the container (default /workspace).
    #[arg(long, short = 'w')]
    pub workdir: Option<String>,
    /// The agent to open the shell in.
    pub name: String,
    /// Run this instead of the login shell (after `--`).
    #[arg(last = true, value_name = "CMD", conflicts_with = "attach")]
    pub command: Vec<String>,
    /// Re-attach to a running session (see `docker-agent sessions NAME`): its recent output is
    /// replayed, then it continues live. Sessions outlive the terminal that started them.
    #[arg(long, value_name = "ID")]
    pub attach: Option<String>,
}

impl ShellArgs {
    /// The same as `exec -t NAME -- CMD`, CMD being the task user's login shell unless given.
    pub fn into_exec(self) -> ExecArgs {
        let command = if self.command.is_empty() {
            // bash where the image has it (every docker-agent image does), sh otherwise.
            vec![
                "/bin/sh".into(),
                "-c".into(),
                "if [ -x /bin/bash ]; then exec /bin/bash -l; else exec /bin/sh -l; fi".into(),
            ]
        } else {
            self.command
        };
        ExecArgs {
            interactive: true,
            tty: true,
            env: self.env,
            workdir: self.workdir,
            timeout: None,
            name: self.name,
            command,
            attach: self.attach,
        }
    }
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct TaskArgs {
    #[command(subcommand)]
    pub command: Option<TaskCommand>,
    /// The agent to run the task in.
    #[arg(required = true)]
    pub name: Option<String>,
    /// The task, e.g. '{"type":"exec","command":"pwd"}' or '{"type":"script","script":"..."}'.
    #[arg(value_name = "JSON", required = true)]
    pub task: Option<String>,
    /// Print the task id and return at once; fetch the result later with `task get ID`.
    #[arg(long, short)]
    pub detach: bool,
    #[command(flatten)]
    pub output: JsonArg,
}

impl TaskArgs {
    /// The submit form (`task NAME JSON`) when no subcommand was given.
    pub fn into_run(self) -> Option<TaskRunArgs> {
        Some(TaskRunArgs {
            name: self.name?,
            task: self.task?,
            detach: self.detach,
            output: self.output,
        })
    }
}

#[derive(Debug, Args)]
pub struct TaskRunArgs {
    /// The agent to run the task in.
    pub name: String,
    /// The task, e.g. '{"type":"exec","command":"pwd"}' or '{"type":"script","script":"..."}'.
    #[arg(value_name = "JSON")]
    pub task: String,
    /// Print the task id and return at once; fetch the result later with `task get ID`.
    #[arg(long, short)]
    pub detach: bool,
    #[command(flatten)]
    pub output: JsonArg,
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Submit a JSON task (the same as `task NAME JSON`).
    Run(TaskRunArgs),
    /// Show a task's state, result and stored output.
    Get {
        id: String,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Print a task's output; --follow keeps printing while it runs.
    Logs {
        id: String,
        #[arg(long, short)]
        follow: bool,
    },
    /// List recent tasks, of one agent or all.
    List {
        name: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Stop a task: SIGTERM to its process group, SIGKILL after the grace period.
    Cancel { id: String },
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build the image of a profile (the default profile if none is named); a no-op when it is current.
    Build {
        #[arg(long, short)]
        profile: Option<String>,
        #[command(flatten)]
        source: ImageSource,
        #[command(flatten)]
        profiles: ProfilesDir,
        /// Print only the image tag.
        #[arg(long, short)]
        quiet: bool,
    },
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration (e.g. 30s, 5m, 1h): {e}"))
}

fn parse_bytes(text: &str) -> Result<u64, String> {
    docker_agent_hub::profile::parse_size(text)
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// A signal by name (`TERM`, `SIGTERM`, case-insensitive) or number (1-31).
pub fn parse_signal(text: &str) -> Result<i32, String> {
    const NAMES: &[(&str, i32)] = &[
        ("HUP", 1),
        ("INT", 2),
        ("QUIT", 3),
        ("ILL", 4),
        ("TRAP", 5),
        ("ABRT", 6),
        ("BUS", 7),
        ("FPE", 8),
        ("KILL", 9),
        ("USR1", 10),
        ("SEGV", 11),
        ("USR2", 12),
        ("PIPE", 13),
        ("ALRM", 14),
        ("TERM", 15),
        ("CHLD", 17),
        ("CONT", 18),
        ("STOP", 19),
        ("TSTP", 20),
        ("TTIN", 21),
        ("TTOU", 22),
        ("URG", 23),
        ("XCPU", 24),
        ("XFSZ", 25),
        ("VTALRM", 26),
        ("PROF", 27),
        ("WINCH", 28),
        ("IO", 29),
        ("PWR", 30),
        ("SYS", 31),
    ];
    if let Ok(n) = text.parse::<i32>() {
        return if (1..=31).contains(&n) {
            Ok(n)
        } else {
            Err(format!("{n} is not a signal number (1-31)"))
        };
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, number)| *number)
        .ok_or_else(|| {
            format!("{text:?} is not a signal (e.g. TERM, KILL, HUP, USR1, or a number)")
        })
}

/// `--since`: a duration ago or an RFC 3339 time, as unix seconds.
fn parse_since(text: &str) -> Result<i64, String> {
    let now = std::time::SystemTime::now();
    let at = match humantime::parse_duration(text) {
        Ok(ago) => now.checked_sub(ago).ok_or("too far back")?,
        Err(_) => humantime::parse_rfc3339_weak(text).map_err(|_| {
            format!("{text:?} is neither a duration (10m) nor a time (2026-11-23T10:00:00Z)")
        })?,
    };
    Ok(at
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| "before 1970")?
        .as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn task_forms() {
        let cli = Cli::try_parse_from([
            "docker-agent",
            "task",
            "demo",
            r#"{"type":"exec","command":"pwd"}"#,
        ])
        .unwrap();
        let Command::Task(t) = cli.command else {
            panic!()
        };
        assert!(t.command.is_none());
        assert_eq!(t.into_run().unwrap().name, "demo");
        assert!(Cli::try_parse_from(["docker-agent", "task", "demo"]).is_err());
        let cli = Cli::try_parse_from(["docker-agent", "task", "get", "abc"]).unwrap();
        let Command::Task(t) = cli.command else {
            panic!()
        };
        assert!(matches!(t.command, Some(TaskCommand::Get { .. })));
    }

    #[test]
    fn exec_takes_the_rest_as_the_command() {
        let cli = Cli::try_parse_from(["docker-agent", "exec", "demo", "--", "ls", "-la"]).unwrap();
        let Command::Exec(e) = cli.command else {
            panic!()
        };
        assert_eq!(e.command, ["ls", "-la"]);
        let cli = Cli::try_parse_from([
            "docker-agent",
            "exec",
            "-e",
            "A=1",
            "demo",
            "sh",
            "-c",
            "echo $A",
        ])
        .unwrap();
        let Command::Exec(e) = cli.command else {
            panic!()
        };
        assert_eq!(e.command, ["sh", "-c", "echo $A"]);
        assert_eq!(e.env, [("A".to_string(), "1".to_string())]);
    }

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(parse_signal("TERM"), Ok(15));
        assert_eq!(parse_signal("sigkill"), Ok(9));
        assert_eq!(parse_signal("usr1"), Ok(10));
        assert_eq!(parse_signal("2"), Ok(2));
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("32").is_err());
        assert!(
            parse_signal("SIGNOPE")
                .unwrap_err()
                .contains("not a signal")
        );
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(
            Cli::try_parse_from(["docker-agent", "exec", "-e", "novalue", "demo", "x"]).is_err()
        );
        assert!(
            Cli::try_parse_from(["docker-agent", "hub", "--heartbeat-interval", "soon"]).is_err()
        );
        assert!(Cli::try_parse_from(["docker-agent", "hub", "--agent-listen", "nowhere"]).is_err());
    }
}
