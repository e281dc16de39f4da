//! The JSON shapes of the REST API and of every `--json` the CLI prints, defined once. Each is built
//! from the control API's message (which the hub builds from its records in `control::convert`), so
//! the REST API and `--json` cannot describe the same thing differently. Times are RFC 3339 in UTC,
//! or null for never; sizes are bytes; a value that is not there is null, not an empty string.

use docker_agent_proto::v1 as pb;
use docker_agent_proto::v1::task_result::Outcome;
use serde::Serialize;
use utoipa::ToSchema;

/// RFC 3339 (UTC, milliseconds) for a Unix time in ms; `None` for 0 (never).
pub fn time(ms: i64) -> Option<String> {
    (ms > 0).then(|| {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
        humantime::format_rfc3339_millis(at).to_string()
    })
}

fn text(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// `LIFECYCLE_START_ERROR` → `start_error`.
fn enum_name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
}

pub fn lifecycle(value: i32) -> String {
    let full = pb::Lifecycle::try_from(value).unwrap_or_default();
    enum_name(full.as_str_name(), "LIFECYCLE_")
}

pub fn connection(value: i32) -> String {
    let full = pb::Connection::try_from(value).unwrap_or_default();
    enum_name(full.as_str_name(), "CONNECTION_")
}

pub fn task_state(value: i32) -> String {
    let full = pb::TaskState::try_from(value).unwrap_or_default();
    enum_name(full.as_str_name(), "TASK_STATE_")
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Agent {
    pub name: String,
    pub id: String,
    pub profile: String,
    pub image: String,
    pub container_id: Option<String>,
    /// The `/workspace` volume.
    pub volume: String,
    /// creating, starting, ready, start_error, stopping, stopped, destroyed, rescheduled.
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
    pub agent_version: String,
    /// The node running it, where there is more than one (Swarm); null on a single engine.
    pub node: Option<String>,
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

impl From<Option<&pb::Resources>> for Resources {
    fn from(r: Option<&pb::Resources>) -> Self {
        let r = r.copied().unwrap_or_default();
        Self {
            cpus: r.cpus,
            memory_bytes: r.memory_bytes,
            pids: r.pids,
        }
    }
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
    /// The agent process's own resident memory.
    pub agent_rss_bytes: u64,
    /// Seconds since the agent started.
    pub uptime_secs: u64,
}

impl From<&pb::Agent> for Agent {
    fn from(a: &pb::Agent) -> Self {
        Self {
            name: a.name.clone(),
            id: a.id.clone(),
            profile: a.profile.clone(),
            image: a.image.clone(),
            container_id: text(&a.container_id),
            volume: a.volume.clone(),
            lifecycle: lifecycle(a.lifecycle),
            lifecycle_reason: a.lifecycle_reason.clone(),
            lifecycle_since: time(a.lifecycle_at_ms),
            connection: connection(a.connection),
            connection_since: time(a.connection_at_ms),
            created_at: time(a.created_at_ms),
            last_heartbeat: time(a.last_heartbeat_ms),
            running_tasks: a.running_tasks,
            failed_tasks: a.failed_tasks,
            agent_version: a.agent_version.clone(),
            node: text(&a.node),
            resources: a.resources.as_ref().into(),
            health: a.health.as_ref().map(|h| Health {
                cpu_percent: h.cpu_percent,
                memory_used_bytes: h.memory_used_bytes,
                memory_limit_bytes: h.memory_limit_bytes,
                disk_used_bytes: h.disk_used_bytes,
                disk_total_bytes: h.disk_total_bytes,
                load1: h.load1,
                process_count: h.process_count,
                agent_rss_bytes: h.agent_rss_bytes,
                uptime_secs: h.uptime_secs,
            }),
        }
    }
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
    /// The output itself, as text, where it was asked for (`task get --output`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
}

impl From<&pb::Task> for Task {
    fn from(t: &pb::Task) -> Self {
        let spec = t.spec.clone().unwrap_or_default();
        let result = t.result.as_ref();
        let outcome = result.and_then(|r| r.outcome.clone());
        let error = match (&outcome, t.error.is_empty()) {
            (Some(Outcome::Error(e)), _) => Some(e.clone()),
            (_, false) => Some(t.error.clone()),
            _ => None,
        };
        Self {
            id: t.id.clone(),
            agent: t.agent.clone(),
            state: task_state(t.state),
            kind: spec.kind,
            argv: spec.argv,
            shell: text(&spec.shell),
            cwd: text(&spec.cwd),
            env: {
                let mut names: Vec<String> = spec.env.keys().cloned().collect();
                names.sort();
                names
            },
            timeout_ms: spec.timeout_ms,
            terminal: spec.pty.is_some(),
            created_at: time(t.created_at_ms),
            started_at: time(t.started_at_ms),
            finished_at: time(t.finished_at_ms),
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
                || !t.output_dropped.is_empty(),
            output_dropped: text(&t.output_dropped),
            stdout_bytes: t.stdout_len,
            stderr_bytes: t.stderr_len,
            stdout: None,
            stderr: None,
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
    pub resources: Resources,
}

impl From<&pb::ProfileSummary> for Profile {
    fn from(p: &pb::ProfileSummary) -> Self {
        Self {
            name: p.name.clone(),
            description: p.description.clone(),
            source: p.source.clone(),
            packages: p.packages.clone(),
            user: p.user.clone(),
            resources: p.resources.as_ref().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_values_are_null_and_enums_are_snake_case() {
        let agent = Agent::from(&pb::Agent {
            name: "a".into(),
            lifecycle: pb::Lifecycle::StartError as i32,
            connection: pb::Connection::Connected as i32,
            created_at_ms: 1_000,
            ..Default::default()
        });
        let json = serde_json::to_value(&agent).unwrap();
        assert_eq!(json["lifecycle"], "start_error");
        assert_eq!(json["connection"], "connected");
        assert_eq!(json["created_at"], "1970-01-01T00:00:01.000Z");
        assert!(json["container_id"].is_null() && json["last_heartbeat"].is_null());
        let task = Task::from(&pb::Task {
            output_dropped: "disk".into(),
            ..Default::default()
        });
        let json = serde_json::to_value(&task).unwrap();
        assert_eq!(json["output_truncated"], true);
        assert_eq!(json["output_dropped"], "disk");
        assert!(json.get("stdout").is_none(), "only when asked for");
    }
}
