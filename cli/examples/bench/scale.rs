//! Hub scale: N simulated agents (the agent's real connection code in load mode, a hundred to a child
//! process, no containers) heartbeating every 5 s while exec calls run; the hub's RSS, CPU and exec latency.
//!
//! The hub knows an agent only once it has a record and a token, which `create` makes along with a
//! container. Here the records are written into the new hub's store before it starts, all pointing at
//! one sleeping placeholder container, so the hub's reconciliation finds them running. From then on
//! everything is the product's own path: TLS, authentication, Hello, heartbeats, dispatch, output.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use docker_agent_hub::credentials;
use docker_agent_hub::datadir::DataDir;
use docker_agent_hub::lifecycle::Lifecycle;
use docker_agent_hub::store::{NewAgent, Store};

use crate::exec::grpc_exec_task;
use crate::fixture::{AgentListen, Hub, cpu_time, docker, rss, rt, run};
use crate::report::{Row, Samples, Unit};
use crate::simulate::LoadFile;

/// The sleeping container every simulated agent's record names; removed on drop.
struct Placeholder(String);

impl Placeholder {
    fn start(image: &str) -> Self {
        let name = format!(
            "da-bench-sim-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        );
        run(docker()
            .args(["run", "-d", "--name", &name, "--network", "none"])
            .args(["--entrypoint", "/bin/sleep", image, "infinity"]));
        Self(name)
    }
}

impl Drop for Placeholder {
    fn drop(&mut self) {
        let _ = docker().args(["rm", "-f", &self.0]).output();
    }
}

/// The load processes, killed on drop.
struct Load(Vec<Child>);

impl Drop for Load {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Load {
    fn rss(&self) -> u64 {
        self.0.iter().map(|c| rss(c.id())).sum()
    }
}

/// Simulated agents per load process. A task is a fork of the process that holds its agent, and a
/// fork costs in proportion to that process's memory: a real agent is one small process, so one
/// process for all ten thousand (700 MiB) made `true` take 36 ms on its own.
const AGENTS_PER_PROCESS: usize = 100;
/// New sessions per second across all load processes while ramping up.
const CONNECTS_PER_SEC: usize = 1000;

/// Starts the load processes, each with its share of the agents.
fn start_load(hub: &Hub, agents: Vec<(String, String)>) -> Load {
    let work = hub.home.path().join("work");
    std::fs::create_dir_all(&work).expect("workdir");
    let ca = DataDir::open_for_client(hub.home.path())
        .read_ca_pem()
        .expect("ca");
    let log_path = std::env::temp_dir().join(format!("da-bench-load-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).expect("load log");
    eprintln!("the load processes log to {}", log_path.display());
    let chunks: Vec<_> = agents.chunks(AGENTS_PER_PROCESS).collect();
    let rate = (CONNECTS_PER_SEC / chunks.len()).max(1) as u32;
    let mut children = Vec::new();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let file = hub.home.path().join(format!("load-{i}.json"));
        let load = LoadFile {
            hub_url: hub.endpoint.agent_url.clone(),
            ca_pem: ca.clone(),
            workdir: work.clone(),
            connects_per_sec: rate,
            agents: chunk.to_vec(),
        };
        std::fs::write(&file, serde_json::to_vec(&load).expect("json")).expect("write load file");
        let child = Command::new(std::env::current_exe().expect("exe"))
            .arg("simulate")
            .arg(&file)
            .env("DOCKER_AGENT_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.try_clone().expect("log"))
            .spawn()
            .expect("start a load process");
        children.push(child);
    }
    Load(children)
}

/// Writes `n` agent records (ready, in the placeholder) and returns their ids and tokens.
fn seed(home: &std::path::Path, n: usize, image: &str, container: &str) -> Vec<(String, String)> {
    let store = Store::open(&DataDir::open_for_client(home).db_path()).expect("open the store");
    (0..n)
        .map(|i| {
            let id = format!("{:032x}", rand::random::<u128>());
            let token = credentials::new_token();
            store
                .insert_agent(&NewAgent {
                    id: id.clone(),
                    name: format!("sim-{i}"),
                    profile: "minimal".into(),
                    image: image.into(),
                    container_name: container.into(),
                    volume: String::new(),
                    token_hash: credentials::hash_token(&token),
                    cpus: 1.0,
                    memory_bytes: 1 << 30,
                    pids: 1024,
                    env: BTreeMap::new(),
                    max_task_output: 0,
                    max_agent_output: 0,
                })
                .expect("insert a simulated agent");
            store
                .set_container_id(&id, container)
                .expect("container id");
            store
                .set_lifecycle(&id, Lifecycle::Ready, "")
                .expect("lifecycle");
            (id, token)
        })
        .collect()
}

pub struct Stage {
    pub agents: usize,
    pub window: Duration,
    pub exec_interval: Duration,
}

pub fn measure(image: &str, stage: &Stage) -> Vec<Row> {
    let n = stage.agents;
    let placeholder = Placeholder::start(image);
    let home = tempfile::tempdir().expect("tempdir");
    let seeded = Instant::now();
    let agents = seed(home.path(), n, image, &placeholder.0);
    eprintln!("scale {n}: {n} records written in {:?}", seeded.elapsed());
    let hub = Hub::start_in(home, AgentListen::Loopback);

    let load = start_load(&hub, agents);
    let ramp = hub.wait_connected(n, Duration::from_secs(60 + n as u64 / 50));
    eprintln!("scale {n}: all connected in {ramp:?}");
    // Past the ramp (and the start's reconciliation), into the steady state.
    std::thread::sleep(Duration::from_secs(10));
    let sessions_before = hub.metric("docker_agent_agent_sessions_total");

    let pid = hub.pid();
    let cpu_before = cpu_time(pid);
    let started = Instant::now();
    let (latency, peak) = rt().block_on(async {
        let mut client = hub.client().await;
        let mut latency = Samples::default();
        let mut phases = [Samples::default(), Samples::default(), Samples::default()];
        let mut peak = rss(pid);
        let mut next = tokio::time::Instant::now();
        while started.elapsed() < stage.window {
            let name = format!("sim-{}", rand::random_range(0..n));
            let (code, took, task) = grpc_exec_task(&mut client, &name, &["true"]).await;
            assert_eq!(code, 0, "exec on {name}");
            latency.push(took);
            let ms = |a: i64, b: i64| (b - a) as f64;
            phases[0].push_value(ms(task.created_at_ms, task.dispatched_at_ms));
            phases[1].push_value(ms(task.dispatched_at_ms, task.started_at_ms));
            phases[2].push_value(ms(task.started_at_ms, task.finished_at_ms));
            peak = peak.max(rss(pid));
            next += stage.exec_interval;
            tokio::time::sleep_until(next).await;
        }
        eprintln!(
            "scale {n}: exec phases, median/p99 ms: stored→dispatched {}/{}, dispatched→started {}/{}, started→finished {}/{}",
            phases[0].median(), phases[0].p99(), phases[1].median(), phases[1].p99(), phases[2].median(), phases[2].p99()
        );
        (latency, peak)
    });
    let elapsed = started.elapsed();
    let cores = (cpu_time(pid) - cpu_before).as_secs_f64() / elapsed.as_secs_f64();
    let load_rss = load.rss();
    let connected = hub.metric("docker_agent_connected_agents") as usize;
    let reconnects = hub.metric("docker_agent_agent_sessions_total") - sessions_before;
    assert_eq!(connected, n, "agents dropped during the window");
    eprintln!(
        "scale {n}: {} execs, {reconnects} new sessions during the window, {} load processes, RSS {} MiB in all",
        latency.len(),
        load.0.len(),
        load_rss >> 20
    );
    let (rss_goal, cpu_goal, p99_goal) = if n >= 10_000 {
        ("≤ 300 MB", "≤ 0.25", "p99 ≤ 20 ms")
    } else {
        ("", "", "")
    };
    let secs = stage.window.as_secs();
    let per_sec = 1.0 / stage.exec_interval.as_secs_f64();
    drop(load);
    vec![
        Row::single(
            format!("hub RSS (peak), {n} simulated agents"),
            Unit::Mib,
            peak as f64,
            rss_goal,
        ),
        Row::single(
            format!("hub CPU, {n} agents heartbeating every 5 s, {per_sec:.0} execs/s, {secs} s"),
            Unit::Cores,
            cores,
            cpu_goal,
        ),
        Row::alone(
            format!(
                "exec `true` via the hub's Exec RPC, {n} agents ({} runs)",
                latency.len()
            ),
            Unit::Millis,
            &latency,
            p99_goal,
        ),
    ]
}
