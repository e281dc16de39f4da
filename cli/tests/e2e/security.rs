//! Hostile input and secrets: names and task JSON an attacker would try are refused clearly with
//! nothing left behind, no token value ever shows in logs, `docker inspect`, pages or errors, and a
//! dashboard login left unused ends.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::web::Api;
use crate::support::{Hub, wait_for};

#[tokio::test(flavor = "multi_thread")]
async fn hostile_names_and_task_json_are_refused_and_leave_nothing() {
    let hub = Hub::builder().start().await;
    let api = Api::new(&hub);
    let long = "a".repeat(10 * 1024);
    let names = [
        "../etc",
        "a/b",
        "..",
        long.as_str(),
        "bad\u{1}name",
        "new\nline",
        "\u{0430}gent", // Cyrillic "а", a lookalike of "agent"
        "Agent",
        "-dash",
        "",
    ];
    for name in names {
        let out = hub.cli(&["create", "--", name]).await;
        assert!(!out.status.success(), "create {name:?} succeeded");
        assert_eq!(
            out.stderr.lines().count(),
            1,
            "one line for {name:?}: {}",
            out.stderr
        );
        assert!(
            out.stderr.len() < 400,
            "the error echoes too much: {}",
            out.stderr.len()
        );
        let (status, body) = api.post("/api/v1/agents", &json!({ "name": name })).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name:?}: {body}");
    }

    let name = hub.name("hostile");
    hub.create(&name).await;
    let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
    let huge = json!({ "type": "exec", "command": "x".repeat(900 * 1024) }).to_string();
    let cases = [
        deep.as_str(),
        r#"{"type":"exec","command":42}"#,
        r#"{"type":"exec","command":"true","env":{"A":1}}"#,
        r#"{"type":"exec","command":"true","sudo":true}"#,
        r#"{"type":["exec"]}"#,
        r#"{"type":"exec","command":"true","timeout_secs":-1}"#,
        r#"{"type":"exec","command":"true","cwd":"relative"}"#,
        "null",
    ];
    for case in cases {
        let out = hub.cli(&["task", &name, case]).await;
        assert!(!out.status.success(), "task {:.60} succeeded", case);
        assert_eq!(
            out.stderr.lines().count(),
            1,
            "{:.60}: {}",
            case,
            out.stderr
        );
        let (status, body) = api
            .post_raw(&format!("/api/v1/agents/{name}/tasks"), case)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{:.60}: {body}", case);
    }
    // A 900 KiB command is more than Linux runs: refused up front, with the way around it.
    let (status, body) = api
        .post_raw(&format!("/api/v1/agents/{name}/tasks"), &huge)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("128 KiB"),
        "{body}"
    );
    let list = hub.cli(&["list", "--json"]).await.json();
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "only the one real agent: {list}"
    );
    assert_eq!(hub.sh(&name, "echo fine").await, "fine\n");
    hub.cli(&["destroy", &name, "--purge"]).await.ok();
    hub.assert_nothing_left().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_token_shows_in_logs_inspect_pages_or_errors() {
    let hub = Hub::builder().start().await;
    let api = Api::new(&hub);
    let name = hub.name("secret");
    hub.create(&name).await;
    let agent_token = String::from_utf8(
        hub.read_container_file(&name, "/etc/docker-agent/token")
            .await,
    )
    .unwrap()
    .trim()
    .to_string();
    assert_eq!(agent_token.len(), 64);
    let admin = hub.admin_token();

    // Everything a user or an onlooker can see.
    let mut seen = String::new();
    hub.sh(&name, "echo task output").await;
    for args in [
        vec!["list", "--json"],
        vec!["status", &name, "--json"],
        vec!["task", "list", &name, "--json"],
        vec!["logs", &name],
        vec![
            "exec",
            &name,
            "--",
            "sh",
            "-c",
            "env; cat /etc/docker-agent/token",
        ],
        vec!["status", "nosuch"],
    ] {
        let out = hub.cli(&args).await;
        seen.push_str(&out.stdout);
        seen.push_str(&out.stderr);
    }
    let inspect = hub.container(&name).await;
    seen.push_str(&serde_json::to_string(&inspect).unwrap());
    let cookie = api.dashboard_session().await;
    for path in [
        "/",
        &format!("/agents/{name}"),
        "/events",
        "/create",
        "/login",
    ] {
        let (status, html) = api.page(&cookie, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        seen.push_str(&html);
    }
    for path in [
        "/api/v1/agents",
        &format!("/api/v1/agents/{name}"),
        "/metrics",
    ] {
        seen.push_str(
            &api.client
                .get(api.url(path))
                .bearer_auth(&api.token)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    // A wrong token in an error message would echo it: try one that looks like the real thing.
    let wrong = format!("{}0", &admin[..63]);
    let r = api
        .client
        .get(api.url("/api/v1/agents"))
        .bearer_auth(&wrong)
        .send()
        .await
        .unwrap();
    seen.push_str(&r.text().await.unwrap());
    seen.push_str(&hub.log_tail_all());

    assert!(
        seen.len() > 10_000,
        "too little was collected to mean anything: {}",
        seen.len()
    );
    assert!(seen.contains(&name), "the collection covers the agent");
    assert!(!seen.contains(&admin), "the admin token leaked");
    assert!(!seen.contains(&agent_token), "the agent token leaked");
    assert!(!seen.contains(&wrong), "a presented token was echoed");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_listener_cannot_be_reached_from_inside_an_agent() {
    let hub = Hub::builder().start().await;
    let name = hub.name("inside");
    hub.create(&name).await;
    let (gateway, agent_port) = crate::auth::agent_listener(&hub).await;
    let operator_port: u16 = hub
        .operator_addr()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // bash's /dev/tcp: "open" when a TCP connection is made within 3 s.
    let probe = |host: String, port: u16| {
        format!(
            "if timeout 3 bash -c 'exec 3<>/dev/tcp/{host}/{port}' 2>/dev/null; then echo open; else echo closed; fi"
        )
    };
    for host in [
        gateway.to_string(),
        "host.docker.internal".to_string(),
        "127.0.0.1".to_string(),
    ] {
        let seen = hub.sh(&name, &probe(host.clone(), operator_port)).await;
        assert_eq!(seen, "closed\n", "the operator port is reachable at {host}");
    }
    // The control: the same probe reaches the agent listener, so "closed" means closed.
    let seen = hub.sh(&name, &probe(gateway.to_string(), agent_port)).await;
    assert_eq!(seen, "open\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dashboard_login_left_unused_past_web_idle_has_ended() {
    let hub = Hub::builder().arg("--web-idle").arg("2s").start().await;
    let api = Api::new(&hub);
    let cookie = api.dashboard_session().await;
    let logged_in = |html: &str| !html.contains("name=\"token\"");
    let (status, html) = api.page(&cookie, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(logged_in(&html), "a fresh login shows the fleet");
    let since = std::time::Instant::now();
    // Use is recorded at most once a minute (the bound is kept to the minute), so polling does not
    // keep this two-second login alive: it ends two seconds after the login.
    wait_for("the idle login to end", Duration::from_secs(30), || async {
        let (_, html) = api.page(&cookie, "/").await;
        (!logged_in(&html)).then_some(())
    })
    .await;
    assert!(
        since.elapsed() >= Duration::from_secs(1),
        "{:?}",
        since.elapsed()
    );
    // A new login works at once.
    let again = api.dashboard_session().await;
    assert!(logged_in(&api.page(&again, "/").await.1));
}
