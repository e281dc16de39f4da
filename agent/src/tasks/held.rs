//! Tasks held back while the setup steps run: kept in arrival order, reported as not running, ended (never started) by a cancel, and released together when the setup ends.

use docker_agent_proto::v1::{PtySize, RunTask, TaskResult, task_result::Outcome};

use super::{StdinRx, TaskTable};

/// A task admitted while the setup steps run: started, in arrival order, when they end.
#[derive(Debug)]
pub struct Held {
    pub task: RunTask,
    /// Stdin that arrives meanwhile waits here for the process.
    pub stdin: Option<StdinRx>,
}

impl TaskTable {
    /// From now on new tasks are held until `release`.
    pub fn hold(&mut self) {
        self.holding = true;
    }

    /// Keeps an admitted task from starting while holding; otherwise hands it back to be started now.
    pub fn hold_back(&mut self, held: Held) -> Option<Held> {
        if !self.holding {
            return Some(held);
        }
        let id = held.task.task_id.clone();
        match self.find_mut(&id) {
            Some(t) => t.held = Some(Box::new(held)),
            None => tracing::warn!(task = %id, "holding a task that was never admitted"),
        }
        None
    }

    /// Stops holding and returns the held tasks in arrival order, for the caller to start.
    pub fn release(&mut self) -> Vec<Held> {
        self.holding = false;
        self.tasks
            .iter_mut()
            .filter_map(|t| t.held.take().map(|h| *h))
            .collect()
    }

    pub fn held_ids(&self) -> Vec<String> {
        self.tasks
            .iter()
            .filter(|t| t.held.is_some())
            .map(|t| t.id.clone())
            .collect()
    }

    /// A held PTY task starts with the latest size it was sent. False when `id` is not a held PTY task.
    pub fn resize_held(&mut self, id: &str, size: PtySize) -> bool {
        match self
            .find_mut(id)
            .and_then(|t| t.held.as_mut())
            .and_then(|h| h.task.pty.as_mut())
        {
            Some(pty) => {
                *pty = size;
                true
            }
            None => false,
        }
    }

    /// Ends a held task without running it. False when `id` is not held (running, finished or unknown).
    pub fn end_held(&mut self, id: &str, outcome: Outcome) -> bool {
        let Some(t) = self.find_mut(id).filter(|t| t.held.is_some()) else {
            return false;
        };
        t.held = None;
        t.stdin.end();
        t.result = Some(TaskResult {
            task_id: id.to_owned(),
            outcome: Some(outcome),
            finished_at_ms: crate::runner::now_ms(),
            ..Default::default()
        });
        self.forget_if_done(id);
        true
    }
}

#[cfg(test)]
mod tests {
    use docker_agent_proto::v1::{Ack, Welcome, agent_message::Msg};
    use tokio::sync::mpsc;

    use super::*;
    use crate::tasks::{Admission, CANCELLED_WHILE_HELD};

    fn held(t: &mut TaskTable, id: &str) -> Option<Held> {
        assert_eq!(t.admit(id), Admission::Run);
        t.hold_back(Held {
            task: RunTask {
                task_id: id.into(),
                ..Default::default()
            },
            stdin: None,
        })
    }

    fn drain(t: &mut TaskTable) -> Vec<Msg> {
        std::iter::from_fn(|| t.next_outbound().and_then(|m| m.msg)).collect()
    }

    #[test]
    fn held_tasks_wait_are_not_running_and_leave_in_arrival_order() {
        let mut t = TaskTable::new(1 << 20);
        t.hold();
        for id in ["a", "b", "c"] {
            assert!(held(&mut t, id).is_none(), "{id} started while holding");
        }
        assert_eq!(t.held_ids(), ["a", "b", "c"]);
        assert!(t.running_ids().is_empty());
        assert_eq!(t.running_count(), 0);
        let reports = t.reports();
        assert_eq!(reports.len(), 3, "the hub still hears of them");
        assert!(reports.iter().all(|r| !r.running && r.result.is_none()));
        assert!(drain(&mut t).is_empty(), "no TaskStarted for a held task");
        assert_eq!(
            t.admit("b"),
            Admission::Duplicate,
            "a retried RunTask is not held twice"
        );

        let order: Vec<String> = t.release().into_iter().map(|h| h.task.task_id).collect();
        assert_eq!(order, ["a", "b", "c"]);
        assert!(t.release().is_empty(), "released once");
        assert_eq!(t.running_count(), 3, "released tasks count as running");
        assert!(
            held(&mut t, "d").is_some(),
            "not holding any more: start now"
        );
    }

    #[test]
    fn stdin_sent_to_a_held_task_is_kept_for_its_process() {
        let mut t = TaskTable::new(1 << 20);
        t.hold();
        assert_eq!(t.admit("a"), Admission::Run);
        let (tx, rx) = mpsc::unbounded_channel();
        t.set_stdin("a", Some(tx));
        let task = RunTask {
            task_id: "a".into(),
            stdin: true,
            ..Default::default()
        };
        assert!(
            t.hold_back(Held {
                task,
                stdin: Some(rx)
            })
            .is_none()
        );
        t.stdin("a")
            .unwrap()
            .send(Some(b"early".to_vec().into()))
            .unwrap();
        let mut released = t.release();
        let mut rx = released.pop().unwrap().stdin.unwrap();
        assert_eq!(rx.try_recv().unwrap().unwrap(), &b"early"[..]);
    }

    #[test]
    fn a_held_pty_task_starts_with_the_latest_size() {
        let mut t = TaskTable::new(1 << 20);
        t.hold();
        assert_eq!(t.admit("tty"), Admission::Run);
        let task = RunTask {
            task_id: "tty".into(),
            pty: Some(PtySize { rows: 24, cols: 80 }),
            ..Default::default()
        };
        assert!(t.hold_back(Held { task, stdin: None }).is_none());
        held(&mut t, "pipes");
        let size = PtySize {
            rows: 40,
            cols: 100,
        };
        assert!(t.resize_held("tty", size));
        assert!(!t.resize_held("pipes", size), "no terminal to resize");
        assert!(!t.resize_held("unknown", size));
        let released = t.release();
        assert_eq!(released[0].task.pty, Some(size));
        assert_eq!(released[1].task.pty, None);
    }

    #[test]
    fn a_cancelled_held_task_ends_without_starting() {
        let mut t = TaskTable::new(1 << 20);
        t.hold();
        held(&mut t, "a");
        held(&mut t, "b");
        assert!(t.end_held("a", Outcome::Error(CANCELLED_WHILE_HELD.into())));
        assert!(!t.end_held("a", Outcome::Signal(9)), "only once");
        assert!(!t.end_held("unknown", Outcome::Signal(9)));
        let msgs = drain(&mut t);
        assert!(
            matches!(&msgs[..], [Msg::Result(r)] if r.task_id == "a"
                && r.outcome == Some(Outcome::Error(CANCELLED_WHILE_HELD.into()))),
            "{msgs:?}"
        );
        t.ack(&Ack {
            task_id: "a".into(),
            result: true,
            ..Default::default()
        });
        let order: Vec<String> = t.release().into_iter().map(|h| h.task.task_id).collect();
        assert_eq!(order, ["b"], "the cancelled task never starts");
        assert_eq!(t.admit("a"), Admission::Duplicate);
    }

    #[test]
    fn welcome_cancel_and_forget_reach_held_tasks() {
        let mut t = TaskTable::new(1 << 20);
        t.hold();
        held(&mut t, "cancel-me");
        held(&mut t, "forget-me");
        held(&mut t, "keep");
        let stopped = t.apply_welcome(&Welcome {
            cancel: vec!["cancel-me".into()],
            forget: vec!["forget-me".into()],
            ..Default::default()
        });
        assert_eq!(stopped, ["cancel-me"]);
        let msgs = drain(&mut t);
        assert!(
            matches!(&msgs[..], [Msg::Result(r)] if r.task_id == "cancel-me"),
            "{msgs:?}"
        );
        assert!(!t.reports().iter().any(|r| r.task_id == "forget-me"));
        assert_eq!(t.admit("forget-me"), Admission::Duplicate);
        let order: Vec<String> = t.release().into_iter().map(|h| h.task.task_id).collect();
        assert_eq!(order, ["keep"]);
    }
}
