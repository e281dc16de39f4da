//! Benchmarks (`./dev bench`): measures docker-agent against plain Docker on this machine, in one run,
//! and prints the README table. Figures are medians of repeated runs; nothing here is asserted.
//! (Sleeping is fine here: this is a benchmark, not a test.)

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EXEC_RUNS: usize = 40;
const CREATE_RUNS: usize = 5;
const THROUGHPUT_BYTES: u64 = 256 << 20;
const THROUGHPUT_RUNS: usize = 3;

fn cli_path() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/release/examples/bench → target/release/docker-agent
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("docker-agent")
}

fn agent_path() -> PathBuf {
    std::env::var_os("DOCKER_AGENT_AGENT_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from("target/x86_64-unknown-linux-gnu/agent/docker-agent-agent")
        })
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn timed(cmd: &mut Command) -> Duration {
    let start = Instant::now();
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("spawn");
    let elapsed = start.elapsed();
    assert!(status.success(), "{cmd:?} failed");
    elapsed
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

struct Bench {
    home: tempfile::TempDir,
    network: String,
    hub: std::process::Child,
}

impl Bench {
    fn start() -> Self {
        let home = tempfile::tempdir().expect("tempdir");
        let network = format!("da-bench-{}", std::process::id());
        let mut hub = Command::new(cli_path())
            .arg("--home")
            .arg(home.path())
            .args([
                "hub",
                "--operator-listen",
                "127.0.0.1:0",
                "--agent-listen",
                "gateway:0",
            ])
            .args(["--network", &network])
            .env("DOCKER_AGENT_LOG", "warn")
            .env("DOCKER_AGENT_AGENT_BINARY", agent_path())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hub");
        let stderr = hub.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        for line in lines.by_ref() {
            if line.expect("hub log").contains(" ready: operator ") {
                break;
            }
        }
        // Keep draining the hub's log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { home, network, hub }
    }

    fn cli(&self) -> Command {
        let mut cmd = Command::new(cli_path());
        cmd.arg("--home").arg(self.home.path());
        cmd
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = self.hub.kill();
        let _ = self.hub.wait();
        let _ = Command::new("docker")
            .args(["network", "rm", &self.network])
            .output();
    }
}

/// The agent's own RSS from its latest heartbeat, once one has arrived.
fn agent_rss(bench: &Bench, name: &str) -> u64 {
    for _ in 0..100 {
        let status = run(bench.cli().args(["status", name, "--json"]));
        let status: serde_json::Value = serde_json::from_str(&status).expect("status json");
        if let Some(rss) = status["health"]["agent_rss_bytes"]
            .as_u64()
            .filter(|r| *r > 0)
        {
            return rss;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    0
}

fn main() {
    let bench = Bench::start();
    let name = format!("bench-{}", std::process::id());
    let container = format!("docker-agent-{name}");
    run(bench.cli().args(["create", &name]));
    let image =
        run(Command::new("docker").args(["inspect", "-f", "{{.Config.Image}}", &container]))
            .trim()
            .to_string();

    // Idle RSS as the agent reports it, before any load.
    let rss_idle = agent_rss(&bench, &name);

    // Warm both paths once so neither pays first-use costs in the samples.
    timed(bench.cli().args(["exec", &name, "--", "true"]));
    timed(Command::new("docker").args(["exec", &container, "true"]));
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..EXEC_RUNS {
        ours.push(timed(bench.cli().args(["exec", &name, "--", "true"])));
        theirs.push(timed(
            Command::new("docker").args(["exec", &container, "true"]),
        ));
    }
    let (ours, theirs) = (median(ours), median(theirs));

    let head = format!("head -c {THROUGHPUT_BYTES} /dev/zero");
    let mut ours_tp = Vec::new();
    let mut theirs_tp = Vec::new();
    for _ in 0..THROUGHPUT_RUNS {
        ours_tp.push(timed(
            bench.cli().args(["exec", &name, "--", "sh", "-c", &head]),
        ));
        theirs_tp.push(timed(
            Command::new("docker").args(["exec", &container, "sh", "-c", &head]),
        ));
    }
    let (ours_tp, theirs_tp) = (median(ours_tp), median(theirs_tp));
    let mbps = |d: Duration| THROUGHPUT_BYTES as f64 / (1 << 20) as f64 / d.as_secs_f64();

    // The agent gives memory back at its next heartbeats once its spool is empty.
    std::thread::sleep(Duration::from_secs(11));
    let rss_after = agent_rss(&bench, &name);
    let binary = std::fs::metadata(agent_path())
        .map(|m| m.len())
        .unwrap_or(0);
    run(bench.cli().args(["destroy", &name, "--purge"]));

    let mut creates = Vec::new();
    let mut runs = Vec::new();
    for i in 0..CREATE_RUNS {
        let n = format!("{name}-c{i}");
        creates.push(timed(bench.cli().args(["create", &n])));
        run(bench.cli().args(["destroy", &n, "--purge"]));
        // The same container docker-agent makes: its network and a new named volume at /workspace.
        let c = format!("{name}-r{i}");
        let volume = format!("{c}-vol:/workspace");
        runs.push(timed(Command::new("docker").args([
            "run",
            "-d",
            "--name",
            &c,
            "--network",
            &bench.network,
            "-v",
            &volume,
            "--entrypoint",
            "/bin/sleep",
            &image,
            "infinity",
        ])));
        run(Command::new("docker").args(["rm", "-f", &c]));
        run(Command::new("docker").args(["volume", "rm", &format!("{c}-vol")]));
    }
    let (create, docker_run) = (median(creates), median(runs));
    let mib = |b: u64| b as f64 / (1 << 20) as f64;

    println!("| Measure | docker-agent | Reference | Ratio | Goal |");
    println!("|---|---|---|---|---|");
    println!(
        "| `exec N true` vs `docker exec N true` (median of {EXEC_RUNS}) | {} | {} | {:.2} | ≤ 0.25 |",
        ms(ours),
        ms(theirs),
        ours.as_secs_f64() / theirs.as_secs_f64()
    );
    println!(
        "| create → ready vs `docker run -d` on the same network with a new volume (median of {CREATE_RUNS}) | {} | {} | {:.2} | ≤ 1.2 |",
        ms(create),
        ms(docker_run),
        create.as_secs_f64() / docker_run.as_secs_f64()
    );
    println!(
        "| exec output throughput, {} MiB to /dev/null (median of {THROUGHPUT_RUNS}) | {:.0} MiB/s | {:.0} MiB/s | {:.2} | ≥ 1.0 |",
        THROUGHPUT_BYTES >> 20,
        mbps(ours_tp),
        mbps(theirs_tp),
        mbps(ours_tp) / mbps(theirs_tp)
    );
    println!(
        "| Agent RSS, idle after create | {:.1} MiB | | | ≤ 4 MB |",
        mib(rss_idle)
    );
    println!(
        "| Agent RSS, idle after the throughput runs | {:.1} MiB | | | |",
        mib(rss_after)
    );
    println!(
        "| Agent static binary | {:.1} MiB | | | ≤ 5 MB |",
        mib(binary)
    );
}
