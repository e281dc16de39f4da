//! The task page (command, state, timings and output, live while it runs), the raw output, and how a
//! task reads in the agent page's list.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::pages::{Page, error_page};
use super::view::{self, Badge, PlainText};
use crate::api::http::HttpState;
use crate::api::http::auth::WebUser;
use crate::core::Core;
use crate::store::{StoredChunk, TaskRecord, TaskState};

#[derive(Debug, Clone)]
pub struct TaskRow {
    pub id: String,
    pub short_id: String,
    pub command: String,
    pub badge: Badge,
    pub exit: String,
    pub duration: String,
    pub started: String,
}

pub(super) fn command_text(t: &TaskRecord) -> String {
    let text = if !t.spec.shell.is_empty() {
        t.spec.shell.clone()
    } else if t.spec.argv.len() == 3 && t.spec.argv[1] == "-c" {
        t.spec.argv[2].clone()
    } else {
        t.spec.argv.join(" ")
    };
    view::plain_text(text.as_bytes())
}

/// (failed, outcome text, exit column).
pub(super) fn outcome(t: &TaskRecord) -> (bool, String, String) {
    use docker_agent_proto::v1::task_result::Outcome;
    match (&t.result, t.state) {
        (Some(r), _) => {
            let timed_out = if r.timed_out { " (timed out)" } else { "" };
            match &r.outcome {
                _ if r.oom_killed => (
                    true,
                    "killed: out of memory (the container's memory limit)".to_string(),
                    "oom".into(),
                ),
                Some(Outcome::ExitCode(c)) => (
                    *c != 0 || r.timed_out,
                    format!("exit code {c}{timed_out}"),
                    c.to_string(),
                ),
                Some(Outcome::Signal(s)) => (
                    true,
                    format!("killed by signal {s}{timed_out}"),
                    format!("sig {s}"),
                ),
                Some(Outcome::Error(e)) => (true, format!("could not start: {e}"), "—".into()),
                None => (true, "no outcome".into(), "—".into()),
            }
        }
        (None, TaskState::Lost | TaskState::Cancelled) => {
            (t.state == TaskState::Lost, t.error.clone(), "—".into())
        }
        _ => (false, String::new(), "—".into()),
    }
}

pub(super) fn task_duration(t: &TaskRecord) -> String {
    match (&t.result, t.started_at) {
        (Some(r), _) => view::duration_ms(r.duration_ms),
        (None, s) if s > 0 && !t.state.is_terminal() => {
            format!(
                "{} so far",
                view::duration_ms((crate::store::now_ms() - s).max(0) as u64)
            )
        }
        _ => "—".into(),
    }
}

#[derive(Debug, Clone)]
pub struct TaskView {
    pub id: String,
    pub short_id: String,
    pub agent: String,
    pub command: String,
    pub cwd: String,
    pub badge: Badge,
    pub outcome: String,
    pub created: String,
    pub started: String,
    pub finished: String,
    pub duration: String,
    pub output_size: String,
    pub ended: bool,
    pub shown_from: i64,
    pub shown_size: String,
    pub last_seq: i64,
}

#[derive(Debug, Clone)]
pub struct ChunkView {
    pub class: &'static str,
    pub text: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "task.html")]
pub struct TaskPage {
    page: Page,
    t: TaskView,
    chunks: Vec<ChunkView>,
}

/// How much output a task page shows; the raw output has all of it.
const SHOWN_OUTPUT: u64 = 1 << 20;

pub fn chunk_view(plain: &mut PlainText, c: &StoredChunk) -> ChunkView {
    ChunkView {
        class: if c.stream == docker_agent_proto::v1::Stream::Stderr {
            "err"
        } else {
            "out"
        },
        text: plain.text(c.stream, &c.data),
    }
}

/// A parser for output shown after chunk `seq` of task `id`: it has read that chunk, so a sequence
/// or character begun there is finished in the first chunk shown, not left as a fragment.
pub fn plain_text_after(core: &Core, id: &str, seq: i64) -> PlainText {
    let mut plain = PlainText::default();
    if seq > 0
        && let Some(chunk) = core
            .output_after(id, seq - 1)
            .ok()
            .and_then(|c| c.into_iter().next())
            .filter(|c| c.seq == seq)
    {
        plain.text(chunk.stream, &chunk.data);
    }
    plain
}

pub async fn task(
    user: WebUser,
    headers: HeaderMap,
    State(state): State<HttpState>,
    Path(id): Path<String>,
) -> Response {
    let page = Page::new(
        &headers,
        &user,
        format!("Task {}", id.chars().take(8).collect::<String>()),
        "fleet",
    );
    let t = match state.core.task(&id) {
        Ok(t) => t,
        Err(e) => {
            let (_, message) = e.public();
            return error_page(page, StatusCode::NOT_FOUND, message);
        }
    };
    let agent = state.core.agent_name(&t.agent_id).unwrap_or_default();
    let from = state.core.output_tail_seq(&t.id, SHOWN_OUTPUT).unwrap_or(0);
    let stored = state.core.output_after(&t.id, from).unwrap_or_default();
    let mut plain = plain_text_after(&state.core, &t.id, from);
    let shown: u64 = stored.iter().map(|c| c.data.len() as u64).sum();
    let last_seq = stored.last().map_or(from, |c| c.seq);
    let (failed, outcome_text, _) = outcome(&t);
    let view = TaskView {
        id: t.id.clone(),
        short_id: t.id.chars().take(8).collect(),
        agent,
        command: command_text(&t),
        cwd: if t.spec.cwd.is_empty() {
            "/workspace".into()
        } else {
            t.spec.cwd.clone()
        },
        badge: view::task_badge(t.state.as_str(), failed),
        outcome: outcome_text,
        created: view::clock(t.created_at),
        started: view::clock(t.started_at),
        finished: view::clock(t.finished_at),
        duration: task_duration(&t),
        output_size: format!(
            "{} stdout · {} stderr",
            view::bytes(t.stdout_len),
            view::bytes(t.stderr_len)
        ),
        ended: t.state.is_terminal(),
        shown_from: from,
        shown_size: view::bytes(shown),
        last_seq,
    };
    TaskPage {
        page,
        chunks: stored.iter().map(|c| chunk_view(&mut plain, c)).collect(),
        t: view,
    }
    .into_response()
}

/// A task's whole output as text (both streams, in arrival order), for download.
pub async fn raw_output(
    _user: WebUser,
    State(state): State<HttpState>,
    Path(id): Path<String>,
) -> Response {
    if let Err(e) = state.core.task(&id) {
        return (StatusCode::NOT_FOUND, e.public().1).into_response();
    }
    let (wtx, mut wrx) = tokio::sync::mpsc::channel(16);
    let core = state.core.clone();
    let watched = id.clone();
    tokio::spawn(async move { core.watch_task(&watched, false, wtx).await });
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(16);
    state.spawn_stream(async move {
        while let Some(crate::task::WatchItem::Output(chunk)) = wrx.recv().await {
            if tx.send(Ok(chunk.data)).await.is_err() {
                return;
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    (
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"task-{id}.txt\""),
            ),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}
