//! The JSON shapes `--json` prints. Field names are stable: scripts depend on them.

use docker_agent_proto::v1 as pb;
use serde::Serialize;

use crate::output::timestamp;

/// `LIFECYCLE_START_ERROR` → `start_error`.
fn enum_name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
}

pub fn lifecycle(value: i32) -> String {
    enum_name(
        pb::Lifecycle::try_from(value)
            .unwrap_or_default()
            .as_str_name(),
        "LIFECYCLE_",
    )
}

pub fn connection(value: i32) -> String {
    enum_name(
        pb::Connection::try_from(value)
            .unwrap_or_default()
            .as_str_name(),
        "CONNECTION_",
    )
}

pub fn task_state(value: i32) -> String {
    enum_name(
        pb::TaskState::try_from(value)
            .unwrap_or_default()
            .as_str_name(),
        "TASK_STATE_",
    )
}

#[derive(Debug, Serialize)]
pub struct AgentView {
    pub name: String,
    pub id: String,
    pub profile: String,
    pub lifecycle: String,
    pub lifecycle_reason: String,
    pub lifecycle_since: String,
    pub connection: String,
    pub connection_since: String,
    pub image: String,
    pub container_id: String,
    pub volume: String,
    pub created: String,
    pub last_heartbeat: String,
    pub running_tasks: u32,
    pub agent_version: String,
    pub resources: ResourcesView,
    pub health: Option<HealthView>,
}

#[derive(Debug, Serialize)]
pub struct ResourcesView {
    pub cpus: f64,
    pub memory_bytes: u64,
    pub pids: i64,
}

#[derive(Debug, Serialize)]
pub struct HealthView {
    pub cpu_percent: f64,
    pub memory_used_bytes: u64,
    pub memory_limit_bytes: u64,
    pub disk_used_bytes: u64,
    pub disk_total_bytes: u64,
    pub load1: f64,
    pub process_count: u32,
    pub agent_rss_bytes: u64,
    pub agent_uptime_secs: u64,
}

impl From<&pb::Agent> for AgentView {
    fn from(a: &pb::Agent) -> Self {
        let r = a.resources.unwrap_or_default();
        Self {
            name: a.name.clone(),
            id: a.id.clone(),
            profile: a.profile.clone(),
            lifecycle: lifecycle(a.lifecycle),
            lifecycle_reason: a.lifecycle_reason.clone(),
            lifecycle_since: timestamp(a.lifecycle_at_ms),
            connection: connection(a.connection),
            connection_since: timestamp(a.connection_at_ms),
            image: a.image.clone(),
            container_id: a.container_id.clone(),
            volume: a.volume.clone(),
            created: timestamp(a.created_at_ms),
            last_heartbeat: timestamp(a.last_heartbeat_ms),
            running_tasks: a.running_tasks,
            agent_version: a.agent_version.clone(),
            resources: ResourcesView {
                cpus: r.cpus,
                memory_bytes: r.memory_bytes,
                pids: r.pids,
            },
            health: a.health.as_ref().map(|h| HealthView {
                cpu_percent: h.cpu_percent,
                memory_used_bytes: h.memory_used_bytes,
                memory_limit_bytes: h.memory_limit_bytes,
                disk_used_bytes: h.disk_used_bytes,
                disk_total_bytes: h.disk_total_bytes,
                load1: h.load1,
                process_count: h.process_count,
                agent_rss_bytes: h.agent_rss_bytes,
                agent_uptime_secs: h.uptime_secs,
            }),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TaskView {
    pub id: String,
    pub agent: String,
    pub kind: String,
    pub argv: Vec<String>,
    pub state: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub error: Option<String>,
    pub timed_out: bool,
    /// Killed by the kernel's OOM killer (the container's memory limit).
    pub oom_killed: bool,
    pub output_truncated: bool,
    /// Why the hub stopped storing the output: task, agent or disk.
    pub output_dropped: Option<String>,
    pub created: String,
    pub started: String,
    pub finished: String,
    pub duration_ms: Option<u64>,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
}

impl From<&pb::Task> for TaskView {
    fn from(t: &pb::Task) -> Self {
        use pb::task_result::Outcome;
        let spec = t.spec.clone().unwrap_or_default();
        let outcome = t.result.as_ref().and_then(|r| r.outcome.clone());
        let error = match (&outcome, t.error.is_empty()) {
            (Some(Outcome::Error(e)), _) => Some(e.clone()),
            (_, false) => Some(t.error.clone()),
            _ => None,
        };
        Self {
            id: t.id.clone(),
            agent: t.agent.clone(),
            kind: spec.kind,
            argv: spec.argv,
            state: task_state(t.state),
            exit_code: match outcome {
                Some(Outcome::ExitCode(c)) => Some(c),
                _ => None,
            },
            signal: match outcome {
                Some(Outcome::Signal(s)) => Some(s),
                _ => None,
            },
            error,
            timed_out: t.result.as_ref().is_some_and(|r| r.timed_out),
            oom_killed: t.result.as_ref().is_some_and(|r| r.oom_killed),
            output_truncated: t.result.as_ref().is_some_and(|r| r.output_truncated)
                || !t.output_dropped.is_empty(),
            output_dropped: (!t.output_dropped.is_empty()).then(|| t.output_dropped.clone()),
            created: timestamp(t.created_at_ms),
            started: timestamp(t.started_at_ms),
            finished: timestamp(t.finished_at_ms),
            duration_ms: t.result.as_ref().map(|r| r.duration_ms),
            stdout_bytes: t.stdout_len,
            stderr_bytes: t.stderr_len,
            stdout: None,
            stderr: None,
        }
    }
}

/// The exit code a CLI should end with for a finished task: the remote code, 128+N for a signal,
/// 124 for a timeout (as `timeout(1)`), 127 when the program could not start, 255 when lost.
pub fn exit_code(task: &pb::Task) -> u8 {
    use pb::task_result::Outcome;
    let Some(result) = &task.result else {
        return 255;
    };
    if result.timed_out {
        return 124;
    }
    match result.outcome {
        Some(Outcome::ExitCode(c)) => c.clamp(0, 255) as u8,
        Some(Outcome::Signal(s)) => (128 + s).clamp(0, 255) as u8,
        Some(Outcome::Error(_)) => 127,
        None => 255,
    }
}

/// One line explaining why a task did not simply exit, or None.
pub fn failure_note(task: &pb::Task) -> Option<String> {
    use pb::task_result::Outcome;
    match &task.result {
        None => Some(if task.error.is_empty() {
            format!(
                "task {} ended without a result ({})",
                task.id,
                task_state(task.state)
            )
        } else {
            format!(
                "task {} {}: {}",
                task.id,
                task_state(task.state),
                task.error
            )
        }),
        Some(r) if r.timed_out => Some(format!(
            "task {} timed out after {}",
            task.id,
            humantime::format_duration(std::time::Duration::from_millis(
                task.spec.as_ref().map(|s| s.timeout_ms).unwrap_or(0)
            ))
        )),
        Some(r) if r.oom_killed => Some(format!(
            "task {} was killed: out of memory (the agent's memory limit; see its profile's resources.memory)",
            task.id
        )),
        Some(r) => match &r.outcome {
            Some(Outcome::Error(e)) => Some(e.clone()),
            _ if !task.output_dropped.is_empty() => Some(format!(
                "warning: the hub stored only the first {} of task {}'s output: {}",
                crate::output::bytes(task.stdout_len + task.stderr_len),
                task.id,
                match task.output_dropped.as_str() {
                    "task" =>
                        "it reached its bound (the profile's resources.max_output, or hub --max-task-output)",
                    "agent" =>
                        "its agent reached its bound (the profile's resources.max_agent_output, or hub --max-agent-output)",
                    _ => "the hub's disk fell below its free-space floor (hub --min-free-disk)",
                }
            )),
            _ if r.output_truncated => Some(format!(
                "warning: task {} lost output while the hub was unreachable (the agent's spool overflowed)",
                task.id
            )),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::task_result::Outcome;

    fn finished(outcome: Outcome, timed_out: bool) -> pb::Task {
        pb::Task {
            result: Some(pb::TaskResult {
                outcome: Some(outcome),
                timed_out,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(&finished(Outcome::ExitCode(3), false)), 3);
        assert_eq!(exit_code(&finished(Outcome::Signal(9), false)), 137);
        assert_eq!(exit_code(&finished(Outcome::Signal(15), true)), 124);
        assert_eq!(exit_code(&finished(Outcome::Error("x".into()), false)), 127);
        assert_eq!(exit_code(&pb::Task::default()), 255);
    }

    #[test]
    fn enum_names() {
        assert_eq!(lifecycle(pb::Lifecycle::StartError as i32), "start_error");
        assert_eq!(connection(pb::Connection::Connected as i32), "connected");
        assert_eq!(task_state(pb::TaskState::Finished as i32), "finished");
    }
}
