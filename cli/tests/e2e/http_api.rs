//! The REST API, `/metrics`, `/healthz` and `/readyz` against a real hub and real containers.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::Hub;
use crate::support::web::Api;

fn error_code(body: &serde_json::Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error shape: {body}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_tasks_output_and_events_over_http() {
    let hub = Hub::builder().start().await;
    let api = Api::new(&hub);
    let name = hub.name("api");
    let second = hub.name("api2");

    // Operations endpoints need no token.
    let health = api.client.get(api.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let ready = api.client.get(api.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    assert!(ready.text().await.unwrap().contains("docker reachable"));

    // Subscribed before the create: every state change must show up, in order.
    let mut events = api.events(&format!("/api/v1/events?agent={name}")).await;
    let (status, agent) = api
        .post(
            "/api/v1/agents",
            &json!({ "name": name, "env": { "GREETING": "hi" } }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{agent}\n{}", hub.log_tail());
    assert_eq!(agent["lifecycle"], "ready");
    assert_eq!(agent["connection"], "connected");
    assert_eq!(agent["profile"], "minimal");
    let seen = events
        .until(Duration::from_secs(10), |e| {
            e.event == "lifecycle" && e.data.contains("\"state\":\"ready\"")
        })
        .await;
    let states: Vec<String> = seen
        .iter()
        .filter(|e| e.event == "lifecycle")
        .map(|e| {
            serde_json::from_str::<serde_json::Value>(&e.data).unwrap()["state"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    // creating → starting → ready, in order; `starting` may be skipped when the agent's hello
    // arrives before the hub has applied the container's start (a hello proves it runs).
    let order = ["creating", "starting", "ready"];
    let ranks: Vec<usize> = states
        .iter()
        .map(|s| order.iter().position(|o| o == s).unwrap_or(usize::MAX))
        .collect();
    assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert_eq!(states.last().map(String::as_str), Some("ready"), "{seen:?}");
    assert!(
        seen.iter().all(|e| e.data.contains(&name)),
        "filtered to the agent: {seen:?}"
    );

    // A task with output on both streams and a failing exit code.
    let (status, task) = api
        .post(
            &format!("/api/v1/agents/{name}/tasks"),
            &json!({ "type": "exec", "command": "printf 'out:%s' \"$GREETING\"; printf 'err' >&2; exit 3" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let id = task["id"].as_str().unwrap().to_string();
    // Following the output returns when the task ends, with every byte.
    let (status, all) = api
        .bytes(&format!("/api/v1/tasks/{id}/output?follow=true"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        all.len(),
        "out:hi".len() + "err".len(),
        "{}",
        String::from_utf8_lossy(&all)
    );
    let (_, stdout) = api
        .bytes(&format!("/api/v1/tasks/{id}/output?stream=stdout"))
        .await;
    assert_eq!(stdout, b"out:hi");
    let (_, stderr) = api
        .bytes(&format!("/api/v1/tasks/{id}/output?stream=stderr"))
        .await;
    assert_eq!(stderr, b"err");
    let (status, done) = api.get(&format!("/api/v1/tasks/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(done["state"], "finished");
    assert_eq!(done["exit_code"], 3);
    assert_eq!(done["stdout_bytes"], 6);
    assert_eq!(done["agent"], name.as_str());
    assert_eq!(done["env"], json!([]), "env values never leave the hub");
    let (_, list) = api.get(&format!("/api/v1/agents/{name}/tasks")).await;
    assert_eq!(list[0]["id"], id.as_str());
    let (_, fetched) = api.get(&format!("/api/v1/agents/{name}")).await;
    assert_eq!(fetched["failed_tasks"], 1, "{fetched}");

    // Cancel a long task.
    let (_, long) = api
        .post(
            &format!("/api/v1/agents/{name}/tasks"),
            &json!({ "type": "exec", "command": "sleep 300" }),
        )
        .await;
    let long_id = long["id"].as_str().unwrap();
    let (status, cancelled) = api
        .post(&format!("/api/v1/tasks/{long_id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    let (_, _) = api
        .bytes(&format!("/api/v1/tasks/{long_id}/output?follow=true"))
        .await;
    let (_, after) = api.get(&format!("/api/v1/tasks/{long_id}")).await;
    assert!(
        after["signal"].is_number() || after["state"] == "cancelled",
        "{after}"
    );

    // Errors: one shape, the right status.
    let (status, body) = api.get("/api/v1/agents/nosuch").await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let (status, body) = api.post("/api/v1/agents", &json!({ "name": name })).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "already_exists"),
        "{body}"
    );
    let (status, body) = api
        .post("/api/v1/agents", &json!({ "name": "Bad/Name" }))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_argument")
    );
    let (status, body) = api
        .post("/api/v1/agents", &json!({ "name": "x", "profile": "nope" }))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = api
        .post("/api/v1/agents", &json!({ "name": "x", "colour": "red" }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("colour"),
        "{body}"
    );
    let (status, body) = api
        .post_raw(&format!("/api/v1/agents/{name}/tasks"), "{not json")
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_argument")
    );
    let (status, body) = api
        .post(
            &format!("/api/v1/agents/{name}/tasks"),
            &json!({ "type": "deploy" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown task type"),
        "{body}"
    );
    let huge = format!(
        "{{\"type\":\"exec\",\"command\":\"{}\"}}",
        "x".repeat(2 << 20)
    );
    // Its own client: the server answers 413 without reading the body and closes that connection,
    // which a pooled client could otherwise pick for the next request.
    let (status, body) = Api::new(&hub)
        .post_raw(&format!("/api/v1/agents/{name}/tasks"), &huge)
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "invalid_argument")
    );
    // A page on another site whose name points here (DNS rebinding) gets nothing over plain HTTP.
    let rebound = api
        .client
        .get(api.url("/healthz"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), StatusCode::MISDIRECTED_REQUEST);
    let (status, body) = api.get("/api/v1/tasks/nosuch").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = api.get("/api/v1/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = api.post("/api/v1/profiles", &json!({})).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    for token in [None, Some("wrong")] {
        let mut req = api.client.get(api.url("/api/v1/agents"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(error_code(&body), "unauthenticated");
    }

    // wait=false answers 202 as soon as the agent exists; the event stream says when it is ready.
    let mut all_events = api.events("/api/v1/events").await;
    let (status, early) = api
        .post("/api/v1/agents?wait=false", &json!({ "name": second }))
        .await;
    assert!(
        status == StatusCode::ACCEPTED || status == StatusCode::CREATED,
        "{status} {early}"
    );
    all_events
        .until(Duration::from_secs(60), |e| {
            e.event == "lifecycle"
                && e.data.contains(&second)
                && e.data.contains("\"state\":\"ready\"")
        })
        .await;

    // Lifecycle over the API.
    let (status, stopped) = api
        .post(&format!("/api/v1/agents/{second}/stop"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{stopped}");
    assert_eq!(stopped["lifecycle"], "stopped");
    let (status, started) = api
        .post(&format!("/api/v1/agents/{second}/start"), &json!({}))
        .await;
    assert_eq!(
        (status, started["lifecycle"].as_str()),
        (StatusCode::OK, Some("ready")),
        "{started}"
    );
    let (_, listed) = api.get("/api/v1/agents?lifecycle=ready").await;
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let (_, profiles) = api.get("/api/v1/profiles").await;
    assert!(
        profiles["profiles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "builder")
    );

    // Metrics, read by a Prometheus text-format parser.
    let text = api.text("/metrics").await;
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("unparseable metrics ({e}):\n{text}"));
    let value = |metric: &str, label: Option<(&str, &str)>| -> f64 {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("{metric} {label:?} missing:\n{text}"))
    };
    assert_eq!(value("docker_agent_agents", Some(("state", "ready"))), 2.0);
    assert_eq!(value("docker_agent_connected_agents", None), 2.0);
    assert!(value("docker_agent_tasks_total", Some(("outcome", "failed"))) >= 1.0);
    assert!(
        value(
            "docker_agent_output_bytes_total",
            Some(("stream", "stdout"))
        ) >= 6.0
    );
    assert!(
        value("docker_agent_agent_reconnects_total", None) >= 1.0,
        "the restart reconnected"
    );
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "docker_agent_task_duration_seconds_count")
    );
    assert!(text.contains("docker_agent_docker_errors"), "{text}");

    // The OpenAPI document describes what was just exercised.
    let doc: serde_json::Value = api
        .client
        .get(api.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/agents",
        "/api/v1/agents/{name}/tasks",
        "/api/v1/tasks/{id}/output",
        "/api/v1/events",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} not documented");
    }

    for n in [&name, &second] {
        let (status, gone) = api.delete(&format!("/api/v1/agents/{n}?purge=true")).await;
        assert_eq!(status, StatusCode::OK, "{gone}");
        assert_eq!(gone["volume_removed"], true);
    }
    hub.assert_nothing_left().await;
}

/// Field names of a JSON object, nested ones as `outer.inner`.
fn shape(value: &serde_json::Value) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(object) = value.as_object() {
        for (key, inner) in object {
            names.push(key.clone());
            names.extend(shape(inner).into_iter().map(|n| format!("{key}.{n}")));
        }
    }
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn json_outputs_and_the_rest_api_describe_agents_tasks_and_profiles_alike() {
    let hub = Hub::builder().start().await;
    let api = Api::new(&hub);
    let name = hub.name("shape");
    hub.create(&name).await;
    let task = hub
        .cli(&[
            "task",
            &name,
            r#"{"type":"exec","command":"true"}"#,
            "--detach",
        ])
        .await
        .ok()
        .trim()
        .to_string();
    hub.cli(&["task", "logs", &task, "--follow"]).await.ok();

    let cli_agent = hub.cli(&["status", &name, "--json"]).await.json();
    let (_, rest_agent) = api.get(&format!("/api/v1/agents/{name}")).await;
    assert_eq!(shape(&cli_agent), shape(&rest_agent));
    for field in [
        "name",
        "id",
        "profile",
        "image",
        "volume",
        "created_at",
        "lifecycle",
    ] {
        assert_eq!(cli_agent[field], rest_agent[field], "{field}");
    }
    let mut cli_task = hub.cli(&["task", "get", &task, "--json"]).await.json();
    // `task get` adds the output itself, which the API serves on its own endpoint.
    for field in ["stdout", "stderr"] {
        assert!(cli_task.as_object_mut().unwrap().remove(field).is_some());
    }
    let (_, rest_task) = api.get(&format!("/api/v1/tasks/{task}")).await;
    assert_eq!(shape(&cli_task), shape(&rest_task));
    assert_eq!(cli_task, rest_task);
    let cli_profiles = hub.cli(&["profiles", "--json"]).await.json();
    let (_, rest_profiles) = api.get("/api/v1/profiles").await;
    assert_eq!(cli_profiles, rest_profiles["profiles"]);
    hub.cli(&["destroy", &name, "--purge"]).await.ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_escape_sequence_split_between_output_chunks_leaves_no_fragment_on_the_task_page() {
    let hub = Hub::builder().start().await;
    let api = Api::new(&hub);
    let name = hub.name("ansi");
    hub.create(&name).await;
    // A colour sequence, then a two-byte character, each cut in two by a pause, so their halves
    // reach the hub in separate chunks.
    let script =
        r"printf 'x\033[3'; sleep 0.5; printf '1mred\033[0m \303'; sleep 0.5; printf '\251 done\n'";
    let task = hub
        .detach(&name, &json!({"type": "script", "script": script}))
        .await;
    let stored = hub.cli(&["task", "logs", &task, "--follow"]).await;
    assert_eq!(stored.raw_stdout, b"x\x1b[31mred\x1b[0m \xc3\xa9 done\n");
    let cookie = api.dashboard_session().await;
    let (status, html) = api.page(&cookie, &format!("/tasks/{task}")).await;
    assert_eq!(status, StatusCode::OK);
    // The output region's text, each chunk in a span of its own.
    let region = html
        .split("id=\"output\"")
        .nth(1)
        .and_then(|rest| rest.split("</pre>").next())
        .expect("the page shows the output");
    let mut text = String::new();
    let mut in_tag = false;
    for c in region.chars().skip_while(|c| *c != '>').skip(1) {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    assert_eq!(text, "xred é done\n", "{region}");
}
