//! create → ready, the container's configuration, credentials handling, stop/start keeping /workspace, destroy and purge.

use bollard::query_parameters::InspectContainerOptions;

use crate::support::{Hub, docker};

#[tokio::test(flavor = "multi_thread")]
async fn create_list_status_and_container_configuration() {
    let hub = Hub::builder().start().await;
    let name = hub.name("demo");
    hub.create(&name).await;

    let list = hub.cli(&["list", "--json"]).await.json();
    let agents = list.as_array().unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0]["name"], name.as_str());
    assert_eq!(agents[0]["lifecycle"], "ready");
    assert_eq!(agents[0]["connection"], "connected");
    assert_eq!(agents[0]["profile"], "minimal");

    let table = hub.cli(&["list"]).await;
    let header = table.ok().lines().next().unwrap();
    assert!(
        header.starts_with("NAME") && header.contains("LIFECYCLE") && header.contains("CONNECTION")
    );
    assert!(table.stdout.lines().nth(1).unwrap().starts_with(&name));

    let status = hub.cli(&["status", &name, "--json"]).await.json();
    assert_eq!(status["lifecycle"], "ready");
    assert_eq!(status["resources"]["memory_bytes"], 1u64 << 30);
    let human = hub.cli(&["status", &name]).await;
    assert!(human.ok().contains("Lifecycle:"), "{}", human.stdout);

    // The agent reports health once connected; wait for its first heartbeat through the CLI.
    let exec = hub.cli(&["exec", &name, "--", "true"]).await;
    exec.ok();

    let c = hub.container(&name).await;
    let config = c.config.clone().unwrap();
    let labels = config.labels.unwrap();
    assert_eq!(labels["dev.docker-agent.managed"], "true");
    assert_eq!(labels["dev.docker-agent.agent"], name);
    assert_eq!(labels["dev.docker-agent.profile"], "minimal");
    assert_eq!(labels["dev.docker-agent.hub"], hub.hub_id);

    let host = c.host_config.clone().unwrap();
    assert_eq!(host.network_mode.as_deref(), Some(hub.network.as_str()));
    assert_eq!(
        host.restart_policy.unwrap().name.unwrap().to_string(),
        "unless-stopped"
    );
    assert_eq!(host.nano_cpus, Some(1_000_000_000));
    assert_eq!(host.memory, Some(1 << 30));
    assert_eq!(host.pids_limit, Some(1024));
    assert_eq!(host.cap_drop.unwrap(), ["ALL"]);
    assert!(
        host.security_opt
            .unwrap()
            .iter()
            .any(|o| o.starts_with("no-new-privileges"))
    );
    let mounts = c.mounts.clone().unwrap();
    let ws = mounts
        .iter()
        .find(|m| m.destination.as_deref() == Some("/workspace"))
        .unwrap();
    assert_eq!(
        ws.name.as_deref(),
        Some(format!("docker-agent-{name}-workspace").as_str())
    );
    assert!(
        host.extra_hosts
            .unwrap()
            .iter()
            .any(|h| h.starts_with("host.docker.internal:"))
    );

    // The token is a file only root can read: tasks cannot, and it is nowhere in `docker inspect`.
    let token = hub
        .read_container_file(&name, "/etc/docker-agent/token")
        .await;
    let token = String::from_utf8(token).unwrap();
    assert_eq!(token.trim().len(), 64, "a 256-bit hex token");
    let inspect = serde_json::to_string(&c).unwrap();
    assert!(
        !inspect.contains(token.trim()),
        "the agent token shows in docker inspect"
    );
    let read = hub
        .cli(&["exec", &name, "--", "cat", "/etc/docker-agent/token"])
        .await;
    assert_ne!(read.code(), 0, "a task could read the agent token");
    assert!(!read.stdout.contains(token.trim()));
    let ps = hub
        .cli(&["exec", &name, "--", "sh", "-c", "id -u; env"])
        .await;
    let ps = ps.ok();
    assert!(
        ps.starts_with("1000\n"),
        "tasks must run as the unprivileged user: {ps}"
    );
    assert!(
        !ps.contains("DOCKER_AGENT_"),
        "task environment leaks agent settings: {ps}"
    );
    assert!(!ps.contains(token.trim()));
}

#[tokio::test(flavor = "multi_thread")]
async fn workspace_survives_stop_and_start_and_destroy_purge_leaves_nothing() {
    let hub = Hub::builder().start().await;
    let name = hub.name("keep");
    hub.create(&name).await;
    hub.cli(&[
        "exec",
        &name,
        "--",
        "sh",
        "-c",
        "echo kept > /workspace/file",
    ])
    .await
    .ok();

    let stopped = hub.cli(&["stop", &name]).await;
    assert!(stopped.ok().contains("stopped"), "{}", stopped.stdout);
    let status = hub.cli(&["status", &name, "--json"]).await.json();
    assert_eq!(status["lifecycle"], "stopped");
    assert_eq!(status["connection"], "disconnected");
    let c = hub.container(&name).await;
    assert_eq!(c.state.unwrap().running, Some(false));
    // A stopped agent refuses work with a clear message instead of queueing it forever.
    hub.cli(&["exec", &name, "--", "true"])
        .await
        .fails_with("is stopped");

    hub.cli(&["start", &name]).await.ok();
    let out = hub
        .cli(&["exec", &name, "--", "cat", "/workspace/file"])
        .await;
    assert_eq!(out.ok(), "kept\n");

    // destroy without --purge keeps the volume; a new agent of the same name gets it back.
    let out = hub.cli(&["destroy", &name]).await;
    assert!(out.ok().contains("volume kept"), "{}", out.stdout);
    let docker = docker().await;
    let volume = format!("docker-agent-{name}-workspace");
    assert!(docker.inspect_volume(&volume).await.is_ok());
    hub.create(&name).await;
    let out = hub
        .cli(&["exec", &name, "--", "cat", "/workspace/file"])
        .await;
    assert_eq!(out.ok(), "kept\n");

    let out = hub.cli(&["destroy", &name, "--purge"]).await;
    assert!(out.ok().contains("volume removed"), "{}", out.stdout);
    assert!(
        docker.inspect_volume(&volume).await.is_err(),
        "volume left behind"
    );
    assert!(
        docker
            .inspect_container(
                &format!("docker-agent-{name}"),
                None::<InspectContainerOptions>
            )
            .await
            .is_err(),
        "container left behind"
    );
    let list = hub.cli(&["list", "--json"]).await.json();
    assert_eq!(list.as_array().unwrap().len(), 0);
    hub.cli(&["status", &name]).await.fails_with("not found");
}
