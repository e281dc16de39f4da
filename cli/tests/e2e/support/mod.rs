//! Test fixtures: a real hub process on random ports with its own data dir and Docker network, the real CLI, and cleanup of every Docker object a test made.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptions, ListVolumesOptions, RemoveContainerOptions,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::Rng;

pub mod cluster;
pub mod term;
pub mod web;

pub const CLI: &str = env!("CARGO_BIN_EXE_docker-agent");
const HUB_START_TIMEOUT: Duration = Duration::from_secs(120);

/// A Docker client for inspecting what the hub made. Fails loudly without an engine: these tests
/// exist to run against a real one.
pub async fn docker() -> Docker {
    let docker = Docker::connect_with_local_defaults()
        .expect("the Docker engine is not reachable (the end-to-end tests need it)");
    let docker = docker
        .negotiate_version()
        .await
        .expect("the Docker engine is not reachable (the end-to-end tests need it)");
    docker
        .ping()
        .await
        .expect("the Docker engine is not reachable (the end-to-end tests need it)");
    docker
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A static binary `./dev test` built (named by `variable`, else in cargo's cross-target dir); tests
/// refuse to guess.
fn static_binary(variable: &str, name: &str) -> PathBuf {
    let path = std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            workspace_root()
                .join("target/x86_64-unknown-linux-gnu/agent")
                .join(name)
        });
    assert!(
        path.is_file(),
        "the static binary {} is missing: run the tests with ./dev test (it builds it)",
        path.display()
    );
    path
}

/// The static agent binary.
pub fn agent_binary() -> PathBuf {
    static_binary("DOCKER_AGENT_AGENT_BINARY", "docker-agent-agent")
}

/// The static probe binary (`probe/`), which tests copy into agent containers.
pub fn probe_binary() -> PathBuf {
    static_binary("DOCKER_AGENT_PROBE_BINARY", "docker-agent-probe")
}

/// Polls `check` until it gives a value, failing the test with `what` after `timeout`. For state that
/// changes asynchronously and has no event to wait on (a log line, a listing).
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Builds the default image once per test run (a no-op when current), under a lock shared by test
/// processes, and returns its tag.
pub async fn ensure_image() -> String {
    static TAG: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    TAG.get_or_init(|| async {
        let binary = agent_binary();
        tokio::task::spawn_blocking(move || {
            let dir = std::env::temp_dir().join("docker-agent-test-images");
            std::fs::create_dir_all(&dir).unwrap();
            let lock = std::fs::File::create(dir.join("lock")).unwrap();
            lock.lock().unwrap();
            let out = Command::new(CLI)
                .args(["image", "build", "--quiet", "--home"])
                .arg(&dir)
                .env("DOCKER_AGENT_AGENT_BINARY", &binary)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "image build failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        })
        .await
        .unwrap()
    })
    .await
    .clone()
}

/// Every container, running or not, that carries the hub label of `hub_id`.
pub async fn labelled_containers(
    docker: &Docker,
    hub_id: &str,
) -> Vec<bollard::models::ContainerSummary> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("dev.docker-agent.hub={hub_id}")],
    )]);
    docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .unwrap_or_default()
}

pub fn random_prefix() -> String {
    format!("t{:06x}", rand::rng().random_range(0..0xff_ffff))
}

/// What a CLI run gave back.
#[derive(Debug)]
pub struct Out {
    pub status: ExitStatus,
    pub stdout: String,
    /// stdout and stderr exactly as received, for binary output.
    pub raw_stdout: Vec<u8>,
    pub raw_stderr: Vec<u8>,
    pub stderr: String,
}

impl Out {
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert!(
            self.status.success(),
            "command failed ({}): {}",
            self.code(),
            self.stderr
        );
        &self.stdout
    }

    /// Asserts failure with a single-line error mentioning `needle` (after any `[stage]` progress lines).
    #[track_caller]
    pub fn fails_with(&self, needle: &str) {
        assert!(
            !self.status.success(),
            "expected failure, got success: {}",
            self.stdout
        );
        let err = self
            .stderr
            .trim_end()
            .lines()
            .filter(|l| !l.starts_with('['))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(err.lines().count(), 1, "error should be one line: {err:?}");
        assert!(
            err.starts_with("error: "),
            "error should start with 'error: ': {err:?}"
        );
        assert!(
            err.contains(needle),
            "error {err:?} should mention {needle:?}"
        );
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.ok())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// Runs the CLI against `home` with optional stdin.
pub async fn run_cli(home: &Path, args: &[&str], stdin: Option<&[u8]>) -> Out {
    let home = home.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let stdin = stdin.map(<[u8]>::to_vec);
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(CLI);
        cmd.arg("--home").arg(&home).args(&args);
        cmd.env_remove("DOCKER_AGENT_HUB");
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn docker-agent");
        if let Some(data) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            std::thread::spawn(move || {
                let _ = pipe.write_all(&data);
            });
        }
        let out = child.wait_with_output().expect("wait for docker-agent");
        Out {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            raw_stdout: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            raw_stderr: out.stderr,
        }
    })
    .await
    .unwrap()
}

/// Configures a hub before starting it.
pub struct HubBuilder {
    prefix: String,
    args: Vec<String>,
    env: HashMap<String, String>,
}

impl HubBuilder {
    /// An extra `docker-agent hub` flag.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    pub async fn start(self) -> Hub {
        ensure_image().await;
        let home = tempfile::Builder::new()
            .prefix("docker-agent-e2e-")
            .tempdir()
            .unwrap();
        let mut hub = Hub {
            network: format!("da-{}", self.prefix),
            prefix: self.prefix,
            home,
            child: None,
            agent_port: 0,
            hub_id: String::new(),
            args: self.args,
            env: self.env,
        };
        hub.launch().await;
        hub
    }
}

/// A running hub process with its own data dir and network.
pub struct Hub {
    pub prefix: String,
    pub network: String,
    pub home: tempfile::TempDir,
    pub agent_port: u16,
    pub hub_id: String,
    child: Option<Child>,
    args: Vec<String>,
    env: HashMap<String, String>,
}

impl Hub {
    pub fn builder() -> HubBuilder {
        HubBuilder {
            prefix: random_prefix(),
            args: Vec::new(),
            env: HashMap::new(),
        }
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    fn log_path(&self) -> PathBuf {
        self.home().join("hub.log")
    }

    /// A unique agent name for this test.
    pub fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.prefix)
    }

    /// Starts the hub process and returns once it says it is ready (both listeners bound).
    async fn launch(&mut self) {
        let mut cmd = Command::new(CLI);
        cmd.arg("--home")
            .arg(self.home())
            .arg("hub")
            .args(["--operator-listen", "127.0.0.1:0"]);
        // A test that names its own agent listener (a remote engine's) keeps it across restarts.
        if !self.args.iter().any(|a| a == "--agent-listen") {
            cmd.args(["--agent-listen", &format!("gateway:{}", self.agent_port)]);
        }
        cmd.args(["--network", &self.network])
            .args(["--heartbeat-interval", "1s"])
            .args(["--ready-timeout", "60s"])
            .args(&self.args)
            .env("DOCKER_AGENT_AGENT_BINARY", agent_binary())
            .env("DOCKER_AGENT_LOG", "info,docker_agent_hub=debug")
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn the hub");
        let stderr = child.stderr.take().unwrap();
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let (tx, rx) = mpsc::channel();
        // Copies the hub's log to a file (shown when a test fails) and reports the ready line.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                if line.contains(" ready: operator ") {
                    let _ = tx.send(Ok(()));
                }
            }
            let _ = tx.send(Err(()));
        });
        let ready = tokio::task::spawn_blocking(move || rx.recv_timeout(HUB_START_TIMEOUT))
            .await
            .unwrap();
        if !matches!(ready, Ok(Ok(()))) {
            let _ = child.kill();
            panic!("the hub did not become ready:\n{}", self.log_tail());
        }
        self.child = Some(child);
        let endpoint: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.home().join("hub.json")).unwrap()).unwrap();
        self.hub_id = endpoint["hub_id"].as_str().unwrap().to_string();
        let url = endpoint["agent_url"].as_str().unwrap();
        self.agent_port = url.rsplit(':').next().unwrap().parse().unwrap();
    }

    /// The operator listener's address (`host:port`), from the endpoint file the hub wrote.
    pub fn operator_addr(&self) -> String {
        let endpoint: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.home().join("hub.json")).unwrap()).unwrap();
        endpoint["operator_addr"].as_str().unwrap().to_string()
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.home().join("admin-token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// The hub process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("hub running").id()
    }

    /// The hub process's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// How many files the hub process holds open.
    pub fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Copies the probe into an agent's container (as its task user) and returns its path there.
    pub async fn put_probe(&self, name: &str) -> String {
        let probe = probe_binary();
        let target = "/workspace/docker-agent-probe";
        self.cli(&["cp", probe.to_str().unwrap(), &format!("{name}:{target}")])
            .await
            .ok();
        target.to_string()
    }

    /// The agent container's address on `network` (default: this hub's).
    pub async fn container_ip(&self, name: &str, network: Option<&str>) -> String {
        let network = network.unwrap_or(&self.network);
        let settings = self.container(name).await.network_settings.unwrap();
        settings
            .networks
            .unwrap_or_default()
            .get(network)
            .and_then(|n| n.ip_address.clone())
            .filter(|ip| !ip.is_empty())
            .unwrap_or_else(|| panic!("{name} has no address on {network}"))
    }

    /// The hub's whole log so far.
    pub fn log_tail_all(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    pub async fn cli(&self, args: &[&str]) -> Out {
        run_cli(self.home(), args, None).await
    }

    pub async fn cli_stdin(&self, args: &[&str], stdin: &[u8]) -> Out {
        run_cli(self.home(), args, Some(stdin)).await
    }

    /// Starts a CLI process without waiting for it (stdout and stderr piped), for tests that interact
    /// with it while it runs.
    pub fn spawn_cli(&self, args: &[&str]) -> Child {
        self.spawn_cli_with(args, Stdio::null())
    }

    /// `spawn_cli` with the given stdin (`Stdio::piped()` to feed it from the test).
    pub fn spawn_cli_with(&self, args: &[&str], stdin: Stdio) -> Child {
        Command::new(CLI)
            .arg("--home")
            .arg(self.home())
            .args(args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn docker-agent")
    }

    /// Submits a task (`spec`, the JSON task form) to `agent` detached, and returns its id.
    pub async fn detach(&self, agent: &str, spec: &serde_json::Value) -> String {
        self.cli(&["task", agent, &spec.to_string(), "--detach"])
            .await
            .ok()
            .trim()
            .to_string()
    }

    /// Creates an agent and asserts it came up ready.
    pub async fn create(&self, name: &str) {
        let out = self.cli(&["create", name]).await;
        assert!(
            out.status.success(),
            "create {name} failed: {}\n{}",
            out.stderr,
            self.log_tail()
        );
    }

    /// Writes a user profile into the hub's profile directory (read on every request).
    pub fn write_profile(&self, file: &str, text: &str) {
        let dir = self.home().join("profiles");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(file), text).unwrap();
    }

    /// Runs `exec NAME -- sh -c SCRIPT` and returns its stdout, asserting success.
    pub async fn sh(&self, name: &str, script: &str) -> String {
        let out = self.cli(&["exec", name, "--", "sh", "-c", script]).await;
        assert!(
            out.status.success(),
            "`{script}` in {name} failed ({}): {}{}",
            out.code(),
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    /// Asserts that no container or volume of this hub is left, naming any that is.
    pub async fn assert_nothing_left(&self) {
        let left = self.leftovers().await;
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    /// Containers and volumes whose names carry this hub's prefix.
    pub async fn leftovers(&self) -> Vec<String> {
        let docker = docker().await;
        let mut names: Vec<String> = labelled_containers(&docker, &self.hub_id)
            .await
            .into_iter()
            .flat_map(|c| c.names.unwrap_or_default())
            .collect();
        let volumes = docker
            .list_volumes(None::<ListVolumesOptions>)
            .await
            .ok()
            .and_then(|v| v.volumes)
            .unwrap_or_default();
        names.extend(
            volumes
                .into_iter()
                .filter(|v| {
                    v.name
                        .starts_with(&format!("docker-agent-{}-", self.prefix))
                        || v.labels.get("dev.docker-agent.hub") == Some(&self.hub_id)
                })
                .map(|v| v.name),
        );
        names
    }

    /// Kills the hub process outright (SIGKILL): no shutdown code runs.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait: the graceful path.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("hub running");
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        child.wait().unwrap()
    }

    /// Starts the hub again on the same data dir and agent port, as after a crash or an upgrade.
    pub async fn restart(&mut self) {
        self.kill();
        self.launch().await;
    }

    /// `restart`, with these flags added for this run and every later one.
    pub async fn restart_with(&mut self, args: &[&str]) {
        self.args.extend(args.iter().map(|a| (*a).to_string()));
        self.restart().await;
    }

    /// The default profile's image, for tests that make containers of their own.
    pub async fn container_image(&self) -> String {
        ensure_image().await
    }

    pub async fn container(&self, name: &str) -> bollard::models::ContainerInspectResponse {
        docker()
            .await
            .inspect_container(
                &format!("docker-agent-{name}"),
                None::<InspectContainerOptions>,
            )
            .await
            .unwrap_or_else(|e| panic!("inspect {name}: {e}"))
    }

    /// Reads a file out of an agent's container through the Docker archive API (as root, not as a task).
    pub async fn read_container_file(&self, name: &str, path: &str) -> Vec<u8> {
        use futures::TryStreamExt;
        let docker = docker().await;
        let options = bollard::query_parameters::DownloadFromContainerOptions {
            path: path.to_string(),
        };
        let tar: Vec<u8> = docker
            .download_from_container(&format!("docker-agent-{name}"), Some(options))
            .map_ok(|b| b.to_vec())
            .try_concat()
            .await
            .unwrap_or_else(|e| panic!("read {path} from {name}: {e}"));
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        data
    }

    async fn cleanup(hub_id: String, prefix: String, network: String) {
        let docker = docker().await;
        let containers = labelled_containers(&docker, &hub_id).await;
        for c in containers {
            let _ = docker
                .remove_container(
                    &c.id.unwrap_or_default(),
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await;
        }
        let volumes = docker
            .list_volumes(None::<ListVolumesOptions>)
            .await
            .ok()
            .and_then(|v| v.volumes)
            .unwrap_or_default();
        for v in volumes {
            // By name for this test's agents, by label for agents a tool named (schemathesis).
            if v.name.starts_with(&format!("docker-agent-{prefix}-"))
                || v.labels.get("dev.docker-agent.hub") == Some(&hub_id)
            {
                let _ = docker
                    .remove_volume(
                        &v.name,
                        None::<bollard::query_parameters::RemoveVolumeOptions>,
                    )
                    .await;
            }
        }
        // Images of the test's own profiles (named after its prefix); the built-in profiles' images
        // are content-addressed caches that tests share.
        let own = docker
            .list_images(Some(bollard::query_parameters::ListImagesOptions {
                filters: Some(HashMap::from([(
                    "reference".to_string(),
                    vec![format!("docker-agent/{prefix}-*")],
                )])),
                ..Default::default()
            }))
            .await
            .unwrap_or_default();
        for image in own {
            for tag in image.repo_tags {
                let _ = docker
                    .remove_image(
                        &tag,
                        None::<bollard::query_parameters::RemoveImageOptions>,
                        None,
                    )
                    .await;
            }
        }
        // Snapshot images this hub made.
        let images = docker
            .list_images(Some(bollard::query_parameters::ListImagesOptions {
                filters: Some(HashMap::from([(
                    "label".to_string(),
                    vec![
                        format!("dev.docker-agent.hub={hub_id}"),
                        "dev.docker-agent.snapshot".to_string(),
                    ],
                )])),
                ..Default::default()
            }))
            .await
            .unwrap_or_default();
        for image in images {
            let _ = docker
                .remove_image(
                    &image.id,
                    Some(bollard::query_parameters::RemoveImageOptions {
                        force: true,
                        ..Default::default()
                    }),
                    None,
                )
                .await;
        }
        // Group networks this hub made.
        let groups = docker
            .list_networks(Some(bollard::query_parameters::ListNetworksOptions {
                filters: Some(HashMap::from([(
                    "label".to_string(),
                    vec![format!("dev.docker-agent.hub={hub_id}")],
                )])),
            }))
            .await
            .unwrap_or_default();
        for net in groups {
            let _ = docker.remove_network(&net.name.unwrap_or_default()).await;
        }
        let _ = docker.remove_network(&network).await;
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- hub log ({}) ---\n{}", self.prefix, self.log_tail());
        }
        self.kill();
        let (hub_id, prefix, network) = (
            self.hub_id.clone(),
            self.prefix.clone(),
            self.network.clone(),
        );
        // Drop cannot await; clean up on a fresh runtime in a thread of its own.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(Hub::cleanup(hub_id, prefix, network));
        })
        .join();
    }
}
