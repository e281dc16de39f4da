//! Tasks on a pseudo-terminal: through the real agent binary and the in-process hub (size, stdin, resize, EOF),
//! and through the runner directly (environment, task user, resizes that have nothing to reach).

use docker_agent_agent::reaper;
use docker_agent_agent::runner;
use docker_agent_proto::v1::agent_message::Msg as Up;
use docker_agent_proto::v1::hub_message::Msg as Down;
use docker_agent_proto::v1::{
    CloseStdin, PtySize, ResizePty, RunTask, StdinData, TaskResult, Welcome, task_result::Outcome,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::binary::agent_command;
use crate::hub::{Hub, HubLink};
use crate::support::{PATIENCE, drain, output, result_of, shared, shared_with};

/// The agent binary, started by a test; stopped (TERM: it stops its tasks too) when the test ends, even by a panic.
struct Agent {
    pid: i32,
    _dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGTERM);
    }
}

/// A hub, the agent binary connected to it, and the session past its Welcome.
async fn connected_agent() -> (Hub, HubLink, Agent) {
    reaper::spawn().unwrap();
    let mut hub = Hub::start("tok").await;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = agent_command(&hub, dir.path(), false);
    // Through the reaper: it would otherwise steal the child's status from a plain `wait`.
    let (child, _exited) = reaper::spawn_registered(|| cmd.spawn(), |c| c.id()).unwrap();
    let agent = Agent {
        pid: i32::try_from(child.id()).unwrap(),
        _dir: dir,
    };
    let mut s = hub.next_link().await;
    assert!(matches!(s.recv().await, Up::Hello(_)), "no Hello");
    s.send(Down::Welcome(Welcome {
        hub_id: "hub".into(),
        heartbeat_interval_ms: 600_000,
        ..Default::default()
    }))
    .await;
    (hub, s, agent)
}

fn pty_task(id: &str, script: &str, stdin: bool) -> RunTask {
    RunTask {
        task_id: id.to_owned(),
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        pty: Some(PtySize { rows: 24, cols: 80 }),
        stdin,
        // A failed test must not leave a task looping forever.
        timeout_ms: u64::try_from(PATIENCE.as_millis()).unwrap(),
        ..Default::default()
    }
}

/// The task's output so far, checking that it all came as stdout with contiguous offsets.
fn text(seen: &[Up], id: &str) -> String {
    let mut out = Vec::new();
    for m in seen {
        if let Up::Output(o) = m
            && o.task_id == id
        {
            assert_eq!(o.stream, 1, "a terminal has only stdout");
            assert_eq!(o.offset, out.len() as u64, "gap or overlap in output");
            out.extend_from_slice(&o.data);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Receives until `id`'s result, returning it with all of the task's output.
async fn finish(s: &mut HubLink, seen: &mut Vec<Up>, id: &str) -> (TaskResult, String) {
    let r = s
        .recv_until(seen, |m| match m {
            Up::Result(r) if r.task_id == id => Some(r.clone()),
            _ => None,
        })
        .await;
    let out = text(seen, id);
    assert_eq!(r.stdout_len, out.len() as u64, "{out:?}");
    assert_eq!(r.stderr_len, 0);
    (r, out)
}

/// Receives until `id`'s output contains `want`.
async fn wait_for(s: &mut HubLink, seen: &mut Vec<Up>, id: &str, want: &str) {
    loop {
        if text(seen, id).contains(want) {
            return;
        }
        let m = s.recv().await;
        seen.push(m);
    }
}

#[tokio::test]
async fn a_pty_task_has_a_terminal_of_the_requested_size() {
    let (_hub, mut s, _agent) = connected_agent().await;
    s.send(Down::Run(pty_task("tty", "tty; stty size", false)))
        .await;
    let (r, out) = finish(&mut s, &mut Vec::new(), "tty").await;
    assert_eq!(r.outcome, Some(Outcome::ExitCode(0)), "{out:?}");
    assert!(out.contains("/dev/pts/"), "{out:?}");
    assert!(out.contains("24 80"), "{out:?}");
}

#[tokio::test]
async fn stdin_is_typed_into_the_terminal() {
    let (_hub, mut s, _agent) = connected_agent().await;
    s.send(Down::Run(pty_task("read", "read x; echo \"got $x\"", true)))
        .await;
    s.send(Down::Stdin(StdinData {
        task_id: "read".into(),
        data: b"hello\n".to_vec().into(),
        offset: 0,
    }))
    .await;
    let (r, out) = finish(&mut s, &mut Vec::new(), "read").await;
    assert_eq!(r.outcome, Some(Outcome::ExitCode(0)), "{out:?}");
    // The terminal echoes the input too, and ends lines with \r\n.
    assert!(out.contains("got hello"), "{out:?}");
}

#[tokio::test]
async fn resize_reaches_the_task_as_sigwinch() {
    let (_hub, mut s, _agent) = connected_agent().await;
    let script = "trap \"stty size; exit 7\" WINCH; echo ready; while :; do sleep 0.1; done";
    s.send(Down::Run(pty_task("winch", script, false))).await;
    let mut seen = Vec::new();
    // Only once the trap is set does a resize have something to reach.
    wait_for(&mut s, &mut seen, "winch", "ready").await;
    s.send(Down::Resize(ResizePty {
        task_id: "winch".into(),
        size: Some(PtySize {
            rows: 40,
            cols: 100,
        }),
    }))
    .await;
    let (r, out) = finish(&mut s, &mut seen, "winch").await;
    assert_eq!(r.outcome, Some(Outcome::ExitCode(7)), "{out:?}");
    assert!(!r.timed_out);
    assert!(out.contains("40 100"), "{out:?}");
}

#[tokio::test]
async fn close_stdin_is_end_of_file_on_a_terminal() {
    let (_hub, mut s, _agent) = connected_agent().await;
    let mut task = pty_task("cat", "", true);
    task.argv = vec!["cat".into()];
    s.send(Down::Run(task)).await;
    s.send(Down::CloseStdin(CloseStdin {
        task_id: "cat".into(),
    }))
    .await;
    let (r, out) = finish(&mut s, &mut Vec::new(), "cat").await;
    assert_eq!(r.outcome, Some(Outcome::ExitCode(0)), "{out:?}");
    assert!(!r.timed_out);
}

#[tokio::test]
async fn term_defaults_and_the_task_can_set_it() {
    let s = shared();
    runner::run(&s, pty_task("term", "echo \"[$TERM]\"", false));
    let mut own = pty_task("own-term", "echo \"[$TERM]\"", false);
    own.env.insert("TERM".into(), "vt100".into());
    runner::run(&s, own);
    let mut pipes = pty_task(
        "no-pty",
        "echo \"[${TERM-unset}]\"; test -t 1 || echo pipe",
        false,
    );
    pipes.pty = None;
    runner::run(&s, pipes);
    for id in ["term", "own-term", "no-pty"] {
        assert_eq!(result_of(&s, id).await.outcome, Some(Outcome::ExitCode(0)));
    }
    let msgs = drain(&s);
    let out = |id| String::from_utf8(output(&msgs, id, 1)).unwrap();
    assert_eq!(out("term"), "[xterm-256color]\r\n");
    assert_eq!(out("own-term"), "[vt100]\r\n");
    // Without a terminal TERM is whatever the agent's environment says, not forced.
    let base = std::env::var("TERM").unwrap_or_else(|_| "unset".into());
    assert_eq!(out("no-pty"), format!("[{base}]\npipe\n"));
    // Resizing what has no terminal (or does not exist) is ignored.
    runner::resize(
        &s,
        ResizePty {
            task_id: "no-pty".into(),
            size: Some(PtySize { rows: 1, cols: 1 }),
        },
    );
    runner::resize(&s, ResizePty::default());
}

#[tokio::test]
async fn a_pty_task_runs_as_the_task_user_and_owns_its_terminal() {
    if !nix::unistd::geteuid().is_root() {
        return; // Switching users needs root.
    }
    let Ok(nobody) = docker_agent_agent::users::lookup("nobody") else {
        return;
    };
    let s = shared_with(1 << 20, nobody.clone());
    let mut task = pty_task("whoami", "id -u; stat -c %u \"$(tty)\"", false);
    task.cwd = "/".into();
    runner::run(&s, task);
    let r = result_of(&s, "whoami").await;
    let out = String::from_utf8(output(&drain(&s), "whoami", 1)).unwrap();
    assert_eq!(r.outcome, Some(Outcome::ExitCode(0)), "{out:?}");
    assert_eq!(out, format!("{0}\r\n{0}\r\n", nobody.uid));
}

#[tokio::test]
async fn everything_printed_before_the_exit_arrives() {
    let s = shared();
    // Far more than a terminal buffers: the task blocks in write(2) until the pump reads, then exits at once.
    runner::run(
        &s,
        pty_task(
            "burst",
            "i=0; while [ $i -lt 5000 ]; do echo line-$i; i=$((i+1)); done",
            false,
        ),
    );
    let r = result_of(&s, "burst").await;
    assert_eq!(r.outcome, Some(Outcome::ExitCode(0)));
    let out = output(&drain(&s), "burst", 1);
    let expect: String = (0..5000).map(|i| format!("line-{i}\r\n")).collect();
    assert_eq!(out.len(), expect.len());
    assert!(out == expect.as_bytes());
    assert_eq!(r.stdout_len, expect.len() as u64);
}
