//! `hub --driver swarm` on the three-node test cluster: agents spread over the nodes with every verb
//! working on each; a node's link cut under a running task (its agents ready again elsewhere, the
//! task `lost` with its output so far, the orphan refused and stopped after the heal); a hub
//! `kill -9` with everything adopted; nothing left on any node; and the driver's bad input.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use bollard::query_parameters::{ListContainersOptions, ListImagesOptions, ListTasksOptions};

use crate::support::cluster::Cluster;
use crate::support::web::Api;
use crate::support::{Hub, docker, ensure_image, random_prefix, run_cli, wait_for};

const AGENTS: usize = 6;

/// The hub's base image from the machine's engine onto the manager, so the hub there builds only
/// the thin agent layer instead of running debootstrap again.
async fn seed_manager(cluster: &Cluster) {
    ensure_image().await;
    let filters = HashMap::from([(
        "reference".to_string(),
        vec!["docker-agent/base".to_string()],
    )]);
    let bases = docker()
        .await
        .list_images(Some(ListImagesOptions {
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .unwrap();
    for tag in bases.into_iter().flat_map(|i| i.repo_tags) {
        cluster.copy_image(1, &tag).await;
    }
}

fn swarm_hub(cluster: &Cluster) -> crate::support::HubBuilder {
    let listen = cluster.free_listen_addr();
    Hub::builder()
        .arg("--driver")
        .arg("swarm")
        .arg("--engine")
        .arg(cluster.node(1))
        .arg("--registry")
        .arg(cluster.registry())
        .arg("--agent-listen")
        .arg(&listen)
        .arg("--agent-url")
        .arg(&format!("https://{listen}"))
}

/// Each agent's node (1-3), from the manager's view of the services' running tasks.
async fn placement(cluster: &Cluster, names: &[String]) -> HashMap<String, u8> {
    let manager = cluster.docker(1).await;
    let mut out = HashMap::new();
    for name in names {
        let filters = HashMap::from([
            ("service".to_string(), vec![format!("docker-agent-{name}")]),
            ("desired-state".to_string(), vec!["running".to_string()]),
        ]);
        let tasks = manager
            .list_tasks(Some(ListTasksOptions {
                filters: Some(filters),
            }))
            .await
            .unwrap();
        let node = tasks[0].node_id.clone().unwrap();
        out.insert(name.clone(), cluster.node_number(&node).await);
    }
    out
}

async fn status(hub: &Hub, name: &str) -> serde_json::Value {
    hub.cli(&["status", name, "--json"]).await.json()
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_spread_over_a_swarm_survive_node_loss_and_hub_restart() {
    let cluster = Cluster::up().await;
    seed_manager(&cluster).await;
    let mut hub = swarm_hub(&cluster).start().await;
    let names: Vec<String> = (0..AGENTS).map(|i| hub.name(&format!("s{i}"))).collect();

    let creates = names.iter().map(|n| {
        let hub = &hub;
        async move { hub.cli(&["create", n]).await }
    });
    for (name, out) in names.iter().zip(futures::future::join_all(creates).await) {
        assert!(
            out.status.success(),
            "create {name}: {}\n{}",
            out.stderr,
            hub.log_tail()
        );
    }
    let nodes = placement(&cluster, &names).await;
    assert_eq!(
        nodes.values().collect::<HashSet<_>>().len(),
        3,
        "six agents land on all three nodes: {nodes:?}"
    );
    // The hub says where each one is, in list --json, the NODE column and `nodes`.
    let listed = hub.cli(&["list", "--json"]).await.json();
    for agent in listed.as_array().unwrap() {
        let name = agent["name"].as_str().unwrap().to_string();
        let node = agent["node"].as_str().unwrap_or_default();
        assert!(
            node.ends_with(&format!("-n{}", nodes[&name])),
            "{name} is on node {}, the hub says {node:?}",
            nodes[&name]
        );
    }
    assert!(hub.cli(&["list"]).await.ok().contains(" NODE "));
    let swarm_nodes = hub.cli(&["nodes", "--json"]).await.json();
    let swarm_nodes = swarm_nodes.as_array().unwrap();
    assert_eq!(swarm_nodes.len(), 3, "{swarm_nodes:?}");
    assert!(
        swarm_nodes
            .iter()
            .all(|n| n["state"] == "ready" && n["availability"] == "active")
    );
    assert_eq!(
        swarm_nodes
            .iter()
            .map(|n| n["agents"].as_u64().unwrap())
            .sum::<u64>(),
        AGENTS as u64
    );
    assert_eq!(
        swarm_nodes
            .iter()
            .filter(|n| n["role"] == "manager")
            .count(),
        1
    );

    // Every verb on every node.
    let local = tempfile::tempdir().unwrap();
    for name in &names {
        assert_eq!(
            hub.cli(&["exec", name, "--", "hostname"]).await.ok().trim(),
            name
        );
        let file = local.path().join(format!("{name}.in"));
        std::fs::write(&file, format!("to {name}\n")).unwrap();
        hub.cli(&[
            "cp",
            file.to_str().unwrap(),
            &format!("{name}:/workspace/in.txt"),
        ])
        .await
        .ok();
        let back = local.path().join(format!("{name}.out"));
        hub.cli(&[
            "cp",
            &format!("{name}:/workspace/in.txt"),
            back.to_str().unwrap(),
        ])
        .await
        .ok();
        assert_eq!(
            std::fs::read_to_string(&back).unwrap(),
            format!("to {name}\n")
        );
        // `shell` on a terminal: a PTY task on whichever node the agent is.
        let shell = [
            "shell",
            name.as_str(),
            "--",
            "sh",
            "-c",
            "echo on-$(hostname) $(tty)",
        ];
        let (code, out) = tokio::task::block_in_place(|| {
            crate::support::term::Term::spawn(&hub, &shell, 24, 80).finish()
        });
        assert_eq!(code, 0, "{out}");
        assert!(out.contains(&format!("on-{name} /dev/pts/")), "{out}");
        let task = serde_json::json!({"type": "exec", "command": "id -u; grep NoNewPrivs /proc/self/status"});
        let out = hub.cli(&["task", name, &task.to_string()]).await;
        assert!(
            out.ok().contains("1000"),
            "tasks run as the task user: {}",
            out.stdout
        );
        assert!(
            out.stdout.contains("NoNewPrivs:\t1"),
            "no-new-privileges holds on Swarm: {}",
            out.stdout
        );
        // The agent logs to stderr, which `logs` keeps on stderr, as `docker logs` does.
        let logs = hub.cli(&["logs", name]).await;
        logs.ok();
        assert!(
            logs.stderr.contains("task finished"),
            "logs: {}",
            logs.stderr
        );
    }

    // On Swarm `cp` goes over the agent's own link (a manager's engine cannot reach a container on
    // another node): a directory keeps its modes both ways, a missing path is refused in one line,
    // and each copy is one of the agent's tasks.
    let first = &names[0];
    let tree = local.path().join("tree");
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::write(tree.join("bin/run"), "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(tree.join("bin/run"), PermissionsExt::from_mode(0o750)).unwrap();
    hub.cli(&[
        "cp",
        tree.to_str().unwrap(),
        &format!("{first}:/workspace/"),
    ])
    .await
    .ok();
    assert_eq!(
        hub.cli(&["exec", first, "--", "/workspace/tree/bin/run"])
            .await
            .ok(),
        "ran\n"
    );
    let back = local.path().join("back");
    hub.cli(&[
        "cp",
        &format!("{first}:/workspace/tree"),
        back.to_str().unwrap(),
    ])
    .await
    .ok();
    let mode = std::fs::metadata(back.join("bin/run"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o750);
    hub.cli(&[
        "cp",
        &format!("{first}:/workspace/nothing"),
        back.to_str().unwrap(),
    ])
    .await
    .fails_with("no such file or directory");
    hub.cli(&[
        "cp",
        tree.to_str().unwrap(),
        &format!("{first}:/workspace/no/dir/x"),
    ])
    .await
    .fails_with("no such directory");
    let tasks = hub.cli(&["task", "list", first, "--json"]).await.json();
    let archives = tasks
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| {
            t["argv"]
                .as_array()
                .is_some_and(|a| a.iter().any(|w| w == "archive"))
        })
        .count();
    assert!(archives >= 4, "cp went over the agent's link: {tasks}");

    // Node loss: a node other than the manager, cut under a running task.
    let (victim, node) = nodes
        .iter()
        .find(|(_, n)| **n != 1)
        .map(|(a, n)| (a.clone(), *n))
        .unwrap();
    let stranded: Vec<String> = nodes
        .iter()
        .filter(|(_, n)| **n == node)
        .map(|(a, _)| a.clone())
        .collect();
    let script = serde_json::json!({"type": "script", "script": "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.1; done"});
    let running = hub
        .cli(&["task", &victim, &script.to_string(), "--detach"])
        .await
        .ok()
        .trim()
        .to_string();
    wait_for(
        "the task's first output",
        Duration::from_secs(30),
        || async {
            let out = hub.cli(&["task", "get", &running, "--json"]).await.json();
            (out["stdout_bytes"].as_u64().unwrap_or(0) > 0).then_some(())
        },
    )
    .await;
    let mut since = HashMap::new();
    for name in &stranded {
        since.insert(
            name.clone(),
            status(&hub, name).await["connection_since"].clone(),
        );
    }
    let cut_at = std::time::Instant::now();
    cluster.cut(node);
    for name in &stranded {
        wait_for(
            &format!("{name} ready on another node"),
            Duration::from_secs(90),
            || async {
                let s = status(&hub, name).await;
                (s["lifecycle"] == "ready"
                    && s["connection"] == "connected"
                    && s["connection_since"] != since[name])
                    .then_some(())
            },
        )
        .await;
    }
    eprintln!(
        "node loss: agents ready elsewhere {:?} after the cut",
        cut_at.elapsed()
    );
    let moved = placement(&cluster, &stranded).await;
    assert!(
        moved.values().all(|n| *n != node),
        "rescheduled off node {node}: {moved:?}"
    );
    // Told truthfully: the move is in the agent's history, with the node it left and where it went.
    let (code, history) = Api::new(&hub)
        .get(&format!("/api/v1/agents/{victim}/events"))
        .await;
    assert!(code.is_success(), "{history}");
    let moved = history
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "rescheduled")
        .unwrap_or_else(|| panic!("no rescheduled event: {history}"));
    let detail = moved["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("n{node} is down"))
            && detail.contains("moved to node")
            && detail.contains("/workspace started empty"),
        "{detail}"
    );
    let lost = hub.cli(&["task", "get", &running, "--json"]).await.json();
    assert_eq!(lost["state"], "lost", "{lost}");
    let kept = hub.cli(&["task", "logs", &running]).await;
    assert!(
        kept.ok().starts_with("tick 0\n"),
        "the output so far is kept: {:?}",
        kept.stdout
    );
    // Work submitted after the loss runs once, on the replacement.
    let out = hub
        .cli(&[
            "exec",
            &victim,
            "--",
            "sh",
            "-c",
            "echo once >> /tmp/runs; cat /tmp/runs",
        ])
        .await;
    assert_eq!(out.ok(), "once\n");

    // The heal: the orphan's agent is refused, and the node's engine stops its container.
    cluster.heal(node);
    let engine = cluster.docker(node).await;
    wait_for(
        "the orphan container stopped",
        Duration::from_secs(90),
        || {
            let engine = engine.clone();
            let service = format!("docker-agent-{victim}");
            async move {
                let filters = HashMap::from([(
                    "label".to_string(),
                    vec![format!("com.docker.swarm.service.name={service}")],
                )]);
                let running = engine
                    .list_containers(Some(ListContainersOptions {
                        filters: Some(filters),
                        ..Default::default()
                    }))
                    .await
                    .ok()?;
                running.is_empty().then_some(())
            }
        },
    )
    .await;
    let after = status(&hub, &victim).await;
    assert_eq!(after["connection"], "connected", "{after}");
    assert_eq!(
        hub.cli(&["exec", &victim, "--", "cat", "/tmp/runs"])
            .await
            .ok(),
        "once\n",
        "still the replacement"
    );

    // A hub kill -9: every service is adopted and every agent answers.
    hub.kill();
    hub.restart().await;
    for name in &names {
        wait_for(
            &format!("{name} back after the restart"),
            Duration::from_secs(60),
            || async {
                let s = status(&hub, name).await;
                (s["lifecycle"] == "ready" && s["connection"] == "connected").then_some(())
            },
        )
        .await;
        assert_eq!(
            hub.cli(&["exec", name, "--", "hostname"]).await.ok().trim(),
            name
        );
    }

    // A placement no node satisfies: refused at once with Swarm's reason, nothing left.
    let pinned = format!("{}-pinned", hub.prefix);
    hub.write_profile(
        &format!("{pinned}.toml"),
        &format!("name = \"{pinned}\"\nplacement = [\"node.labels.nowhere==true\"]\n"),
    );
    let nowhere = hub.name("nowhere");
    hub.cli(&["create", &nowhere, "--profile", &pinned])
        .await
        .fails_with("no Swarm node can run");
    assert!(
        hub.cli(&["status", &nowhere]).await.status.code() != Some(0),
        "the refused agent is not kept"
    );

    // Destroyed, nothing is left: no service, secret, container or volume on any node.
    for name in &names {
        hub.cli(&["destroy", name, "--purge"]).await.ok();
    }
    let left = cluster.swarm_leftovers(Some(&hub.hub_id)).await;
    assert!(left.is_empty(), "services and secrets left: {left:?}");
    for n in 1..=3 {
        // Each node removes a removed service's container on its own time.
        wait_for(
            &format!("nothing of the hub's left on node {n}"),
            Duration::from_secs(60),
            || async {
                cluster
                    .leftovers(n, &hub.hub_id, &hub.prefix)
                    .await
                    .is_empty()
                    .then_some(())
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_swarm_driver_refuses_bad_input_and_leaves_nothing() {
    let cluster = Cluster::up().await;
    let home = tempfile::Builder::new()
        .prefix(&format!("docker-agent-e2e-{}-", random_prefix()))
        .tempdir()
        .unwrap();
    let listen = format!("{}:0", cluster.host_addr());
    let url = format!("https://{}:7443", cluster.host_addr());
    let hub_with = |engine: &str, registry: Option<&str>| {
        let mut args: Vec<String> = [
            "hub",
            "--operator-listen",
            "127.0.0.1:0",
            "--driver",
            "swarm",
            "--engine",
            engine,
            "--agent-listen",
            &listen,
            "--agent-url",
            &url,
        ]
        .map(String::from)
        .to_vec();
        if let Some(r) = registry {
            args.extend(["--registry".to_string(), r.to_string()]);
        }
        args
    };
    let run = |args: Vec<String>| {
        let home = home.path().to_path_buf();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_cli(&home, &args, None).await
        }
    };
    run(hub_with(cluster.node(1), None))
        .await
        .fails_with("--driver swarm needs --registry");
    run(hub_with(cluster.node(1), Some("http://r:5000")))
        .await
        .fails_with("must be HOST:PORT");
    run(hub_with(
        "unix:///var/run/docker.sock",
        Some(cluster.registry()),
    ))
    .await
    .fails_with("--driver swarm needs --engine tcp://");
    // A worker's engine is not a manager.
    run(hub_with(cluster.node(2), Some(cluster.registry())))
        .await
        .fails_with("is not a Swarm manager");

    // A registry nobody serves: create fails clearly, and no service or secret is left.
    seed_manager(&cluster).await;
    let unreachable = format!("{}:5999", cluster.host_addr());
    let listen = cluster.free_listen_addr();
    let hub = Hub::builder()
        .arg("--driver")
        .arg("swarm")
        .arg("--engine")
        .arg(cluster.node(1))
        .arg("--registry")
        .arg(&unreachable)
        .arg("--agent-listen")
        .arg(&listen)
        .arg("--agent-url")
        .arg(&format!("https://{listen}"))
        .start()
        .await;
    let name = hub.name("noreg");
    hub.cli(&["create", &name]).await.fails_with("cannot push");
    let left = cluster.swarm_leftovers(None).await;
    assert!(left.is_empty(), "services and secrets left: {left:?}");
    assert!(
        hub.cli(&["list", "--json"])
            .await
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );
}
