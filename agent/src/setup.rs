//! The profile's setup steps: read the plan and the progress at start, run the remaining steps in order in the background while tasks wait, frame their output in the container log, record each success, and keep the hub told.
//!
//! Dialing the hub never waits for the setup and the setup never waits for the hub: the status lives
//! in `Shared` and every Hello carries the latest. A failed step stops the setup; the progress file
//! still counts the steps that succeeded, so the next agent start resumes at the failed step and no
//! step that succeeded runs twice (except one whose success the agent died before recording).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use docker_agent_proto::v1::{SetupPlan, SetupState, SetupStatus, SetupStep};
use nix::sys::signal::Signal;
use prost::Message;
use tokio::time::Instant;

use crate::console::{self, Console};
use crate::progress::{self, ProgressError};
use crate::reaper::ExitStatus;
use crate::runner;
use crate::spawn::{self, ProcessSpec, Spawned};
use crate::state::Shared;
use crate::supervise::{self, Ended};
use crate::users::{self, UserError};

/// Once a step's shell has exited, how long its output may take to reach EOF. A daemon it started
/// may hold the pipes open for ever; its output keeps flowing to the log, but the setup moves on.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read the setup plan {path}: {source}")]
    ReadPlan {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the setup plan {path} is not a valid SetupPlan: {source}")]
    DecodePlan {
        path: PathBuf,
        source: prost::DecodeError,
    },
    #[error(transparent)]
    Progress(#[from] ProgressError),
}

/// What the setup has to do at this agent start.
#[derive(Debug)]
pub enum Start {
    /// No plan file: no setup, and nothing to report.
    NoPlan,
    /// Every step succeeded at an earlier start.
    Done { total: u32 },
    /// Run `plan.steps[next..]`.
    Run { plan: SetupPlan, next: usize },
    /// The plan or the progress cannot be read: nothing runs, and the hub hears why.
    Broken { total: u32, error: SetupError },
}

/// Reads the plan (absent: no setup) and the progress file, and decides.
pub fn prepare(setup_file: &Path, state_dir: &Path) -> Start {
    let bytes = match std::fs::read(setup_file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Start::NoPlan,
        Err(source) => {
            let error = SetupError::ReadPlan {
                path: setup_file.to_owned(),
                source,
            };
            return Start::Broken { total: 0, error };
        }
    };
    let plan = match SetupPlan::decode(bytes.as_slice()) {
        Ok(p) => p,
        Err(source) => {
            let error = SetupError::DecodePlan {
                path: setup_file.to_owned(),
                source,
            };
            return Start::Broken { total: 0, error };
        }
    };
    let total = count(plan.steps.len());
    match progress::read(state_dir) {
        // More done than planned (a shorter plan now): nothing is left to run.
        Ok(done) if done >= total => Start::Done { total },
        Ok(done) => Start::Run {
            plan,
            next: done as usize,
        },
        Err(e) => Start::Broken {
            total,
            error: e.into(),
        },
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Reports where the setup stands and, when steps remain, holds new tasks and runs the steps in the
/// background. Returns at once.
pub fn start(shared: &Arc<Shared>, setup_file: &Path, state_dir: &Path) {
    match prepare(setup_file, state_dir) {
        Start::NoPlan => tracing::debug!(plan = %setup_file.display(), "no setup plan"),
        Start::Done { total } => {
            tracing::info!(steps = total, "setup already done");
            shared.report_setup(done(total));
        }
        Start::Broken { total, error } => {
            tracing::error!(error = %error, "setup cannot run; tasks run without it");
            console::line(&format!("==> setup failed: {error}"));
            shared.report_setup(SetupStatus {
                state: SetupState::Failed as i32,
                total,
                error: error.to_string(),
                ..Default::default()
            });
        }
        Start::Run { plan, next } => {
            tracing::info!(
                steps = plan.steps.len(),
                already_done = next,
                "running setup steps; tasks wait for them"
            );
            // Before the first dial, so the first Hello already says RUNNING.
            shared.report_setup(running(next + 1, plan.steps.len(), &plan.steps[next]));
            shared.table().hold();
            tokio::spawn(run_steps(shared.clone(), plan, next, state_dir.to_owned()));
        }
    }
}

async fn run_steps(shared: Arc<Shared>, plan: SetupPlan, next: usize, state_dir: PathBuf) {
    let total = plan.steps.len();
    for (i, step) in plan.steps.iter().enumerate().skip(next) {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let n = i + 1;
        if i != next {
            shared.report_setup(running(n, total, step));
        }
        console::line(&banner_start(n, total, step));
        let started = Instant::now();
        let outcome = run_step(&shared, step, &format!("setup step {n}/{total}")).await;
        console::line(&banner_end(n, total, &outcome, started.elapsed()));
        if !outcome.succeeded() {
            tracing::warn!(step = n, total, outcome = %outcome, "setup step failed; setup stops here");
            end(&shared, failed(n, total, step, &outcome));
            return;
        }
        if let Err(e) = progress::write(&state_dir, count(n)) {
            // Going on would make a restart repeat this step and every later one that succeeds.
            tracing::error!(error = %e, "setup stops: its progress cannot be recorded");
            let outcome = StepOutcome::Error(format!("the step succeeded, but {e}"));
            end(&shared, failed(n, total, step, &outcome));
            return;
        }
    }
    tracing::info!(steps = total, "setup done");
    end(&shared, done(count(total)));
}

/// Reports the final status, then lets the held tasks start (after a failure too: the container must
/// stay usable to find out what went wrong), unless the agent is stopping.
fn end(shared: &Arc<Shared>, status: SetupStatus) {
    shared.report_setup(status);
    if !shared.stopping.load(Ordering::SeqCst) {
        runner::release_held(shared);
    }
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    Exited(i32),
    Signaled(i32),
    TimedOut(Duration),
    /// It could not start (or its success could not be recorded).
    Error(String),
}

impl StepOutcome {
    pub fn succeeded(&self) -> bool {
        *self == StepOutcome::Exited(0)
    }
}

impl std::fmt::Display for StepOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepOutcome::Exited(code) => write!(f, "exit code {code}"),
            StepOutcome::Signaled(sig) => write!(f, "killed by signal {sig}"),
            StepOutcome::TimedOut(after) if after.subsec_millis() == 0 => {
                write!(f, "timed out after {}s", after.as_secs())
            }
            StepOutcome::TimedOut(after) => write!(f, "timed out after {}ms", after.as_millis()),
            StepOutcome::Error(e) => f.write_str(e),
        }
    }
}

/// Runs one step to its end: `/bin/sh -c COMMAND` as a task with no extra environment would run,
/// as the step's user, its output into the container log.
async fn run_step(shared: &Arc<Shared>, step: &SetupStep, who: &str) -> StepOutcome {
    let exec = &shared.exec;
    let user = if step.user.is_empty() {
        exec.user.clone()
    } else {
        match users::lookup(&step.user) {
            Ok(u) => u,
            Err(UserError::NotFound(name)) => {
                return StepOutcome::Error(format!("user {name:?} is not in /etc/passwd"));
            }
            Err(e) => {
                return StepOutcome::Error(format!("cannot look up user {:?}: {e}", step.user));
            }
        }
    };
    let spec = ProcessSpec {
        argv: vec!["/bin/sh".into(), "-c".into(), step.command.clone()],
        env: spawn::task_env(&exec.base_env, &user, &HashMap::new()),
        cwd: exec.workdir.clone(),
        stdin: false,
    };
    let started = Instant::now();
    let Spawned {
        pid,
        stdout,
        stderr,
        exit,
        ..
    } = match spawn::spawn(&spec, &user, exec.oom_score_adj) {
        Ok(p) => p,
        Err(e) => return StepOutcome::Error(e.to_string()),
    };
    let pgid = i32::try_from(pid).unwrap_or(i32::MAX);
    shared.setup().step_pgid = Some(pgid);
    // A shutdown that began while this step was being started did not know its group yet.
    if shared.stopping.load(Ordering::SeqCst) {
        supervise::signal_group(pgid, Signal::SIGTERM);
    }
    // Spawned, so that output still held open by a leftover process keeps reaching the log after the step.
    let out = tokio::spawn(console::forward(stdout, Console::Stdout));
    let err = tokio::spawn(console::forward(stderr, Console::Stderr));
    let output = async {
        let _ = tokio::join!(out, err);
    };
    let limits = supervise::Limits {
        deadline: (step.timeout_ms > 0).then(|| started + Duration::from_millis(step.timeout_ms)),
        grace: exec.kill_grace,
        drain: Some(OUTPUT_DRAIN),
    };
    let no_input = std::future::ready(());
    let Ended { status, timed_out } =
        supervise::until_ended(who, pgid, exit, output, no_input, None, limits).await;
    shared.setup().step_pgid = None;
    shared.task_done.notify_waiters();
    match status {
        _ if timed_out => StepOutcome::TimedOut(Duration::from_millis(step.timeout_ms)),
        ExitStatus::Exited(code) => StepOutcome::Exited(code),
        ExitStatus::Signaled(sig) => StepOutcome::Signaled(sig),
    }
}

/// The step's description, or its command, on one line.
fn label(step: &SetupStep) -> String {
    let text = if step.description.trim().is_empty() {
        &step.command
    } else {
        &step.description
    };
    let mut lines = text.trim().lines();
    let first = lines.next().unwrap_or_default().trim_end();
    if lines.next().is_some() {
        format!("{first} ...")
    } else {
        first.to_owned()
    }
}

pub fn banner_start(n: usize, total: usize, step: &SetupStep) -> String {
    format!("==> setup {n}/{total}: {}", label(step))
}

pub fn banner_end(n: usize, total: usize, outcome: &StepOutcome, took: Duration) -> String {
    let verb = if outcome.succeeded() {
        "finished"
    } else {
        "failed"
    };
    format!(
        "==> setup {n}/{total} {verb}: {outcome} ({:.1}s)",
        took.as_secs_f64()
    )
}

pub fn running(n: usize, total: usize, step: &SetupStep) -> SetupStatus {
    SetupStatus {
        state: SetupState::Running as i32,
        step: count(n),
        total: count(total),
        command: step.command.clone(),
        description: step.description.clone(),
        ..Default::default()
    }
}

pub fn done(total: u32) -> SetupStatus {
    SetupStatus {
        state: SetupState::Done as i32,
        step: total,
        total,
        ..Default::default()
    }
}

pub fn failed(n: usize, total: usize, step: &SetupStep, outcome: &StepOutcome) -> SetupStatus {
    let mut status = SetupStatus {
        state: SetupState::Failed as i32,
        step: count(n),
        total: count(total),
        command: step.command.clone(),
        description: step.description.clone(),
        ..Default::default()
    };
    match outcome {
        StepOutcome::Exited(code) => {
            status.exited = true;
            status.exit_code = *code;
        }
        StepOutcome::Signaled(sig) => status.signal = *sig,
        StepOutcome::TimedOut(_) | StepOutcome::Error(_) => status.error = outcome.to_string(),
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(command: &str, description: &str) -> SetupStep {
        SetupStep {
            command: command.into(),
            description: description.into(),
            ..Default::default()
        }
    }

    fn plan_file(dir: &Path, steps: usize) -> PathBuf {
        let plan = SetupPlan {
            steps: (0..steps).map(|i| step(&format!("echo {i}"), "")).collect(),
        };
        let path = dir.join("setup.pb");
        std::fs::write(&path, plan.encode_to_vec()).unwrap();
        path
    }

    #[test]
    fn framing_lines() {
        let s = step("apt-get install -y git", "Install git");
        assert_eq!(banner_start(1, 3, &s), "==> setup 1/3: Install git");
        assert_eq!(
            banner_start(2, 3, &step("  make\n  make install\n", "")),
            "==> setup 2/3: make ..."
        );
        let ms = Duration::from_millis;
        assert_eq!(
            banner_end(1, 3, &StepOutcome::Exited(0), ms(1234)),
            "==> setup 1/3 finished: exit code 0 (1.2s)"
        );
        assert_eq!(
            banner_end(1, 3, &StepOutcome::Exited(2), ms(300)),
            "==> setup 1/3 failed: exit code 2 (0.3s)"
        );
        assert_eq!(
            banner_end(3, 3, &StepOutcome::Signaled(9), ms(50)),
            "==> setup 3/3 failed: killed by signal 9 (0.1s)"
        );
        assert_eq!(
            banner_end(2, 2, &StepOutcome::TimedOut(ms(5000)), ms(5002)),
            "==> setup 2/2 failed: timed out after 5s (5.0s)"
        );
        assert_eq!(
            banner_end(1, 1, &StepOutcome::Error("no such user".into()), ms(0)),
            "==> setup 1/1 failed: no such user (0.0s)"
        );
    }

    #[test]
    fn statuses() {
        let s = step("false", "d");
        let f = failed(2, 3, &s, &StepOutcome::Exited(1));
        assert_eq!(f.state, SetupState::Failed as i32);
        assert_eq!((f.step, f.total, f.exited, f.exit_code), (2, 3, true, 1));
        assert_eq!((f.command.as_str(), f.description.as_str()), ("false", "d"));
        let f = failed(1, 1, &s, &StepOutcome::Signaled(15));
        assert_eq!((f.exited, f.signal, f.error.as_str()), (false, 15, ""));
        let f = failed(
            1,
            1,
            &s,
            &StepOutcome::TimedOut(Duration::from_millis(1500)),
        );
        assert_eq!(f.error, "timed out after 1500ms");
        let d = done(3);
        assert_eq!((d.state, d.step, d.total), (SetupState::Done as i32, 3, 3));
        let r = running(1, 2, &s);
        assert_eq!(
            (r.state, r.step, r.total),
            (SetupState::Running as i32, 1, 2)
        );
    }

    #[test]
    fn no_plan_file_means_no_setup() {
        let dir = tempfile::tempdir().unwrap();
        let start = prepare(&dir.path().join("absent.pb"), dir.path());
        assert!(matches!(start, Start::NoPlan), "{start:?}");
    }

    #[test]
    fn resumes_after_the_steps_that_succeeded() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan_file(dir.path(), 3);
        let state = dir.path().join("state");
        match prepare(&plan, &state) {
            Start::Run { next: 0, plan } => assert_eq!(plan.steps.len(), 3),
            other => panic!("{other:?}"),
        }
        progress::write(&state, 2).unwrap();
        match prepare(&plan, &state) {
            Start::Run { next: 2, plan } => assert_eq!(plan.steps[2].command, "echo 2"),
            other => panic!("{other:?}"),
        }
        progress::write(&state, 3).unwrap();
        assert!(matches!(prepare(&plan, &state), Start::Done { total: 3 }));
        progress::write(&state, 7).unwrap();
        assert!(matches!(prepare(&plan, &state), Start::Done { total: 3 }));
        let other = tempfile::tempdir().unwrap();
        let empty = plan_file(other.path(), 0);
        assert!(matches!(
            prepare(&empty, other.path()),
            Start::Done { total: 0 }
        ));
    }

    #[test]
    fn unreadable_plan_or_progress_is_broken_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.pb");
        std::fs::write(&bad, b"\xff\xff\xff").unwrap();
        match prepare(&bad, dir.path()) {
            Start::Broken {
                total: 0,
                error: SetupError::DecodePlan { .. },
            } => {}
            other => panic!("{other:?}"),
        }
        let plan = plan_file(dir.path(), 2);
        std::fs::write(progress::path_in(dir.path()), "one").unwrap();
        match prepare(&plan, dir.path()) {
            Start::Broken {
                total: 2,
                error: SetupError::Progress(ProgressError::Garbage { .. }),
            } => {}
            other => panic!("{other:?}"),
        }
    }
}
