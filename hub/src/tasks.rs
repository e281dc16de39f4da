//! Tasks: validation, storing before dispatch, idempotent dispatch, and watching a task's output from the store and then live.

use docker_agent_proto::v1::hub_message::Msg;
use docker_agent_proto::v1::{RunTask, TaskSpec};
use tokio::sync::{broadcast, mpsc};

use crate::bus::TaskUpdate;
use crate::core::Core;
use crate::error::{HubError, Result};
use crate::store::{AgentRecord, NewTask, StoredChunk, TaskRecord, TaskState};

/// Why a task ended without running.
pub const NEVER_STARTED: &str = "cancelled before it started";

/// The longest timeout a task may ask for: a year. Zero means none.
const MAX_TIMEOUT_MS: u64 = 365 * 24 * 3600 * 1000;
/// The longest a task may ask to get between TERM and KILL: an hour. Unbounded, a huge grace would
/// mean KILL never comes (found by the fuzz target's reviewer).
const MAX_KILL_GRACE_MS: u64 = 3600 * 1000;
/// Linux refuses to exec an argument or variable longer than this (MAX_ARG_STRLEN).
const MAX_ARG_BYTES: usize = 128 << 10;
/// A task's command, environment and cwd together: below Linux's total for exec (2 MiB with the usual
/// stack limit) and far below the gRPC message limit, so every accepted task reaches its agent.
pub const MAX_SPEC_BYTES: usize = 1 << 20;

/// Checks a task and turns the shell form into argv, so the agent only ever sees argv.
pub fn normalise_spec(mut spec: TaskSpec) -> Result<TaskSpec> {
    let invalid = |m: &str| Err(HubError::InvalidArgument(m.to_string()));
    match (spec.argv.is_empty(), spec.shell.trim().is_empty()) {
        (true, true) => return invalid("the task has no command"),
        (false, false) => {
            return invalid("give either a command (argv) or a shell script, not both");
        }
        (true, false) => {
            spec.argv = vec!["/bin/sh".into(), "-c".into(), spec.shell.clone()];
        }
        (false, true) => {}
    }
    if spec.argv[0].is_empty() {
        return invalid("the command is empty");
    }
    if !spec.cwd.is_empty() && !spec.cwd.starts_with('/') {
        return invalid("cwd must be an absolute path");
    }
    for key in spec.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(HubError::InvalidArgument(format!(
                "invalid environment variable name {key:?}"
            )));
        }
    }
    if spec.timeout_ms > MAX_TIMEOUT_MS {
        return invalid("timeout is longer than a year");
    }
    if spec.kill_grace_ms > MAX_KILL_GRACE_MS {
        return invalid("kill grace is longer than an hour");
    }
    check_size(&spec)?;
    if spec.kind.is_empty() {
        spec.kind = "exec".into();
    }
    if spec.kind.len() > 32 {
        return invalid("the task type is longer than 32 characters");
    }
    Ok(spec)
}

/// Refuses what exec would refuse anyway (an argument or variable over 128 KiB), and tasks too big to
/// pass on, with the way around it.
fn check_size(spec: &TaskSpec) -> Result<()> {
    let long_arg = spec.argv.iter().position(|a| a.len() >= MAX_ARG_BYTES);
    if let Some(i) = long_arg {
        let what = if spec.argv.len() == 3 && i == 2 && spec.argv[1] == "-c" {
            "the shell script".to_string()
        } else {
            format!("argument {i} of the command")
        };
        return Err(HubError::InvalidArgument(format!(
            "{what} is {} bytes; Linux runs no command with an argument of 128 KiB or more (send long scripts on stdin, or as a file)",
            spec.argv[i].len()
        )));
    }
    if let Some((key, _)) = spec
        .env
        .iter()
        .find(|(k, v)| k.len() + v.len() + 1 >= MAX_ARG_BYTES)
    {
        return Err(HubError::InvalidArgument(format!(
            "environment variable {} is 128 KiB or more; Linux runs no command with it",
            crate::error::shown(key)
        )));
    }
    let total = spec.argv.iter().map(|a| a.len() + 1).sum::<usize>()
        + spec
            .env
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum::<usize>()
        + spec.cwd.len();
    if total > MAX_SPEC_BYTES {
        return Err(HubError::InvalidArgument(format!(
            "the command and environment are {total} bytes together; the limit is {MAX_SPEC_BYTES} (send data on stdin, or as a file)"
        )));
    }
    Ok(())
}

impl Core {
    /// Stores the task, then dispatches it if the agent is connected; otherwise it waits in the queue
    /// and goes out when the agent says hello. Returns the task as stored before dispatch: its state
    /// is not a progress report, watch the task for that.
    pub async fn submit_task(&self, agent: &AgentRecord, spec: TaskSpec) -> Result<TaskRecord> {
        let spec = normalise_spec(spec)?;
        if !agent.lifecycle.is_running() {
            let hint = match agent.lifecycle {
                crate::lifecycle::Lifecycle::Stopped => {
                    format!("; start it with `docker-agent start {}`", agent.name)
                }
                _ => String::new(),
            };
            return Err(HubError::FailedPrecondition(format!(
                "agent {:?} is {}{hint}",
                agent.name, agent.lifecycle
            )));
        }
        let task = self.store.insert_task(&NewTask {
            id: uuid::Uuid::new_v4().simple().to_string(),
            agent_id: agent.id.clone(),
            spec,
        })?;
        self.dispatch(&task).await?;
        Ok(task)
    }

    fn run_message(&self, task: &TaskRecord) -> Msg {
        let grace = if task.spec.kill_grace_ms > 0 {
            task.spec.kill_grace_ms
        } else {
            self.settings.kill_grace.as_millis() as u64
        };
        Msg::Run(RunTask {
            task_id: task.id.clone(),
            argv: task.spec.argv.clone(),
            env: task.spec.env.clone(),
            cwd: task.spec.cwd.clone(),
            stdin: task.spec.stdin,
            timeout_ms: task.spec.timeout_ms,
            pty: task.spec.pty,
            kill_grace_ms: grace,
        })
    }

    /// Sends a queued task to its connected agent. The task is claimed (queued → dispatched) before the
    /// send, so a cancel in between sees it as dispatched and follows it down the same stream. Safe to
    /// repeat: the agent runs a task id at most once.
    pub async fn dispatch(&self, task: &TaskRecord) -> Result<()> {
        if task.state != TaskState::Queued || !self.registry.is_connected(&task.agent_id) {
            return Ok(());
        }
        // Claim and enqueue under the agent's stream lock: whoever sees the task dispatched and sends
        // something about it (stdin, a signal, a cancel) does so behind its RunTask.
        let lock = self.stream_lock(&task.agent_id);
        let _order = lock.lock().await;
        if !self.store.mark_dispatched(&task.id)? {
            return Ok(());
        }
        if self
            .registry
            .send(&task.agent_id, self.run_message(task))
            .await
            .is_err()
        {
            // It never reached a stream; the agent's next hello picks it up again, unless it was
            // cancelled meanwhile, in which case it never runs.
            let cancelled = self
                .store
                .task(&task.id)?
                .is_some_and(|t| t.cancel_requested);
            if cancelled {
                self.end_task(&task.id, TaskState::Cancelled, NEVER_STARTED)?;
            } else {
                self.store.requeue(&task.id)?;
            }
        }
        self.dispatched.notify_waiters();
        Ok(())
    }

    /// The lock that orders everything put on one agent's stream: dispatches, task messages, and a new
    /// session's welcome and queued tasks.
    pub fn stream_lock(&self, agent_id: &str) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        self.stream_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(agent_id.to_string())
            .or_default()
            .clone()
    }

    /// Dispatches everything queued for an agent, oldest first.
    pub async fn dispatch_queued(&self, agent_id: &str) -> Result<()> {
        for task in self.store.tasks_in_states(agent_id, &[TaskState::Queued])? {
            self.dispatch(&task).await?;
        }
        Ok(())
    }

    /// Claims queued tasks for a session that is about to open and returns their RunTask messages, at
    /// most `room` of them. They go onto the stream right after the welcome, before the session is
    /// visible to anyone else, so stdin or a cancel for a task can never overtake the task itself.
    pub fn claim_queued(&self, agent_id: &str, room: usize) -> Result<Vec<Msg>> {
        let mut messages = Vec::new();
        for task in self.store.tasks_in_states(agent_id, &[TaskState::Queued])? {
            if messages.len() == room {
                break;
            }
            if self.store.mark_dispatched(&task.id)? {
                messages.push(self.run_message(&task));
            }
        }
        self.dispatched.notify_waiters();
        Ok(messages)
    }

    /// Sends a message about a task (stdin, a signal, a cancel) to its agent once the task has been
    /// dispatched, waiting through disconnects. Gives up when the task ends or disappears, so nothing
    /// waits forever for an agent that was destroyed. Returns whether it was sent.
    pub async fn send_for_task(&self, task_id: &str, msg: Msg) -> bool {
        let mut ended = self.bus.subscribe_task(task_id);
        let sent = loop {
            let changed = self.registry.changed();
            let dispatched = self.dispatched.notified();
            tokio::pin!(dispatched);
            dispatched.as_mut().enable();
            let task = match self.store.task(task_id) {
                Ok(Some(t)) if !t.state.is_terminal() => t,
                _ => break false,
            };
            if task.state != TaskState::Queued {
                let lock = self.stream_lock(&task.agent_id);
                let _order = lock.lock().await;
                if self
                    .registry
                    .send(&task.agent_id, msg.clone())
                    .await
                    .is_ok()
                {
                    break true;
                }
            }
            tokio::select! {
                () = changed => {}
                () = dispatched => {}
                _ = ended.recv() => {}
                // Only a backstop: every state change above has its own wake-up.
                () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
            }
        };
        drop(ended);
        self.bus.release_task(task_id);
        sent
    }

    /// Cancels a task: a queued one ends at once; one that left the queue gets TERM, then KILL after its
    /// grace, on the agent (now, or at the agent's next hello if the link is down).
    pub async fn cancel_task(self: &std::sync::Arc<Self>, task_id: &str) -> Result<TaskRecord> {
        let task = self.task(task_id)?;
        if task.state.is_terminal() {
            return Ok(task);
        }
        // The second attempt catches a dispatch whose send failed and put the task back in the queue
        // just before the cancel was recorded.
        let ended = if task.state == TaskState::Queued
            && self.store.cancel_queued(&task.id, NEVER_STARTED)?
        {
            true
        } else {
            self.store.request_cancel(&task.id)?;
            self.store.cancel_queued(&task.id, NEVER_STARTED)?
        };
        if ended {
            self.bus.publish_end(&task.id);
            return self.task(task_id);
        }
        let core = self.clone();
        let id = task.id.clone();
        tokio::spawn(async move {
            let msg = Msg::Cancel(docker_agent_proto::v1::CancelTask {
                task_id: id.clone(),
            });
            core.send_for_task(&id, msg).await;
        });
        self.task(task_id)
    }

    /// Ends a task that will not report a result (never started, or lost with its agent) and wakes its
    /// watchers. Does nothing to a task that has already ended.
    pub fn end_task(&self, task_id: &str, state: TaskState, why: &str) -> Result<()> {
        if self.store.end_task(task_id, state, why)? {
            crate::metrics::metrics().task_ended(state.as_str());
            self.bus.publish_end(task_id);
        }
        Ok(())
    }

    /// Ends every unfinished task of an agent (it is being destroyed).
    pub fn lose_tasks(&self, agent_id: &str, why: &str) -> Result<()> {
        let open = [TaskState::Queued, TaskState::Dispatched, TaskState::Running];
        for task in self.store.tasks_in_states(agent_id, &open)? {
            let state = if task.state == TaskState::Queued {
                TaskState::Cancelled
            } else {
                TaskState::Lost
            };
            self.end_task(&task.id, state, why)?;
        }
        Ok(())
    }

    pub fn task(&self, id: &str) -> Result<TaskRecord> {
        self.store
            .task(id)?
            .ok_or_else(|| HubError::TaskNotFound(id.to_string()))
    }

    /// Streams a task's output into `tx`: everything stored, then (when `follow`) live output until the
    /// task ends, then the final record. Returns when done or when the receiver is gone.
    pub async fn watch_task(
        &self,
        task_id: &str,
        follow: bool,
        tx: mpsc::Sender<WatchItem>,
    ) -> Result<()> {
        self.watch_task_after(task_id, 0, follow, tx).await
    }

    /// [`Core::watch_task`] for a watcher that already has the chunks up to `after_seq`.
    pub async fn watch_task_after(
        &self,
        task_id: &str,
        after_seq: i64,
        follow: bool,
        tx: mpsc::Sender<WatchItem>,
    ) -> Result<()> {
        let mut live = follow.then(|| self.bus.subscribe_task(task_id));
        let result = self.watch_inner(task_id, after_seq, &mut live, tx).await;
        drop(live);
        self.bus.release_task(task_id);
        result
    }

    async fn watch_inner(
        &self,
        task_id: &str,
        after_seq: i64,
        live: &mut Option<broadcast::Receiver<TaskUpdate>>,
        tx: mpsc::Sender<WatchItem>,
    ) -> Result<()> {
        let mut last_seq = after_seq;
        if !self.send_stored(task_id, &mut last_seq, &tx).await? {
            return Ok(());
        }
        if let Some(rx) = live {
            // The task may have ended before we subscribed; then the store already has everything.
            // After that, every way a task ends publishes `Ended`: the store is read again only after
            // missed updates, not once per chunk.
            let mut ended = self.task(task_id)?.state.is_terminal();
            while !ended {
                let update = tokio::select! {
                    update = rx.recv() => update,
                    // The client went away: stop watching rather than wait for the task to end.
                    () = tx.closed() => return Ok(()),
                };
                match update {
                    Ok(TaskUpdate::Output(chunk)) => {
                        if chunk.seq > last_seq {
                            last_seq = chunk.seq;
                            if tx.send(WatchItem::Output(chunk)).await.is_err() {
                                return Ok(());
                            }
                        }
                    }
                    Ok(TaskUpdate::Ended) | Err(broadcast::error::RecvError::Closed) => break,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if !self.send_stored(task_id, &mut last_seq, &tx).await? {
                            return Ok(());
                        }
                        ended = self.task(task_id)?.state.is_terminal();
                    }
                }
            }
            if !self.send_stored(task_id, &mut last_seq, &tx).await? {
                return Ok(());
            }
        }
        let _ = tx
            .send(WatchItem::Done(Box::new(self.task(task_id)?)))
            .await;
        Ok(())
    }

    /// Sends stored output after `last_seq`. Returns false when the receiver is gone.
    async fn send_stored(
        &self,
        task_id: &str,
        last_seq: &mut i64,
        tx: &mpsc::Sender<WatchItem>,
    ) -> Result<bool> {
        loop {
            let page = self.store.output_after(task_id, *last_seq, 256)?;
            if page.is_empty() {
                return Ok(true);
            }
            for chunk in page {
                *last_seq = chunk.seq;
                if tx.send(WatchItem::Output(chunk)).await.is_err() {
                    return Ok(false);
                }
            }
        }
    }
}

/// What a watcher receives.
#[derive(Debug)]
pub enum WatchItem {
    Output(StoredChunk),
    Done(Box<TaskRecord>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(argv: &[&str], shell: &str) -> TaskSpec {
        TaskSpec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            shell: shell.into(),
            ..Default::default()
        }
    }

    #[test]
    fn shell_form_becomes_argv() {
        let s = normalise_spec(spec(&[], "echo hi")).unwrap();
        assert_eq!(s.argv, ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(s.kind, "exec");
    }

    #[test]
    fn bad_specs_are_refused() {
        assert!(normalise_spec(spec(&[], "")).is_err());
        assert!(normalise_spec(spec(&["ls"], "ls")).is_err());
        assert!(normalise_spec(spec(&[""], "")).is_err());
        let mut s = spec(&["ls"], "");
        s.cwd = "relative".into();
        assert_eq!(
            normalise_spec(s).unwrap_err().to_string(),
            "cwd must be an absolute path"
        );
        let mut s = spec(&["ls"], "");
        s.env.insert("A=B".into(), "x".into());
        assert!(normalise_spec(s).is_err());
        let mut s = spec(&["ls"], "");
        s.kill_grace_ms = u64::MAX;
        assert_eq!(
            normalise_spec(s).unwrap_err().to_string(),
            "kill grace is longer than an hour"
        );
    }

    #[test]
    fn tasks_exec_could_not_run_are_refused_by_size() {
        let script = "x".repeat(MAX_ARG_BYTES);
        let err = normalise_spec(spec(&[], &script)).unwrap_err().to_string();
        assert!(err.starts_with("the shell script is 131072 bytes"), "{err}");
        let err = normalise_spec(spec(&["echo", "ok", &script], ""))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("argument 2 of the command"), "{err}");
        let mut s = spec(&["env"], "");
        s.env.insert("BIG".into(), script.clone());
        assert!(
            normalise_spec(s)
                .unwrap_err()
                .to_string()
                .contains("\"BIG\"")
        );
        // Many arguments just under the per-argument limit add up past the total.
        let piece = "y".repeat(MAX_ARG_BYTES - 1);
        let many: Vec<&str> = std::iter::once("echo").chain([piece.as_str(); 9]).collect();
        let err = normalise_spec(spec(&many, "")).unwrap_err().to_string();
        assert!(err.contains("the limit is 1048576"), "{err}");
        // Just under every limit is fine.
        let fits: Vec<&str> = std::iter::once("echo").chain([piece.as_str(); 7]).collect();
        normalise_spec(spec(&fits, "")).unwrap();
    }
}
