//! The agent socket: agents on this host reach the hub through a socket mounted into their container
//! (TLS and the agent's token, as on the port), keep reaching it across hub restarts, and fall back to
//! the TCP port when it is gone.

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
    let dir = hub.home().join("agent-socket");
    let socket = dir.join("agent.sock");
    let meta = std::fs::metadata(&socket).expect("the hub made its agent socket");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o666);

    let name = hub.name("sock");
    hub.create(&name).await;
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
