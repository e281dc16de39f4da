//! State shared by the session and the task supervisors: the task table and how to run tasks, living across reconnects.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

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

#[derive(Debug)]
pub struct Shared {
    table: Mutex<TaskTable>,
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
}
