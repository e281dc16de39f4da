//! The real agent binary running a profile's setup steps: status reports to the hub, the framed container log, resuming at the failed step after a restart, and tasks held until the setup ends.

use std::path::Path;
use std::process::{Command, Stdio};

use docker_agent_agent::reaper::{self, ExitStatus};
use docker_agent_proto::v1::agent_message::Msg as Up;
use docker_agent_proto::v1::hub_message::Msg as Down;
use docker_agent_proto::v1::{
    Ack, CancelTask, Hello, Ping, SetupPlan, SetupState, SetupStatus, SetupStep, TaskResult,
    Welcome, task_result::Outcome,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use prost::Message;
use tokio::sync::oneshot;

use crate::binary::agent_command;
use crate::hub::{Hub, HubLink};
use crate::support::{PATIENCE, current_user, sh};

fn step(command: &str, description: &str) -> SetupStep {
    SetupStep {
        command: command.into(),
        description: description.into(),
        ..Default::default()
    }
}

/// A running agent process, its stdout and stderr appended to `agent.out` and `agent.err` across restarts.
struct Agent {
    pid: i32,
    exited: oneshot::Receiver<ExitStatus>,
}

impl Agent {
    fn start(hub: &Hub, dir: &Path, plan: &SetupPlan) -> Agent {
        std::fs::write(dir.join("setup.pb"), plan.encode_to_vec()).unwrap();
        let append = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(name))
                .unwrap()
        };
        let mut cmd: Command = agent_command(hub, dir, false);
        cmd.env("DOCKER_AGENT_SETUP_FILE", dir.join("setup.pb"))
            .env("DOCKER_AGENT_STATE_DIR", dir.join("state"))
            .stdin(Stdio::null())
            .stdout(append("agent.out"))
            .stderr(append("agent.err"));
        // Through the reaper: it would otherwise steal the child's status from a plain `wait`.
        let (child, exited) = reaper::spawn_registered(|| cmd.spawn(), |c| c.id()).unwrap();
        Agent {
            pid: i32::try_from(child.id()).unwrap(),
            exited,
        }
    }

    async fn stop(self) {
        kill(Pid::from_raw(self.pid), Signal::SIGTERM).unwrap();
        let status = tokio::time::timeout(PATIENCE, self.exited)
            .await
            .expect("the agent did not exit")
            .unwrap();
        assert_eq!(status, ExitStatus::Exited(0));
    }
}

/// Opens the step's FIFO gate (the step blocks reading it), without blocking the test's runtime.
async fn open_gate(dir: &Path) {
    let gate = dir.join("gate");
    let write = tokio::task::spawn_blocking(move || std::fs::write(gate, "go\n").unwrap());
    tokio::time::timeout(PATIENCE, write)
        .await
        .expect("no setup step read the gate")
        .unwrap();
}

/// Hello, Welcome, and the heartbeat that follows every Welcome (so that later heartbeats are the
/// ones we ask for); what came before that heartbeat goes into `seen`.
async fn hello_and_welcome(s: &mut HubLink, seen: &mut Vec<Up>) -> Hello {
    let Up::Hello(hello) = s.recv().await else {
        panic!("no Hello first")
    };
    s.send(Down::Welcome(Welcome {
        hub_id: "hub".into(),
        heartbeat_interval_ms: 600_000,
        ..Default::default()
    }))
    .await;
    s.recv_until(seen, |m| matches!(m, Up::Heartbeat(_)).then_some(()))
        .await;
    hello
}

fn setup_of(m: &Up) -> Option<SetupStatus> {
    match m {
        Up::Setup(s) => Some(s.clone()),
        _ => None,
    }
}

fn result_of(id: &str) -> impl FnMut(&Up) -> Option<TaskResult> + '_ {
    move |m| match m {
        Up::Result(r) if r.task_id == id => Some(r.clone()),
        _ => None,
    }
}

/// Sends `RunTask`s, then a ping: its heartbeat proves the agent has handled them (the stream is ordered).
async fn run_and_confirm(
    s: &mut HubLink,
    tasks: &[(&str, &str)],
    seen: &mut Vec<Up>,
) -> Vec<String> {
    for (id, script) in tasks {
        s.send(Down::Run(sh(id, script))).await;
    }
    s.send(Down::Ping(Ping { nonce: 7 })).await;
    s.recv_until(seen, |m| match m {
        Up::Heartbeat(h) => Some(h.running_tasks.clone()),
        _ => None,
    })
    .await
}

async fn ack_result(s: &HubLink, id: &str) {
    s.send(Down::Ack(Ack {
        task_id: id.into(),
        result: true,
        ..Default::default()
    }))
    .await;
}

fn state(s: &SetupStatus) -> (SetupState, u32, u32) {
    (
        SetupState::try_from(s.state).unwrap_or(SetupState::Unspecified),
        s.step,
        s.total,
    )
}

/// `agent.out` with the durations in the end banners replaced by `(T)`.
fn framed_log(dir: &Path) -> String {
    let out = std::fs::read_to_string(dir.join("agent.out")).unwrap();
    out.lines()
        .map(|l| match l.rfind(" (") {
            Some(i) if l.starts_with("==> ") && l.ends_with("s)") => format!("{} (T)", &l[..i]),
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn setup_resumes_at_the_failed_step_and_holds_tasks_until_it_ends() {
    reaper::spawn().unwrap();
    let mut hub = Hub::start("tok").await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    nix::unistd::mkfifo(
        &d.join("gate"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    // Relative paths: steps and tasks run in the working directory, `d`.
    let mut first = step(
        "echo out-1; echo err-1 >&2; echo s1 >> steps.log",
        "first step",
    );
    first.user = current_user().name;
    let third = step("echo s3 >> steps.log", "third step");
    let broken = SetupPlan {
        steps: vec![
            first.clone(),
            step("read g < gate; echo s2-broken >> steps.log; exit 3", ""),
            third.clone(),
        ],
    };

    // First start: step 1 succeeds, step 2 waits on the gate and then fails.
    let agent = Agent::start(&hub, d, &broken);
    let mut s = hub.next_link().await;
    let mut seen = Vec::new();
    let hello = hello_and_welcome(&mut s, &mut seen).await;
    let mut statuses = vec![hello.setup.expect("Hello carries the setup status")];
    assert_eq!(state(&statuses[0]).0, SetupState::Running, "{statuses:?}");
    // The gate holds step 2: its RUNNING status must come (unless it came already).
    if !std::iter::once(&statuses[0])
        .chain(seen.iter().filter_map(|m| match m {
            Up::Setup(st) => Some(st),
            _ => None,
        }))
        .any(|st| st.step == 2)
    {
        s.recv_until(&mut seen, |m| setup_of(m).filter(|s| s.step == 2))
            .await;
    }
    let running = run_and_confirm(
        &mut s,
        &[
            ("during", "echo task >> steps.log"),
            ("dropped", "echo never >> steps.log"),
        ],
        &mut seen,
    )
    .await;
    assert!(
        running.is_empty(),
        "held tasks are not running: {running:?}"
    );
    s.send(Down::Cancel(CancelTask {
        task_id: "dropped".into(),
    }))
    .await;
    let r = s.recv_until(&mut seen, result_of("dropped")).await;
    assert!(
        matches!(&r.outcome, Some(Outcome::Error(e)) if e.contains("cancelled before it started")),
        "{r:?}"
    );
    ack_result(&s, "dropped").await;

    open_gate(d).await;
    let failed = s
        .recv_until(&mut seen, |m| {
            setup_of(m).filter(|s| s.state == SetupState::Failed as i32)
        })
        .await;
    assert_eq!(state(&failed), (SetupState::Failed, 2, 3));
    assert!(failed.exited && failed.exit_code == 3, "{failed:?}");
    assert_eq!(failed.command, broken.steps[1].command);
    statuses.extend(seen.iter().filter_map(setup_of));
    let steps: Vec<_> = statuses.iter().map(state).collect();
    assert!(
        steps
            .windows(2)
            .all(|w| w[0].0 == SetupState::Running && w[0].1 <= w[1].1),
        "RUNNING in step order, then FAILED: {steps:?}"
    );
    assert!(steps.contains(&(SetupState::Running, 2, 3)), "{steps:?}");
    // After a failure the held task still runs, so the container can be inspected.
    let mut seen = Vec::new();
    let r = s.recv_until(&mut seen, result_of("during")).await;
    assert_eq!(r.outcome, Some(Outcome::ExitCode(0)));
    assert!(
        seen.iter()
            .any(|m| matches!(m, Up::Started(st) if st.task_id == "during"))
    );
    assert!(
        !seen
            .iter()
            .any(|m| matches!(m, Up::Started(st) if st.task_id == "dropped"))
    );
    ack_result(&s, "during").await;
    agent.stop().await;
    assert_eq!(
        std::fs::read_to_string(d.join("state/setup-done")).unwrap(),
        "1\n"
    );

    // Second start with step 2 fixed: steps 2 and 3 run, step 1 does not; a task waits for both.
    let fixed = SetupPlan {
        steps: vec![
            first,
            step("read g < gate; echo s2 >> steps.log", "second step"),
            third,
        ],
    };
    let agent = Agent::start(&hub, d, &fixed);
    let mut s = hub.next_link().await;
    let mut seen = Vec::new();
    let hello = hello_and_welcome(&mut s, &mut seen).await;
    let status = hello.setup.expect("Hello carries the setup status");
    assert_eq!(state(&status), (SetupState::Running, 2, 3));
    assert_eq!(status.description, "second step");
    let running = run_and_confirm(&mut s, &[("after", "echo task2 >> steps.log")], &mut seen).await;
    assert!(running.is_empty(), "{running:?}");
    assert!(
        !seen.iter().any(|m| matches!(m, Up::Started(_))),
        "nothing starts during setup"
    );
    open_gate(d).await;
    let r = s.recv_until(&mut seen, result_of("after")).await;
    assert_eq!(r.outcome, Some(Outcome::ExitCode(0)));
    ack_result(&s, "after").await;
    let order: Vec<String> = seen
        .iter()
        .filter_map(|m| match m {
            Up::Setup(st) => Some(format!("{:?} {}", state(st).0, st.step)),
            Up::Started(st) => Some(format!("started {}", st.task_id)),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["Running 3", "Done 3", "started after"]);
    agent.stop().await;
    assert_eq!(
        std::fs::read_to_string(d.join("steps.log")).unwrap(),
        "s1\ns2-broken\ntask\ns2\ns3\ntask2\n",
        "step 1 ran once; every task ran after the setup ended"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("state/setup-done")).unwrap(),
        "3\n"
    );

    // Third start: everything is done; the Hello says so and nothing runs.
    let agent = Agent::start(&hub, d, &fixed);
    let mut s = hub.next_link().await;
    let hello = hello_and_welcome(&mut s, &mut Vec::new()).await;
    assert_eq!(state(&hello.setup.unwrap()), (SetupState::Done, 3, 3));
    s.send(Down::Run(sh("free", "true"))).await;
    let r = s.recv_until(&mut Vec::new(), result_of("free")).await;
    assert_eq!(
        r.outcome,
        Some(Outcome::ExitCode(0)),
        "no setup to wait for"
    );
    ack_result(&s, "free").await;
    agent.stop().await;

    assert_eq!(
        framed_log(d),
        [
            "==> setup 1/3: first step",
            "out-1",
            "==> setup 1/3 finished: exit code 0 (T)",
            "==> setup 2/3: read g < gate; echo s2-broken >> steps.log; exit 3",
            "==> setup 2/3 failed: exit code 3 (T)",
            "==> setup 2/3: second step",
            "==> setup 2/3 finished: exit code 0 (T)",
            "==> setup 3/3: third step",
            "==> setup 3/3 finished: exit code 0 (T)",
        ]
        .join("\n")
    );
    let log = std::fs::read_to_string(d.join("agent.err")).unwrap();
    assert!(
        log.lines().any(|l| l == "err-1"),
        "step stderr goes to the agent's stderr"
    );
}
