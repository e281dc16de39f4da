//! The one way in for every exec. `Core::open_exec` starts a task for a client (or attaches it to a
//! running terminal session) and hands back an `Exec`: the task, its events (stored output, then live
//! output, then the final record; an attach first replays the end of its scrollback), and its input
//! (stdin, close, signals, resizes, in order). What the hub decides about an exec is decided here:
//! whether the agent can take it, that it is stored before it is dispatched, that Ctrl-C on a task
//! still queued cancels it, how stdin is cut, who counts as attached to a terminal session, and what
//! the client's going does. The gRPC exec, `shell --attach` and the web terminal only translate.

use std::sync::Arc;

use bytes::Bytes;
use docker_agent_proto::v1 as pb;
use docker_agent_proto::v1::hub_message::Msg;
use tokio::sync::mpsc;

use crate::core::Core;
use crate::error::{HubError, Result};
use crate::store::{StoredChunk, TaskRecord, TaskState};
use crate::task::WatchItem;
use crate::task::sessions::SessionGuard;

/// What an attach replays of a session's output unless it asks for another amount.
pub const SCROLLBACK: u64 = 64 * 1024;
/// Stdin goes to the agent in pieces of at most this.
const STDIN_PIECE: usize = 32 << 10;
const SIGHUP: i32 = 1;

/// What a client asks to exec.
#[derive(Debug, Clone)]
pub enum ExecStart {
    /// A new task.
    Run(pb::TaskSpec),
    /// A running terminal session of the agent, replaying the last `replay_bytes` of its output
    /// (0: `SCROLLBACK`).
    Attach { task_id: String, replay_bytes: u64 },
}

/// What a client sends to its exec.
#[derive(Debug, Clone)]
pub enum ExecInput {
    Stdin(Bytes),
    CloseStdin,
    Signal(i32),
    Resize(pb::PtySize),
}

/// What an exec sends to its client.
#[derive(Debug)]
pub enum ExecEvent {
    Output(StoredChunk),
    /// The task ended; nothing follows.
    Done(Box<TaskRecord>),
}

/// What the client's going does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    /// The task carries on (a terminal session starts its idle countdown when nobody is left).
    Detach,
    /// A terminal that is closed hangs its shell up (SIGHUP), as closing a terminal window does.
    HangUp,
}

/// An open exec: drop it, or call `leave`, when the client goes.
pub struct Exec {
    /// The task as it was when the exec opened.
    pub task: TaskRecord,
    /// Its output and end. Dropping it stops watching the task.
    pub events: mpsc::Receiver<Result<ExecEvent>>,
    input: ExecInputs,
    _attached: Option<SessionGuard>,
}

/// Where a client's input goes; cheap to clone, for a transport's input pump.
#[derive(Clone)]
pub struct ExecInputs {
    core: Arc<Core>,
    task_id: String,
}

impl Exec {
    pub fn inputs(&self) -> ExecInputs {
        self.input.clone()
    }

    /// The client went: see `Leave`.
    pub fn leave(self, how: Leave) {
        if how == Leave::HangUp {
            let Exec { input, .. } = self;
            let running = input
                .core
                .task(&input.task_id)
                .is_ok_and(|t| !t.state.is_terminal());
            if running {
                tokio::spawn(async move { input.send(ExecInput::Signal(SIGHUP)).await });
            }
        }
    }
}

impl ExecInputs {
    /// Forwards one input to the task's agent, after the task itself; waits through link drops. Ctrl-C
    /// (or any signal) to a task still waiting in the queue cancels it: nothing has run yet. Returns
    /// false once the task has ended: the client's input has nowhere left to go.
    pub async fn send(&self, input: ExecInput) -> bool {
        let sent = self.send_one(input).await;
        if !sent {
            // The task is over: what was kept of its stdin goes (a late sender may have made it anew).
            self.core.stdin.forget(&self.task_id);
        }
        sent
    }

    async fn send_one(&self, input: ExecInput) -> bool {
        let task_id = &self.task_id;
        // Stdin and its close are recorded and sent by one client at a time, in offset order.
        let sender = matches!(input, ExecInput::Stdin(_) | ExecInput::CloseStdin)
            .then(|| self.core.stdin.sender(task_id));
        let _sending = match &sender {
            Some(s) => Some(s.lock().await),
            None => None,
        };
        let msg = match input {
            ExecInput::Stdin(data) => {
                let Ok(task) = self.core.task(task_id) else {
                    return false;
                };
                let bounded = || self.core.registry.acks_stdin(&task.agent_id);
                let ended = || {
                    self.core
                        .task(task_id)
                        .map_or(true, |t| t.state.is_terminal())
                };
                for piece in data.chunks(STDIN_PIECE) {
                    let piece = data.slice_ref(piece);
                    // Waits while the agent has a window's worth unconsumed: the client is held back.
                    let Some(offset) = self
                        .core
                        .stdin
                        .push(task_id, piece.clone(), &bounded, &ended)
                        .await
                    else {
                        return false;
                    };
                    let msg = Msg::Stdin(pb::StdinData {
                        task_id: task_id.clone(),
                        data: piece,
                        offset,
                    });
                    if !self.core.send_for_task(task_id, msg).await {
                        return false;
                    }
                }
                return true;
            }
            ExecInput::CloseStdin => {
                self.core.stdin.close(task_id);
                Msg::CloseStdin(pb::CloseStdin {
                    task_id: task_id.clone(),
                })
            }
            ExecInput::Signal(signal) => {
                let queued = self
                    .core
                    .store
                    .task(task_id)
                    .ok()
                    .flatten()
                    .is_some_and(|t| t.state == TaskState::Queued);
                if queued {
                    if let Err(e) = self.core.cancel_task(task_id).await {
                        tracing::error!(task = %task_id, error = %e, "failed to cancel a queued task");
                    }
                    return true;
                }
                Msg::Signal(pb::SignalTask {
                    task_id: task_id.clone(),
                    signal,
                })
            }
            ExecInput::Resize(size) => Msg::Resize(pb::ResizePty {
                task_id: task_id.clone(),
                size: Some(size),
            }),
        };
        self.core.send_for_task(task_id, msg).await
    }
}

impl Core {
    /// The input side of task `task_id` alone, for a signal sent beside its exec (`SignalTask`).
    pub fn exec_inputs(self: &Arc<Self>, task_id: &str) -> ExecInputs {
        ExecInputs {
            core: self.clone(),
            task_id: task_id.to_string(),
        }
    }

    /// Opens an exec on agent `name` (see the module doc).
    pub async fn open_exec(self: &Arc<Self>, name: &str, start: ExecStart) -> Result<Exec> {
        let agent = self.agent(name)?;
        let (task, replay_from) = match start {
            ExecStart::Run(spec) => (self.submit_task(&agent, spec).await?, 0),
            ExecStart::Attach {
                task_id,
                replay_bytes,
            } => {
                let task = self.task(&task_id)?;
                if task.agent_id != agent.id {
                    return Err(HubError::TaskNotFound(task_id));
                }
                if task.spec.pty.is_none() {
                    return Err(HubError::FailedPrecondition(format!(
                        "task {task_id} is not a terminal session (start one with `docker-agent shell`)"
                    )));
                }
                if task.state.is_terminal() {
                    return Err(HubError::FailedPrecondition(format!(
                        "session {task_id} has ended"
                    )));
                }
                let replay = if replay_bytes > 0 {
                    replay_bytes
                } else {
                    SCROLLBACK
                };
                let from = task.stdout_len.saturating_sub(replay);
                (task, from)
            }
        };
        // A client on a terminal session counts as attached from here until it goes.
        let attached = task
            .spec
            .pty
            .is_some()
            .then(|| self.attach_session(&task.id));
        let (tx, events) = mpsc::channel(64);
        let core = self.clone();
        let task_id = task.id.clone();
        tokio::spawn(async move { core.pump_events(task_id, replay_from, tx).await });
        Ok(Exec {
            input: ExecInputs {
                core: self.clone(),
                task_id: task.id.clone(),
            },
            task,
            events,
            _attached: attached,
        })
    }

    /// Stored and live output (from `replay_from` on stdout), then the final task, until the client's
    /// receiver goes.
    async fn pump_events(
        self: Arc<Self>,
        task_id: String,
        replay_from: u64,
        tx: mpsc::Sender<Result<ExecEvent>>,
    ) {
        let (wtx, mut wrx) = mpsc::channel(64);
        let core = self.clone();
        let id = task_id.clone();
        let watcher = tokio::spawn(async move { core.watch_task(&id, true, wtx).await });
        loop {
            // A client that goes away while the task is quiet must be noticed too: it detaches.
            let item = tokio::select! {
                item = wrx.recv() => item,
                () = tx.closed() => break,
            };
            let Some(item) = item else { break };
            let event = match item {
                WatchItem::Output(chunk) => match scrollback(chunk, replay_from) {
                    Some(chunk) => ExecEvent::Output(chunk),
                    None => continue,
                },
                WatchItem::Done(task) => ExecEvent::Done(task),
            };
            if tx.send(Ok(event)).await.is_err() {
                break;
            }
        }
        drop(wrx);
        if let Ok(Err(e)) = watcher.await {
            let _ = tx.send(Err(e)).await;
        }
    }
}

/// The part of a stored chunk at or after `from` (a terminal task has only stdout).
fn scrollback(mut chunk: StoredChunk, from: u64) -> Option<StoredChunk> {
    let end = chunk.offset + chunk.data.len() as u64;
    if end <= from {
        return None;
    }
    if chunk.offset < from {
        chunk.data = chunk.data.slice((from - chunk.offset) as usize..);
        chunk.offset = from;
    }
    Some(chunk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use docker_agent_proto::v1::Stream;

    fn chunk(offset: u64, data: &'static [u8]) -> StoredChunk {
        StoredChunk {
            seq: 1,
            stream: Stream::Stdout,
            offset,
            data: Bytes::from_static(data),
        }
    }

    #[test]
    fn a_replay_starts_inside_a_chunk_and_skips_what_is_before() {
        assert!(scrollback(chunk(0, b"abc"), 3).is_none());
        let part = scrollback(chunk(0, b"abcdef"), 4).unwrap();
        assert_eq!((part.offset, &part.data[..]), (4, &b"ef"[..]));
        let whole = scrollback(chunk(10, b"xy"), 4).unwrap();
        assert_eq!((whole.offset, &whole.data[..]), (10, &b"xy"[..]));
    }
}
