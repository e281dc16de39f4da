//! Waiting for a started process group to end: its exit status, its output pumps, a deadline and stop requests, with TERM then KILL after a grace. Shared by tasks and setup steps.

use std::future::Future;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::{Notify, oneshot};
use tokio::time::{Instant, sleep_until};

use crate::reaper::ExitStatus;

/// Sends `sig` to a whole process group; a group that is already gone is fine.
pub fn signal_group(pgid: i32, sig: Signal) {
    match killpg(Pid::from_raw(pgid), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pgid, signal = %sig, error = %e, "cannot signal process group"),
    }
}

/// When to stop the process on its own, and how long TERM gets before KILL.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub deadline: Option<Instant>,
    pub grace: Duration,
    /// After the exit, how long the output may take to finish; None: as long as it takes.
    pub drain: Option<Duration>,
}

/// How the process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    pub status: ExitStatus,
    /// The deadline passed and the group was told to stop.
    pub timed_out: bool,
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 86_400)
}

/// Runs until the process exited and `output` completed (EOF on its pipes), so everything it printed
/// is handled before the caller reports the end (or until `limits.drain` after the exit, when given). `input` is driven alongside but never waited for: a
/// process may exit without reading its stdin. `stop` (if any) asks for TERM, then KILL after the grace.
pub async fn until_ended(
    who: &str,
    pgid: i32,
    exit: oneshot::Receiver<ExitStatus>,
    output: impl Future<Output = ()>,
    input: impl Future<Output = ()>,
    stop: Option<&Notify>,
    limits: Limits,
) -> Ended {
    tokio::pin!(exit, output, input);
    let mut status: Option<ExitStatus> = None;
    let mut drain_until: Option<Instant> = None;
    let (mut out_done, mut in_done) = (false, false);
    let mut timed_out = false;
    // Set once TERM went out: when KILL follows.
    let mut kill_at: Option<Instant> = None;
    let mut killed = false;
    let stop_requested = async {
        match stop {
            Some(n) => n.notified().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stop_requested);

    while status.is_none() || !out_done {
        tokio::select! {
            s = &mut exit, if status.is_none() => {
                status = Some(s.unwrap_or_else(|_| {
                    tracing::error!(process = who, "exit status lost");
                    ExitStatus::Exited(-1)
                }));
                drain_until = limits.drain.map(|d| Instant::now() + d);
            }
            () = sleep_until(drain_until.unwrap_or_else(far_future)), if drain_until.is_some() && !out_done => {
                tracing::info!(process = who, "exited, but something it started still holds its output open; not waiting for it");
                out_done = true;
            }
            () = &mut output, if !out_done => out_done = true,
            () = &mut input, if !in_done => in_done = true,
            () = sleep_until(limits.deadline.unwrap_or_else(far_future)), if limits.deadline.is_some() && kill_at.is_none() => {
                tracing::info!(process = who, "timed out; stopping it");
                timed_out = true;
                signal_group(pgid, Signal::SIGTERM);
                kill_at = Some(Instant::now() + limits.grace);
            }
            () = &mut stop_requested, if kill_at.is_none() => {
                tracing::info!(process = who, "stopping it");
                signal_group(pgid, Signal::SIGTERM);
                kill_at = Some(Instant::now() + limits.grace);
            }
            () = sleep_until(kill_at.unwrap_or_else(far_future)), if kill_at.is_some() && !killed => {
                signal_group(pgid, Signal::SIGKILL);
                killed = true;
            }
        }
    }
    Ended {
        status: status.unwrap_or(ExitStatus::Exited(-1)),
        timed_out,
    }
}
