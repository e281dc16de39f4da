//! The real agent binary against the in-process hub: as PID 1 of its own pid namespace when possible (root + unshare),
//! it runs tasks, reaps orphans, and on SIGTERM stops its tasks, reports them and exits 0.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use docker_agent_agent::reaper::{self, ExitStatus};
use docker_agent_proto::v1::agent_message::Msg as Up;
use docker_agent_proto::v1::hub_message::Msg as Down;
use docker_agent_proto::v1::{Ping, Welcome, task_result::Outcome};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::hub::{HUB_NAME, Hub, HubLink};
use crate::support::{PATIENCE, current_user, sh};

/// Host pid of the process whose parent is `ppid` (unshare forks the agent).
fn child_of(ppid: u32) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let after = stat.rsplit(')').next()?;
        let parent: u32 = after.split_whitespace().nth(1)?.parse().ok()?;
        (parent == ppid).then_some(pid)
    })
}

async fn can_unshare() -> bool {
    if !nix::unistd::geteuid().is_root() {
        return false;
    }
    let mut probe = Command::new("unshare");
    probe
        .args(["--fork", "--pid", "--mount-proc", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Through the reaper, like every child here: a plain `status()` could lose its exit status to it.
    match reaper::spawn_registered(|| probe.spawn(), |c| c.id()) {
        Ok((_child, exited)) => exited.await == Ok(ExitStatus::Exited(0)),
        Err(_) => false,
    }
}

async fn heartbeat_process_count(s: &mut HubLink) -> u32 {
    s.send(Down::Ping(Ping { nonce: 0 })).await;
    s.recv_until(&mut Vec::new(), |m| match m {
        Up::Heartbeat(h) => Some(h.health.as_ref().map_or(0, |h| h.process_count)),
        _ => None,
    })
    .await
}

pub fn agent_command(hub: &Hub, dir: &Path, pid1: bool) -> Command {
    let bin = env!("CARGO_BIN_EXE_docker-agent-agent");
    std::fs::write(dir.join("token"), "tok\n").unwrap();
    std::fs::write(dir.join("ca.pem"), &hub.ca_pem).unwrap();
    let mut cmd = if pid1 {
        let mut c = Command::new("unshare");
        c.args(["--fork", "--pid", "--mount-proc", bin]);
        c
    } else {
        Command::new(bin)
    };
    // Flags through the environment, as DOCKER_AGENT_* variables, to cover that path too.
    cmd.env(
        "DOCKER_AGENT_HUB_URL",
        format!("https://127.0.0.1:{}", hub.addr.port()),
    )
    .env("DOCKER_AGENT_AGENT_ID", "bin-agent")
    .env("DOCKER_AGENT_TOKEN_FILE", dir.join("token"))
    .env("DOCKER_AGENT_CA_FILE", dir.join("ca.pem"))
    .env("DOCKER_AGENT_TLS_SERVER_NAME", HUB_NAME)
    .env("DOCKER_AGENT_TASK_USER", current_user().name)
    .env("DOCKER_AGENT_WORKDIR", dir)
    .env("DOCKER_AGENT_KILL_GRACE_MS", "3000")
    .env("DOCKER_AGENT_LOG", "debug")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(dir.join("agent.log")).unwrap());
    cmd
}

#[tokio::test]
async fn binary_runs_tasks_reaps_orphans_and_stops_cleanly() {
    reaper::spawn().unwrap();
    let mut hub = Hub::start("tok").await;
    let dir = tempfile::tempdir().unwrap();
    let pid1 = can_unshare().await;
    // CI runs as root on a kernel with pid namespaces: there the PID 1 path must really be exercised.
    assert!(
        pid1 || std::env::var("CI").as_deref() != Ok("true"),
        "cannot run the agent as PID 1 (unshare --pid failed) in CI"
    );
    let mut cmd = agent_command(&hub, dir.path(), pid1);
    // Through the reaper: it would otherwise steal the child's status from a plain `wait`.
    let (child, exited) = reaper::spawn_registered(|| cmd.spawn(), |c| c.id()).unwrap();
    let log = dir.path().join("agent.log");
    let fail = |what: &str| -> ! {
        panic!(
            "{what}\n--- agent log ---\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    };

    let mut s = hub.next_link().await;
    let Up::Hello(hello) = s.recv().await else {
        fail("no Hello")
    };
    assert_eq!(hello.agent_id, "bin-agent");
    s.send(Down::Welcome(Welcome {
        hub_id: "hub".into(),
        heartbeat_interval_ms: 600_000,
        ..Default::default()
    }))
    .await;

    // `exec` replaces the shell, so the env it prints is exactly the task's.
    s.send(Down::Run(sh("env", "exec env"))).await;
    let mut seen = Vec::new();
    s.recv_until(&mut seen, |m| {
        matches!(m, Up::Result(r) if r.task_id == "env").then_some(())
    })
    .await;
    let env: Vec<u8> = seen
        .iter()
        .filter_map(|m| match m {
            Up::Output(o) if o.task_id == "env" && o.stream == 1 => Some(o.data.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    let env = String::from_utf8(env).unwrap();
    assert!(
        !env.contains("DOCKER_AGENT_"),
        "agent variables leaked:\n{env}"
    );
    assert!(env.contains("PATH="), "{env}");

    if pid1 {
        // The subshell exits at once, orphaning its sleep; as PID 1 the agent inherits and must reap it.
        s.send(Down::Run(sh("orphan", "(sleep 0.2 &); echo started")))
            .await;
        let r = s
            .recv_until(&mut Vec::new(), |m| match m {
                Up::Result(r) if r.task_id == "orphan" => Some(r.clone()),
                _ => None,
            })
            .await;
        assert_eq!(r.outcome, Some(Outcome::ExitCode(0)));
        // Zombies still show in /proc: once only the agent is left, everything was reaped.
        let reaped = async {
            while heartbeat_process_count(&mut s).await != 1 {
                tokio::task::yield_now().await;
            }
        };
        if tokio::time::timeout(PATIENCE, reaped).await.is_err() {
            fail("orphans were not reaped");
        }
    }

    // SIGTERM with a task running: TERM to the task, its result to the hub, exit 0 well before the grace.
    s.send(Down::Run(sh("long", "sleep 100"))).await;
    s.recv_until(&mut Vec::new(), |m| {
        matches!(m, Up::Started(st) if st.task_id == "long").then_some(())
    })
    .await;
    let agent_pid = if pid1 {
        child_of(child.id()).unwrap_or_else(|| fail("cannot find the agent under unshare"))
    } else {
        i32::try_from(child.id()).unwrap()
    };
    let t0 = std::time::Instant::now();
    kill(Pid::from_raw(agent_pid), Signal::SIGTERM).unwrap();
    let r = s
        .recv_until(&mut Vec::new(), |m| match m {
            Up::Result(r) if r.task_id == "long" => Some(r.clone()),
            _ => None,
        })
        .await;
    assert_eq!(r.outcome, Some(Outcome::Signal(15)));
    s.send(Down::Ack(docker_agent_proto::v1::Ack {
        task_id: "long".into(),
        result: true,
        ..Default::default()
    }))
    .await;
    let status = tokio::time::timeout(PATIENCE, exited)
        .await
        .unwrap_or_else(|_| fail("the agent did not exit"))
        .unwrap();
    assert_eq!(status, ExitStatus::Exited(0));
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
}

/// Runs a helper command to completion through the reaper (a plain `wait` would race with it).
async fn run_to_end(cmd: &mut Command) -> ExitStatus {
    let (_child, exited) = reaper::spawn_registered(|| cmd.spawn(), |c| c.id()).unwrap();
    tokio::time::timeout(Duration::from_secs(120), exited)
        .await
        .expect("command hung")
        .unwrap()
}

/// The static release binary alone in a `FROM scratch` image: no NSS, no libc, no shell. It must resolve the hub
/// through /etc/hosts, find its task user in /etc/passwd, run a task as that user, and stop cleanly on `docker stop`.
/// Runs when `DOCKER_AGENT_AGENT_BINARY` names the static build (`./dev test` sets it) and Docker is reachable.
#[tokio::test]
async fn static_binary_in_a_scratch_image() {
    let Some(bin) = std::env::var_os("DOCKER_AGENT_AGENT_BINARY") else {
        // In CI a skip would hide a missing check; locally, plain `cargo test` may run without the static build.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "DOCKER_AGENT_AGENT_BINARY is not set: run the tests with ./dev test"
        );
        eprintln!("skipped: DOCKER_AGENT_AGENT_BINARY is not set (./dev test sets it)");
        return;
    };
    let bin = std::path::PathBuf::from(bin);
    assert!(bin.exists(), "no static agent at {}", bin.display());
    reaper::spawn().unwrap();
    let mut hub = Hub::start("tok").await;
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    std::fs::copy(&bin, c.join("docker-agent-agent")).unwrap();
    std::fs::write(
        c.join("passwd"),
        "root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000:agent:/home/agent:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(c.join("group"), "root:x:0:\nagent:x:1000:\n").unwrap();
    std::fs::write(c.join("token"), "tok\n").unwrap();
    // The legacy builder keeps the mode; BuildKit's COPY --chmod may be unavailable.
    std::fs::set_permissions(
        c.join("token"),
        std::os::unix::fs::PermissionsExt::from_mode(0o400),
    )
    .unwrap();
    std::fs::write(c.join("ca.pem"), &hub.ca_pem).unwrap();
    std::fs::write(
        c.join("Dockerfile"),
        "FROM scratch\nCOPY docker-agent-agent /docker-agent-agent\nCOPY passwd group /etc/\n\
         COPY token /etc/docker-agent/token\nCOPY ca.pem /etc/docker-agent/ca.pem\n\
         ENTRYPOINT [\"/docker-agent-agent\"]\n",
    )
    .unwrap();
    let tag = format!("docker-agent-agent-scratch-test:{}", std::process::id());
    let name = format!("docker-agent-scratch-{}", std::process::id());
    let _cleanup = DockerCleanup {
        container: name.clone(),
        image: tag.clone(),
    };
    let built = run_to_end(
        Command::new("docker")
            .args(["build", "-q", "-t", &tag])
            .arg(c),
    )
    .await;
    assert_eq!(built, ExitStatus::Exited(0), "docker build failed");

    // Host networking keeps all traffic on loopback; /etc/hosts maps the hub's usual name there.
    let mut run = Command::new("docker");
    run.args(["run", "--rm", "--name", &name, "--network", "host"])
        .args(["--add-host", "host.docker.internal:127.0.0.1", &tag])
        .arg(format!(
            "--hub-url=https://host.docker.internal:{}",
            hub.addr.port()
        ))
        .args([
            "--agent-id=scratch",
            &format!("--tls-server-name={HUB_NAME}"),
            "--workdir=/",
        ]);
    run.stdout(Stdio::null()).stderr(Stdio::null());
    let (_child, exited) = reaper::spawn_registered(|| run.spawn(), |c| c.id()).unwrap();

    let mut s = hub.next_link().await;
    let Up::Hello(hello) = s.recv().await else {
        panic!("no Hello")
    };
    assert_eq!(hello.agent_id, "scratch");
    s.send(Down::Welcome(Welcome {
        hub_id: "hub".into(),
        heartbeat_interval_ms: 600_000,
        ..Default::default()
    }))
    .await;
    s.send(Down::Run(docker_agent_proto::v1::RunTask {
        task_id: "version".into(),
        argv: vec!["/docker-agent-agent".into(), "--version".into()],
        ..Default::default()
    }))
    .await;
    let mut seen = Vec::new();
    let r = s
        .recv_until(&mut seen, |m| match m {
            Up::Result(r) if r.task_id == "version" => Some(r.clone()),
            _ => None,
        })
        .await;
    assert_eq!(r.outcome, Some(Outcome::ExitCode(0)));
    assert!(
        seen.iter()
            .any(|m| matches!(m, Up::Output(o) if o.data.starts_with(b"docker-agent-agent ")))
    );

    let stopped = run_to_end(Command::new("docker").args(["stop", "-t", "10", &name])).await;
    assert_eq!(stopped, ExitStatus::Exited(0));
    assert_eq!(
        tokio::time::timeout(PATIENCE, exited)
            .await
            .unwrap()
            .unwrap(),
        ExitStatus::Exited(0)
    );
}

/// Removes the test's container and image even when an assertion failed halfway.
struct DockerCleanup {
    container: String,
    image: String,
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        // `status()` may lose the exit status to the reaper (ECHILD); the command still ran, which is all we need.
        for args in [["rm", "-f", &self.container], ["rmi", "-f", &self.image]] {
            let _ = Command::new("docker")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
