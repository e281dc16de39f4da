//! Under attack: a victim agent's exec latency while another agent floods the hub from inside its
//! container (connections over its socket and the port that finish TLS and never say hello, and
//! handshakes that never finish), against the same with no attack, in one run; and the hub's RSS at
//! the end of the flood against before it. The attacker is the tests' probe (`probe/`). A control
//! phase has the attacker burn its whole CPU share without touching the hub: on a small machine that
//! alone moves the victim's p99, and the hub is not what the flood row then measures.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::exec::grpc_exec;
use crate::fixture::{Hub, rss, rt, run};
use crate::report::{Row, Samples, Unit};

pub fn probe_path() -> PathBuf {
    std::env::var_os("DOCKER_AGENT_PROBE_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from("target/x86_64-unknown-linux-gnu/agent/docker-agent-probe")
        })
}

/// Exec `true` on `agent` through the hub's RPC, `runs` times.
fn execs(hub: &Hub, agent: &str, runs: usize) -> Samples {
    rt().block_on(async {
        let mut client = hub.client().await;
        let mut samples = Samples::default();
        for _ in 0..runs {
            let (code, took) = grpc_exec(&mut client, agent, &["true"]).await;
            assert_eq!(code, 0);
            samples.push(took);
        }
        samples
    })
}

pub fn measure(hub: &Hub, prefix: &str, runs: usize) -> Vec<Row> {
    let (victim, attacker) = (format!("{prefix}-victim"), format!("{prefix}-attacker"));
    for name in [&victim, &attacker] {
        run(hub.cli().args(["create", name]));
    }
    let probe = "/workspace/docker-agent-probe";
    run(hub.cli().args([
        "cp",
        probe_path().to_str().expect("a UTF-8 path"),
        &format!("{attacker}:{probe}"),
    ]));
    execs(hub, &victim, 5);
    let quiet = execs(hub, &victim, runs);
    let before = rss(hub.pid());
    // Long enough to outlast the loud runs (checked below).
    let flood_secs = 12 + runs as u64 / 100;
    let seconds = flood_secs.to_string();

    // The control: four busy loops, as many as the flood runs, within the attacker's CPU limit.
    let burn =
        format!("for i in 1 2 3 4; do timeout {seconds} sh -c 'while :; do :; done' & done; wait");
    let spec = serde_json::json!({"type": "script", "script": burn}).to_string();
    let burner = run(hub.cli().args(["task", &attacker, &spec, "--detach"]));
    // A benchmark, not a test: a pause to let the load ramp up is fine here.
    std::thread::sleep(Duration::from_secs(2));
    let busy = execs(hub, &victim, runs);
    run(hub.cli().args(["task", "cancel", burner.trim()]));

    let port = format!("host.docker.internal:{}", hub.agent_port());
    let socket = "/run/docker-agent/hub/agent.sock";
    for target in [["--socket", socket], ["--tcp", port.as_str()]] {
        for hold in ["tls", "partial-tls"] {
            let argv = [
                probe,
                "flood",
                target[0],
                target[1],
                "--hold",
                hold,
                "--seconds",
                &seconds,
            ];
            let spec = serde_json::json!({"type": "exec", "command": argv}).to_string();
            run(hub.cli().args(["task", &attacker, &spec, "--detach"]));
        }
    }
    let flood = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let loud = execs(hub, &victim, runs);
    let end = rss(hub.pid());
    let lasted = flood.elapsed();
    assert!(
        lasted < Duration::from_secs(flood_secs),
        "the loud runs outlasted the flood ({lasted:?})"
    );
    for name in [&victim, &attacker] {
        run(hub.cli().args(["destroy", name, "--purge"]));
    }
    let (mut rss_before, mut rss_end) = (Samples::default(), Samples::default());
    rss_before.push_value(before as f64);
    rss_end.push_value(end as f64);
    vec![
        Row::compared(
            format!(
                "victim's exec `true` (RPC) while another agent floods the hub vs no attack ({runs} each)"
            ),
            Unit::Millis,
            &loud,
            &quiet,
            "",
        ),
        Row::single(
            "victim's exec p99 under attack ÷ without",
            Unit::Times,
            loud.p99() / quiet.p99(),
            "≤ 2",
        ),
        Row::compared(
            format!(
                "control: victim's exec while the attacker only burns its CPU share vs no attack ({runs} each)"
            ),
            Unit::Millis,
            &busy,
            &quiet,
            "",
        ),
        Row::compared(
            "hub RSS at the end of the flood vs before it",
            Unit::Mib,
            &rss_end,
            &rss_before,
            "≤ 1.2",
        ),
    ]
}
