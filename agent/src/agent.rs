//! The agent's main loop: reconnect to the hub forever with jittered backoff, and shut down cleanly on TERM/INT.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

use crate::backoff::{Backoff, MAX_DELAY};
use crate::config::Config;
use crate::health::{HealthSampler, HealthSource};
use crate::link::{self, Identity, LinkEnd, LinkError};
use crate::state::{ExecSettings, Shared};
use crate::{reaper, runner, setup, spawn, system};

/// A link that lasted this long was healthy: the next failure starts the backoff over.
const STABLE_SESSION: Duration = Duration::from_secs(10);
/// At shutdown, how long queued results may take to reach the hub once tasks are gone.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs until SIGTERM or SIGINT, then stops the tasks and returns.
pub async fn run(config: Config) -> anyhow::Result<()> {
    reaper::become_subreaper();
    reaper::spawn().context("failed to install the SIGCHLD handler")?;
    let mut term =
        signal(SignalKind::terminate()).context("failed to install the SIGTERM handler")?;
    let mut int =
        signal(SignalKind::interrupt()).context("failed to install the SIGINT handler")?;

    let shared = Arc::new(Shared::new(
        config.spool_bytes,
        ExecSettings {
            user: config.task_user.clone(),
            workdir: config.workdir.clone(),
            base_env: spawn::base_env(std::env::vars_os()),
            kill_grace: config.kill_grace,
            oom_score_adj: spawn::task_oom_score_adj(),
        },
    ));
    let identity = Identity {
        instance_id: hex::encode(rand::random::<[u8; 16]>()),
        system: system::system_info(),
    };
    tracing::info!(
        agent = %config.agent_id,
        hub = %config.hub.url,
        instance = %identity.instance_id,
        version = env!("CARGO_PKG_VERSION"),
        pid = std::process::id(),
        task_user = %config.task_user.name,
        "agent starting"
    );
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let missing =
        spawn::missing_capabilities(&status, nix::unistd::geteuid().as_raw(), &config.task_user);
    if !missing.is_empty() {
        tracing::warn!(
            task_user = %config.task_user.name,
            missing = ?missing,
            "the agent lacks capabilities to run tasks as the task user or to signal them; expect task failures"
        );
    }
    let grace = config.kill_grace;
    // Before the first dial: the setup runs whether or not the hub can be reached, and Hello reports it.
    setup::start(&shared, &config.setup_file, &config.state_dir);
    let sampler = HealthSampler::new(&config.workdir);
    let connector = tokio::spawn(connect_forever(shared.clone(), config, identity, sampler));

    let mut connector = connector;
    let superseded = tokio::select! {
        _ = term.recv() => { tracing::info!("SIGTERM: stopping tasks"); false }
        _ = int.recv() => { tracing::info!("SIGINT: stopping tasks"); false }
        _ = &mut connector => true,
    };
    shutdown(&shared, grace).await;
    connector.abort();
    if superseded {
        // Non-zero, so a container whose agent was wrongly taken for an old one is restarted by its
        // restart policy, and a restarted container's agent is always taken.
        anyhow::bail!("superseded by another process of this agent: its tasks were stopped");
    }
    Ok(())
}

/// Keeps a link with the hub up, forever; tasks in `shared` are unaffected by how links go.
pub async fn connect_forever(
    shared: Arc<Shared>,
    config: Config,
    identity: Identity,
    mut sampler: impl HealthSource,
) {
    let mut backoff = Backoff::new();
    loop {
        let end = link::run(&shared, &config, &identity, &mut sampler).await;
        let delay = match end {
            LinkEnd::Failed(LinkError::Superseded(e))
            | LinkEnd::Ended {
                error: LinkError::Superseded(e),
                ..
            } => {
                tracing::error!(
                    message = e.message(),
                    "another process is this agent now (its container was replaced): stopping this one's tasks and exiting"
                );
                return;
            }
            LinkEnd::Failed(LinkError::Refused(e))
            | LinkEnd::Ended {
                error: LinkError::Refused(e),
                ..
            } => {
                tracing::error!(
                    code = %e.code(),
                    message = e.message(),
                    "HUB REFUSED THIS AGENT: check its token file and agent id; retrying in {}s",
                    MAX_DELAY.as_secs()
                );
                MAX_DELAY
            }
            LinkEnd::Failed(e) => {
                tracing::warn!(error = %e, "cannot open a link to the hub");
                backoff.next_delay()
            }
            LinkEnd::Ended { lasted, error } => {
                if lasted >= STABLE_SESSION {
                    backoff.reset();
                }
                tracing::warn!(error = %error, lasted_ms = lasted.as_millis() as u64, "link to the hub ended");
                backoff.next_delay()
            }
        };
        tracing::info!(delay_ms = delay.as_millis() as u64, "reconnecting");
        tokio::time::sleep(delay).await;
    }
}

/// TERM to every task's group (and the setup step's), up to `grace` for them to go, KILL for the rest,
/// then a short flush. Tasks held for the setup end without starting.
async fn shutdown(shared: &Shared, grace: Duration) {
    shared.stopping.store(true, Ordering::SeqCst);
    runner::abandon_held(shared);
    runner::terminate_all(shared, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    let gone = |s: &Shared| s.table().running_count() == 0 && s.setup().step_pgid.is_none();
    if !wait_until(shared, deadline, gone).await {
        tracing::warn!("tasks outlived the grace period; killing them");
        runner::terminate_all(shared, Signal::SIGKILL);
    }
    // Give the live link (if any) a moment to deliver the final results: the hub's Ack proves they arrived.
    let deadline = Instant::now() + FLUSH_TIMEOUT;
    wait_until(shared, deadline, |s| !s.table().has_unacked_results()).await;
}

/// Waits until `done` holds, re-checking whenever a task finishes or the hub acknowledges. False on timeout.
async fn wait_until(shared: &Shared, deadline: Instant, done: impl Fn(&Shared) -> bool) -> bool {
    loop {
        let finished = shared.task_done.notified();
        tokio::pin!(finished);
        // Registered before checking, so a wake-up between the check and the wait is not lost.
        finished.as_mut().enable();
        if done(shared) {
            return true;
        }
        if tokio::time::timeout_at(deadline, finished).await.is_err() {
            return done(shared);
        }
    }
}
