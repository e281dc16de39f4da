//! The benchmark's hub (a real `docker-agent hub` process on a private home), its clients, and process
//! and command helpers. Everything the bench makes carries its hub's label and is removed on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use docker_agent_hub::datadir::{DataDir, Endpoint};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, SysconfVar, sysconf};

pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

pub fn cli_path() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/release/examples/bench → target/release/docker-agent
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("docker-agent")
}

pub fn agent_path() -> PathBuf {
    std::env::var_os("DOCKER_AGENT_AGENT_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from("target/x86_64-unknown-linux-gnu/agent/docker-agent-agent")
        })
}

/// Runs a command to success and returns its stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Wall time of a command that must succeed, its output discarded.
pub fn timed(cmd: &mut Command) -> Duration {
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

pub fn docker() -> Command {
    Command::new("docker")
}

/// Resident memory of a process, from /proc (VmRSS), in bytes.
pub fn rss(pid: u32) -> u64 {
    proc_status_kb(pid, "VmRSS:") * 1024
}

fn proc_status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU time a process has used (user + system), from /proc/PID/stat.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the whole line; 12 and 13 after the name and state.
    let hz = sysconf(SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(1)
        .max(1) as u64;
    Duration::from_micros((ticks(11) + ticks(12)) * 1_000_000 / hz)
}

/// Memory the kernel could still give out (MemAvailable), in bytes.
pub fn mem_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// How a benchmark hub listens for agents.
pub enum AgentListen {
    /// On the hub's bridge network, for real containers.
    Gateway,
    /// On loopback, for simulated agents on this host.
    Loopback,
    /// Another engine's: these hub flags name it, and the agent listener and URL its containers reach.
    Remote(Vec<String>),
}

pub struct Hub {
    pub home: tempfile::TempDir,
    pub network: String,
    pub endpoint: Endpoint,
    process: Child,
}

impl Hub {
    /// A hub on a new home (which may already hold a store: see `scale`), ready to serve.
    pub fn start_in(home: tempfile::TempDir, listen: AgentListen) -> Self {
        let network = format!("da-bench-{}-{}", std::process::id(), rand::random::<u32>());
        let listen_args = match listen {
            AgentListen::Gateway => vec!["--agent-listen".to_string(), "gateway:0".to_string()],
            AgentListen::Loopback => vec!["--agent-listen".to_string(), "127.0.0.1:0".to_string()],
            AgentListen::Remote(args) => args,
        };
        // For profiling: `DOCKER_AGENT_BENCH_HUB_WRAPPER="heaptrack -o /tmp/hub"` runs the hub under a tool
        // (its figures are then the tool's process: use them for the profile, not the table).
        let wrapper = std::env::var("DOCKER_AGENT_BENCH_HUB_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut process = match words.next() {
            Some(tool) => {
                let mut c = Command::new(tool);
                c.args(words).arg(cli_path());
                c
            }
            None => Command::new(cli_path()),
        };
        let mut process = process
            .arg("--home")
            .arg(home.path())
            .args(["hub", "--operator-listen", "127.0.0.1:0"])
            .args(&listen_args)
            .args(["--network", &network])
            .env("DOCKER_AGENT_LOG", "warn")
            .env("DOCKER_AGENT_AGENT_BINARY", agent_path())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hub");
        let stderr = process.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let mut ready = false;
        for line in lines.by_ref() {
            let line = line.expect("hub log");
            if line.contains(" ready: operator ") {
                ready = true;
                break;
            }
            eprintln!("hub: {line}");
        }
        assert!(ready, "the hub exited before it was ready");
        // Keep draining the hub's log so it never blocks on a full pipe; warnings are worth seeing.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if line.contains("ERROR") {
                    eprintln!("hub: {line}");
                }
            }
        });
        let endpoint = DataDir::open_for_client(home.path())
            .read_endpoint()
            .expect("hub.json")
            .expect("the hub wrote hub.json");
        Self {
            home,
            network,
            endpoint,
            process,
        }
    }

    pub fn start(listen: AgentListen) -> Self {
        Self::start_in(tempfile::tempdir().expect("tempdir"), listen)
    }

    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// The agent listener's port (from the URL agents dial).
    pub fn agent_port(&self) -> u16 {
        self.endpoint
            .agent_url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("the agent URL ends with its port")
    }

    pub fn cli(&self) -> Command {
        let mut cmd = Command::new(cli_path());
        cmd.arg("--home").arg(self.home.path());
        cmd
    }

    /// The control API in this process: latency without a CLI process start.
    pub async fn client(&self) -> docker_agent_cli::client::Client {
        docker_agent_cli::client::connect(self.home.path(), None)
            .await
            .expect("connect to the hub")
    }

    /// A gauge from `/metrics` (plain HTTP on loopback needs no token).
    pub fn metric(&self, name: &str) -> f64 {
        let url = format!("http://{}/metrics", self.endpoint.operator_addr);
        let text = rt().block_on(async {
            reqwest::get(&url)
                .await
                .expect("GET /metrics")
                .text()
                .await
                .expect("metrics body")
        });
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits until this many agents hold a session.
    pub fn wait_connected(&self, n: usize, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let connected = self.metric("docker_agent_connected_agents") as usize;
            if connected >= n {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "only {connected} of {n} agents connected within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        // A clean stop first: a profiler wrapping the hub writes its report when the hub exits.
        let _ = kill(Pid::from_raw(self.process.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.process.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
        let label = format!("label=dev.docker-agent.hub={}", self.endpoint.hub_id);
        let ids = docker()
            .args(["ps", "-aq", "--filter", &label])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let _ = docker().args(["rm", "-f"]).args(&ids).output();
        }
        let vols = docker()
            .args(["volume", "ls", "-q", "--filter", &label])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let vols: Vec<&str> = vols.split_whitespace().collect();
        if !vols.is_empty() {
            let _ = docker().args(["volume", "rm", "-f"]).args(&vols).output();
        }
        let _ = docker().args(["network", "rm", &self.network]).output();
    }
}

/// Starts every command at once and returns when the last has succeeded.
pub fn all_at_once(cmds: Vec<Command>) -> Duration {
    let start = Instant::now();
    let children: Vec<_> = cmds
        .into_iter()
        .map(|mut c| {
            c.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    start.elapsed()
}

/// The host PID of an agent container's first process (the agent).
pub fn container_pid(container: &str) -> u32 {
    run(docker().args(["inspect", "-f", "{{.State.Pid}}", container]))
        .trim()
        .parse()
        .expect("container pid")
}
