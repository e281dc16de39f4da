//! Benchmarks (`./dev bench`): measures docker-agent against plain Docker on this machine, in one run,
//! and prints the README table. Figures are medians of repeated runs; nothing here is asserted.
//! (Sleeping is fine here: this is a benchmark, not a test.)

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EXEC_RUNS: usize = 40;
const CREATE_RUNS: usize = 5;
const THROUGHPUT_BYTES: u64 = 256 << 20;
const THROUGHPUT_RUNS: usize = 3;
const CP_BYTES: u64 = 256 << 20;
const CP_RUNS: usize = 3;
const KEYSTROKES: usize = 200;

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

/// A pseudo-terminal pair, 24×80.
fn openpty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    let ws = libc::winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty fills two descriptors we then own.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    assert_eq!(rc, 0, "openpty");
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// Keystroke echo: `cmd` (a `cat` on a remote terminal) runs on a local terminal; each sample is the
/// time from typing one key to seeing its echo come back. Returns (median, p99).
fn echo_latency(cmd: &mut Command) -> (Duration, Duration) {
    let (master, slave) = openpty();
    let mut child = cmd
        .stdin(Stdio::from(slave.try_clone().expect("dup")))
        .stdout(Stdio::from(slave.try_clone().expect("dup")))
        .stderr(Stdio::from(slave.try_clone().expect("dup")))
        .spawn()
        .expect("spawn");
    let mut out = std::fs::File::from(master.try_clone().expect("dup"));
    let mut input = std::fs::File::from(master);
    let mut buf = [0u8; 256];
    // Until the remote terminal echoes, the command is not up yet.
    loop {
        input.write_all(b"w").expect("type");
        std::thread::sleep(Duration::from_millis(200));
        let n = out.read(&mut buf).expect("read");
        if buf[..n].contains(&b'w') {
            break;
        }
    }
    let mut samples = Vec::new();
    for _ in 0..KEYSTROKES {
        let start = Instant::now();
        input.write_all(b"k").expect("type");
        loop {
            let n = out.read(&mut buf).expect("read");
            if buf[..n].contains(&b'k') {
                break;
            }
        }
        samples.push(start.elapsed());
    }
    input.write_all(&[3]).expect("ctrl-c");
    let _ = child.kill();
    let _ = child.wait();
    drop(slave);
    samples.sort();
    (
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    )
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

    // Keystroke echo through the hub, against `docker exec -it` on the same container.
    let (echo_med, echo_p99) = echo_latency(bench.cli().args(["exec", "-t", &name, "--", "cat"]));
    let (decho_med, decho_p99) =
        echo_latency(Command::new("docker").args(["exec", "-it", &container, "cat"]));

    // cp both ways against `docker cp`.
    let scratch = tempfile::tempdir().expect("tempdir");
    let file = scratch.path().join("blob");
    let mut data = Vec::new();
    std::fs::File::open("/dev/urandom")
        .expect("urandom")
        .take(CP_BYTES)
        .read_to_end(&mut data)
        .expect("random bytes");
    std::fs::write(&file, &data).expect("write blob");
    drop(data);
    let blob = file.to_str().expect("utf-8 path");
    let (mut cp_in, mut dcp_in, mut cp_out, mut dcp_out) = (vec![], vec![], vec![], vec![]);
    for i in 0..CP_RUNS {
        let ours = format!("{name}:/workspace/in-{i}");
        let theirs = format!("{container}:/workspace/din-{i}");
        cp_in.push(timed(bench.cli().args(["cp", blob, &ours])));
        dcp_in.push(timed(Command::new("docker").args(["cp", blob, &theirs])));
        let back = scratch.path().join(format!("out-{i}"));
        let dback = scratch.path().join(format!("dout-{i}"));
        cp_out.push(timed(bench.cli().args([
            "cp",
            &ours,
            back.to_str().expect("utf-8"),
        ])));
        dcp_out.push(timed(Command::new("docker").args([
            "cp",
            &theirs,
            dback.to_str().expect("utf-8"),
        ])));
    }
    let cp_mbps = |d: Duration| CP_BYTES as f64 / (1 << 20) as f64 / d.as_secs_f64();
    let (cp_in, dcp_in, cp_out, dcp_out) = (
        cp_mbps(median(cp_in)),
        cp_mbps(median(dcp_in)),
        cp_mbps(median(cp_out)),
        cp_mbps(median(dcp_out)),
    );

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
        "| keystroke echo, `exec -t N cat` vs `docker exec -it N cat` (median of {KEYSTROKES}) | {} | {} | {:.2} | |",
        ms(echo_med),
        ms(decho_med),
        echo_med.as_secs_f64() / decho_med.as_secs_f64()
    );
    println!(
        "| keystroke echo, p99 | {} | {} | {:.2} | |",
        ms(echo_p99),
        ms(decho_p99),
        echo_p99.as_secs_f64() / decho_p99.as_secs_f64()
    );
    println!(
        "| `cp` in, {} MiB file vs `docker cp` (median of {CP_RUNS}) | {cp_in:.0} MiB/s | {dcp_in:.0} MiB/s | {:.2} | |",
        CP_BYTES >> 20,
        cp_in / dcp_in
    );
    println!(
        "| `cp` out, {} MiB file vs `docker cp` (median of {CP_RUNS}) | {cp_out:.0} MiB/s | {dcp_out:.0} MiB/s | {:.2} | |",
        CP_BYTES >> 20,
        cp_out / dcp_out
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
