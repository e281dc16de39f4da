//! A task's life: start it (on pipes, or on a terminal through `pty`), pump its output into the spool, feed its stdin,
//! stop it on timeout or cancel, and record the result.

use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use docker_agent_proto::v1::{
    CloseStdin, ResizePty, RunTask, SignalTask, StdinData, TaskResult, task_result::Outcome,
};
use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::pty::{self, PtySpawned};
use crate::reaper::ExitStatus;
use crate::spawn::{self, ProcessSpec, Spawned};
use crate::spool::{READ_CHUNK, StreamId};
use crate::state::Shared;
use crate::supervise::{self, Ended, signal_group};
use crate::tasks::{Admission, CANCELLED_WHILE_HELD, Control, Held, StdinRx};

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Handles RunTask: runs a new id once (held back while the setup steps run); for a finished,
/// unacknowledged id, sends its result again.
pub fn run(shared: &Arc<Shared>, task: RunTask) {
    let admission = shared.table().admit(&task.task_id);
    match admission {
        Admission::Run => {
            let (tx, rx) = if task.stdin {
                let (tx, rx) = mpsc::unbounded_channel();
                (Some(tx), Some(rx))
            } else {
                (None, None)
            };
            let id = task.task_id.clone();
            let now = {
                let mut table = shared.table();
                table.set_stdin(&id, tx);
                table.hold_back(Held { task, stdin: rx })
            };
            match now {
                Some(held) => start(shared, held),
                None => tracing::info!(task = %id, "task waits for the setup steps to end"),
            }
        }
        Admission::ResendResult => {
            tracing::info!(task = %task.task_id, "task already finished; resending its result");
            shared.outbound.notify_one();
        }
        Admission::Duplicate => {
            tracing::info!(task = %task.task_id, "task already known; not running it again");
        }
    }
}

/// Starts, in arrival order, the tasks held while the setup steps ran.
pub fn release_held(shared: &Arc<Shared>) {
    let held = shared.table().release();
    if !held.is_empty() {
        tracing::info!(
            tasks = held.len(),
            "starting the tasks that waited for setup"
        );
    }
    for h in held {
        start(shared, h);
    }
}

/// Ends every held task without running it (the agent is stopping), so the hub learns they never ran.
pub fn abandon_held(shared: &Shared) {
    let mut table = shared.table();
    let ids = table.held_ids();
    for id in &ids {
        table.end_held(
            id,
            Outcome::Error("the agent stopped before the setup steps ended; never started".into()),
        );
    }
    drop(table);
    if !ids.is_empty() {
        shared.outbound.notify_one();
        shared.task_done.notify_waiters();
    }
}

fn start(shared: &Arc<Shared>, held: Held) {
    let Held {
        task,
        stdin: stdin_rx,
    } = held;
    let exec = &shared.exec;
    let id = task.task_id.clone();
    let mut env = spawn::task_env(&exec.base_env, &exec.user, &task.env);
    if task.pty.is_some() {
        pty::set_term(&mut env, &task.env);
    }
    let spec = ProcessSpec {
        argv: task.argv,
        env,
        cwd: if task.cwd.is_empty() {
            exec.workdir.clone()
        } else {
            PathBuf::from(&task.cwd)
        },
        stdin: task.stdin,
    };
    let started = Instant::now();
    let started_at_ms = now_ms();
    let spawned = match &task.pty {
        Some(size) => pty::spawn(&spec, &exec.user, exec.oom_score_adj, size).map(Proc::Pty),
        None => spawn::spawn(&spec, &exec.user, exec.oom_score_adj).map(Proc::Pipes),
    };
    let proc = match spawned {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(task = %id, error = %e, "task did not start");
            shared.table().finish(
                &id,
                TaskResult {
                    task_id: id.clone(),
                    outcome: Some(Outcome::Error(e.to_string())),
                    finished_at_ms: now_ms(),
                    ..Default::default()
                },
            );
            shared.outbound.notify_one();
            shared.task_done.notify_waiters();
            return;
        }
    };
    let pid = proc.pid();
    tracing::info!(task = %id, pid, argv0 = %spec.argv[0], pty = task.pty.is_some(), "task started");
    let stop = Arc::new(Notify::new());
    let pgid = i32::try_from(pid).unwrap_or(i32::MAX);
    shared.table().started(
        &id,
        pid,
        started_at_ms,
        Control {
            pgid,
            stop: stop.clone(),
            pty: proc.master(),
        },
    );
    shared.outbound.notify_one();
    let limits = supervise::Limits {
        deadline: (task.timeout_ms > 0).then(|| started + Duration::from_millis(task.timeout_ms)),
        grace: kill_grace(task.kill_grace_ms, exec.kill_grace),
        drain: None,
    };
    tokio::spawn(supervise(
        shared.clone(),
        id,
        proc,
        stdin_rx,
        stop,
        limits,
        started,
    ));
}

/// Stdin for a task, by offset (held tasks have their channel too: what they are sent now waits for
/// their process). Bytes nobody will read are acknowledged at once.
pub fn stdin(shared: &Shared, data: StdinData) {
    shared
        .table()
        .take_stdin(&data.task_id, data.offset, data.data);
    shared.outbound.notify_one();
}

/// Closes a pipe; on a terminal, types the EOF character instead (see `pty::pump_stdin`).
pub fn close_stdin(shared: &Shared, msg: CloseStdin) {
    shared.table().close_stdin(&msg.task_id);
}

/// A stdin pump's account of what it wrote, for the hub's acknowledgements. It goes with the pump:
/// once the pump has ended (the input closed, or the process stopped reading), everything taken
/// counts as consumed.
pub struct StdinProgress {
    shared: Arc<Shared>,
    id: String,
    written: u64,
}

impl StdinProgress {
    pub fn new(shared: Arc<Shared>, id: String) -> Self {
        Self {
            shared,
            id,
            written: 0,
        }
    }

    pub fn wrote(&mut self, bytes: usize) {
        self.written += bytes as u64;
        self.shared.table().stdin_consumed(&self.id, self.written);
        self.shared.outbound.notify_one();
    }
}

impl Drop for StdinProgress {
    fn drop(&mut self) {
        self.shared.table().stdin_gone(&self.id);
        self.shared.outbound.notify_one();
    }
}

/// A new window size for a PTY task (SIGWINCH reaches its foreground group); a held one starts with it.
pub fn resize(shared: &Shared, msg: ResizePty) {
    let Some(size) = msg.size else {
        tracing::debug!(task = %msg.task_id, "resize without a size; ignored");
        return;
    };
    let mut table = shared.table();
    if let Some(master) = table.control(&msg.task_id).and_then(|c| c.pty.clone()) {
        drop(table);
        if let Err(e) = master.resize(&size) {
            tracing::debug!(task = %msg.task_id, error = %e, "cannot resize the task's terminal");
        }
    } else if !table.resize_held(&msg.task_id, size) {
        tracing::debug!(task = %msg.task_id, "resize for a task not running on a terminal; ignored");
    }
}

/// Signals that stop a process by default: sent to a held task, they end it before it starts, as a
/// Ctrl-C during `exec` would be expected to. Other signals have nothing to reach yet.
fn stops_a_held_task(sig: Signal) -> bool {
    matches!(
        sig,
        Signal::SIGHUP | Signal::SIGINT | Signal::SIGQUIT | Signal::SIGTERM | Signal::SIGKILL
    )
}

pub fn signal(shared: &Shared, msg: SignalTask) {
    let Ok(sig) = Signal::try_from(msg.signal) else {
        tracing::warn!(task = %msg.task_id, signal = msg.signal, "unknown signal number");
        return;
    };
    let mut table = shared.table();
    if let Some(pgid) = table.control(&msg.task_id).map(|c| c.pgid) {
        drop(table);
        signal_group(pgid, sig);
    } else if stops_a_held_task(sig) && table.end_held(&msg.task_id, Outcome::Signal(msg.signal)) {
        drop(table);
        tracing::info!(task = %msg.task_id, signal = %sig, "held task ended by a signal before it started");
        shared.outbound.notify_one();
        shared.task_done.notify_waiters();
    } else {
        tracing::debug!(task = %msg.task_id, "signal for a task that is not running");
    }
}

/// TERM now, KILL after the task's grace: the supervisor does the escalation. A held task just ends.
pub fn cancel(shared: &Shared, task_id: &str) {
    let mut table = shared.table();
    if let Some(c) = table.control(task_id) {
        c.stop.notify_one();
    } else if table.end_held(task_id, Outcome::Error(CANCELLED_WHILE_HELD.into())) {
        drop(table);
        tracing::info!(task = %task_id, "held task cancelled before it started");
        shared.outbound.notify_one();
        shared.task_done.notify_waiters();
    } else {
        // A cancel can overtake its RunTask across a reconnect; the id must then never run.
        tracing::debug!(task = %task_id, "cancel for a task that is not running");
        table.remember(task_id);
    }
}

/// `sig` to every task's process group and to the setup step's, if one runs (shutdown).
pub fn terminate_all(shared: &Shared, sig: Signal) {
    let mut pgids: Vec<i32> = shared.table().controls().map(|c| c.pgid).collect();
    pgids.extend(shared.setup().step_pgid);
    for pgid in pgids {
        signal_group(pgid, sig);
    }
}

/// Grace before KILL: the task's own, else the agent's default.
pub fn kill_grace(task_ms: u64, default: Duration) -> Duration {
    if task_ms == 0 {
        default
    } else {
        Duration::from_millis(task_ms)
    }
}

/// A read takes what is left of the current block, down to this much; then a new block.
const MIN_READ: usize = 4096;

/// Reads a pipe to EOF into the spool, never waiting for the network except for room in the spool.
async fn pump_output(shared: &Shared, id: &str, stream: StreamId, fd: OwnedFd) {
    let mut rx = match pipe::Receiver::from_owned_fd(fd) {
        Ok(rx) => rx,
        Err(e) => {
            tracing::warn!(task = %id, error = %e, "cannot read task output");
            return;
        }
    };
    let mut buf = BytesMut::new();
    loop {
        // Reads fill one block after another: the spool holds slices of it, so a block is freed when
        // the hub has acknowledged everything read into it (a new block per read would pin a whole
        // block for each small read).
        if buf.capacity() < MIN_READ {
            buf.reserve(READ_CHUNK);
        }
        match rx.read_buf(&mut buf).await {
            Ok(0) => return,
            Ok(_) => {
                shared.append_output(id, stream, buf.split().freeze()).await;
                shared.outbound.notify_one();
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(task = %id, error = %e, "reading task output failed");
                return;
            }
        }
    }
}

/// Writes stdin messages in order until closed; a task that stops reading only stalls this pump.
async fn pump_stdin(fd: Option<OwnedFd>, rx: Option<StdinRx>, mut wrote: impl FnMut(usize)) {
    let (Some(fd), Some(mut rx)) = (fd, rx) else {
        return;
    };
    let mut tx = match pipe::Sender::from_owned_fd(fd) {
        Ok(tx) => tx,
        Err(e) => {
            tracing::warn!(error = %e, "cannot write task stdin");
            return;
        }
    };
    while let Some(Some(data)) = rx.recv().await {
        if let Err(e) = tx.write_all(&data).await {
            // Usually EPIPE: the task closed its stdin. Later data is dropped.
            tracing::debug!(error = %e, "task stdin closed");
            return;
        }
        wrote(data.len());
    }
    // Dropping `tx` closes the task's stdin.
}

/// A started task: on pipes, or on a terminal.
enum Proc {
    Pipes(Spawned),
    Pty(PtySpawned),
}

impl Proc {
    fn pid(&self) -> u32 {
        match self {
            Proc::Pipes(p) => p.pid,
            Proc::Pty(p) => p.pid,
        }
    }

    fn master(&self) -> Option<Arc<pty::Master>> {
        match self {
            Proc::Pipes(_) => None,
            Proc::Pty(p) => Some(p.master.clone()),
        }
    }
}

type Pump<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Owns one running task until its process exited and its output reached EOF (both pipes, or the terminal).
async fn supervise(
    shared: Arc<Shared>,
    id: String,
    proc: Proc,
    stdin_rx: Option<StdinRx>,
    stop: Arc<Notify>,
    limits: supervise::Limits,
    started: Instant,
) {
    // Read as the task starts; compared with the count when it ends.
    let oom_kills_before = crate::health::oom_kills();
    let progress = StdinProgress::new(shared.clone(), id.clone());
    let (pid, exit, output, input): (u32, _, Pump<'_>, Pump<'_>) = match proc {
        Proc::Pipes(Spawned {
            pid,
            stdin,
            stdout,
            stderr,
            exit,
        }) => {
            // docker exec semantics: the result waits for the exit and for EOF on both pipes, so all output precedes it.
            let output = async {
                tokio::join!(
                    pump_output(&shared, &id, StreamId::Stdout, stdout),
                    pump_output(&shared, &id, StreamId::Stderr, stderr),
                );
            };
            (
                pid,
                exit,
                Box::pin(output),
                Box::pin(async move {
                    let mut progress = progress;
                    pump_stdin(stdin, stdin_rx, |n| progress.wrote(n)).await;
                }),
            )
        }
        // Likewise on a terminal: the master reads EOF (EIO) only when every holder of the slave closed it,
        // after whatever was still buffered.
        Proc::Pty(PtySpawned { pid, master, exit }) => (
            pid,
            exit,
            Box::pin(pty::pump_output(&shared, &id, master.clone())),
            Box::pin(async move {
                let mut progress = progress;
                pty::pump_stdin(master, stdin_rx, |n| progress.wrote(n)).await;
            }),
        ),
    };
    let pgid = i32::try_from(pid).unwrap_or(i32::MAX);
    let who = format!("task {id}");
    let Ended { status, timed_out } =
        supervise::until_ended(&who, pgid, exit, output, input, Some(&stop), limits).await;

    let outcome = match status {
        ExitStatus::Signaled(sig) => Outcome::Signal(sig),
        ExitStatus::Exited(code) => Outcome::ExitCode(code),
    };
    // The kernel says how many OOM kills the container has seen, not whose: a task that died by
    // SIGKILL (itself, or a child its shell reports as 137) while that count rose ran out of memory.
    let killed = matches!(outcome, Outcome::Signal(9) | Outcome::ExitCode(137));
    let oom_killed = killed
        && match (oom_kills_before, crate::health::oom_kills()) {
            (Some(before), Some(after)) => after > before,
            _ => false,
        };
    tracing::info!(task = %id, ?outcome, timed_out, oom_killed, "task finished");
    shared.table().finish(
        &id,
        TaskResult {
            task_id: id.clone(),
            outcome: Some(outcome),
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            timed_out,
            oom_killed,
            finished_at_ms: now_ms(),
            ..Default::default()
        },
    );
    shared.outbound.notify_one();
    shared.task_done.notify_waiters();
}
