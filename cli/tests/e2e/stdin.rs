//! Stdin drill: 50 MiB piped into `exec … sha256sum` is held back at the CLI while the task does not
//! read (the agent queues no more than the hub's window), then arrives whole and once though the
//! agent's link is cut twice while it streams.

use std::io::Write;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::support::{Hub, wait_for};

const TOTAL: usize = 50 << 20;
const PIECE: usize = 256 << 10;

/// Cuts (or heals) the agent's link to the hub's agent port: inside the container's network
/// namespace, its packets to the port are answered with a reset, so the link breaks at once.
fn cut(pid: i64, port: u16, on: bool) {
    let status = std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "iptables"])
        .arg(if on { "-I" } else { "-D" })
        .args(["OUTPUT", "-p", "tcp", "--dport", &port.to_string()])
        .args(["-j", "REJECT", "--reject-with", "tcp-reset"])
        .status()
        .expect("run nsenter");
    assert!(status.success(), "iptables in the agent's namespace failed");
}

/// How often the agent's own log says `what` so far.
async fn said(hub: &Hub, name: &str, what: &str) -> usize {
    hub.cli(&["logs", name]).await.stderr.matches(what).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn stdin_streamed_across_two_link_cuts_arrives_whole_and_once() {
    // Over the TCP port, where a cut can be made from the container's side.
    let hub = Hub::builder().arg("--agent-socket=false").start().await;
    let name = hub.name("stdin");
    hub.create(&name).await;
    let pid = hub
        .container(&name)
        .await
        .state
        .and_then(|s| s.pid)
        .unwrap();
    let mut data = vec![0u8; TOTAL];
    rand::fill(&mut data[..]);
    let expected = format!("{}  -\n", hex::encode(Sha256::digest(&data)));

    // The task reads nothing until /tmp/go exists.
    let script = "until [ -e /tmp/go ]; do sleep 0.05; done; exec sha256sum";
    let mut child = hub.spawn_cli_with(&["exec", &name, "--", "sh", "-c", script], Stdio::piped());
    let mut stdin = child.stdin.take().unwrap();
    let fed = Arc::new(AtomicU64::new(0));
    let last_write = Arc::new(Mutex::new(Instant::now()));
    let writer = {
        let (fed, last_write) = (fed.clone(), last_write.clone());
        std::thread::spawn(move || {
            for piece in data.chunks(PIECE) {
                stdin.write_all(piece).unwrap();
                fed.fetch_add(piece.len() as u64, Ordering::Relaxed);
                *last_write.lock().unwrap() = Instant::now();
            }
            // Dropping stdin closes it: sha256sum sees EOF once everything is through.
        })
    };

    // Back-pressure: with the task not reading, the CLI stops taking stdin once the hub's window
    // (2 MiB), the pipes and the streams' buffers are full, far short of everything.
    wait_for(
        "the CLI to stop taking stdin",
        Duration::from_secs(60),
        || {
            let quiet = last_write.lock().unwrap().elapsed() >= Duration::from_secs(1);
            async move { quiet.then_some(()) }
        },
    )
    .await;
    let held = fed.load(Ordering::Relaxed);
    assert!(
        held <= 16 << 20,
        "the CLI took {held} bytes the task never read"
    );
    hub.sh(&name, "touch /tmp/go").await;

    for at in [24usize << 20, 40 << 20] {
        wait_for(
            "the CLI to take more stdin",
            Duration::from_secs(120),
            || {
                let fed = fed.load(Ordering::Relaxed);
                async move { (fed >= at as u64).then_some(()) }
            },
        )
        .await;
        let (ended, established) = (
            said(&hub, &name, "link to the hub ended").await,
            said(&hub, &name, "link established").await,
        );
        cut(pid, hub.agent_port, true);
        // The agent notices on its next send (a stdin acknowledgement or a heartbeat), then fails to
        // dial until the cut is healed.
        wait_for(
            "the agent's link to break",
            Duration::from_secs(60),
            || async { (said(&hub, &name, "link to the hub ended").await > ended).then_some(()) },
        )
        .await;
        cut(pid, hub.agent_port, false);
        wait_for(
            "the agent's link to come back",
            Duration::from_secs(60),
            || async { (said(&hub, &name, "link established").await > established).then_some(()) },
        )
        .await;
    }
    writer.join().unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}
