//! Operations endpoints: `/healthz` (the process answers), `/readyz` (store open, with its size, and
//! Docker reachable)
//! and Prometheus `/metrics`. None needs a token: they say nothing about what the agents run, and the
//! operator listener is on loopback unless the operator chose otherwise.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::HttpState;
use crate::lifecycle::Lifecycle;

/// A `/readyz` that waits longer than a probe's usual timeout helps nobody.
const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router() -> Router<HttpState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    let mut failures = Vec::new();
    if let Err(e) = state.core.store_answers() {
        tracing::error!(error = %e, "readyz: the store does not answer");
        failures.push("store: not answering");
    }
    match tokio::time::timeout(READY_CHECK_TIMEOUT, state.core.driver.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readyz: Docker is not reachable");
            failures.push("docker: not reachable");
        }
        Err(_) => failures.push("docker: no answer within 2s"),
    }
    if failures.is_empty() {
        let store = match state.core.store.size() {
            Ok(size) => format!(
                "store open (tasks: {}, task output: {}, database: {})",
                size.tasks,
                super::ui::view::bytes(size.output_bytes),
                super::ui::view::bytes(size.database_bytes)
            ),
            Err(_) => "store open".to_string(),
        };
        (StatusCode::OK, format!("ok: {store}, docker reachable\n"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", failures.join("; ")),
        )
    }
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    let agents = match state.core.fleet() {
        Ok(fleet) => fleet,
        Err(e) => {
            tracing::error!(error = %e, "metrics: cannot read the agents");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain")],
                String::from("store error; see the hub's log\n"),
            );
        }
    };
    let states = agents
        .into_iter()
        .map(|e| e.agent.lifecycle)
        .filter(|l| *l != Lifecycle::Destroyed);
    let text = crate::metrics::metrics().render(states, state.core.registry.connected_count());
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}
