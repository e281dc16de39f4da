//! State shared by the link, the task supervisors and the setup steps: the task table, the setup status and how to run processes, living across reconnects.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use docker_agent_proto::v1::SetupStatus;
use tokio::sync::Notify;

use crate::spool::StreamId;
use crate::tasks::TaskTable;
use crate::users::TaskUser;

/// How tasks are started; fixed for the agent's lifetime.
#[derive(Debug, Clone)]
pub struct ExecSettings {
    pub user: TaskUser,
    /// Cwd of tasks that name none.
    pub workdir: PathBuf,
    /// The agent's environment minus `DOCKER_AGENT_*`.
    pub base_env: Vec<(OsString, OsString)>,
    /// TERM → KILL grace when the task names none.
    pub kill_grace: Duration,
    pub oom_score_adj: i32,
}

/// Where the setup steps stand, and which of their changes the hub has not been told yet.
#[derive(Debug, Default)]
pub struct SetupSlot {
    /// None when the container has no setup plan.
    status: Option<SetupStatus>,
    /// Changes not yet sent on the current link, oldest first. At most one per step plus the end.
    unsent: VecDeque<SetupStatus>,
    /// Process group of the step running now, for shutdown.
    pub step_pgid: Option<i32>,
}

impl SetupSlot {
    /// The latest status, for a Hello: it says all the queued changes would, so they are dropped.
    pub fn for_hello(&mut self) -> Option<SetupStatus> {
        self.unsent.clear();
        self.status.clone()
    }

    pub fn next_unsent(&mut self) -> Option<SetupStatus> {
        self.unsent.pop_front()
    }
}

#[derive(Debug)]
pub struct Shared {
    table: Mutex<TaskTable>,
    setup: Mutex<SetupSlot>,
    /// Set at SIGTERM/SIGINT: no setup step or held task starts any more.
    pub stopping: AtomicBool,
    /// Wakes the link's writer: something may be ready to send.
    pub outbound: Notify,
    /// Wakes whoever waits for tasks to end or results to be acknowledged (shutdown).
    pub task_done: Notify,
    /// True while a link is established (after Welcome).
    pub connected: AtomicBool,
    /// Wakes output pumps waiting for spool room: on every Ack, and when the link drops.
    pub space: Notify,
    pub exec: ExecSettings,
}

/// Unacknowledged output allowed in flight while connected. Enough to keep the link busy between acks
/// (the hub acks every MiB), small enough that a fast producer does not balloon the agent's memory.
const CONNECTED_WINDOW: u64 = 4 << 20;

impl Shared {
    /// While the hub is connected, output that outpaces it waits here: the pipe fills and the task blocks
    /// in write(2), as it would writing to a slow terminal, so nothing is dropped on a live link. While
    /// disconnected the spool takes everything up to its bound and then drops the oldest bytes (flagged).
    pub async fn append_output(&self, id: &str, stream: StreamId, data: Bytes) {
        loop {
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                // Check and append under one lock: stdout and stderr pumps (and other tasks) must not all
                // pass the check and then overshoot the window together.
                let mut table = self.table();
                if !self.connected.load(Ordering::Acquire)
                    || table.has_room_for(data.len() as u64, CONNECTED_WINDOW)
                {
                    table.append(id, stream, data);
                    return;
                }
            }
            notified.await;
        }
    }

    pub fn new(spool_bytes: u64, exec: ExecSettings) -> Self {
        Self {
            table: Mutex::new(TaskTable::new(spool_bytes)),
            setup: Mutex::new(SetupSlot::default()),
            stopping: AtomicBool::new(false),
            outbound: Notify::new(),
            task_done: Notify::new(),
            connected: AtomicBool::new(false),
            space: Notify::new(),
            exec,
        }
    }

    /// Locks the table. Never hold the guard across an `.await`.
    pub fn table(&self) -> MutexGuard<'_, TaskTable> {
        // Table updates do not panic halfway, so a poisoned lock still holds consistent data.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Locks the setup slot. Never hold it across an `.await`, nor together with the table.
    pub fn setup(&self) -> MutexGuard<'_, SetupSlot> {
        self.setup.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a new setup status and queues it for the hub; the writer sends it if a link is up.
    pub fn report_setup(&self, status: SetupStatus) {
        {
            let mut slot = self.setup();
            slot.unsent.push_back(status.clone());
            slot.status = Some(status);
        }
        self.outbound.notify_one();
    }
}
