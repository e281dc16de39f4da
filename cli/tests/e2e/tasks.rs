//! JSON tasks: exec and script forms, env/cwd/timeout, detach and fetch later, listing.

use crate::support::Hub;

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
