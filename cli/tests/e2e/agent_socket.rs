//! The agent socket: each agent on this host reaches the hub through a socket of its own, mounted into
//! its container alone (TLS and the agent's token, as on the port), keeps reaching it across hub
//! restarts, and falls back to the TCP port when it is gone.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::Duration;

use bollard::models::{NetworkConnectRequest, NetworkDisconnectRequest};

use crate::support::{Hub, docker};

/// `exec NAME -- echo WORD` must answer `WORD` within `within` (it waits for the agent to connect).
async fn echoes(hub: &Hub, name: &str, word: &str, within: Duration) {
    let out = tokio::time::timeout(within, hub.cli(&["exec", name, "--", "echo", word]))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "exec {word} did not finish within {within:?}:\n{}",
                hub.log_tail()
            )
        });
    assert_eq!(out.ok(), format!("{word}\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_reach_the_hub_through_its_socket_and_fall_back_to_the_port() {
    let mut hub = Hub::builder().start().await;
    let root = hub.home().join("agent-socket");
    // No socket shared by every agent: a container can only reach its own.
    assert!(!root.join("agent.sock").exists());

    let name = hub.name("sock");
    hub.create(&name).await;
    let id = hub.cli(&["status", &name, "--json"]).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = root.join(&id);
    let socket = dir.join("agent.sock");
    let meta = std::fs::metadata(&socket).expect("the hub made the agent's socket");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o666);
    let container = format!("docker-agent-{name}");
    // The directory, not the socket, is mounted: a restarted hub's new socket must show in it.
    let mounts = hub.container(&name).await.mounts.unwrap_or_default();
    let mount = mounts
        .iter()
        .find(|m| m.destination.as_deref() == Some("/run/docker-agent/hub"))
        .expect("the socket's directory is mounted");
    assert_eq!(mount.rw, Some(false), "{mount:?}");
    assert_eq!(
        std::path::Path::new(mount.source.as_deref().unwrap_or_default()),
        std::path::absolute(&dir).unwrap()
    );

    // Off its network, the agent still runs work: its link is the socket.
    let docker = docker().await;
    docker
        .disconnect_network(
            &hub.network,
            NetworkDisconnectRequest {
                container: container.clone(),
                force: Some(true),
            },
        )
        .await
        .unwrap();
    echoes(&hub, &name, "via-socket", Duration::from_secs(30)).await;

    // A restarted hub binds a new socket in the same directory, and the agent, still without a network,
    // comes back through it.
    hub.restart().await;
    echoes(&hub, &name, "after-restart", Duration::from_secs(60)).await;

    // Without the socket (a hub that no longer serves one), the agent dials the port again.
    docker
        .connect_network(
            &hub.network,
            NetworkConnectRequest {
                container: container.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    std::fs::remove_file(&socket).unwrap();
    docker
        .restart_container(
            &container,
            None::<bollard::query_parameters::RestartContainerOptions>,
        )
        .await
        .unwrap();
    echoes(&hub, &name, "via-port", Duration::from_secs(60)).await;
}
