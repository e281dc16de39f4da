//! The web terminal's WebSocket: a login shell on a PTY in the agent, like `docker-agent shell`, or
//! (`attach=ID`) a running session with its last 64 KiB replayed, like `shell --attach`. Binary
//! frames carry keystrokes in and terminal output out; text frames carry control messages
//! (`{"resize":[cols,rows]}` in, `{"exit":"…"}` out). Closing the page detaches: the shell keeps
//! running until the hub's session timeout, listed on the agent's page to come back to.

use std::collections::HashMap;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use docker_agent_proto::v1 as pb;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;

use crate::api::http::HttpState;
use crate::api::http::auth::WebUser;
use crate::exec::{Exec, ExecEvent, ExecInput, ExecStart, Leave};

/// The login shell `docker-agent shell` opens: bash where the image has it, sh otherwise.
const LOGIN_SHELL: &str = "if [ -x /bin/bash ]; then exec /bin/bash -l; else exec /bin/sh -l; fi";
/// The largest message a browser may send (a big paste); keystrokes are bytes.
const MAX_MESSAGE: usize = 1 << 20;

#[derive(Debug, Deserialize)]
pub struct WsQuery {
    csrf: Option<String>,
    cols: Option<u32>,
    rows: Option<u32>,
    /// A running session of this agent to attach to, instead of a new shell.
    attach: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Control {
    resize: Option<(u32, u32)>,
}

/// Browsers send cookies with cross-site WebSocket handshakes under laxer cookie rules, and CSRF tokens
/// cannot travel in headers here: so the page's origin must be this host, and the token rides in the URL.
fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin = headers.get(header::ORIGIN).and_then(|h| h.to_str().ok());
    match (host, origin) {
        (Some(host), Some(origin)) => origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest.trim_end_matches('/') == host),
        _ => false,
    }
}

fn size(v: Option<u32>, default: u32) -> u32 {
    v.filter(|n| (1..=1000).contains(n)).unwrap_or(default)
}

pub async fn ws(
    user: WebUser,
    headers: HeaderMap,
    State(state): State<HttpState>,
    Path(name): Path<String>,
    Query(q): Query<WsQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if let Err(r) = user.check_csrf(q.csrf.as_deref()) {
        return r.into_response();
    }
    if !same_origin(&headers) {
        tracing::warn!(agent = %name, "refused a terminal from another origin");
        return (
            StatusCode::FORBIDDEN,
            "the terminal must be opened from this hub's dashboard",
        )
            .into_response();
    }
    let page_size = pb::PtySize {
        cols: size(q.cols, 80),
        rows: size(q.rows, 24),
    };
    let start = match q.attach.filter(|id| !id.is_empty()) {
        Some(task_id) => ExecStart::Attach {
            task_id,
            replay_bytes: 0,
        },
        None => ExecStart::Run(pb::TaskSpec {
            argv: vec!["/bin/sh".into(), "-c".into(), LOGIN_SHELL.into()],
            stdin: true,
            kind: "exec".into(),
            pty: Some(page_size),
            env: HashMap::new(),
            ..Default::default()
        }),
    };
    let attaching = matches!(start, ExecStart::Attach { .. });
    // Attached from here, so a handshake that never completes still leaves a session the idle
    // timeout ends, not a shell nobody can reach.
    let exec = match state.core.open_exec(&name, start).await {
        Ok(exec) => exec,
        Err(e @ crate::error::HubError::AgentNotFound(_)) => {
            return (StatusCode::NOT_FOUND, e.public().1).into_response();
        }
        Err(e @ crate::error::HubError::TaskNotFound(_)) => {
            return (StatusCode::NOT_FOUND, e.public().1).into_response();
        }
        Err(e) => return (StatusCode::CONFLICT, e.public().1).into_response(),
    };
    if attaching {
        // The session takes this page's size, as `shell --attach` gives it the terminal's.
        exec.inputs().send(ExecInput::Resize(page_size)).await;
    }
    tracing::info!(agent = %name, task = %exec.task.id, attaching, "web terminal opened");
    upgrade
        .max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| async move {
            let mut shutdown = state.shutdown.clone();
            tokio::select! {
                () = bridge(exec, socket) => {}
                _ = shutdown.wait_for(|stop| *stop) => {}
            }
        })
}

/// Terminal output to the page, keystrokes and resizes to the task; closing the page detaches.
async fn bridge(mut exec: Exec, socket: WebSocket) {
    let (mut sink, mut source) = socket.split();
    let task_id = exec.task.id.clone();
    let inputs = exec.inputs();
    let output = async {
        while let Some(Ok(event)) = exec.events.recv().await {
            match event {
                ExecEvent::Output(chunk) => {
                    if sink.send(Message::Binary(chunk.data)).await.is_err() {
                        return;
                    }
                }
                ExecEvent::Done(task) => {
                    let text = match task.result.and_then(|r| r.outcome) {
                        Some(pb::task_result::Outcome::ExitCode(c)) => format!("exit code {c}"),
                        Some(pb::task_result::Outcome::Signal(s)) => {
                            format!("killed by signal {s}")
                        }
                        Some(pb::task_result::Outcome::Error(e)) => e,
                        None => task.error,
                    };
                    let _ = sink
                        .send(Message::Text(
                            serde_json::json!({ "exit": text }).to_string().into(),
                        ))
                        .await;
                    let _ = sink.close().await;
                    return;
                }
            }
        }
    };
    let input = async {
        while let Some(Ok(message)) = source.next().await {
            let input = match message {
                Message::Binary(data) => ExecInput::Stdin(data),
                Message::Text(text) => match serde_json::from_str::<Control>(&text) {
                    Ok(Control {
                        resize: Some((cols, rows)),
                    }) => ExecInput::Resize(pb::PtySize {
                        cols: size(Some(cols), 80),
                        rows: size(Some(rows), 24),
                    }),
                    _ => continue,
                },
                Message::Close(_) => return,
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            if !inputs.send(input).await {
                return;
            }
        }
    };
    tokio::select! {
        () = output => {}
        () = input => {}
    }
    // The page went away (or the shell ended): a shell still running carries on, for the session
    // timeout, to be re-attached from the agent's page.
    exec.leave(Leave::Detach);
    tracing::info!(task = %task_id, "web terminal closed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn only_this_hosts_pages_may_open_a_terminal() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:7080"));
        assert!(!same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:7080"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:7080.evil.example"),
        );
        assert!(!same_origin(&h));
    }
}
