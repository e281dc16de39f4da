//! The hub restarting under connected agents: they reconnect by themselves, exec works again, and a task that ran across the restart keeps all its output.

use crate::support::Hub;

#[tokio::test(flavor = "multi_thread")]
async fn agents_reconnect_after_a_hub_restart_and_nothing_is_lost() {
    let mut hub = Hub::builder().start().await;
    let name = hub.name("rs");
    hub.create(&name).await;

    // A task that keeps producing output while the hub is down.
    let script = r#"{"type":"exec","command":"touch /tmp/started; for i in $(seq 1 40); do echo line-$i; sleep 0.1; done"}"#;
    let id = hub
        .cli(&["task", &name, script, "--detach"])
        .await
        .ok()
        .trim()
        .to_string();
    // Wait, inside the container, until the task runs; then kill the hub outright mid-task.
    let wait = [
        "exec",
        "--timeout",
        "30s",
        &name,
        "--",
        "sh",
        "-c",
        "until [ -e /tmp/started ]; do sleep 0.05; done",
    ];
    hub.cli(&wait).await.ok();
    hub.kill();
    hub.restart().await;

    // exec waits for the agent to reconnect (the task queues until then) and then works.
    let out = hub.cli(&["exec", &name, "--", "echo", "back"]).await;
    assert_eq!(out.ok(), "back\n");
    let status = hub.cli(&["status", &name, "--json"]).await.json();
    assert_eq!(status["connection"], "connected");
    assert_eq!(status["lifecycle"], "ready");

    // The task that spanned the restart finishes with every line, once, in order.
    let logs = hub.cli(&["task", "logs", &id, "--follow"]).await;
    let expected: String = (1..=40).map(|i| format!("line-{i}\n")).collect();
    assert_eq!(logs.ok(), expected);
    let got = hub.cli(&["task", "get", &id, "--json"]).await.json();
    assert_eq!(got["exit_code"], 0);
    assert_eq!(got["state"], "finished");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_hub_and_leaves_agents_running() {
    let mut hub = Hub::builder().start().await;
    let name = hub.name("term");
    hub.create(&name).await;
    let status = hub.terminate();
    assert!(
        status.success(),
        "the hub should exit 0 on SIGTERM: {status:?}"
    );
    assert!(
        !hub.home().join("hub.json").exists(),
        "endpoint file removed on clean shutdown"
    );
    assert!(
        !hub.home().join("agent-socket/agent.sock").exists(),
        "agent socket removed on clean shutdown"
    );
    let c = hub.container(&name).await;
    assert_eq!(
        c.state.unwrap().running,
        Some(true),
        "containers outlive the hub"
    );
    hub.restart().await;
    let out = hub.cli(&["exec", &name, "--", "echo", "ok"]).await;
    assert_eq!(out.ok(), "ok\n");
}
