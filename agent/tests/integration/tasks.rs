//! Real processes through the runner: exit statuses, signals, stdin, stream separation, timeouts of whole process trees.

use docker_agent_agent::runner;
use docker_agent_proto::v1::{
    CloseStdin, RunTask, SignalTask, StdinData, agent_message::Msg, task_result::Outcome,
};

use crate::support::{
    current_user, drain, output, result_of, sh, shared, shared_with, wait_for_stdout,
};

#[tokio::test]
async fn exit_codes_are_reported() {
    let s = shared();
    runner::run(&s, sh("ok", "exit 0"));
    runner::run(&s, sh("three", "exit 3"));
    assert_eq!(
        result_of(&s, "ok").await.outcome,
        Some(Outcome::ExitCode(0))
    );
    let r = result_of(&s, "three").await;
    assert_eq!(r.outcome, Some(Outcome::ExitCode(3)));
    assert!(!r.timed_out && !r.output_truncated);
    assert!(r.finished_at_ms > 0);
}

#[tokio::test]
async fn death_by_signal_is_reported_as_the_signal() {
    let s = shared();
    runner::run(&s, sh("killed", "kill -9 $$"));
    assert_eq!(
        result_of(&s, "killed").await.outcome,
        Some(Outcome::Signal(9))
    );
}

#[tokio::test]
async fn signal_task_reaches_the_process_group() {
    let s = shared();
    runner::run(&s, sh("sig", "sleep 100 & echo ready; wait"));
    // Only once the background sleep exists does TERM to the group (not just the shell) matter.
    wait_for_stdout(&s, "sig", b"ready", &mut Vec::new()).await;
    runner::signal(
        &s,
        SignalTask {
            task_id: "sig".into(),
            signal: 15,
        },
    );
    let r = result_of(&s, "sig").await;
    assert_eq!(r.outcome, Some(Outcome::Signal(15)));
    assert!(!r.timed_out);
}

#[tokio::test]
async fn stdout_and_stderr_stay_separate_and_precede_the_result() {
    let s = shared();
    runner::run(
        &s,
        sh("sep", "echo out1; echo err1 >&2; echo out2; echo err2 >&2"),
    );
    let r = result_of(&s, "sep").await;
    let msgs = drain(&s);
    assert!(matches!(msgs.first(), Some(Msg::Started(st)) if st.task_id == "sep" && st.pid > 0));
    assert!(
        matches!(msgs.last(), Some(Msg::Result(_))),
        "the result comes last"
    );
    assert_eq!(output(&msgs, "sep", 1), b"out1\nout2\n");
    assert_eq!(output(&msgs, "sep", 2), b"err1\nerr2\n");
    assert_eq!((r.stdout_len, r.stderr_len), (10, 10));
}

#[tokio::test]
async fn stdin_round_trip() {
    let s = shared();
    runner::run(
        &s,
        RunTask {
            task_id: "cat".into(),
            argv: vec!["cat".into()],
            stdin: true,
            ..Default::default()
        },
    );
    // The second piece is sent twice, as after a link drop: it reaches the process once.
    for (offset, part) in [(0, &b"hello "[..]), (6, b"world\n"), (6, b"world\n")] {
        runner::stdin(
            &s,
            StdinData {
                task_id: "cat".into(),
                data: part.to_vec().into(),
                offset,
            },
        );
    }
    runner::close_stdin(
        &s,
        CloseStdin {
            task_id: "cat".into(),
        },
    );
    assert_eq!(
        result_of(&s, "cat").await.outcome,
        Some(Outcome::ExitCode(0))
    );
    assert_eq!(output(&drain(&s), "cat", 1), b"hello world\n");
}

#[tokio::test]
async fn without_stdin_the_task_reads_dev_null() {
    let s = shared();
    runner::run(&s, sh("null", "cat; echo done"));
    assert_eq!(
        result_of(&s, "null").await.outcome,
        Some(Outcome::ExitCode(0))
    );
    assert_eq!(output(&drain(&s), "null", 1), b"done\n");
}

fn gone_or_zombie(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn timeout_kills_the_whole_process_tree() {
    let s = shared();
    let mut task = sh("tree", "sleep 100 & echo $!; sleep 100");
    task.timeout_ms = 300;
    runner::run(&s, task);
    let r = result_of(&s, "tree").await;
    assert!(r.timed_out);
    assert_eq!(r.outcome, Some(Outcome::Signal(15)));
    assert!(
        r.duration_ms >= 300 && r.duration_ms < 10_000,
        "{}",
        r.duration_ms
    );
    // The background sleep held stdout open: the result only came after it died too.
    let msgs = drain(&s);
    let grandchild: i32 = String::from_utf8(output(&msgs, "tree", 1))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The pipe closes while the process exits, a moment before it turns into a zombie: allow for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !gone_or_zombie(grandchild) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        gone_or_zombie(grandchild),
        "grandchild {grandchild} survived"
    );
}

#[tokio::test]
async fn term_is_escalated_to_kill_after_the_grace() {
    let s = shared();
    // An ignored TERM is inherited by the child sleep too.
    let mut task = sh("stubborn", "trap '' TERM; sleep 100 & wait");
    task.timeout_ms = 100;
    task.kill_grace_ms = 200;
    runner::run(&s, task);
    let r = result_of(&s, "stubborn").await;
    assert!(r.timed_out);
    assert_eq!(r.outcome, Some(Outcome::Signal(9)));
}

#[tokio::test]
async fn cancel_stops_the_task() {
    let s = shared();
    runner::run(&s, sh("cancel-me", "sleep 100 & echo ready; wait"));
    wait_for_stdout(&s, "cancel-me", b"ready", &mut Vec::new()).await;
    runner::cancel(&s, "cancel-me");
    let r = result_of(&s, "cancel-me").await;
    assert_eq!(r.outcome, Some(Outcome::Signal(15)));
    assert!(!r.timed_out);
}

#[tokio::test]
async fn zero_timeout_means_none() {
    let s = shared();
    let mut task = sh("no-timeout", "exit 0");
    task.timeout_ms = 0;
    runner::run(&s, task);
    assert!(!result_of(&s, "no-timeout").await.timed_out);
}

#[tokio::test]
async fn start_failures_become_error_results() {
    let s = shared();
    runner::run(
        &s,
        RunTask {
            task_id: "missing".into(),
            argv: vec!["foo-no-such-program".into()],
            ..Default::default()
        },
    );
    let mut bad_cwd = sh("bad-cwd", "true");
    bad_cwd.cwd = "/no/such/dir".into();
    runner::run(&s, bad_cwd);
    runner::run(
        &s,
        RunTask {
            task_id: "empty".into(),
            ..Default::default()
        },
    );
    let err = |r: docker_agent_proto::v1::TaskResult| match r.outcome {
        Some(Outcome::Error(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    };
    assert_eq!(
        err(result_of(&s, "missing").await),
        "cannot start \"foo-no-such-program\": No such file or directory (os error 2)"
    );
    assert!(
        err(result_of(&s, "bad-cwd").await).contains("\"/no/such/dir\": No such file or directory")
    );
    assert!(err(result_of(&s, "empty").await).contains("empty argv"));
    let msgs = drain(&s);
    assert!(!msgs.iter().any(|m| matches!(m, Msg::Started(_))));
    assert_eq!(
        msgs.iter().filter(|m| matches!(m, Msg::Result(_))).count(),
        3
    );
}

#[tokio::test]
async fn a_task_id_runs_only_once() {
    let s = shared();
    runner::run(&s, sh("once", "echo ran"));
    runner::run(&s, sh("once", "echo ran"));
    result_of(&s, "once").await;
    runner::run(&s, sh("once", "echo ran"));
    let msgs = drain(&s);
    assert_eq!(output(&msgs, "once", 1), b"ran\n");
    assert_eq!(
        msgs.iter().filter(|m| matches!(m, Msg::Started(_))).count(),
        1
    );
    assert_eq!(
        msgs.iter().filter(|m| matches!(m, Msg::Result(_))).count(),
        1
    );
}

#[tokio::test]
async fn environment_and_cwd() {
    let s = shared();
    let mut task = sh(
        "env",
        "pwd; echo \"$HOME|$USER|$FOO\"; env | grep -c '^DOCKER_AGENT_' || true",
    );
    task.cwd = "/".into();
    task.env.insert("FOO".into(), "bar".into());
    runner::run(&s, task);
    result_of(&s, "env").await;
    let user = current_user();
    let expect = format!("/\n{}|{}|bar\n0\n", user.home.display(), user.name);
    assert_eq!(
        String::from_utf8(output(&drain(&s), "env", 1)).unwrap(),
        expect
    );
}

#[tokio::test]
async fn large_output_arrives_byte_exact_in_bounded_chunks() {
    let s = shared();
    runner::run(
        &s,
        sh(
            "big",
            "i=0; while [ $i -lt 2000 ]; do echo line-$i-abcdefghijklmnopqrstuvwxyz; i=$((i+1)); done; head -c 300000 /dev/zero",
        ),
    );
    let r = result_of(&s, "big").await;
    let out = output(&drain(&s), "big", 1);
    let mut expect = String::new();
    for i in 0..2000 {
        expect.push_str(&format!("line-{i}-abcdefghijklmnopqrstuvwxyz\n"));
    }
    let mut expect = expect.into_bytes();
    expect.extend(std::iter::repeat_n(0u8, 300_000));
    assert_eq!(out.len(), expect.len());
    assert!(out == expect);
    assert_eq!(r.stdout_len, expect.len() as u64);
}

#[tokio::test]
async fn output_beyond_the_spool_bound_is_dropped_and_flagged() {
    let s = shared_with(10_000, current_user());
    runner::run(&s, sh("flood", "head -c 100000 /dev/zero"));
    let r = result_of(&s, "flood").await;
    assert!(r.output_truncated);
    assert_eq!(r.stdout_len, 100_000);
    assert!(s.table().spooled_bytes() <= 10_000);
}

#[tokio::test]
async fn tasks_run_as_the_task_user() {
    if !nix::unistd::geteuid().is_root() {
        return; // Switching users needs root.
    }
    let Ok(nobody) = docker_agent_agent::users::lookup("nobody") else {
        return;
    };
    let s = shared_with(1 << 20, nobody.clone());
    let mut task = sh("whoami", "id -u; id -g; echo $USER");
    task.cwd = "/".into();
    runner::run(&s, task);
    assert_eq!(
        result_of(&s, "whoami").await.outcome,
        Some(Outcome::ExitCode(0))
    );
    let expect = format!("{}\n{}\nnobody\n", nobody.uid, nobody.gid);
    assert_eq!(
        String::from_utf8(output(&drain(&s), "whoami", 1)).unwrap(),
        expect
    );
    // The token file is root-only; a task must not be able to read it.
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "secret").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o400)).unwrap();
    let mut task = sh("steal", &format!("cat {}", token.display()));
    task.cwd = "/".into();
    runner::run(&s, task);
    assert_ne!(
        result_of(&s, "steal").await.outcome,
        Some(Outcome::ExitCode(0))
    );
}

#[tokio::test]
async fn output_keeps_flowing_while_nobody_reads() {
    // No session at all: the pipe is drained into the spool, so the writer never blocks.
    let s = shared();
    let mut task = sh("offline", "head -c 1000000 /dev/zero");
    task.timeout_ms = 20_000;
    runner::run(&s, task);
    let r = result_of(&s, "offline").await;
    assert_eq!(r.outcome, Some(Outcome::ExitCode(0)));
    assert_eq!(s.table().spooled_bytes(), 1_000_000);
}

#[tokio::test]
async fn output_the_hub_drops_is_read_and_counted_but_never_sent() {
    let s = shared();
    // The task waits for a line on stdin, so the drop lands between its two halves.
    runner::run(
        &s,
        RunTask {
            stdin: true,
            ..sh("drop", "echo first; read go; head -c 5000000 /dev/zero")
        },
    );
    let mut seen = Vec::new();
    wait_for_stdout(&s, "drop", b"first\n", &mut seen).await;
    s.table().discard_output("drop");
    runner::stdin(
        &s,
        StdinData {
            task_id: "drop".into(),
            data: b"go\n".to_vec().into(),
            offset: 0,
        },
    );
    let r = result_of(&s, "drop").await;
    seen.extend(drain(&s));
    assert_eq!(
        output(&seen, "drop", 1),
        b"first\n",
        "nothing after the drop went out"
    );
    // The result still counts every byte the task wrote.
    assert_eq!(r.stdout_len, 6 + 5_000_000);
    assert_eq!(s.table().spooled_bytes(), 0, "nothing is held for it");
}
