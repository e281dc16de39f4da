//! Profiles applied for real: the builder's tools, environment, files, resources and setup seen from inside its container; user profiles (files, modes, user, setup output in logs, a failing setup); validation before anything exists; image caching; the docker-host opt-in.

use bollard::query_parameters::InspectContainerOptions;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{Hub, docker};

async fn image_id(reference: &str) -> String {
    docker()
        .await
        .inspect_image(reference)
        .await
        .unwrap_or_else(|e| panic!("inspect image {reference}: {e}"))
        .id
        .unwrap()
}

async fn container_image_id(name: &str) -> String {
    docker()
        .await
        .inspect_container(
            &format!("docker-agent-{name}"),
            None::<InspectContainerOptions>,
        )
        .await
        .unwrap()
        .image
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn builder_has_its_tools_environment_files_resources_and_setup() {
    let hub = Hub::builder().start().await;
    let name = hub.name("b1");
    let created = hub.cli(&["create", &name, "--profile", "builder"]).await;
    created.ok();

    for (cmd, expect) in [
        ("gcc --version", "gcc"),
        ("make --version", "GNU Make"),
        ("git --version", "git version"),
        ("cmake --version", "cmake version"),
        ("node --version", "v"),
        ("npm --version", "."),
        ("yarn --version", "1."),
    ] {
        let argv: Vec<&str> = cmd.split(' ').collect();
        let mut args = vec!["exec", name.as_str(), "--"];
        args.extend(argv);
        let out = hub.cli(&args).await;
        assert!(out.ok().contains(expect), "{cmd}: {}", out.stdout);
    }
    // The original system's walkthrough, as written there: one quoted command line.
    let npm = hub.cli(&["exec", &name, "npm --version"]).await;
    assert!(npm.ok().trim().split('.').count() == 3, "{}", npm.stdout);
    // The profile's environment reaches tasks.
    assert_eq!(hub.sh(&name, "echo $CI $LANG").await, "true C.UTF-8\n");
    // Its file, with its mode, owned by the task user, in a directory the user owns too.
    assert_eq!(
        hub.sh(
            &name,
            "stat -c '%a %U' ~/.config/git/ignore ~/.config/git ~/.config"
        )
        .await,
        "644 agent\n755 agent\n755 agent\n"
    );
    assert!(
        hub.sh(&name, "cat ~/.config/git/ignore")
            .await
            .contains("target/")
    );
    // The setup step ran once, as the task user, and its output is in the container log.
    assert_eq!(
        hub.sh(&name, "git config --global init.defaultBranch")
            .await,
        "main\n"
    );
    let logs = hub.cli(&["logs", &name]).await;
    let text = logs.ok();
    assert!(
        text.contains("==> setup 1/1: git defaults for the task user"),
        "{text}"
    );
    assert!(
        text.contains("==> setup 1/1 finished: exit code 0"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l == "main"),
        "setup output in logs: {text}"
    );
    let tail = hub.cli(&["logs", &name, "--tail", "1"]).await;
    let lines = tail.ok().lines().count() + tail.stderr.lines().count();
    assert_eq!(lines, 1, "{}{}", tail.stdout, tail.stderr);

    // Resources in the container's configuration (CPUs are capped at what the engine has).
    let engine_cpus = docker().await.info().await.unwrap().ncpu.unwrap().min(2);
    let host = hub.container(&name).await.host_config.unwrap();
    assert_eq!(host.nano_cpus, Some(engine_cpus * 1_000_000_000));
    assert_eq!(host.memory, Some(4 << 30));
    assert_eq!(host.pids_limit, Some(4096));

    // An unchanged profile is not rebuilt: a second agent gets the very same image, and its create
    // builds nothing.
    let status = hub.cli(&["status", &name, "--json"]).await.json();
    let tag = status["image"].as_str().unwrap().to_string();
    assert!(tag.starts_with("docker-agent/builder:"), "{tag}");
    let first = image_id(&tag).await;
    assert_eq!(container_image_id(&name).await, first);
    let second = hub.name("b2");
    let again = hub.cli(&["create", &second, "--profile", "builder"]).await;
    again.ok();
    assert!(
        !again.stderr.contains("building"),
        "the second create rebuilt: {}",
        again.stderr
    );
    assert_eq!(container_image_id(&second).await, first);
    assert_eq!(image_id(&tag).await, first);
    // And `image build` agrees that the image is current.
    let rebuilt = hub
        .cli(&["image", "build", "--profile", "builder", "--quiet"])
        .await;
    assert_eq!(rebuilt.ok().trim(), tag);
}

const FILES_PROFILE: &str = r##"
name = "t-files"
description = "files, modes, a user of its own, setup output"
user = "dev"

[environment]
GREETING = "hello there"
COUNT = 3

[[files]]
path = "/home/dev/bin/hello"
mode = "0750"
content = """#!/bin/sh
echo "hello from $(id -un)"
"""

[[files]]
path = "/etc/docker-agent-demo.conf"
mode = "0600"
content = "secret=1\n"

[[files]]
path = "/workspace/notes/readme.txt"
content = "read me\n"

[[setup_tasks]]
description = "first step"
command = "echo step-one-out; echo step-one-err >&2; echo ran >> /workspace/setup-count"

[[setup_tasks]]
command = "touch /workspace/second && id -un"
"##;

#[tokio::test(flavor = "multi_thread")]
async fn a_user_profile_applies_its_user_files_modes_environment_and_setup_once() {
    let hub = Hub::builder().start().await;
    // Named after the hub's prefix, so its image goes with the hub's cleanup.
    let profile = format!("{}-files", hub.prefix);
    hub.write_profile(
        &format!("{profile}.toml"),
        &FILES_PROFILE.replace("t-files", &profile),
    );
    let name = hub.name("files");
    let created = hub.cli(&["create", &name, "--profile", &profile]).await;
    created.ok();

    assert_eq!(hub.sh(&name, "id -un").await, "dev\n");
    assert_eq!(
        hub.sh(&name, "echo $GREETING/$COUNT").await,
        "hello there/3\n"
    );
    assert_eq!(
        hub.sh(&name, "stat -c '%a %U %G' ~/bin/hello ~/bin").await,
        "750 dev dev\n755 dev dev\n"
    );
    assert_eq!(hub.sh(&name, "~/bin/hello").await, "hello from dev\n");
    // Outside the user's directories files belong to root; this one the task user cannot read.
    assert_eq!(
        hub.sh(&name, "stat -c '%a %U' /etc/docker-agent-demo.conf")
            .await,
        "600 root\n"
    );
    let denied = hub
        .cli(&["exec", &name, "--", "cat", "/etc/docker-agent-demo.conf"])
        .await;
    assert_ne!(denied.code(), 0, "the task user read a root-only file");
    assert_eq!(
        hub.sh(
            &name,
            "stat -c '%U' /workspace/notes /workspace/notes/readme.txt"
        )
        .await,
        "dev\ndev\n"
    );
    // Both setup steps ran, as the profile's user, each once.
    assert_eq!(hub.sh(&name, "cat /workspace/setup-count").await, "ran\n");
    assert_eq!(hub.sh(&name, "stat -c %U /workspace/second").await, "dev\n");
    let logs = hub.cli(&["logs", &name]).await;
    logs.ok();
    assert!(logs.stdout.contains("step-one-out"), "{}", logs.stdout);
    assert!(logs.stderr.contains("step-one-err"), "{}", logs.stderr);
    assert!(
        logs.stdout.contains("==> setup 2/2 finished"),
        "{}",
        logs.stdout
    );

    // A restart does not run the setup again.
    hub.cli(&["restart", &name]).await.ok();
    assert_eq!(hub.sh(&name, "cat /workspace/setup-count").await, "ran\n");
    let status = hub.cli(&["status", &name, "--json"]).await.json();
    assert_eq!(status["lifecycle"], "ready");
    assert_eq!(status["profile"], profile.as_str());

    // `profiles` lists it with its file as the source; `profiles show` prints it resolved.
    let list = hub.cli(&["profiles", "--json"]).await.json();
    let mine = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == profile.as_str())
        .expect("listed");
    assert!(
        mine["source"]
            .as_str()
            .unwrap()
            .ends_with(&format!("profiles/{profile}.toml"))
    );
    let shown = hub.cli(&["profiles", "show", &profile]).await;
    let text = shown.ok();
    assert!(text.contains("user = \"dev\""), "{text}");
    assert!(text.contains("COUNT = \"3\""), "{text}");
    assert!(
        text.contains(&format!("# image: docker-agent/{profile}:")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_setup_step_leaves_the_agent_in_start_error_with_the_command_and_code() {
    let hub = Hub::builder().start().await;
    let profile = format!("{}-fail", hub.prefix);
    hub.write_profile(
        &format!("{profile}.toml"),
        &r#"
name = "t-fail"
[[setup_tasks]]
command = "echo fine"
[[setup_tasks]]
command = "echo once >> /workspace/first"
[[setup_tasks]]
description = "breaks"
command = "echo about to fail; test -e /workspace/go || exit 3"
[[setup_tasks]]
command = "touch /workspace/third"
"#
        .replace("t-fail", &profile),
    );
    let name = hub.name("fail");
    let out = hub.cli(&["create", &name, "--profile", &profile]).await;
    out.fails_with(
        "setup 3/4 failed: breaks (`echo about to fail; test -e /workspace/go || exit 3`) exited with code 3",
    );
    let status = hub.cli(&["status", &name, "--json"]).await.json();
    assert_eq!(status["lifecycle"], "start_error");
    let reason = status["lifecycle_reason"].as_str().unwrap();
    assert!(
        reason.contains("exit 3") && reason.contains("code 3"),
        "{reason}"
    );
    let human = hub.cli(&["status", &name]).await;
    assert!(
        human.ok().contains("exited with code 3"),
        "{}",
        human.stdout
    );
    // The container stays for inspection; its log has the failing step's output.
    let logs = hub.cli(&["logs", &name]).await;
    assert!(logs.ok().contains("about to fail"), "{}", logs.stdout);
    assert!(
        logs.stdout.contains("==> setup 3/4 failed: exit code 3"),
        "{}",
        logs.stdout
    );
    // Tasks still run (to look around), and the third step never ran.
    let third = hub
        .cli(&["exec", &name, "--", "test", "-e", "/workspace/third"])
        .await;
    assert_eq!(third.code(), 1);
    // Fix the cause and start it again: the setup resumes at the failed step, the first never reruns.
    hub.sh(&name, "touch /workspace/go").await;
    let started = hub.cli(&["start", &name]).await;
    started.ok();
    let status = hub.cli(&["status", &name, "--json"]).await.json();
    assert_eq!(status["lifecycle"], "ready", "{status}");
    assert_eq!(
        hub.sh(&name, "cat /workspace/first; ls /workspace/third")
            .await,
        "once\n/workspace/third\n"
    );
    hub.cli(&["destroy", &name, "--purge"]).await.ok();
    hub.assert_nothing_left().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_profiles_are_refused_before_any_container_exists() {
    let hub = Hub::builder().start().await;
    hub.write_profile("t-bogus.toml", "name = \"t-bogus\"\nbogus = 1\n");
    hub.write_profile(
        "t-size.toml",
        "name = \"t-size\"\n[resources]\nmemory = \"4q\"\n",
    );
    hub.write_profile(
        "t-cpus.json",
        r#"{"name": "t-cpus", "resources": {"cpus": "many"}}"#,
    );
    hub.write_profile("t-noname.toml", "description = \"nameless\"\n");
    hub.write_profile(
        "t-nopkg.toml",
        "name = \"t-nopkg\"\npackages = [\"git\", \"no-such-package-xyz\"]\n",
    );
    hub.write_profile("t-nobody.toml", "name = \"t-nobody\"\nuser = \"nobody\"\n");
    let name = hub.name("bad");
    let cases = [
        (
            "t-nobody",
            "user nobody exists in the base with uid 65534 and home /nonexistent; it needs uid 1000 and /home/nobody",
        ),
        ("t-bogus", "t-bogus.toml: unknown field `bogus`"),
        (
            "t-size",
            "t-size.toml: field `resources.memory`: \"4q\" has an unknown unit",
        ),
        (
            "t-cpus",
            "t-cpus.json: field `resources.cpus`: \"many\" is not a CPU count",
        ),
        ("t-noname", "t-noname.toml: field `name` is missing"),
        (
            "t-nopkg",
            "no such package in the base's Debian archive: no-such-package-xyz",
        ),
    ];
    for (profile, needle) in cases {
        hub.cli(&["create", &name, "--profile", profile])
            .await
            .fails_with(needle);
    }
    hub.cli(&["create", &name, "--profile", "docker-host"])
        .await
        .fails_with("--allow-docker-socket");
    hub.cli(&["create", &name, "--profile", "nope"])
        .await
        .fails_with("unknown profile \"nope\"");
    hub.assert_nothing_left().await;
    assert!(
        hub.cli(&["list", "--json"])
            .await
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );

    // The listing shows the good profiles and names each broken file, and says so with its exit code.
    let list = hub.cli(&["profiles"]).await;
    assert_eq!(list.code(), 1);
    for builtin in [
        "builder",
        "tester",
        "deployer",
        "researcher",
        "docker-host",
        "minimal",
    ] {
        assert!(list.stdout.contains(builtin), "{}", list.stdout);
    }
    assert!(list.stdout.contains("t-nopkg"), "{}", list.stdout);
    assert_eq!(list.stderr.lines().count(), 4, "{}", list.stderr);
    assert!(list.stderr.contains("t-bogus.toml"), "{}", list.stderr);
    hub.cli(&["profiles", "show", "nope"])
        .await
        .fails_with("unknown profile");
    // The hub is still up.
    hub.create(&hub.name("good")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_host_drives_the_hosts_engine_when_allowed() {
    let hub = Hub::builder().start().await;
    let name = hub.name("dh");
    hub.cli(&[
        "create",
        &name,
        "--profile",
        "docker-host",
        "--allow-docker-socket",
    ])
    .await
    .ok();
    let ours = docker().await.version().await.unwrap().version.unwrap();
    // As the unprivileged task user, through the socket's group.
    assert_eq!(hub.sh(&name, "id -un").await, "agent\n");
    let seen = hub
        .sh(&name, "docker version --format '{{.Server.Version}}'")
        .await;
    assert_eq!(seen.trim(), ours);
    let mounts = hub.container(&name).await.mounts.unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m.destination.as_deref() == Some("/var/run/docker.sock")),
        "{mounts:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_build_can_be_cancelled_and_tags_nothing() {
    use std::io::{BufRead, BufReader};
    let hub = Hub::builder().start().await;
    let profile = format!("{}-slow", hub.prefix);
    hub.write_profile(
        &format!("{profile}.toml"),
        &format!("name = \"{profile}\"\npackages = [\"python3-scipy\"]\n"),
    );
    let mut child = std::process::Command::new(crate::support::CLI)
        .arg("--home")
        .arg(hub.home())
        .args(["image", "build", "--profile", &profile])
        .env("DOCKER_AGENT_AGENT_BINARY", crate::support::agent_binary())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait = std::time::Duration::from_secs(300);
    // Cancel once the package step has produced output: apt is running inside the build.
    loop {
        let line = rx.recv_timeout(wait).expect("build progress");
        if line.contains("Step 6/") {
            break;
        }
    }
    rx.recv_timeout(wait).expect("output of the package step");
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGINT);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(130));
    let rest: Vec<String> = rx.iter().collect();
    assert!(
        rest.iter()
            .any(|l| l.contains("cancelled; nothing was tagged")),
        "{rest:?}"
    );
    let images = docker()
        .await
        .list_images(Some(bollard::query_parameters::ListImagesOptions {
            filters: Some(std::collections::HashMap::from([(
                "reference".to_string(),
                vec![format!("docker-agent/{profile}")],
            )])),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert!(images.is_empty(), "{images:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_profiles_network_and_mounts_are_applied() {
    use std::os::unix::fs::PermissionsExt;
    let hub = Hub::builder().start().await;
    let extra = format!("da-{}-extra", hub.prefix);
    let docker = docker().await;
    docker
        .create_network(bollard::models::NetworkCreateRequest {
            name: extra.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let host_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(host_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(host_dir.path().join("data.txt"), "from the host\n").unwrap();
    let cache = format!("docker-agent-{}-cache", hub.prefix);
    let profile = format!("{}-net", hub.prefix);
    hub.write_profile(
        &format!("{profile}.toml"),
        &format!(
            r#"
name = "{profile}"
network = "{extra}"
[[mounts]]
source = "{host}"
target = "/hostdata"
read_only = true
[[mounts]]
type = "volume"
source = "{cache}"
target = "/cache"
"#,
            host = host_dir.path().display()
        ),
    );
    let name = hub.name("net");
    hub.cli(&["create", &name, "--profile", &profile])
        .await
        .ok();
    let networks = hub
        .container(&name)
        .await
        .network_settings
        .unwrap()
        .networks
        .unwrap();
    assert!(
        networks.contains_key(&extra) && networks.contains_key(&hub.network),
        "{:?}",
        networks.keys()
    );
    assert_eq!(
        hub.sh(&name, "cat /hostdata/data.txt").await,
        "from the host\n"
    );
    let write = hub
        .cli(&["exec", &name, "--", "touch", "/hostdata/new"])
        .await;
    assert_ne!(write.code(), 0, "a read-only bind mount was writable");
    hub.sh(&name, "ls -ld /cache").await;

    // A network that does not exist is refused, and that create leaves nothing.
    let missing = format!("{}-nonet", hub.prefix);
    hub.write_profile(
        &format!("{missing}.toml"),
        &format!(
            "name = \"{missing}\"\nnetwork = \"no-such-network-{}\"\n",
            hub.prefix
        ),
    );
    let other = hub.name("nonet");
    hub.cli(&["create", &other, "--profile", &missing])
        .await
        .fails_with("does not exist");
    assert!(
        !hub.leftovers().await.iter().any(|n| n.contains("nonet")),
        "{:?}",
        hub.leftovers().await
    );
    hub.cli(&["destroy", &name, "--purge"]).await.ok();
    let _ = docker.remove_network(&extra).await;
    let _ = docker
        .remove_volume(
            &cache,
            None::<bollard::query_parameters::RemoveVolumeOptions>,
        )
        .await;
}

/// `[workspace]` names the volume driver /workspace is made with: here the local driver's tmpfs, the
/// one kind this machine can show (NFS is what makes a workspace follow an agent across a Swarm).
#[tokio::test(flavor = "multi_thread")]
async fn a_profile_names_the_workspace_volume_driver() {
    let hub = Hub::builder().start().await;
    let profile = format!("{}-ws", hub.prefix);
    hub.write_profile(
        &format!("{profile}.toml"),
        &format!(
            "name = \"{profile}\"\n[workspace]\ndriver = \"local\"\noptions = {{ type = \"tmpfs\", device = \"tmpfs\", o = \"size=64m\" }}\n"
        ),
    );
    let name = hub.name("ws");
    hub.cli(&["create", &name, "--profile", &profile])
        .await
        .ok();
    let volume = docker()
        .await
        .inspect_volume(&format!("docker-agent-{name}-workspace"))
        .await
        .unwrap();
    assert_eq!(volume.driver, "local");
    assert_eq!(
        volume.options.get("type").map(String::as_str),
        Some("tmpfs")
    );
    assert_eq!(
        volume.options.get("o").map(String::as_str),
        Some("size=64m")
    );
    assert_eq!(
        hub.sh(&name, "echo kept > /workspace/f && cat /workspace/f && df -P /workspace | tail -1 | cut -d' ' -f1")
            .await,
        "kept\ntmpfs\n"
    );
    hub.cli(&["destroy", &name, "--purge"]).await.ok();
    hub.assert_nothing_left().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tester_screenshots_a_page_with_headless_chromium_under_the_default_hardening() {
    let hub = Hub::builder().start().await;
    let name = hub.name("t1");
    hub.cli(&["create", &name, "--profile", "tester"])
        .await
        .ok();
    // A page served inside the same container, then a screenshot of it as the task user, with every
    // capability dropped and no-new-privileges; the flags come from the profile's /etc/chromium.d file.
    let script = r#"set -e
mkdir -p /workspace/site
printf '<html><body style="background:#c00"><h1>served in the tester</h1></body></html>' > /workspace/site/index.html
cd /workspace/site
python3 -m http.server 8000 --bind 127.0.0.1 >/dev/null 2>&1 &
until curl -sf http://127.0.0.1:8000/ >/dev/null; do sleep 0.1; done
chromium --headless --screenshot=/workspace/shot.png --window-size=640,480 http://127.0.0.1:8000/ 2>/tmp/chromium.log || { tail -5 /tmp/chromium.log >&2; exit 1; }
kill $!
chromedriver --version
grep CapEff /proc/self/status
"#;
    let out = hub.sh(&name, script).await;
    assert!(out.contains("ChromeDriver"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    let local = tempfile::tempdir().unwrap();
    let shot = local.path().join("shot.png");
    hub.cli(&[
        "cp",
        &format!("{name}:/workspace/shot.png"),
        shot.to_str().unwrap(),
    ])
    .await
    .ok();
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // The IHDR chunk's width and height: the window asked for.
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width, height), (640, 480));
    std::fs::copy(
        &shot,
        crate::support::web::artifacts_dir().join("tester-screenshot.png"),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn deployer_has_the_aws_cli_and_its_deployment_tools() {
    let hub = Hub::builder().start().await;
    let name = hub.name("d1");
    hub.cli(&["create", &name, "--profile", "deployer"])
        .await
        .ok();
    for (cmd, expect) in [
        ("aws --version", "aws-cli/"),
        ("ansible --version", "ansible"),
        ("rsync --version", "rsync"),
        ("ssh -V", "OpenSSH"),
    ] {
        let out = hub.cli(&["exec", &name, cmd]).await;
        let text = format!("{}{}", out.stdout, out.stderr);
        assert!(
            out.status.success() && text.contains(expect),
            "{cmd}: {text}"
        );
    }
}
