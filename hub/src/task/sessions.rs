//! Terminal sessions (PTY tasks) and who watches them: a session nobody is attached to is ended after the hub's session timeout, so forgotten shells do not pile up; one that somebody re-attaches to in time lives on.

use std::sync::Arc;

use crate::core::Core;
use crate::error::Result;
use crate::store::TaskState;

/// Held while a client is attached to a session; dropping it (the client went away) may start the
/// session's idle countdown.
pub struct SessionGuard {
    core: Arc<Core>,
    task_id: String,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let idle = {
            let mut attached = self.core.attached.lock().unwrap_or_else(|p| p.into_inner());
            let count = attached.entry(self.task_id.clone()).or_insert(1);
            *count = count.saturating_sub(1);
            let idle = *count == 0;
            if idle {
                attached.remove(&self.task_id);
            }
            idle
        };
        if idle {
            self.core.clone().expire_later(self.task_id.clone());
        }
    }
}

impl Core {
    /// Records a client attached to terminal task `task_id` until the guard is dropped.
    pub fn attach_session(self: &Arc<Self>, task_id: &str) -> SessionGuard {
        *self
            .attached
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(task_id.to_string())
            .or_insert(0) += 1;
        SessionGuard {
            core: self.clone(),
            task_id: task_id.to_string(),
        }
    }

    fn attached_count(&self, task_id: &str) -> usize {
        self.attached
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(task_id)
            .copied()
            .unwrap_or(0)
    }

    /// After the session timeout, ends the session if nobody attached meanwhile and it still runs.
    fn expire_later(self: Arc<Self>, task_id: String) {
        let timeout = self.settings.session_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            if self.attached_count(&task_id) > 0 {
                return;
            }
            let running = self
                .store
                .task(&task_id)
                .ok()
                .flatten()
                .is_some_and(|t| !t.state.is_terminal());
            if running {
                tracing::info!(task = %task_id, timeout = ?timeout, "ending a session nobody attached to");
                if let Err(e) = self.cancel_task(&task_id).await {
                    tracing::error!(task = %task_id, error = %e, "failed to end an idle session");
                }
            }
        });
    }

    /// At start nobody is attached to anything: every running session starts its idle countdown.
    pub fn expire_unattached_sessions(self: &Arc<Self>) -> Result<()> {
        for agent in self.store.list_agents()? {
            for task in self.terminal_sessions(&agent.id)? {
                if self.attached_count(&task.id) == 0 {
                    self.clone().expire_later(task.id);
                }
            }
        }
        Ok(())
    }

    /// An agent's terminal sessions that have not ended, oldest first.
    pub fn terminal_sessions(&self, agent_id: &str) -> Result<Vec<crate::store::TaskRecord>> {
        let open = [TaskState::Queued, TaskState::Dispatched, TaskState::Running];
        let mut sessions: Vec<_> = self
            .store
            .tasks_in_states(agent_id, &open)?
            .into_iter()
            .filter(|t| t.spec.pty.is_some())
            .collect();
        sessions.sort_by_key(|t| t.created_at);
        Ok(sessions)
    }
}
