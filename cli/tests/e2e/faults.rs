//! Fault drills on the real engine: the hub killed while tasks stream, an agent cut off its network,
//! a container killed from outside, and a burst of concurrent execs. Nothing may be lost.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::support::{Hub, docker, wait_for};

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// What task `k`'s command prints: `lines` numbered lines, one every 0.1 s.
fn streaming(k: usize, lines: usize) -> (String, Vec<u8>) {
    let command = format!(
        "for i in $(seq 1 {lines}); do printf 'task{k}-%03d %0150d\\n' $i 0; sleep 0.1; done"
    );
    let expected: String = (1..=lines)
        .map(|i| format!("task{k}-{i:03} {}\n", "0".repeat(150)))
        .collect();
    (command, expected.into_bytes())
}

async fn submit(hub: &Hub, agent: &str, command: &str) -> String {
    hub.detach(
        agent,
        &serde_json::json!({ "type": "exec", "command": command }),
    )
    .await
}

/// Waits until every agent is connected; returns how long that took.
async fn all_connected(hub: &Hub, agents: &[String], within: Duration) -> Duration {
    let started = Instant::now();
    let what = format!("all of {} agents connected", agents.len());
    wait_for(&what, within, || async {
        let list = hub.cli(&["list", "--json"]).await;
        if !list.status.success() {
            return None;
        }
        let connected = list
            .json()
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| agents.iter().any(|n| a["name"] == n.as_str()))
            .filter(|a| a["connection"] == "connected")
            .count();
        (connected == agents.len()).then_some(())
    })
    .await;
    started.elapsed()
}

/// Waits until task `id` has produced some output (it runs).
async fn producing(hub: &Hub, id: &str) {
    wait_for(
        &format!("task {id} to produce output"),
        Duration::from_secs(60),
        || async {
            let task = hub.cli(&["task", "get", id, "--json"]).await.json();
            (task["stdout_bytes"].as_u64().unwrap_or(0) > 0).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hub_killed_while_twenty_tasks_stream_loses_nothing() {
    let mut hub = Hub::builder().start().await;
    let agents: Vec<String> = (0..4).map(|i| hub.name(&format!("k{i}"))).collect();
    futures::future::join_all(agents.iter().map(|a| hub.create(a))).await;

    let mut tasks = Vec::new();
    for k in 0..20 {
        let agent = &agents[k % agents.len()];
        let (command, expected) = streaming(k, 100);
        let id = submit(&hub, agent, &command).await;
        tasks.push((id, expected));
    }
    for (id, _) in &tasks {
        producing(&hub, id).await;
    }
    let down = Instant::now();
    hub.kill();
    hub.restart().await;
    let restarted = down.elapsed();
    let back = all_connected(&hub, &agents, Duration::from_secs(60)).await;
    eprintln!(
        "drill: hub back {restarted:?} after kill -9; all {} agents reconnected {back:?} after that",
        agents.len()
    );

    for (id, expected) in &tasks {
        let logs = hub.cli(&["task", "logs", id, "--follow"]).await;
        assert_eq!(
            sha(&logs.raw_stdout),
            sha(expected),
            "task {id}: {} bytes instead of {}",
            logs.raw_stdout.len(),
            expected.len()
        );
        let got = hub.cli(&["task", "get", id, "--json"]).await.json();
        assert_eq!(got["state"], "finished", "{got}");
        assert_eq!(got["exit_code"], 0, "{got}");
        assert_eq!(got["output_truncated"], false, "{got}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_cut_off_its_network_loses_nothing_and_runs_queued_work_once() {
    // Over the TCP port: an agent on the hub's socket would not notice its network going.
    let hub = Hub::builder().arg("--agent-socket=false").start().await;
    let name = hub.name("cut");
    hub.create(&name).await;
    let (command, expected) = streaming(0, 350);
    let id = submit(&hub, &name, &command).await;
    producing(&hub, &id).await;

    let docker = docker().await;
    let container = format!("docker-agent-{name}");
    docker
        .disconnect_network(
            &hub.network,
            bollard::models::NetworkDisconnectRequest {
                container: container.clone(),
                force: Some(true),
            },
        )
        .await
        .unwrap();
    let cut = Instant::now();
    // Submitted while the agent is unreachable: it must run exactly once, after the link is back.
    let marker = "echo ran >> /workspace/ran-once; echo done";
    let queued = submit(&hub, &name, marker).await;
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(cut.elapsed())).await;
    docker
        .connect_network(
            &hub.network,
            bollard::models::NetworkConnectRequest {
                container: container.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let back = all_connected(&hub, std::slice::from_ref(&name), Duration::from_secs(90)).await;
    eprintln!("drill: the agent reconnected {back:?} after its network came back");

    let logs = hub.cli(&["task", "logs", &id, "--follow"]).await;
    assert_eq!(
        sha(&logs.raw_stdout),
        sha(&expected),
        "{} bytes instead of {}",
        logs.raw_stdout.len(),
        expected.len()
    );
    let got = hub.cli(&["task", "get", &id, "--json"]).await.json();
    assert_eq!(got["exit_code"], 0, "{got}");
    let marker_logs = hub.cli(&["task", "logs", &queued, "--follow"]).await;
    assert_eq!(marker_logs.ok(), "done\n");
    assert_eq!(hub.sh(&name, "cat /workspace/ran-once").await, "ran\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_killed_from_outside_shows_at_once_and_starts_again() {
    let hub = Hub::builder().start().await;
    let name = hub.name("dk");
    hub.create(&name).await;
    let docker = docker().await;
    let killed = Instant::now();
    docker
        .kill_container(
            &format!("docker-agent-{name}"),
            None::<bollard::query_parameters::KillContainerOptions>,
        )
        .await
        .unwrap();
    let status = wait_for(
        "the killed agent to leave ready",
        Duration::from_secs(30),
        || async {
            let status = hub.cli(&["status", &name, "--json"]).await.json();
            (status["lifecycle"] != "ready").then_some(status)
        },
    )
    .await;
    eprintln!(
        "drill: `docker kill` showed as {} after {:?}",
        status["lifecycle"],
        killed.elapsed()
    );
    assert_eq!(status["lifecycle"], "stopped", "{status}");
    assert!(
        status["lifecycle_reason"].as_str().unwrap().contains("137"),
        "{status}"
    );
    hub.cli(&["start", &name]).await.ok();
    assert_eq!(hub.sh(&name, "echo again").await, "again\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_concurrent_execs_across_ten_agents_all_come_back_right() {
    let hub = Hub::builder().start().await;
    let agents: Vec<String> = (0..10).map(|i| hub.name(&format!("c{i}"))).collect();
    futures::future::join_all(agents.iter().map(|a| hub.create(a))).await;
    let runs = (0..200).map(|i| {
        let agent = agents[i % agents.len()].clone();
        let hub = &hub;
        async move {
            let script = format!(
                "printf '%s-%s\\n' {i} \"$(hostname)\"; head -c {} /dev/zero | tr '\\0' x",
                1000 + i
            );
            let out = hub.cli(&["exec", &agent, "--", "sh", "-c", &script]).await;
            (i, agent, out)
        }
    });
    let results = futures::future::join_all(runs).await;
    assert_eq!(results.len(), 200);
    for (i, agent, out) in results {
        let expected = format!("{i}-{agent}\n{}", "x".repeat(1000 + i));
        assert_eq!(out.ok(), expected, "exec {i} on {agent}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_past_the_memory_limit_is_reported_oom_killed_and_the_agent_carries_on() {
    let hub = Hub::builder().start().await;
    hub.write_profile(
        "small.toml",
        "name = \"small\"\ndescription = \"64 MiB of memory\"\n[resources]\nmemory = \"64m\"\n",
    );
    let name = hub.name("oom");
    let out = hub.cli(&["create", &name, "--profile", "small"]).await;
    out.ok();
    // The shell keeps the whole substitution in memory: far past the limit (and any swap allowance).
    let hog = hub
        .cli(&[
            "exec",
            &name,
            "--",
            "sh",
            "-c",
            "x=$(head -c 400m /dev/zero | tr '\\0' x); echo survived",
        ])
        .await;
    assert_eq!(hog.code(), 137, "{} {}", hog.stdout, hog.stderr);
    assert!(hog.stderr.contains("out of memory"), "{}", hog.stderr);
    let tasks = hub.cli(&["task", "list", &name, "--json"]).await.json();
    let task = &tasks.as_array().unwrap()[0];
    assert_eq!(task["oom_killed"], true, "{task}");
    // The agent was not the victim: it still answers, and the hub still sees it.
    assert_eq!(hub.sh(&name, "echo still-here").await, "still-here\n");
    let status = hub.cli(&["status", &name, "--json"]).await.json();
    assert_eq!(status["lifecycle"], "ready", "{status}");
    assert_eq!(status["connection"], "connected", "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_hub_keeps_stopped_agents_reports_orphans_and_prunes_only_on_request() {
    let mut hub = Hub::builder().start().await;
    let kept = hub.name("kept");
    let stopped = hub.name("stopped");
    futures::future::join_all([hub.create(&kept), hub.create(&stopped)]).await;
    hub.cli(&["stop", &stopped]).await.ok();

    // A labelled container the hub has no record of, as a crash mid-create would leave.
    let docker = docker().await;
    let ghost = format!("docker-agent-{}", hub.name("ghost"));
    let labels = std::collections::HashMap::from([
        ("dev.docker-agent.managed".to_string(), "true".to_string()),
        ("dev.docker-agent.hub".to_string(), hub.hub_id.clone()),
        ("dev.docker-agent.agent".to_string(), hub.name("ghost")),
        (
            "dev.docker-agent.agent-id".to_string(),
            "no-such-agent".to_string(),
        ),
    ]);
    docker
        .create_container(
            Some(bollard::query_parameters::CreateContainerOptions {
                name: Some(ghost.clone()),
                ..Default::default()
            }),
            bollard::models::ContainerCreateBody {
                image: Some(hub.container_image().await),
                labels: Some(labels),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    hub.kill();
    hub.restart().await;
    assert!(
        hub.log_tail()
            .contains("labelled container with no agent record"),
        "{}",
        hub.log_tail()
    );
    // Never removed automatically; the user's stop is respected.
    let status = hub.cli(&["status", &stopped, "--json"]).await.json();
    assert_eq!(status["lifecycle"], "stopped", "{status}");
    assert!(hub.container(&stopped).await.id.is_some());

    let listed = hub.cli(&["prune"]).await;
    assert!(listed.ok().contains(&ghost), "{}", listed.stdout);
    assert!(listed.stdout.contains("prune --force"), "{}", listed.stdout);
    assert!(!listed.stdout.contains(&kept) && !listed.stdout.contains(&stopped));
    assert!(
        docker.inspect_container(&ghost, None).await.is_ok(),
        "listing removed it"
    );

    let removed = hub.cli(&["prune", "--force", "--json"]).await.json();
    assert_eq!(removed["removed"], true);
    assert_eq!(
        removed["orphans"][0]["name"]
            .as_str()
            .unwrap()
            .trim_start_matches('/'),
        ghost
    );
    assert!(
        docker.inspect_container(&ghost, None).await.is_err(),
        "still there"
    );
    assert_eq!(hub.cli(&["prune"]).await.ok(), "no orphaned containers\n");
    assert_eq!(hub.sh(&kept, "echo kept").await, "kept\n");
    hub.cli(&["start", &stopped]).await.ok();
}
