//! Helpers shared by the integration tests: a task table with real processes, and ways to wait on it without sleeping.

use std::sync::Arc;
use std::time::Duration;

use docker_agent_agent::spawn;
use docker_agent_agent::state::{ExecSettings, Shared};
use docker_agent_agent::users::{self, TaskUser};
use docker_agent_proto::v1::{RunTask, TaskResult, agent_message::Msg};

/// Upper bound for anything a test waits for; reaching it fails the test instead of hanging it.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub fn current_user() -> TaskUser {
    let uid = nix::unistd::geteuid().as_raw();
    users::lookup(&uid.to_string()).expect("the test user is in /etc/passwd")
}

pub fn shared_with(spool_bytes: u64, user: TaskUser) -> Arc<Shared> {
    docker_agent_agent::reaper::spawn().expect("reaper");
    Arc::new(Shared::new(
        spool_bytes,
        ExecSettings {
            user,
            workdir: std::env::temp_dir(),
            base_env: spawn::base_env(std::env::vars_os()),
            kill_grace: Duration::from_secs(5),
            oom_score_adj: spawn::task_oom_score_adj(),
        },
    ))
}

pub fn shared() -> Arc<Shared> {
    shared_with(64 << 20, current_user())
}

pub fn sh(id: &str, script: &str) -> RunTask {
    RunTask {
        task_id: id.to_owned(),
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

/// Waits (on the table's notifications, never a sleep) until `id` has a result.
pub async fn result_of(shared: &Shared, id: &str) -> TaskResult {
    let wait = async {
        loop {
            let done = shared.task_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            let found = shared
                .table()
                .reports()
                .into_iter()
                .find(|r| r.task_id == id)
                .and_then(|r| r.result);
            if let Some(r) = found {
                return r;
            }
            done.await;
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("task {id} did not finish"))
}

/// Everything the writer would send now.
pub fn drain(shared: &Shared) -> Vec<Msg> {
    std::iter::from_fn(|| shared.table().next_outbound().and_then(|m| m.msg)).collect()
}

/// Concatenated output of `id` on `stream` (1 stdout, 2 stderr) among `msgs`, checking offsets are contiguous.
pub fn output(msgs: &[Msg], id: &str, stream: i32) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        if let Msg::Output(c) = m
            && c.task_id == id
            && c.stream == stream
        {
            assert_eq!(c.offset, out.len() as u64, "gap or overlap in output");
            assert!(c.data.len() <= docker_agent_agent::spool::MAX_CHUNK);
            out.extend_from_slice(&c.data);
        }
    }
    out
}

/// Collects what the writer would send into `seen` until `id`'s stdout contains `want`.
pub async fn wait_for_stdout(shared: &Shared, id: &str, want: &[u8], seen: &mut Vec<Msg>) {
    let wait = async {
        loop {
            let more = shared.outbound.notified();
            tokio::pin!(more);
            more.as_mut().enable();
            seen.extend(drain(shared));
            if output(seen, id, 1).windows(want.len()).any(|w| w == want) {
                return;
            }
            more.await;
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "task {id} never printed {:?}",
                String::from_utf8_lossy(want)
            )
        });
}
