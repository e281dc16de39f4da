//! Following and stopping what runs: `logs --follow` until the container stops, `task logs` from another terminal, and `kill` on a whole process tree.

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::Hub;

const WAIT: Duration = Duration::from_secs(60);

/// Lines of a child's pipe, as they come.
fn lines(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn read_until(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    loop {
        let line = rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("no line with {needle:?}"));
        if line.contains(needle) {
            return line;
        }
    }
}

/// How many processes in the agent run a command line containing `pattern`.
async fn count(hub: &Hub, name: &str, pattern: &str) -> usize {
    let script = format!(
        "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f 2>/dev/null; echo; done | grep -c '^{pattern}' || true"
    );
    hub.sh(name, &script).await.trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_ends_the_whole_process_tree_and_signals_reach_the_group() {
    let hub = Hub::builder().start().await;
    let name = hub.name("kill");
    hub.create(&name).await;
    let id = hub
        .cli(&[
            "task",
            &name,
            r#"{"type":"script","script":"sleep 301 & sleep 302 & echo started; wait"}"#,
            "--detach",
        ])
        .await
        .ok()
        .trim()
        .to_string();
    // Follow it from a second CLI process: the task was started by another one.
    let mut follower = hub.spawn_cli(&["task", "logs", &id, "--follow"]);
    let out = lines(follower.stdout.take().unwrap());
    read_until(&out, "started");
    assert_eq!(count(&hub, &name, "sleep 30").await, 2);

    hub.cli(&["kill", &id]).await.ok();
    // The follower ends when the task does.
    let status = tokio::task::spawn_blocking(move || follower.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
    assert_eq!(count(&hub, &name, "sleep 30").await, 0, "a child survived");
    let got = hub.cli(&["task", "get", &id, "--json"]).await.json();
    assert_eq!(got["signal"], 15, "{got}");
    hub.cli(&["kill", &id])
        .await
        .fails_with("has already ended");
    hub.cli(&["kill", "no-such-task"])
        .await
        .fails_with("not found");
    let bad = hub.cli(&["kill", &id, "--signal", "NOPE"]).await;
    assert_eq!(bad.code(), 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("is not a signal"), "{}", bad.stderr);

    // One signal, to the whole group: the shell's trap sees it.
    let id = hub
        .cli(&[
            "task",
            &name,
            r#"{"type":"script","script":"trap 'echo got-hup; exit 4' HUP; echo ready; while :; do sleep 1; done"}"#,
            "--detach",
        ])
        .await
        .ok()
        .trim()
        .to_string();
    let mut follower = hub.spawn_cli(&["task", "logs", &id, "--follow"]);
    let out = lines(follower.stdout.take().unwrap());
    read_until(&out, "ready");
    hub.cli(&["kill", &id, "--signal", "SIGHUP"]).await.ok();
    read_until(&out, "got-hup");
    let status = tokio::task::spawn_blocking(move || follower.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
    let got = hub.cli(&["task", "get", &id, "--json"]).await.json();
    assert_eq!(got["exit_code"], 4, "{got}");
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_follow_streams_new_lines_and_ends_when_the_container_stops() {
    let hub = Hub::builder().start().await;
    let name = hub.name("logs");
    hub.create(&name).await;
    let mut follower = hub.spawn_cli(&["logs", &name, "--follow"]);
    // The agent logs to stderr; its first line proves the stream is open.
    let err = lines(follower.stderr.take().unwrap());
    read_until(&err, "agent starting");
    // A line the agent writes after the follow began.
    let exec = hub.cli(&["exec", &name, "--", "true"]).await;
    exec.ok();
    read_until(&err, "task finished");
    hub.cli(&["stop", &name]).await.ok();
    let status = tokio::task::spawn_blocking(move || follower.wait().unwrap())
        .await
        .unwrap();
    assert!(
        status.success(),
        "logs --follow did not end cleanly: {status}"
    );
}
