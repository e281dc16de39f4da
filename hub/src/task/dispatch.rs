//! Tasks from store to agent: stored before dispatch, dispatched at most once, queued while the agent is away, and everything that follows a task to its agent (stdin, signals, cancel) or ends it.

use crate::core::Core;
use crate::core::stdin::Resend;
use crate::error::{HubError, Result};
use crate::store::{AgentRecord, NewTask, TaskRecord, TaskState};
use crate::task::spec::normalise_spec;
use docker_agent_proto::v1::hub_message::Msg;
use docker_agent_proto::v1::{CloseStdin, RunTask, StdinData, TaskSpec};

/// Why a task ended without running.
pub const NEVER_STARTED: &str = "cancelled before it started";

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
        if task.spec.stdin {
            self.stdin.open(&agent.id, &task.id);
        }
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
    /// link's welcome and queued tasks.
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

    /// Claims queued tasks for a link that is about to open and returns their RunTask messages, at
    /// most `room` of them. They go onto the stream right after the welcome, before the link is
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
            self.task_ended(&task.id);
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
            self.task_ended(task_id);
        }
        Ok(())
    }

    /// Sends agent `agent_id` the stdin it lacks (`StdinWindows::resend`), until its link goes.
    pub async fn resend_stdin(&self, agent_id: &str, resend: Vec<Resend>) {
        let mut sent = 0usize;
        for task in resend {
            let pieces = task.pieces.into_iter().map(|(offset, data)| {
                Msg::Stdin(StdinData {
                    task_id: task.task_id.clone(),
                    data,
                    offset,
                })
            });
            let close = task.closed.then(|| {
                Msg::CloseStdin(CloseStdin {
                    task_id: task.task_id.clone(),
                })
            });
            for msg in pieces.chain(close) {
                if self.registry.send(agent_id, msg).await.is_err() {
                    return;
                }
                sent += 1;
            }
        }
        tracing::debug!(
            agent = agent_id,
            messages = sent,
            "stdin sent again after a link drop"
        );
    }

    /// Every way a task ends comes here: its watchers are woken, and its stdin goes nowhere now.
    pub fn task_ended(&self, task_id: &str) {
        self.stdin.forget(task_id);
        self.bus.publish_end(task_id);
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
}
