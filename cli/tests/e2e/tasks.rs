//! JSON tasks: exec and script forms, env/cwd/timeout, detach and fetch later, listing, and
//! retention: ended tasks pruned on demand and by the hub, running ones never.

use std::time::Duration;

use crate::support::web::Api;
use crate::support::{Hub, wait_for};

#[tokio::test(flavor = "multi_thread")]
async fn json_tasks_run_and_can_be_fetched_later() {
    let hub = Hub::builder().start().await;
    let name = hub.name("task");
    hub.create(&name).await;

    let out = hub
        .cli(&["task", &name, r#"{"type":"exec","command":"pwd"}"#])
        .await;
    assert_eq!(out.ok(), "/workspace\n");

    let out = hub
        .cli(&["task", &name, r#"{"type":"exec","command":["sh","-c","echo $X; pwd; exit 4"],"env":{"X":"from-env"},"cwd":"/tmp"}"#])
        .await;
    assert_eq!(out.code(), 4);
    assert_eq!(out.stdout, "from-env\n/tmp\n");

    let out = hub
        .cli(&[
            "task",
            &name,
            r#"{"type":"script","script":"a=2\nb=3\necho $((a*b))","interpreter":"/bin/bash"}"#,
        ])
        .await;
    assert_eq!(out.ok(), "6\n");

    let out = hub
        .cli(&[
            "task",
            &name,
            r#"{"type":"exec","command":"sleep 30","timeout_secs":1}"#,
            "--json",
        ])
        .await;
    assert_eq!(out.code(), 124);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["timed_out"], true);
    assert_eq!(v["state"], "finished");

    // Detached: the id comes back at once; the result is there later, from another CLI process.
    let out = hub
        .cli(&[
            "task",
            &name,
            r#"{"type":"exec","command":"echo detached; echo err >&2; exit 2"}"#,
            "--detach",
        ])
        .await;
    let id = out.ok().trim().to_string();
    assert_eq!(id.len(), 32, "task id: {id:?}");
    let logs = hub.cli(&["task", "logs", &id, "--follow"]).await;
    assert!(logs.ok().contains("detached"));
    let got = hub.cli(&["task", "get", &id, "--json"]).await.json();
    assert_eq!(got["exit_code"], 2);
    assert_eq!(got["stdout"], "detached\n");
    assert_eq!(got["stderr"], "err\n");
    assert_eq!(got["agent"], name.as_str());

    let human = hub.cli(&["task", "get", &id]).await;
    assert!(human.ok().contains("exit code 2"), "{}", human.stdout);

    let list = hub.cli(&["task", "list", &name, "--json"]).await.json();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&id.as_str()));
    assert!(ids.len() >= 5);
}

/// Submits `command` as a detached exec task and returns its id.
async fn submit(hub: &Hub, name: &str, command: &str) -> String {
    hub.detach(
        name,
        &serde_json::json!({"type": "exec", "command": command}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn ended_tasks_are_pruned_on_demand_and_by_retention_and_running_ones_never() {
    let mut hub = Hub::builder().start().await;
    let name = hub.name("prune");
    hub.create(&name).await;
    let done = submit(&hub, &name, "echo kept until pruned").await;
    hub.cli(&["task", "logs", &done, "--follow"]).await.ok();
    let running = submit(&hub, &name, "sleep 600").await;

    // Counted, not deleted, without --force; the running task is never among them.
    let dry = hub.cli(&["prune", "--tasks", "--json"]).await.json();
    assert_eq!(dry["tasks"], 1, "{dry}");
    assert!(dry["output_bytes"].as_u64().unwrap() > 0, "{dry}");
    hub.cli(&["task", "get", &done]).await.ok();
    // Nothing ended an hour ago.
    let recent = hub
        .cli(&[
            "prune",
            "--tasks",
            "--older-than",
            "1h",
            "--force",
            "--json",
        ])
        .await
        .json();
    assert_eq!(recent["tasks"], 0, "{recent}");
    let out = hub.cli(&["prune", "--tasks", "--force"]).await;
    assert!(
        out.ok().starts_with("deleted 1 ended task(s)"),
        "{}",
        out.stdout
    );
    hub.cli(&["task", "get", &done])
        .await
        .fails_with("not found");
    let still = hub.cli(&["task", "get", &running, "--json"]).await.json();
    assert_eq!(still["state"], "running", "{still}");
    // The hub says how big its store is.
    let api = Api::new(&hub);
    let ready = api.text("/readyz").await;
    assert!(
        ready.contains("store open (tasks: 1, task output: "),
        "{ready}"
    );

    // The hub's own retention, applied as it starts: an ended task goes, the running one stays.
    let second = submit(&hub, &name, "echo also ended").await;
    hub.cli(&["task", "logs", &second, "--follow"]).await.ok();
    hub.restart_with(&["--retain-tasks", "1ms"]).await;
    wait_for(
        "retention to delete the ended task",
        Duration::from_secs(30),
        || async { (!hub.cli(&["task", "get", &second]).await.status.success()).then_some(()) },
    )
    .await;
    let still = hub.cli(&["task", "get", &running, "--json"]).await.json();
    assert_eq!(still["state"], "running", "{still}");
    hub.cli(&["task", "cancel", &running]).await.ok();
}
