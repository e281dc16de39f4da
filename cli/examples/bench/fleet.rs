//! Real fleet: N real agents (minimal profile) on this machine, what each costs in memory, how many
//! would fit, and exec latency across all of them.

use std::process::Command;
use std::time::Duration;

use crate::exec::grpc_exec;
use crate::fixture::{Hub, all_at_once, docker, mem_available, rss, rt, run};
use crate::report::{Row, Samples, Unit};

/// How many `create`s run at once while the fleet is built.
const PARALLEL: usize = 8;

fn in_batches(hub: &Hub, names: &[String], args: &[&str]) -> Duration {
    let mut total = Duration::ZERO;
    for batch in names.chunks(PARALLEL) {
        let cmds: Vec<Command> = batch
            .iter()
            .map(|n| {
                let mut c = hub.cli();
                c.arg(args[0]).arg(n).args(&args[1..]);
                c
            })
            .collect();
        total += all_at_once(cmds);
    }
    total
}

pub fn measure(hub: &Hub, prefix: &str, n: usize) -> Vec<Row> {
    let already = hub.metric("docker_agent_connected_agents") as usize;
    let before = mem_available();
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-f{i}")).collect();
    let built = in_batches(hub, &names, &["create", "--profile", "minimal"]);
    hub.wait_connected(already + n, Duration::from_secs(120));
    eprintln!("fleet: {n} agents created in {built:?}");
    // Idle agents give memory back at their next heartbeats (every 5 s).
    std::thread::sleep(Duration::from_secs(15));
    let after = mem_available();
    let per_agent = before.saturating_sub(after) as f64 / n as f64;

    let containers: Vec<String> = names.iter().map(|n| format!("docker-agent-{n}")).collect();
    let pids = run(docker()
        .args(["inspect", "-f", "{{.State.Pid}}"])
        .args(&containers));
    let mut agent_rss = Samples::default();
    for pid in pids.split_whitespace() {
        agent_rss.push_value(rss(pid.parse().expect("pid")) as f64);
    }
    let mut latency = Samples::default();
    rt().block_on(async {
        let mut client = hub.client().await;
        for name in &names {
            let (code, took) = grpc_exec(&mut client, name, &["true"]).await;
            assert_eq!(code, 0, "exec on {name}");
            latency.push(took);
        }
    });
    let fit = (before as f64 / per_agent).floor();
    in_batches(hub, &names, &["destroy", "--purge"]);
    vec![
        Row::single(
            "real agents running at once (minimal profile), all connected and answering exec",
            Unit::Count,
            n as f64,
            "≥ 200",
        ),
        Row::single(
            format!(
                "memory per real agent: the host's MemAvailable drop over {n} agents (container, shim, agent)"
            ),
            Unit::Mib,
            per_agent,
            "",
        ),
        Row::single(
            "real agents that would fit in this machine's available memory, at that rate",
            Unit::Count,
            fit,
            "≥ 200",
        ),
        Row::alone(
            format!("agent process RSS across the {n}"),
            Unit::Mib,
            &agent_rss,
            "",
        ),
        Row::alone(
            format!("exec `true` via the Exec RPC on each of the {n}, one after another"),
            Unit::Millis,
            &latency,
            "",
        ),
    ]
}
