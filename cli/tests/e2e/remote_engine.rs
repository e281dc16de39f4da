//! `hub --engine`: agents on another Docker engine (a node of the test cluster, in its own network
//! namespace), reached over TCP, with every verb working and nothing left on that engine; and the
//! engine flags' bad input.

use std::collections::HashMap;

use bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptions, ListVolumesOptions,
};

use crate::support::cluster::Cluster;
use crate::support::{Hub, docker, ensure_image, random_prefix, run_cli};

#[tokio::test(flavor = "multi_thread")]
async fn agents_run_on_a_remote_engine_and_leave_nothing_there() {
    let cluster = Cluster::up().await;
    cluster.copy_image(2, &ensure_image().await).await;
    let listen = cluster.free_listen_addr();
    let url = format!("https://{listen}");
    let hub = Hub::builder()
        .arg("--engine")
        .arg(cluster.node(2))
        .arg("--agent-listen")
        .arg(&listen)
        .arg("--agent-url")
        .arg(&url)
        .start()
        .await;
    let name = hub.name("far");
    hub.create(&name).await;

    let node = cluster.docker(2).await;
    let container = format!("docker-agent-{name}");
    let state = node
        .inspect_container(&container, None::<InspectContainerOptions>)
        .await
        .expect("the agent's container is on node 2's engine")
        .state
        .unwrap();
    assert_eq!(state.running, Some(true));
    assert!(
        docker()
            .await
            .inspect_container(&container, None::<InspectContainerOptions>)
            .await
            .is_err(),
        "the machine's own engine must not have it"
    );

    let out = hub.cli(&["exec", &name, "--", "hostname"]).await;
    assert_eq!(out.ok().trim(), name);
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let out = hub
        .cli_stdin(&["exec", &name, "--", "wc", "-c"], &data)
        .await;
    assert_eq!(out.ok().trim(), "200000");
    // One engine: one node, which runs the agent; no NODE anywhere.
    let nodes = hub.cli(&["nodes", "--json"]).await.json();
    assert_eq!(nodes.as_array().unwrap().len(), 1, "{nodes}");
    assert_eq!(nodes[0]["role"], "engine");
    assert_eq!(nodes[0]["agents"], 1);
    assert!(!hub.cli(&["list"]).await.ok().contains("NODE"));
    let out = hub.cli(&["status", &name, "--json"]).await;
    assert!(out.json()["node"].is_null(), "{}", out.stdout);
    assert_eq!(out.json()["lifecycle"], "ready", "{}", out.stdout);
    assert_eq!(out.json()["connection"], "connected", "{}", out.stdout);

    hub.cli(&["destroy", &name, "--purge"]).await.ok();
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("dev.docker-agent.hub={}", hub.hub_id)],
    )]);
    let left = node
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert!(left.is_empty(), "containers left on node 2: {left:?}");
    let volumes = node
        .list_volumes(None::<ListVolumesOptions>)
        .await
        .unwrap()
        .volumes
        .unwrap_or_default();
    let left: Vec<_> = volumes
        .iter()
        .filter(|v| v.labels.get("dev.docker-agent.hub") == Some(&hub.hub_id))
        .map(|v| &v.name)
        .collect();
    assert!(left.is_empty(), "volumes left on node 2: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn engine_flags_refuse_bad_input_in_one_line() {
    let home = tempfile::Builder::new()
        .prefix(&format!("docker-agent-e2e-{}-", random_prefix()))
        .tempdir()
        .unwrap();
    let hub = |extra: &[&str]| {
        let mut args = vec!["hub", "--operator-listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };
    for (extra, needle) in [
        (
            &["--engine", "http://10.0.0.1:2375"][..],
            "must be unix:///PATH or tcp://HOST:PORT",
        ),
        (&["--engine", "tcp://manager"][..], "must name a port"),
        (
            &["--engine-tls-dir", "/nonexistent"][..],
            "--engine-tls-dir needs --engine",
        ),
        (
            &[
                "--engine",
                "tcp://127.0.0.1:2376",
                "--engine-tls-dir",
                "/nonexistent",
            ][..],
            "has no ca.pem",
        ),
        (&["--engine", "tcp://127.0.0.1:2376"][..], "set --agent-url"),
        (
            &[
                "--engine",
                "tcp://127.0.0.1:2376",
                "--agent-url",
                "https://127.0.0.1:7443",
            ][..],
            "set --agent-listen",
        ),
    ] {
        let args = hub(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_cli(home.path(), &args, None).await;
        out.fails_with(needle);
        assert_eq!(out.code(), 64, "{extra:?}");
    }
    // Nothing listens on port 1: the hub says which engine it could not reach, and stops.
    let out = run_cli(
        home.path(),
        &[
            "hub",
            "--operator-listen",
            "127.0.0.1:0",
            "--engine",
            "tcp://127.0.0.1:1",
            "--agent-listen",
            "127.0.0.1:0",
            "--agent-url",
            "https://127.0.0.1:7443",
        ],
        None,
    )
    .await;
    out.fails_with("not reachable");
    assert!(
        out.stderr.contains("tcp://127.0.0.1:1"),
        "the error names the engine: {}",
        out.stderr
    );
}
