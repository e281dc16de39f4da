//! The one place that waits for children: reaps every zombie (the agent is often PID 1) and hands task exit statuses to their owners.
//!
//! Nothing else may call `wait`: a per-child wait (`Child::wait`, tokio::process) races with a
//! `waitpid(-1)` reaper and loses statuses. The registry mutex is held across `fork`/`exec` so a
//! child that exits at once is still matched to its owner.

use std::collections::HashMap;
use std::io;
use std::sync::{Mutex, MutexGuard, PoisonError};

use nix::errno::Errno;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

/// How a task's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

static WAITERS: Mutex<Option<HashMap<i32, oneshot::Sender<ExitStatus>>>> = Mutex::new(None);

fn waiters() -> MutexGuard<'static, Option<HashMap<i32, oneshot::Sender<ExitStatus>>>> {
    // A panic elsewhere never leaves the map half-updated, so a poisoned lock is still usable.
    WAITERS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `spawn` with the registry locked and registers the child's pid, so its exit cannot be missed.
pub fn spawn_registered<T>(
    spawn: impl FnOnce() -> io::Result<T>,
    pid_of: impl FnOnce(&T) -> u32,
) -> io::Result<(T, oneshot::Receiver<ExitStatus>)> {
    let mut guard = waiters();
    let child = spawn()?;
    let (tx, rx) = oneshot::channel();
    let pid = i32::try_from(pid_of(&child)).map_err(io::Error::other)?;
    guard.get_or_insert_with(HashMap::new).insert(pid, tx);
    Ok((child, rx))
}

/// Reaps every child that has exited, without blocking. Returns how many were reaped.
pub fn reap_exited() -> usize {
    let mut reaped = 0;
    loop {
        // Peek (WNOWAIT) first and reap only under the lock: std's `Command::spawn` waits for a
        // child whose exec failed, and it does so while `spawn_registered` holds the lock.
        let peeked = waitid(
            Id::All,
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        );
        let pid = match peeked {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return reaped,
            Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "waitid failed");
                return reaped;
            }
            Ok(status) => match status.pid() {
                Some(pid) => pid,
                None => return reaped,
            },
        };
        let mut guard = waiters();
        let status = match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => ExitStatus::Exited(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => ExitStatus::Signaled(sig as i32),
            // Already reaped by std after a failed exec, or not a final status: look again.
            Ok(_) | Err(Errno::ECHILD) | Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!(error = %e, pid = pid.as_raw(), "waitpid failed");
                return reaped;
            }
        };
        reaped += 1;
        match guard.as_mut().and_then(|m| m.remove(&pid.as_raw())) {
            // The owner may have given up (its task was dropped); the status is simply discarded.
            Some(tx) => drop(tx.send(status)),
            None => tracing::debug!(pid = pid.as_raw(), ?status, "reaped an orphan"),
        }
    }
}

/// Makes orphaned grandchildren come to us when we are not PID 1, so they are reaped too.
pub fn become_subreaper() {
    if std::process::id() == 1 {
        return;
    }
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(error = %e, "cannot become a child subreaper; orphans go to the real init");
    }
}

/// Starts reaping on the current runtime: one sweep for children that exited before the handler
/// existed, then a sweep per SIGCHLD (signals coalesce, so each sweep drains every exited child).
pub fn spawn() -> io::Result<()> {
    let mut sigchld = signal(SignalKind::child())?;
    tokio::spawn(async move {
        reap_exited();
        while sigchld.recv().await.is_some() {
            reap_exited();
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn spawn_sh(script: &str) -> (u32, oneshot::Receiver<ExitStatus>) {
        let (child, rx) = spawn_registered(
            || {
                Command::new("/bin/sh")
                    .args(["-c", script])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .spawn()
            },
            |c| c.id(),
        )
        .unwrap();
        (child.id(), rx)
    }

    #[tokio::test]
    async fn delivers_exit_codes_and_signals() {
        spawn().unwrap();
        let (_, ok) = spawn_sh("exit 0");
        let (_, three) = spawn_sh("exit 3");
        let (_, killed) = spawn_sh("kill -9 $$");
        assert_eq!(ok.await.unwrap(), ExitStatus::Exited(0));
        assert_eq!(three.await.unwrap(), ExitStatus::Exited(3));
        assert_eq!(killed.await.unwrap(), ExitStatus::Signaled(9));
    }

    #[tokio::test]
    async fn failed_exec_does_not_confuse_the_reaper() {
        spawn().unwrap();
        for _ in 0..20 {
            let err = spawn_registered(|| Command::new("/definitely/not/here").spawn(), |c| c.id())
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound);
            let (_, rx) = spawn_sh("exit 7");
            assert_eq!(rx.await.unwrap(), ExitStatus::Exited(7));
        }
    }
}
