//! Bad input: one clear line, a non-zero exit, the hub stays up, and a failed create leaves nothing behind.

use bollard::query_parameters::ListVolumesOptions;

use crate::support::{CLI, Hub, docker, labelled_containers, random_prefix, run_cli};

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_clearly_and_the_hub_stays_up() {
    let hub = Hub::builder().start().await;
    let name = hub.name("err");

    hub.cli(&["create", "Bad_Name"])
        .await
        .fails_with("invalid agent name");
    hub.cli(&["create", &name, "--profile", "nope"])
        .await
        .fails_with("unknown profile \"nope\"");
    hub.cli(&["status", "ghost"])
        .await
        .fails_with("agent \"ghost\" not found");
    hub.cli(&["exec", "ghost", "--", "true"])
        .await
        .fails_with("not found");
    hub.cli(&["task", "ghost", r#"{"type":"exec","command":"x"}"#])
        .await
        .fails_with("not found");
    hub.cli(&["task", "get", "no-such-task"])
        .await
        .fails_with("not found");

    hub.create(&name).await;
    hub.cli(&["create", &name])
        .await
        .fails_with("already exists");
    hub.cli(&["task", &name, "{not json"])
        .await
        .fails_with("invalid task JSON");
    hub.cli(&["task", &name, r#"{"type":"teleport"}"#])
        .await
        .fails_with("unknown task type \"teleport\"");
    hub.cli(&["task", &name, r#"{"type":"exec"}"#])
        .await
        .fails_with("command");
    hub.cli(&[
        "task",
        &name,
        r#"{"type":"exec","command":"x","cwd":"rel"}"#,
    ])
    .await
    .fails_with("cwd must be an absolute path");

    // Failed creates left no container or volume of their own.
    let docker = docker().await;
    let containers = labelled_containers(&docker, &hub.hub_id).await;
    assert_eq!(containers.len(), 1, "only the one good agent's container");
    let volumes = docker
        .list_volumes(None::<ListVolumesOptions>)
        .await
        .unwrap()
        .volumes
        .unwrap_or_default();
    let mut ours: Vec<&str> = volumes
        .iter()
        .map(|v| v.name.as_str())
        .filter(|n| n.contains(&hub.prefix))
        .collect();
    ours.sort_unstable();
    assert_eq!(
        ours,
        [
            format!("docker-agent-{name}-secrets"),
            format!("docker-agent-{name}-workspace")
        ],
        "only the good agent's volumes"
    );

    // The hub is still up and serving.
    let out = hub.cli(&["exec", &name, "--", "echo", "alive"]).await;
    assert_eq!(out.ok(), "alive\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_that_fails_in_docker_leaves_nothing() {
    let hub = Hub::builder().start().await;
    let name = hub.name("clash");
    // Occupy the container name the hub would use, with a container that is not the hub's.
    let docker = docker().await;
    let image = hub.container_image().await;
    let config = bollard::models::ContainerCreateBody {
        image: Some(image),
        entrypoint: Some(vec!["/bin/true".into()]),
        ..Default::default()
    };
    docker
        .create_container(
            Some(bollard::query_parameters::CreateContainerOptions {
                name: Some(format!("docker-agent-{name}")),
                ..Default::default()
            }),
            config,
        )
        .await
        .unwrap();
    let out = hub.cli(&["create", &name]).await;
    out.fails_with("already exists");
    assert!(
        out.stderr.contains("not made by this hub"),
        "{}",
        out.stderr
    );
    let volume = format!("docker-agent-{name}-workspace");
    assert!(
        docker.inspect_volume(&volume).await.is_err(),
        "the failed create left its volume"
    );
    assert_eq!(
        hub.cli(&["list", "--json"])
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // The foreign container is untouched.
    let _ = docker
        .remove_container(
            &format!("docker-agent-{name}"),
            Some(bollard::query_parameters::RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_hub_and_no_docker_are_clear_errors() {
    let home = tempfile::tempdir().unwrap();
    let out = run_cli(home.path(), &["list"], None).await;
    out.fails_with("the hub is not running");

    // A hub that cannot reach Docker refuses to start, with one line and a non-zero exit.
    let prefix = random_prefix();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(CLI)
            .arg("--home")
            .arg(home.path())
            .args([
                "hub",
                "--operator-listen",
                "127.0.0.1:0",
                "--network",
                &format!("da-{prefix}"),
            ])
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains("Docker"),
        "{stderr}"
    );

    // Invalid configuration is refused before anything is bound (exit 64).
    let home = tempfile::tempdir().unwrap();
    let out = run_cli(home.path(), &["hub", "--network", "bad name!"], None).await;
    assert_eq!(out.code(), 64, "{}", out.stderr);
    assert!(
        out.stderr.contains("invalid network name"),
        "{}",
        out.stderr
    );
}
