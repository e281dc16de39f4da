//! The REST API's JSON shapes, and how hub records become them. Times are RFC 3339 in UTC; sizes are
//! bytes.

use std::collections::BTreeMap;

use docker_agent_proto::v1::task_result::Outcome;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store::{AgentRecord, EventRecord, TaskRecord};

/// RFC 3339 (UTC, milliseconds) for a Unix time in ms; `None` for 0 (never).
pub fn time(ms: i64) -> Option<String> {
    (ms > 0).then(|| {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
        humantime::format_rfc3339_millis(at).to_string()
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Agent {
    pub name: String,
    pub id: String,
    pub profile: String,
    pub image: String,
    pub container_id: Option<String>,
    /// creating, starting, ready, start_error, stopping, stopped, destroyed.
    pub lifecycle: String,
    /// Why the agent is in its lifecycle state (setup progress, exit code, OOM kill...).
    pub lifecycle_reason: String,
    pub lifecycle_since: Option<String>,
    /// connecting, connected, disconnected, timeout.
    pub connection: String,
    pub connection_since: Option<String>,
    pub created_at: Option<String>,
    pub last_heartbeat: Option<String>,
    pub running_tasks: u32,
    pub failed_tasks: u32,
    pub resources: Resources,
    pub health: Option<Health>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Resources {
    /// 0: no limit.
    pub cpus: f64,
    /// 0: no limit.
    pub memory_bytes: u64,
    /// 0: no limit.
    pub pids: i64,
}

/// The agent's last heartbeat.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Percent of one core since the previous heartbeat.
    pub cpu_percent: f64,
    pub memory_used_bytes: u64,
    /// 0 when the container has no limit.
    pub memory_limit_bytes: u64,
    pub disk_used_bytes: u64,
    pub disk_total_bytes: u64,
    pub load1: f64,
    pub process_count: u32,
    pub uptime_secs: u64,
}

impl Agent {
    pub fn from_record(a: AgentRecord, running_tasks: u32, failed_tasks: u32) -> Self {
        Self {
            health: a.health.map(|h| Health {
                cpu_percent: h.cpu_percent,
                memory_used_bytes: h.memory_used_bytes,
                memory_limit_bytes: h.memory_limit_bytes,
                disk_used_bytes: h.disk_used_bytes,
                disk_total_bytes: h.disk_total_bytes,
                load1: h.load1,
                process_count: h.process_count,
                uptime_secs: h.uptime_secs,
            }),
            name: a.name,
            id: a.id,
            profile: a.profile,
            image: a.image,
            container_id: a.container_id,
            lifecycle: a.lifecycle.as_str().to_string(),
            lifecycle_reason: a.lifecycle_reason,
            lifecycle_since: time(a.lifecycle_at),
            connection: a.connection.as_str().to_string(),
            connection_since: time(a.connection_at),
            created_at: time(a.created_at),
            last_heartbeat: time(a.last_heartbeat),
            running_tasks,
            failed_tasks,
            resources: Resources {
                cpus: a.cpus,
                memory_bytes: a.memory_bytes,
                pids: a.pids,
            },
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    /// 1-63 lower-case letters, digits and dashes, not starting or ending with a dash.
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// Default: minimal.
    #[serde(default)]
    pub profile: Option<String>,
    /// Extra environment for the agent's tasks.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Start from this snapshot tag instead of the profile's image.
    #[serde(default)]
    pub from_snapshot: Option<String>,
    /// Accept a profile that mounts the host's Docker socket (root on the host).
    #[serde(default)]
    pub allow_docker_socket: bool,
    /// Join this group of agents, which share a network (default: the profile's group, if any).
    #[serde(default)]
    pub group: Option<String>,
    /// How long to wait for the agent to register (default: the hub's).
    #[serde(default)]
    pub ready_timeout_secs: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Destroyed {
    pub name: String,
    pub container_removed: bool,
    pub volume_removed: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Task {
    pub id: String,
    pub agent: String,
    /// queued, dispatched, running, finished, lost, cancelled.
    pub state: String,
    /// exec or script.
    pub kind: String,
    /// The program and its arguments, when run directly.
    pub argv: Vec<String>,
    /// The command line, when run through `/bin/sh -c`.
    pub shell: Option<String>,
    pub cwd: Option<String>,
    /// Names only: values may be secrets.
    pub env: Vec<String>,
    pub timeout_ms: u64,
    pub terminal: bool,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Why the task could not start, or why it ended without a result.
    pub error: Option<String>,
    pub duration_ms: Option<u64>,
    pub timed_out: bool,
    /// Killed by the kernel's OOM killer (the container's memory limit).
    pub oom_killed: bool,
    /// Some output is missing: the agent's spool overflowed while its link was down, or the hub stopped
    /// storing it (`output_dropped` says why).
    pub output_truncated: bool,
    /// Why the hub stopped storing the output before the task's end: task (its max_output), agent
    /// (its agent's max_agent_output) or disk (the hub's free-space floor).
    pub output_dropped: Option<String>,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
}

impl Task {
    pub fn from_record(t: TaskRecord, agent: &str) -> Self {
        let result = t.result.as_ref();
        let outcome = result.and_then(|r| r.outcome.clone());
        let error = match (&outcome, t.error.is_empty()) {
            (Some(Outcome::Error(e)), _) => Some(e.clone()),
            (_, false) => Some(t.error.clone()),
            _ => None,
        };
        Self {
            id: t.id,
            agent: agent.to_string(),
            state: t.state.as_str().to_string(),
            kind: t.spec.kind.clone(),
            argv: t.spec.argv.clone(),
            shell: (!t.spec.shell.is_empty()).then(|| t.spec.shell.clone()),
            cwd: (!t.spec.cwd.is_empty()).then(|| t.spec.cwd.clone()),
            env: t.spec.env.keys().cloned().collect(),
            timeout_ms: t.spec.timeout_ms,
            terminal: t.spec.pty.is_some(),
            created_at: time(t.created_at),
            started_at: time(t.started_at),
            finished_at: time(t.finished_at),
            exit_code: match outcome {
                Some(Outcome::ExitCode(c)) => Some(c),
                _ => None,
            },
            signal: match outcome {
                Some(Outcome::Signal(s)) => Some(s),
                _ => None,
            },
            error,
            duration_ms: result.map(|r| r.duration_ms),
            timed_out: result.is_some_and(|r| r.timed_out),
            oom_killed: result.is_some_and(|r| r.oom_killed),
            output_truncated: result.is_some_and(|r| r.output_truncated)
                || t.output_dropped.is_some(),
            output_dropped: t.output_dropped.map(|cap| cap.as_str().to_string()),
            stdout_bytes: t.stdout_len,
            stderr_bytes: t.stderr_len,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Profile {
    pub name: String,
    pub description: String,
    /// "builtin" or the file it was read from.
    pub source: String,
    pub packages: Vec<String>,
    pub user: String,
    pub cpus: f64,
    pub memory_bytes: u64,
    pub pids: i64,
}

impl From<&crate::profile::Profile> for Profile {
    fn from(p: &crate::profile::Profile) -> Self {
        Self {
            name: p.name.clone(),
            description: p.description.clone(),
            source: p.origin.clone(),
            packages: p.packages.clone(),
            user: p.user.clone(),
            cpus: p.cpus,
            memory_bytes: p.memory_bytes,
            pids: p.pids,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Profiles {
    pub profiles: Vec<Profile>,
    /// Profile files that could not be read, one line each.
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Event {
    pub id: i64,
    pub at: Option<String>,
    pub agent: String,
    pub kind: String,
    pub detail: String,
}

impl From<EventRecord> for Event {
    fn from(e: EventRecord) -> Self {
        Self {
            id: e.id,
            at: time(e.at),
            agent: e.agent,
            kind: e.kind,
            detail: e.detail,
        }
    }
}

/// One message on `/api/v1/events`: `event:` is `lifecycle`, `connection` or `removed`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LiveEvent {
    pub agent: String,
    pub agent_id: String,
    /// The new lifecycle or connection state; empty for `removed`.
    pub state: String,
    pub reason: String,
}
