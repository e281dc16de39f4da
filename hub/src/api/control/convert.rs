//! Store records to API messages.

use docker_agent_proto::v1 as pb;

use crate::lifecycle::{Connection, Lifecycle};
use crate::store::{AgentRecord, StoredChunk, TaskRecord, TaskState};

pub fn lifecycle(l: Lifecycle) -> pb::Lifecycle {
    match l {
        Lifecycle::Creating => pb::Lifecycle::Creating,
        Lifecycle::Starting => pb::Lifecycle::Starting,
        Lifecycle::Ready => pb::Lifecycle::Ready,
        Lifecycle::StartError => pb::Lifecycle::StartError,
        Lifecycle::Stopping => pb::Lifecycle::Stopping,
        Lifecycle::Stopped => pb::Lifecycle::Stopped,
        Lifecycle::Destroyed => pb::Lifecycle::Destroyed,
        Lifecycle::Rescheduled => pb::Lifecycle::Rescheduled,
    }
}

pub fn connection(c: Connection) -> pb::Connection {
    match c {
        Connection::Connecting => pb::Connection::Connecting,
        Connection::Connected => pb::Connection::Connected,
        Connection::Disconnected => pb::Connection::Disconnected,
        Connection::Timeout => pb::Connection::Timeout,
    }
}

/// A profile as listings show it.
pub fn profile(p: &crate::profile::Profile) -> pb::ProfileSummary {
    pb::ProfileSummary {
        name: p.name.clone(),
        description: p.description.clone(),
        source: p.origin.clone(),
        packages: p.packages.clone(),
        user: p.user.clone(),
        resources: Some(pb::Resources {
            cpus: p.cpus,
            memory_bytes: p.memory_bytes,
            pids: p.pids,
        }),
    }
}

pub fn agent(a: AgentRecord, running_tasks: u32, failed_tasks: u32) -> pb::Agent {
    pb::Agent {
        id: a.id,
        name: a.name,
        profile: a.profile,
        image: a.image,
        container_id: a.container_id.unwrap_or_default(),
        volume: a.volume,
        lifecycle: lifecycle(a.lifecycle) as i32,
        lifecycle_reason: a.lifecycle_reason,
        lifecycle_at_ms: a.lifecycle_at,
        connection: connection(a.connection) as i32,
        connection_at_ms: a.connection_at,
        created_at_ms: a.created_at,
        last_heartbeat_ms: a.last_heartbeat,
        health: a.health,
        resources: Some(pb::Resources {
            cpus: a.cpus,
            memory_bytes: a.memory_bytes,
            pids: a.pids,
        }),
        system: a.system,
        agent_version: a.agent_version,
        running_tasks,
        failed_tasks,
        connected_since_ms: a.connected_since,
        node: String::new(),
    }
}

pub fn task_state(s: TaskState) -> pb::TaskState {
    match s {
        TaskState::Queued => pb::TaskState::Queued,
        TaskState::Dispatched => pb::TaskState::Dispatched,
        TaskState::Running => pb::TaskState::Running,
        TaskState::Finished => pb::TaskState::Finished,
        TaskState::Lost => pb::TaskState::Lost,
        TaskState::Cancelled => pb::TaskState::Cancelled,
    }
}

pub fn task(t: TaskRecord, agent_name: &str) -> pb::Task {
    pb::Task {
        id: t.id,
        agent: agent_name.to_string(),
        spec: Some(t.spec),
        state: task_state(t.state) as i32,
        created_at_ms: t.created_at,
        dispatched_at_ms: t.dispatched_at,
        started_at_ms: t.started_at,
        finished_at_ms: t.finished_at,
        result: t.result,
        error: t.error,
        stdout_len: t.stdout_len,
        stderr_len: t.stderr_len,
        output_dropped: t
            .output_dropped
            .map(|cap| cap.as_str().to_string())
            .unwrap_or_default(),
    }
}

pub fn chunk(task_id: &str, c: StoredChunk) -> pb::OutputChunk {
    pb::OutputChunk {
        task_id: task_id.to_string(),
        stream: c.stream as i32,
        offset: c.offset,
        data: c.data,
    }
}
