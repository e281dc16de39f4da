//! Schemathesis (from PyPI; `./dev test` installs it) generates requests for every operation in the
//! hub's own OpenAPI document and finds no server error: no 5xx for any input it can make up.

use std::path::PathBuf;
use std::process::Stdio;

use reqwest::StatusCode;

use crate::support::Hub;
use crate::support::web::Api;

/// Where `./dev test` puts it, unless `DOCKER_AGENT_SCHEMATHESIS` names another.
fn schemathesis() -> PathBuf {
    let path = std::env::var_os("DOCKER_AGENT_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/schemathesis/bin/schemathesis")
        });
    assert!(
        path.exists(),
        "schemathesis is not installed at {} (./dev test installs it, or set DOCKER_AGENT_SCHEMATHESIS)",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error_in_the_rest_api() {
    let hub = Hub::builder().start().await;
    // An agent and a finished task, so operations on existing things get tested too.
    let name = hub.name("st");
    hub.create(&name).await;
    hub.cli(&["exec", &name, "--", "true"]).await.ok();
    let schema = format!("http://{}/api/v1/openapi.json", hub.operator_addr());
    let out = tokio::process::Command::new(schemathesis())
        .arg("run")
        .arg(&schema)
        .args([
            "--header",
            &format!("Authorization: Bearer {}", hub.admin_token()),
        ])
        .args(["--checks", "not_a_server_error"])
        .args(["--max-examples", "20", "--workers", "2"])
        // The event stream never ends by design, so every request to it would run into the timeout;
        // `http_api` tests it.
        .args(["--exclude-path", "/api/v1/events"])
        .args(["--request-timeout", "120"])
        .args(["--seed", "1"])
        .env("NO_COLOR", "1")
        // It keeps a cache of what it found in its working directory: the test's own, not the tree.
        .current_dir(hub.home())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .rsplit("SUMMARY")
        .next()
        .unwrap_or(&stdout)
        .to_string();
    eprintln!("schemathesis summary:{summary}");
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(summary.contains("passed"), "{summary}");
    assert!(!summary.contains("failed"), "{summary}");

    // It created, stopped and destroyed agents with names of its own: remove what it left, through
    // the API, and check the hub is still whole.
    let api = Api::new(&hub);
    let (status, agents) = api.get("/api/v1/agents").await;
    assert_eq!(status, StatusCode::OK);
    for agent in agents.as_array().unwrap() {
        let name = agent["name"].as_str().unwrap();
        let (status, body) = api
            .delete(&format!("/api/v1/agents/{name}?purge=true"))
            .await;
        assert_eq!(status, StatusCode::OK, "destroy {name}: {body}");
    }
    assert_eq!(api.bytes("/readyz").await.0, StatusCode::OK);
}
