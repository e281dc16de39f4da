//! The dashboard's server-sent events. `/ui/live` says "this page changed" (an agent's state, a
//! heartbeat, a create's progress), coalesced so a busy fleet costs a browser at most a refresh a
//! second; the page then re-fetches its regions. `/ui/tasks/{id}/live` streams a task's output as text.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use crate::api::http::HttpState;
use crate::api::http::auth::WebUser;
use crate::core::bus::HubEvent;
use crate::task::WatchItem;

/// Heartbeats refresh a page at most this often.
const HEARTBEAT_REFRESH: Duration = Duration::from_secs(5);
/// After a change is sent, further changes wait this long and go out as one.
const COALESCE: Duration = Duration::from_millis(500);

#[derive(Debug, Deserialize)]
pub struct LiveQuery {
    agent: Option<String>,
}

fn event_agent(e: &HubEvent) -> &str {
    match e {
        HubEvent::Lifecycle { name, .. }
        | HubEvent::Connection { name, .. }
        | HubEvent::Removed { name, .. } => name,
    }
}

pub async fn page_live(
    _user: WebUser,
    State(state): State<HttpState>,
    Query(q): Query<LiveQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut events = state.core.bus.subscribe_events();
    let mut heartbeats = state.core.bus.subscribe_heartbeats();
    let mut creates = state.creates.subscribe();
    let stream = state.event_stream(move |tx| async move {
        let mut tick = tokio::time::interval(HEARTBEAT_REFRESH);
        let mut heartbeat_seen = false;
        if tx
            .send(Event::default().event("hello").data("{}"))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let send = tokio::select! {
                e = events.recv() => match e {
                    Ok(e) => q.agent.as_deref().is_none_or(|a| a == event_agent(&e)),
                    Err(RecvError::Lagged(_)) => true,
                    Err(RecvError::Closed) => return,
                },
                r = heartbeats.changed() => {
                    if r.is_err() { return; }
                    heartbeat_seen = true;
                    false
                }
                r = creates.changed() => {
                    if r.is_err() { return; }
                    true
                }
                _ = tick.tick() => std::mem::take(&mut heartbeat_seen),
                () = tx.closed() => return,
            };
            if send {
                if tx
                    .send(Event::default().event("change").data("{}"))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(COALESCE).await;
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[derive(Debug, Deserialize)]
pub struct TaskLiveQuery {
    /// The page already shows the output up to here (a `seq`).
    after: Option<i64>,
}

pub async fn task_live(
    _user: WebUser,
    State(state): State<HttpState>,
    Path(id): Path<String>,
    Query(q): Query<TaskLiveQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let core = state.core.clone();
    let stream = state.event_stream(move |tx| async move {
        let (wtx, mut wrx) = tokio::sync::mpsc::channel(16);
        let watched = id.clone();
        let after = q.after.unwrap_or(0).max(0);
        let mut plain = super::task_page::plain_text_after(&core, &id, after);
        tokio::spawn(async move { core.watch_task_after(&watched, after, true, wtx).await });
        loop {
            let item = tokio::select! {
                item = wrx.recv() => item,
                () = tx.closed() => return,
            };
            let Some(item) = item else { return };
            let event = match item {
                WatchItem::Output(chunk) => {
                    let view = super::task_page::chunk_view(&mut plain, &chunk);
                    let data = serde_json::json!({ "class": view.class, "text": view.text });
                    Event::default().event("output").data(data.to_string())
                }
                WatchItem::Done(_) => Event::default().event("end").data("{}"),
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
