//! The Swarm driver on the three-node test cluster (`cli/tests/swarm/cluster.sh`): create → ready
//! against `docker service create` of the same image until its task runs; exec on an agent on a
//! node other than the manager's against one on the manager's node; and a node cut under an agent,
//! until the agent is ready elsewhere, with Swarm's own share of that time.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::fixture::{AgentListen, Hub, docker, run, timed};
use crate::report::{Row, Samples, Unit};

struct Cluster {
    name: String,
    vars: HashMap<String, String>,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/swarm/cluster.sh")
}

impl Cluster {
    fn up() -> Self {
        let name = format!("b{:05x}", rand::random::<u32>() & 0xf_ffff);
        let out = run(Command::new("bash").arg(script()).args(["up", &name]));
        let vars = out
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self { name, vars }
    }

    fn var(&self, key: &str) -> &str {
        &self.vars[key]
    }

    fn manager(&self) -> Command {
        let mut cmd = docker();
        cmd.args(["-H", self.var("MANAGER")]);
        cmd
    }

    fn link(&self, how: &str, node: u8) {
        run(Command::new("bash")
            .arg(script())
            .args([how, &self.name, &node.to_string()]));
    }

    fn node_name(&self, n: u8) -> String {
        format!("da{}-n{n}", self.name)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["down", &self.name])
            .status();
    }
}

/// Polls `check` every 20 ms until it holds (a benchmark may poll; it asserts nothing on time).
fn until(what: &str, within: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < within, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

fn status(hub: &Hub, name: &str) -> serde_json::Value {
    let out = run(hub.cli().args(["status", name, "--json"]));
    serde_json::from_str(&out).expect("status JSON")
}

/// The node (hostname) running the service's task.
fn node_of(cluster: &Cluster, service: &str) -> String {
    run(cluster.manager().args([
        "service",
        "ps",
        service,
        "--filter",
        "desired-state=running",
        "--format",
        "{{.Node}}",
    ]))
    .lines()
    .next()
    .unwrap_or_default()
    .to_string()
}

pub fn measure(prefix: &str, create_runs: usize, exec_runs: usize) -> Vec<Row> {
    let cluster = Cluster::up();
    // The base image onto the manager, so the hub builds only the agent layer there.
    let bases = run(docker().args([
        "images",
        "--format",
        "{{.Repository}}:{{.Tag}}",
        "docker-agent/base",
    ]));
    for base in bases.lines() {
        run(Command::new("bash").args([
            "-o",
            "pipefail",
            "-c",
            &format!(
                "docker save {base} | docker -H {} load -q",
                cluster.var("MANAGER")
            ),
        ]));
    }
    let listen = format!(
        "{}:{}",
        cluster.var("HOST_ADDR"),
        free_port(cluster.var("HOST_ADDR"))
    );
    let hub = Hub::start(AgentListen::Remote(vec![
        "--driver".into(),
        "swarm".into(),
        "--engine".into(),
        cluster.var("MANAGER").into(),
        "--registry".into(),
        cluster.var("REGISTRY").into(),
        "--agent-listen".into(),
        listen.clone(),
        "--agent-url".into(),
        format!("https://{listen}"),
    ]));
    // Profiles that pin an agent to the manager's node, or keep it off it.
    let profiles = hub.home.path().join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    let on = format!("{prefix}-on1");
    let off = format!("{prefix}-off1");
    std::fs::write(
        profiles.join(format!("{on}.toml")),
        format!(
            "name = \"{on}\"\nplacement = [\"node.hostname=={}\"]\n",
            cluster.node_name(1)
        ),
    )
    .unwrap();
    std::fs::write(
        profiles.join(format!("{off}.toml")),
        format!("name = \"{off}\"\nplacement = [\"node.role!=manager\"]\n"),
    )
    .unwrap();

    // Warm-up: builds the image on the manager and pushes it; the reference uses the same bytes.
    let warm = format!("{prefix}-warm");
    run(hub.cli().args(["create", &warm]));
    let image = run(cluster.manager().args([
        "service",
        "inspect",
        &format!("docker-agent-{warm}"),
        "--format",
        "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
    ]))
    .trim()
    .to_string();
    run(hub.cli().args(["destroy", &warm, "--purge"]));
    // Every node has the image before either side is timed: a pull is the registry's time, not ours.
    for n in 1..=3 {
        run(docker().args(["-H", cluster.var(&format!("NODE{n}")), "pull", "-q", &image]));
    }

    let (mut ours, mut theirs) = (Samples::default(), Samples::default());
    for i in 0..create_runs {
        let name = format!("{prefix}-sc{i}");
        ours.push(timed(hub.cli().args(["create", &name])));
        run(hub.cli().args(["destroy", &name, "--purge"]));
        let service = format!("{prefix}-ref{i}");
        let start = Instant::now();
        run(cluster.manager().args([
            "service",
            "create",
            "-d",
            "-q",
            "--name",
            &service,
            "--endpoint-mode",
            "dnsrr",
            "--mount",
            &format!("type=volume,source={service}-vol,target=/workspace"),
            "--entrypoint",
            "/bin/sleep",
            &image,
            "infinity",
        ]));
        until(
            "the reference service's task",
            Duration::from_secs(120),
            || {
                run(cluster.manager().args([
                    "service",
                    "ps",
                    &service,
                    "--format",
                    "{{.CurrentState}}",
                ]))
                .starts_with("Running")
            },
        );
        theirs.push(start.elapsed());
        run(cluster.manager().args(["service", "rm", &service]));
    }

    // Exec: an agent on the manager's node against one on another node, alternating.
    let near = format!("{prefix}-near");
    let far = format!("{prefix}-far");
    run(hub.cli().args(["create", &near, "--profile", &on]));
    run(hub.cli().args(["create", &far, "--profile", &off]));
    let (mut near_exec, mut far_exec) = (Samples::default(), Samples::default());
    for _ in 0..exec_runs {
        far_exec.push(timed(hub.cli().args(["exec", &far, "--", "true"])));
        near_exec.push(timed(hub.cli().args(["exec", &near, "--", "true"])));
    }

    // Node loss: cut the far agent's node; until it is ready elsewhere, and Swarm's share of it (the
    // replacement task running, from the manager's view).
    let service = format!("docker-agent-{far}");
    let node = node_of(&cluster, &service);
    let number: u8 = node.rsplit('n').next().unwrap().parse().unwrap();
    let since = status(&hub, &far)["connection_since"].clone();
    let cut = Instant::now();
    cluster.link("cut", number);
    let mut swarm_share = None;
    let total = until(
        "the agent ready on another node",
        Duration::from_secs(120),
        || {
            if swarm_share.is_none() {
                let now = node_of(&cluster, &service);
                let running = run(cluster.manager().args([
                    "service",
                    "ps",
                    &service,
                    "--filter",
                    "desired-state=running",
                    "--format",
                    "{{.CurrentState}}",
                ]));
                if !now.is_empty() && now != node && running.starts_with("Running") {
                    swarm_share = Some(cut.elapsed());
                }
            }
            let s = status(&hub, &far);
            s["lifecycle"] == "ready"
                && s["connection"] == "connected"
                && s["connection_since"] != since
        },
    );
    let swarm_share = swarm_share.unwrap_or(total);
    cluster.link("heal", number);
    for name in [&near, &far] {
        run(hub.cli().args(["destroy", name, "--purge"]));
    }
    drop(hub);

    let mut loss = Samples::default();
    loss.push(total);
    vec![
        Row::compared(
            format!(
                "Swarm: create → ready vs `docker service create` of the same image until its task runs (3 nodes; {create_runs} each)"
            ),
            Unit::Millis,
            &ours,
            &theirs,
            "≤ 1.3",
        ),
        Row::compared(
            format!(
                "Swarm: exec `true` on an agent on another node vs on the manager's node ({exec_runs} each, CLI process)"
            ),
            Unit::Millis,
            &far_exec,
            &near_exec,
            "same within noise",
        ),
        Row::single(
            format!(
                "Swarm: node cut → its agent ready on another node (of which Swarm's own, to the replacement task running: {:.1} s)",
                swarm_share.as_secs_f64()
            ),
            Unit::Seconds,
            total.as_secs_f64(),
            "≤ 25 s",
        ),
    ]
}

fn free_port(addr: &str) -> u16 {
    std::net::TcpListener::bind((addr, 0))
        .expect("bind on the cluster's switch address")
        .local_addr()
        .unwrap()
        .port()
}
