//! Create → ready against `docker run -d` of the same image (same network, a new volume), one at a time
//! and fifty at once.

use std::process::Command;

use crate::fixture::{Hub, all_at_once, docker, run, timed};
use crate::report::{Row, Samples, Unit};

/// The container docker-agent would make, made by `docker run -d`: its network and a new named
/// volume at /workspace, the image's shell kept alive.
fn docker_run(hub: &Hub, image: &str, name: &str) -> Command {
    let mut cmd = docker();
    let label = format!("dev.docker-agent.hub={}", hub.endpoint.hub_id);
    // Labelled like the hub's own, so the fixture removes them even after a failed run.
    let volume = format!("type=volume,source={name}-vol,target=/workspace,volume-label={label}");
    cmd.args(["run", "-d", "--name", name, "--network", &hub.network])
        .args(["--mount", &volume, "--label", &label])
        .args(["--entrypoint", "/bin/sleep", image, "infinity"]);
    cmd
}

fn remove_docker_run(name: &str) {
    run(docker().args(["rm", "-f", name]));
    run(docker().args(["volume", "rm", &format!("{name}-vol")]));
}

pub fn measure(hub: &Hub, prefix: &str, image: &str, runs: usize, burst: usize) -> Vec<Row> {
    let (mut ours, mut theirs) = (Samples::default(), Samples::default());
    for i in 0..runs {
        let n = format!("{prefix}-c{i}");
        ours.push(timed(hub.cli().args(["create", &n])));
        run(hub.cli().args(["destroy", &n, "--purge"]));
        let c = format!("{prefix}-r{i}");
        theirs.push(timed(&mut docker_run(hub, image, &c)));
        remove_docker_run(&c);
    }

    let names: Vec<String> = (0..burst).map(|i| format!("{prefix}-b{i}")).collect();
    let ours_burst = all_at_once(
        names
            .iter()
            .map(|n| {
                let mut c = hub.cli();
                c.args(["create", n]);
                c
            })
            .collect(),
    );
    let connected = hub.metric("docker_agent_connected_agents") as usize;
    assert!(
        connected >= burst,
        "{connected} of {burst} agents connected"
    );
    let destroy = names.iter().map(|n| {
        let mut c = hub.cli();
        c.args(["destroy", n, "--purge"]);
        c
    });
    all_at_once(destroy.collect());
    let theirs_burst = all_at_once(names.iter().map(|n| docker_run(hub, image, n)).collect());
    for n in &names {
        remove_docker_run(n);
    }
    let (mut ob, mut tb) = (Samples::default(), Samples::default());
    ob.push(ours_burst);
    tb.push(theirs_burst);
    vec![
        Row::compared(
            format!(
                "create → ready vs `docker run -d` (same image and network, a new volume; {runs} each)"
            ),
            Unit::Millis,
            &ours,
            &theirs,
            "≤ 1.2",
        ),
        Row::compared(
            format!(
                "{burst} creates at once, until all are ready, vs {burst} `docker run -d` at once"
            ),
            Unit::Millis,
            &ob,
            &tb,
            "",
        ),
    ]
}
