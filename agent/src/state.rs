//! State shared by the session, the task supervisors and the setup steps: the task table, the setup status and how to run processes, living across reconnects.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use docker_agent_proto::v1::SetupStatus;
use tokio::sync::Notify;

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
    /// Changes not yet sent on the current session, oldest first. At most one per step plus the end.
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
    /// Wakes the session's writer: something may be ready to send.
    pub outbound: Notify,
    /// Wakes whoever waits for tasks to end or results to be acknowledged (shutdown).
    pub task_done: Notify,
    /// True while a session is established (after Welcome).
    pub connected: AtomicBool,
    /// Wakes output pumps waiting for spool room: on every Ack, and when the link drops.
    pub space: Notify,
    pub exec: ExecSettings,
}

impl Shared {
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

    /// Records a new setup status and queues it for the hub; the writer sends it if a session is up.
    pub fn report_setup(&self, status: SetupStatus) {
        {
            let mut slot = self.setup();
            slot.unsent.push_back(status.clone());
            slot.status = Some(status);
        }
        self.outbound.notify_one();
    }
}
