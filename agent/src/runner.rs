//! A task's life: start it, pump its pipes into the spool, feed its stdin, stop it on timeout or cancel, and record the result.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use docker_agent_proto::v1::{
    CloseStdin, RunTask, SignalTask, StdinData, TaskResult, task_result::Outcome,
};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, sleep_until};

use crate::reaper::ExitStatus;
use crate::spawn::{self, ProcessSpec, Spawned};
use crate::spool::{READ_CHUNK, StreamId};
use crate::state::Shared;
use crate::tasks::{Admission, Control};

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Sends `sig` to the task's whole process group; a group that is already gone is fine.
fn signal_group(pgid: i32, sig: Signal) {
    match killpg(Pid::from_raw(pgid), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pgid, signal = %sig, error = %e, "cannot signal task"),
    }
}

/// Handles RunTask: runs a new id once; for a finished, unacknowledged id, sends its result again.
pub fn run(shared: &Arc<Shared>, task: RunTask) {
    let admission = shared.table().admit(&task.task_id);
    match admission {
        Admission::Run => start(shared, task),
        Admission::ResendResult => {
            tracing::info!(task = %task.task_id, "task already finished; resending its result");
            shared.outbound.notify_one();
        }
        Admission::Duplicate => {
            tracing::info!(task = %task.task_id, "task already known; not running it again");
        }
    }
}

fn start(shared: &Arc<Shared>, task: RunTask) {
    let exec = &shared.exec;
    let id = task.task_id.clone();
    let spec = ProcessSpec {
        argv: task.argv,
        env: spawn::task_env(&exec.base_env, &exec.user, &task.env),
        cwd: if task.cwd.is_empty() {
            exec.workdir.clone()
        } else {
            PathBuf::from(&task.cwd)
        },
        stdin: task.stdin,
    };
    let started = Instant::now();
    let started_at_ms = now_ms();
    let proc = match spawn::spawn(&spec, &exec.user, exec.oom_score_adj) {
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
    tracing::info!(task = %id, pid = proc.pid, argv0 = %spec.argv[0], "task started");
    let stop = Arc::new(Notify::new());
    let (stdin_tx, stdin_rx) = if proc.stdin.is_some() {
        let (tx, rx) = mpsc::unbounded_channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let pgid = i32::try_from(proc.pid).unwrap_or(i32::MAX);
    shared.table().started(
        &id,
        proc.pid,
        started_at_ms,
        Control {
            pgid,
            stop: stop.clone(),
            stdin: stdin_tx,
        },
    );
    shared.outbound.notify_one();
    let limits = Limits {
        timeout: (task.timeout_ms > 0).then(|| Duration::from_millis(task.timeout_ms)),
        grace: kill_grace(task.kill_grace_ms, exec.kill_grace),
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

pub fn stdin(shared: &Shared, data: StdinData) {
    let table = shared.table();
    match table.control(&data.task_id).and_then(|c| c.stdin.as_ref()) {
        Some(tx) => drop(tx.send(Some(data.data))),
        None => {
            tracing::debug!(task = %data.task_id, "stdin for a task without open stdin; dropped")
        }
    }
}

pub fn close_stdin(shared: &Shared, msg: CloseStdin) {
    let table = shared.table();
    if let Some(tx) = table.control(&msg.task_id).and_then(|c| c.stdin.as_ref()) {
        drop(tx.send(None));
    }
}

pub fn signal(shared: &Shared, msg: SignalTask) {
    let pgid = shared.table().control(&msg.task_id).map(|c| c.pgid);
    let Some(pgid) = pgid else {
        tracing::debug!(task = %msg.task_id, "signal for a task that is not running");
        return;
    };
    match Signal::try_from(msg.signal) {
        Ok(sig) => signal_group(pgid, sig),
        Err(_) => tracing::warn!(task = %msg.task_id, signal = msg.signal, "unknown signal number"),
    }
}

/// TERM now, KILL after the task's grace: the supervisor does the escalation.
pub fn cancel(shared: &Shared, task_id: &str) {
    let mut table = shared.table();
    match table.control(task_id) {
        Some(c) => c.stop.notify_one(),
        None => {
            // A cancel can overtake its RunTask across a reconnect; the id must then never run.
            tracing::debug!(task = %task_id, "cancel for a task that is not running");
            table.remember(task_id);
        }
    }
}

/// TERM to every task's process group (shutdown).
pub fn terminate_all(shared: &Shared, sig: Signal) {
    let pgids: Vec<i32> = shared.table().controls().map(|c| c.pgid).collect();
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

#[derive(Debug, Clone, Copy)]
struct Limits {
    timeout: Option<Duration>,
    grace: Duration,
}

/// Unacknowledged output allowed in flight while connected. Enough to keep the link busy between acks
/// (the hub acks every MiB), small enough that a fast producer does not balloon the agent's memory.
const CONNECTED_WINDOW: u64 = 4 << 20;

/// While the hub is connected, output that outpaces it waits here: the pipe fills and the task blocks
/// in write(2), as it would writing to a slow terminal, so nothing is dropped on a live link. While
/// disconnected the spool takes everything up to its bound and then drops the oldest bytes (flagged).
async fn append_with_room(shared: &Shared, id: &str, stream: StreamId, data: &[u8]) {
    loop {
        let notified = shared.space.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            // Check and append under one lock: stdout and stderr pumps (and other tasks) must not all
            // pass the check and then overshoot the window together.
            let mut table = shared.table();
            if !shared.connected.load(Ordering::Acquire)
                || table.has_room_for(data.len() as u64, CONNECTED_WINDOW)
            {
                table.append(id, stream, data);
                return;
            }
        }
        notified.await;
    }
}

/// Reads a pipe to EOF into the spool, never waiting for the network except for room in the spool.
async fn pump_output(shared: &Shared, id: &str, stream: StreamId, fd: OwnedFd) {
    let mut rx = match pipe::Receiver::from_owned_fd(fd) {
        Ok(rx) => rx,
        Err(e) => {
            tracing::warn!(task = %id, error = %e, "cannot read task output");
            return;
        }
    };
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match rx.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => {
                append_with_room(shared, id, stream, &buf[..n]).await;
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
async fn pump_stdin(
    fd: Option<OwnedFd>,
    rx: Option<mpsc::UnboundedReceiver<Option<tonic::codegen::Bytes>>>,
) {
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
    }
    // Dropping `tx` closes the task's stdin.
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 86_400)
}

/// Owns one running task until its process exited and both pipes reached EOF.
async fn supervise(
    shared: Arc<Shared>,
    id: String,
    proc: Spawned,
    stdin_rx: Option<mpsc::UnboundedReceiver<Option<tonic::codegen::Bytes>>>,
    stop: Arc<Notify>,
    limits: Limits,
    started: Instant,
) {
    let Spawned {
        pid,
        stdin,
        stdout,
        stderr,
        exit,
    } = proc;
    let pgid = i32::try_from(pid).unwrap_or(i32::MAX);
    let out = pump_output(&shared, &id, StreamId::Stdout, stdout);
    let err = pump_output(&shared, &id, StreamId::Stderr, stderr);
    let input = pump_stdin(stdin, stdin_rx);
    tokio::pin!(out, err, input, exit);

    let deadline = limits.timeout.map(|t| started + t);
    let mut status: Option<ExitStatus> = None;
    let (mut out_done, mut err_done, mut in_done) = (false, false, false);
    let mut timed_out = false;
    // Set once TERM went out: when KILL follows.
    let mut kill_at: Option<Instant> = None;
    let mut killed = false;

    // docker exec semantics: the result waits for the exit and for EOF on both pipes, so all output precedes it.
    while status.is_none() || !out_done || !err_done {
        tokio::select! {
            s = &mut exit, if status.is_none() => {
                status = Some(s.unwrap_or_else(|_| {
                    tracing::error!(task = %id, "exit status lost");
                    ExitStatus::Exited(-1)
                }));
            }
            () = &mut out, if !out_done => out_done = true,
            () = &mut err, if !err_done => err_done = true,
            () = &mut input, if !in_done => in_done = true,
            () = sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() && kill_at.is_none() => {
                tracing::info!(task = %id, "task timed out; stopping it");
                timed_out = true;
                signal_group(pgid, Signal::SIGTERM);
                kill_at = Some(Instant::now() + limits.grace);
            }
            () = stop.notified(), if kill_at.is_none() => {
                tracing::info!(task = %id, "stopping task");
                signal_group(pgid, Signal::SIGTERM);
                kill_at = Some(Instant::now() + limits.grace);
            }
            () = sleep_until(kill_at.unwrap_or_else(far_future)), if kill_at.is_some() && !killed => {
                signal_group(pgid, Signal::SIGKILL);
                killed = true;
            }
        }
    }

    let outcome = match status {
        Some(ExitStatus::Signaled(sig)) => Outcome::Signal(sig),
        Some(ExitStatus::Exited(code)) => Outcome::ExitCode(code),
        None => Outcome::ExitCode(-1),
    };
    tracing::info!(task = %id, ?outcome, timed_out, "task finished");
    shared.table().finish(
        &id,
        TaskResult {
            task_id: id.clone(),
            outcome: Some(outcome),
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            timed_out,
            finished_at_ms: now_ms(),
            ..Default::default()
        },
    );
    shared.outbound.notify_one();
    shared.task_done.notify_waiters();
}
