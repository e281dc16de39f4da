//! `/api/v1/events`: lifecycle and connection changes as server-sent events, optionally for one agent.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;

use super::dto::LiveEvent;
use super::extract::ApiQuery;
use crate::api::http::HttpState;
use crate::api::http::auth::Admin;
use crate::api::http::error::ErrorBody;
use crate::core::bus::HubEvent;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only this agent's events.
    agent: Option<String>,
}

/// What an event says, and its SSE event name.
pub fn describe(event: &HubEvent) -> (&'static str, &str, LiveEvent) {
    match event {
        HubEvent::Lifecycle {
            agent_id,
            name,
            state,
            reason,
        } => (
            "lifecycle",
            name,
            LiveEvent {
                agent: name.clone(),
                agent_id: agent_id.clone(),
                state: state.as_str().to_string(),
                reason: reason.clone(),
            },
        ),
        HubEvent::Connection {
            agent_id,
            name,
            state,
        } => (
            "connection",
            name,
            LiveEvent {
                agent: name.clone(),
                agent_id: agent_id.clone(),
                state: state.as_str().to_string(),
                reason: String::new(),
            },
        ),
        HubEvent::Removed { agent_id, name } => (
            "removed",
            name,
            LiveEvent {
                agent: name.clone(),
                agent_id: agent_id.clone(),
                state: String::new(),
                reason: String::new(),
            },
        ),
    }
}

/// A server-sent event stream. It opens with `event: hello` (subscribed: nothing after it is missed),
/// then `lifecycle`, `connection` and `removed` events with a [`LiveEvent`] as data. `event: lagged` says
/// this client fell behind and missed some: re-read the agents.
#[utoipa::path(get, path = "/api/v1/events", params(EventsQuery),
    responses((status = 200, content_type = "text/event-stream", body = LiveEvent),
        (status = 401, body = ErrorBody)))]
pub async fn events(
    _: Admin,
    State(state): State<HttpState>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let mut rx = state.core.bus.subscribe_events();
    let stream = state.event_stream(move |tx| async move {
        if tx
            .send(SseEvent::default().event("hello").data("{}"))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let received = tokio::select! {
                received = rx.recv() => received,
                () = tx.closed() => return,
            };
            let event = match received {
                Ok(e) => e,
                Err(RecvError::Lagged(n)) => {
                    let _ = tx
                        .send(
                            SseEvent::default()
                                .event("lagged")
                                .data(format!("{{\"missed\":{n}}}")),
                        )
                        .await;
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            let (kind, name, body) = describe(&event);
            if q.agent.as_deref().is_some_and(|a| a != name) {
                continue;
            }
            let Ok(data) = serde_json::to_string(&body) else {
                continue;
            };
            if tx
                .send(SseEvent::default().event(kind).data(data))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
