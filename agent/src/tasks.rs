//! The agent's task table: which tasks run or await acknowledgement, what the hub has seen of them, and what to send next.

use docker_agent_proto::v1::{
    Ack, AgentMessage, OutputChunk, StdinAck, Stream, TaskReport, TaskResult, TaskStarted, Welcome,
    agent_message::Msg, task_result::Outcome,
};
use tokio::sync::mpsc;

use crate::spool::{Spool, StreamId};

mod control;
mod held;
mod seen;
mod stdin;

pub use control::Control;
pub use held::Held;
use seen::Seen;
use stdin::TaskStdin;

/// How many recent task ids are remembered so a retried RunTask never runs twice.
pub const SEEN_CAPACITY: usize = 4096;

/// The error of a held task that was cancelled (or told to stop) before it could start.
pub const CANCELLED_WHILE_HELD: &str =
    "cancelled before it started (it was waiting for the setup steps)";

/// In-order stdin bytes for a task; `None` closes its stdin.
pub type StdinTx = mpsc::UnboundedSender<Option<tonic::codegen::Bytes>>;
pub type StdinRx = mpsc::UnboundedReceiver<Option<tonic::codegen::Bytes>>;

/// What to do with a RunTask.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// New id: run it (the table now holds it as starting).
    Run,
    /// Known, finished and not acknowledged: the result will be sent again.
    ResendResult,
    /// Running, or seen recently: ignore.
    Duplicate,
}

#[derive(Debug)]
struct TaskMeta {
    id: String,
    pid: Option<u32>,
    started_at_ms: i64,
    started_sent: bool,
    /// The hub acked something of this task after TaskStarted went out, so it has it.
    started_confirmed: bool,
    control: Option<Control>,
    /// Open from admission until the task ends, so stdin sent to a held task is kept, not dropped.
    stdin: TaskStdin,
    /// Admitted but not started: the setup steps still run.
    held: Option<Box<Held>>,
    result: Option<TaskResult>,
    result_sent: bool,
    result_acked: bool,
    /// Alternates stdout and stderr so neither starves the other.
    prefer_stderr: bool,
}

impl TaskMeta {
    fn is_running(&self) -> bool {
        self.result.is_none() && self.held.is_none()
    }
}

#[derive(Debug)]
pub struct TaskTable {
    tasks: Vec<TaskMeta>,
    spool: Spool,
    seen: Seen,
    /// Round-robin position in `tasks` for fairness between tasks.
    cursor: usize,
    /// New tasks are held, not started (the setup steps run).
    holding: bool,
}

impl TaskTable {
    pub fn new(spool_bytes: u64) -> Self {
        Self {
            tasks: Vec::new(),
            spool: Spool::new(spool_bytes),
            seen: Seen::default(),
            cursor: 0,
            holding: false,
        }
    }

    fn find(&self, id: &str) -> Option<&TaskMeta> {
        self.tasks.iter().find(|t| t.id == id)
    }

    fn find_mut(&mut self, id: &str) -> Option<&mut TaskMeta> {
        self.tasks.iter_mut().find(|t| t.id == id)
    }

    pub fn admit(&mut self, id: &str) -> Admission {
        if let Some(t) = self.find_mut(id) {
            if t.result.is_some() && !t.result_acked {
                t.result_sent = false;
                return Admission::ResendResult;
            }
            return Admission::Duplicate;
        }
        if self.seen.contains(id) {
            return Admission::Duplicate;
        }
        self.seen.insert(id);
        self.spool.add(id);
        self.tasks.push(TaskMeta {
            id: id.to_owned(),
            pid: None,
            started_at_ms: 0,
            started_sent: false,
            started_confirmed: false,
            control: None,
            stdin: TaskStdin::default(),
            held: None,
            result: None,
            result_sent: false,
            result_acked: false,
            prefer_stderr: false,
        });
        Admission::Run
    }

    pub fn started(&mut self, id: &str, pid: u32, started_at_ms: i64, control: Control) {
        if let Some(t) = self.find_mut(id) {
            t.pid = Some(pid);
            t.started_at_ms = started_at_ms;
            t.control = Some(control);
        }
    }

    /// The process exited and both pipes hit EOF (or it never started). Lengths and truncation are filled in when sent.
    pub fn finish(&mut self, id: &str, result: TaskResult) {
        if let Some(t) = self.find_mut(id) {
            t.control = None;
            t.stdin.end();
            t.result = Some(result);
        }
        self.forget_if_done(id);
    }

    pub fn append(&mut self, id: &str, stream: StreamId, data: bytes::Bytes) {
        self.spool.append(id, stream, data);
    }

    /// The hub stores no more of this task's output (`DropOutput`): its output is read and counted, not sent.
    pub fn discard_output(&mut self, id: &str) {
        self.spool.discard(id);
    }

    pub fn control(&self, id: &str) -> Option<&Control> {
        self.find(id)?.control.as_ref()
    }

    /// Set at admission for a task with a stdin pipe.
    pub fn set_stdin(&mut self, id: &str, tx: Option<StdinTx>) {
        if let Some(t) = self.find_mut(id) {
            t.stdin = TaskStdin::new(tx);
        }
    }

    pub fn stdin(&self, id: &str) -> Option<&StdinTx> {
        self.find(id)?.stdin.tx()
    }

    /// Stdin bytes from the hub, starting at `offset` (see `TaskStdin::take`).
    pub fn take_stdin(&mut self, id: &str, offset: u64, data: bytes::Bytes) {
        match self.find_mut(id) {
            Some(t) => t.stdin.take(offset, data),
            None => tracing::debug!(task = %id, "stdin for an unknown task; dropped"),
        }
    }

    pub fn close_stdin(&mut self, id: &str) {
        if let Some(t) = self.find_mut(id) {
            t.stdin.close();
        }
    }

    /// The task's stdin pump wrote the first `written` bytes it was given.
    pub fn stdin_consumed(&mut self, id: &str, written: u64) {
        if let Some(t) = self.find_mut(id) {
            t.stdin.consumed(written);
        }
    }

    /// The task's stdin pump is gone: nothing more will be read.
    pub fn stdin_gone(&mut self, id: &str) {
        if let Some(t) = self.find_mut(id) {
            t.stdin.gone();
        }
    }

    pub fn controls(&self) -> impl Iterator<Item = &Control> {
        self.tasks.iter().filter_map(|t| t.control.as_ref())
    }

    /// Tasks not finished yet (including ones still starting), but not held ones: those have not begun.
    pub fn running_ids(&self) -> Vec<String> {
        self.tasks
            .iter()
            .filter(|t| t.is_running())
            .map(|t| t.id.clone())
            .collect()
    }

    pub fn running_count(&self) -> usize {
        self.tasks.iter().filter(|t| t.is_running()).count()
    }

    /// Some finished task's result has not been acknowledged by the hub yet.
    pub fn has_unacked_results(&self) -> bool {
        self.tasks
            .iter()
            .any(|t| t.result.is_some() && !t.result_acked)
    }

    /// Whether `n` more bytes fit in `window` of unacknowledged output (never more than the spool bound;
    /// an empty spool always takes a chunk).
    pub fn has_room_for(&self, n: u64, window: u64) -> bool {
        let held = self.spool.total();
        held == 0 || held + n <= window.min(self.spool.limit())
    }

    pub fn spooled_bytes(&self) -> u64 {
        self.spool.total()
    }

    /// Marks an id as seen without running it (cancelled before we ever heard of it).
    pub fn remember(&mut self, id: &str) {
        self.seen.insert(id);
    }

    fn final_result(&self, t: &TaskMeta) -> Option<TaskResult> {
        let mut r = t.result.clone()?;
        let (out, err) = self.spool.ends(&t.id);
        r.stdout_len = out;
        r.stderr_len = err;
        r.output_truncated |= self.spool.truncated(&t.id);
        Some(r)
    }

    /// One report per task still running or not fully acknowledged, for Hello.
    pub fn reports(&self) -> Vec<TaskReport> {
        self.tasks
            .iter()
            .map(|t| {
                let (stdout_end, stderr_end) = self.spool.ends(&t.id);
                TaskReport {
                    task_id: t.id.clone(),
                    // A held task is neither running nor finished: the hub leaves it dispatched.
                    running: t.is_running(),
                    stdout_end,
                    stderr_end,
                    result: self.final_result(t),
                    stdin_taken: t.stdin.taken(),
                }
            })
            .collect()
    }

    fn forget_if_done(&mut self, id: &str) {
        let done = self
            .find(id)
            .is_some_and(|t| t.result.is_some() && t.result_acked && self.spool.drained(id));
        if done {
            self.forget(id);
        }
    }

    fn forget(&mut self, id: &str) {
        self.spool.remove(id);
        self.tasks.retain(|t| t.id != id);
        self.seen.insert(id);
    }

    pub fn ack(&mut self, ack: &Ack) {
        let Some(t) = self.find_mut(&ack.task_id) else {
            return;
        };
        if t.started_sent {
            t.started_confirmed = true;
        }
        // Hello carries finished results too, so the hub may ack a result before we resend it.
        if ack.result && t.result.is_some() {
            t.result_acked = true;
        }
        self.spool
            .ack(&ack.task_id, ack.stdout_offset, ack.stderr_offset);
        self.forget_if_done(&ack.task_id);
    }

    /// Applies a Welcome: forget, resend positions, dropped output and cancellations. Returns the ids it
    /// asked to stop.
    pub fn apply_welcome(&mut self, w: &Welcome) -> Vec<String> {
        for drop in &w.drop_output {
            self.spool.discard(&drop.task_id);
        }
        for id in &w.forget {
            let gone = self
                .find(id)
                .is_some_and(|t| t.result.is_some() || t.held.is_some());
            if gone {
                // A held task the hub has given up on must never start.
                self.forget(id);
            } else if let Some(t) = self.find_mut(id) {
                // Still running, yet the hub wants nothing more of it (usually it is cancelled in the
                // same Welcome): stop spooling its output and drop it as soon as it ends.
                t.result_acked = true;
                self.spool.remove(id);
            } else {
                self.seen.insert(id);
            }
        }
        for t in &mut self.tasks {
            let from = w
                .resend
                .iter()
                .find(|r| r.task_id == t.id)
                .map(|r| (r.stdout_offset, r.stderr_offset));
            self.spool.rewind(&t.id, from);
            // Started again only while it matters: a finished task's result says all there is.
            t.started_sent = t.started_confirmed || t.result.is_some() || t.result_acked;
            t.stdin.relink();
            t.result_sent = t.result_acked;
        }
        let mut stopped = Vec::new();
        for id in &w.cancel {
            match self.find(id) {
                Some(t) => {
                    if let Some(c) = &t.control {
                        c.stop.notify_one();
                        stopped.push(id.clone());
                    } else if self.end_held(id, Outcome::Error(CANCELLED_WHILE_HELD.into())) {
                        stopped.push(id.clone());
                    }
                }
                None => self.seen.insert(id),
            }
        }
        stopped
    }

    /// The next message for the hub, in protocol order per task: started, output, then the result once all output went out.
    pub fn next_outbound(&mut self) -> Option<AgentMessage> {
        let n = self.tasks.len();
        for i in 0..n {
            let idx = (self.cursor + i) % n;
            if let Some(msg) = self.next_for(idx) {
                self.cursor = (idx + 1) % n;
                return Some(AgentMessage { msg: Some(msg) });
            }
        }
        None
    }

    fn next_for(&mut self, idx: usize) -> Option<Msg> {
        let t = &mut self.tasks[idx];
        if let (false, Some(pid)) = (t.started_sent, t.pid) {
            t.started_sent = true;
            return Some(Msg::Started(TaskStarted {
                task_id: t.id.clone(),
                pid,
                started_at_ms: t.started_at_ms,
            }));
        }
        if let Some(consumed) = t.stdin.next_ack() {
            return Some(Msg::StdinAck(StdinAck {
                task_id: t.id.clone(),
                consumed,
            }));
        }
        let first = if t.prefer_stderr {
            StreamId::Stderr
        } else {
            StreamId::Stdout
        };
        t.prefer_stderr = !t.prefer_stderr;
        let id = t.id.clone();
        for stream in [first, first.other()] {
            if let Some((offset, data)) = self.spool.next_chunk(&id, stream) {
                let stream = match stream {
                    StreamId::Stdout => Stream::Stdout,
                    StreamId::Stderr => Stream::Stderr,
                };
                return Some(Msg::Output(OutputChunk {
                    task_id: id,
                    stream: stream as i32,
                    offset,
                    data,
                }));
            }
        }
        let t = &self.tasks[idx];
        if t.result.is_some() && !t.result_sent && !t.result_acked && self.spool.all_sent(&id) {
            let r = self.final_result(t)?;
            self.tasks[idx].result_sent = true;
            return Some(Msg::Result(r));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use docker_agent_proto::v1::{ResendFrom, task_result::Outcome};
    use std::sync::Arc;
    use tokio::sync::Notify;

    fn control() -> (Control, Arc<Notify>) {
        let stop = Arc::new(Notify::new());
        (
            Control {
                pgid: 1,
                stop: stop.clone(),
                pty: None,
            },
            stop,
        )
    }

    fn drain(t: &mut TaskTable) -> Vec<Msg> {
        std::iter::from_fn(|| t.next_outbound().and_then(|m| m.msg)).collect()
    }

    fn exited(id: &str, code: i32) -> TaskResult {
        TaskResult {
            task_id: id.into(),
            outcome: Some(Outcome::ExitCode(code)),
            ..Default::default()
        }
    }

    #[test]
    fn run_is_idempotent() {
        let mut t = TaskTable::new(1 << 20);
        assert_eq!(t.admit("a"), Admission::Run);
        assert_eq!(t.admit("a"), Admission::Duplicate);
        t.finish("a", exited("a", 0));
        assert_eq!(t.admit("a"), Admission::ResendResult);
        drain(&mut t);
        t.ack(&Ack {
            task_id: "a".into(),
            result: true,
            ..Default::default()
        });
        assert!(t.reports().is_empty(), "forgotten once acked");
        assert_eq!(t.admit("a"), Admission::Duplicate, "but still seen");
    }

    #[test]
    fn seen_set_is_bounded() {
        let mut t = TaskTable::new(1 << 20);
        for i in 0..SEEN_CAPACITY + 10 {
            t.remember(&i.to_string());
        }
        assert_eq!(t.seen.order.len(), SEEN_CAPACITY);
        assert_eq!(t.admit("0"), Admission::Run, "the oldest id was evicted");
        assert_eq!(
            t.admit(&(SEEN_CAPACITY + 9).to_string()),
            Admission::Duplicate
        );
    }

    #[test]
    fn messages_follow_protocol_order() {
        let mut t = TaskTable::new(1 << 20);
        t.admit("a");
        t.append("a", StreamId::Stdout, Bytes::from_static(b"early"));
        assert!(drain(&mut t).iter().all(|m| matches!(m, Msg::Output(_))));
        let (c, _) = control();
        t.started("a", 42, 1000, c);
        t.append("a", StreamId::Stdout, Bytes::from_static(b"out"));
        t.append("a", StreamId::Stderr, Bytes::from_static(b"err"));
        t.finish("a", exited("a", 3));
        let msgs = drain(&mut t);
        assert!(
            matches!(
                &msgs[..],
                [
                    Msg::Started(_),
                    Msg::Output(_),
                    Msg::Output(_),
                    Msg::Result(_)
                ]
            ),
            "{msgs:?}"
        );
        let Msg::Result(r) = &msgs[3] else {
            unreachable!()
        };
        assert_eq!((r.stdout_len, r.stderr_len), (8, 3));
        assert!(drain(&mut t).is_empty(), "nothing twice on one link");
    }

    #[test]
    fn started_comes_first_and_is_resent_only_if_unconfirmed() {
        let mut t = TaskTable::new(1 << 20);
        t.admit("a");
        let (c, _) = control();
        t.started("a", 7, 1, c);
        t.append("a", StreamId::Stdout, Bytes::from_static(b"x"));
        let msgs = drain(&mut t);
        assert!(matches!(&msgs[..], [Msg::Started(s), Msg::Output(_)] if s.pid == 7));
        t.apply_welcome(&Welcome::default());
        assert!(matches!(
            &drain(&mut t)[..],
            [Msg::Started(_), Msg::Output(_)]
        ));
        t.ack(&Ack {
            task_id: "a".into(),
            stdout_offset: 1,
            ..Default::default()
        });
        t.apply_welcome(&Welcome::default());
        assert!(drain(&mut t).is_empty());
    }

    #[test]
    fn welcome_resends_from_hub_offsets_and_the_unacked_result() {
        let mut t = TaskTable::new(1 << 20);
        t.admit("a");
        t.admit("b");
        t.append("a", StreamId::Stdout, Bytes::from_static(b"0123456789"));
        t.append("b", StreamId::Stderr, Bytes::from_static(b"bbb"));
        t.finish("a", exited("a", 0));
        drain(&mut t);
        let reports = t.reports();
        assert_eq!(reports.len(), 2);
        let a = reports.iter().find(|r| r.task_id == "a").unwrap();
        assert!(!a.running && a.result.is_some() && a.stdout_end == 10);
        let stopped = t.apply_welcome(&Welcome {
            resend: vec![ResendFrom {
                task_id: "a".into(),
                stdout_offset: 7,
                stderr_offset: 0,
            }],
            ..Default::default()
        });
        assert!(stopped.is_empty());
        let msgs = drain(&mut t);
        let a_out: Vec<_> = msgs
            .iter()
            .filter_map(|m| match m {
                Msg::Output(o) if o.task_id == "a" => Some((o.offset, o.data.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(a_out, vec![(7, tonic::codegen::Bytes::from_static(b"789"))]);
        assert!(
            msgs.iter()
                .any(|m| matches!(m, Msg::Output(o) if o.task_id == "b" && o.offset == 0))
        );
        assert!(matches!(msgs.last(), Some(Msg::Result(r)) if r.task_id == "a"));
    }

    #[test]
    fn welcome_forget_and_cancel() {
        let mut t = TaskTable::new(1 << 20);
        t.admit("done");
        t.finish("done", exited("done", 0));
        t.admit("run");
        let (c, stop) = control();
        t.started("run", 9, 1, c);
        t.append("run", StreamId::Stdout, Bytes::from_static(b"abc"));
        let stopped = t.apply_welcome(&Welcome {
            forget: vec!["done".into(), "run".into()],
            cancel: vec!["run".into(), "never-seen".into()],
            ..Default::default()
        });
        assert_eq!(stopped, vec!["run".to_owned()]);
        assert_eq!(t.running_ids(), vec!["run".to_owned()]);
        assert_eq!(t.spooled_bytes(), 0);
        t.append(
            "run",
            StreamId::Stdout,
            Bytes::from_static(b"more output nobody wants"),
        );
        assert_eq!(t.spooled_bytes(), 0);
        t.finish("run", exited("run", 0));
        assert!(
            t.reports().is_empty(),
            "a forgotten task leaves once it ends"
        );
        assert!(drain(&mut t).is_empty());
        assert_eq!(t.admit("done"), Admission::Duplicate);
        assert_eq!(t.admit("never-seen"), Admission::Duplicate);
        // The permit is stored: the supervisor sees it when it next waits.
        let fut = stop.notified();
        futures_ready(fut);
    }

    fn futures_ready(fut: impl std::future::Future<Output = ()>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(5), fut)
                .await
                .expect("stop was requested");
        });
    }

    #[test]
    fn truncation_is_reported_on_the_result() {
        let mut t = TaskTable::new(4);
        t.admit("a");
        t.append("a", StreamId::Stdout, Bytes::from_static(b"0123456789"));
        t.finish("a", exited("a", 0));
        let msgs = drain(&mut t);
        let Some(Msg::Result(r)) = msgs.last() else {
            panic!("{msgs:?}")
        };
        assert!(r.output_truncated);
        assert_eq!(r.stdout_len, 10);
        assert!(matches!(&msgs[0], Msg::Output(o) if o.offset == 6));
    }

    #[test]
    fn result_ack_waits_for_output_acks() {
        let mut t = TaskTable::new(1 << 20);
        t.admit("a");
        t.append("a", StreamId::Stdout, Bytes::from_static(b"abc"));
        t.finish("a", exited("a", 0));
        drain(&mut t);
        t.ack(&Ack {
            task_id: "a".into(),
            result: true,
            ..Default::default()
        });
        assert_eq!(t.reports().len(), 1);
        t.ack(&Ack {
            task_id: "a".into(),
            stdout_offset: 3,
            result: true,
            ..Default::default()
        });
        assert!(t.reports().is_empty());
    }

    #[test]
    fn tasks_share_the_link_fairly() {
        let mut t = TaskTable::new(1 << 30);
        t.admit("a");
        t.admit("b");
        let big = vec![0u8; 4 * crate::spool::MAX_CHUNK];
        t.append("a", StreamId::Stdout, Bytes::from(big.clone()));
        t.append("b", StreamId::Stdout, Bytes::from(big.clone()));
        let first: Vec<String> = (0..4)
            .filter_map(|_| match t.next_outbound()?.msg? {
                Msg::Output(o) => Some(o.task_id),
                _ => None,
            })
            .collect();
        assert_eq!(first, vec!["a", "b", "a", "b"]);
    }
}
