//! `/api/v1/.../tasks`: submit (the same JSON as `docker-agent task`), get, list, output, cancel.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use docker_agent_proto::v1::Stream;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::IntoParams;

use super::dto::Task;
use super::extract::{ApiPath, ApiQuery};
use crate::api::control::convert;
use crate::api::http::HttpState;
use crate::api::http::auth::Admin;
use crate::api::http::error::{ApiError, ErrorBody};
use crate::store::TaskRecord;
use crate::task::WatchItem;

type ApiResult<T> = Result<T, ApiError>;

pub(crate) fn task_json(state: &HttpState, task: TaskRecord) -> ApiResult<Task> {
    let agent = state.core.agent_name(&task.agent_id)?;
    Ok(Task::from(&convert::task(task, &agent)))
}

/// Queues a task on an agent; it runs once, as soon as the agent is connected. The body is a task as
/// `docker-agent task` takes it, e.g. `{"type":"exec","command":"make test","timeout_secs":600}`.
#[utoipa::path(post, path = "/api/v1/agents/{name}/tasks", params(("name" = String, Path)),
    request_body = crate::task::json::TaskRequest,
    responses((status = 201, body = Task), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn submit(
    _: Admin,
    State(state): State<HttpState>,
    ApiPath(name): ApiPath<String>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<(StatusCode, Json<Task>)> {
    let body = body?;
    let agent = state.core.agent(&name)?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("invalid task JSON: not UTF-8"))?;
    let spec = crate::task::json::parse(text).map_err(ApiError::bad_request)?;
    let task = state.core.submit_task(&agent, spec).await?;
    Ok((StatusCode::CREATED, Json(task_json(&state, task)?)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// At most this many, newest first (default 50, at most 10000).
    limit: Option<u32>,
}

/// An agent's tasks, newest first.
#[utoipa::path(get, path = "/api/v1/agents/{name}/tasks", params(("name" = String, Path), ListQuery),
    responses((status = 200, body = [Task]), (status = 404, body = ErrorBody)))]
pub async fn list_for_agent(
    _: Admin,
    State(state): State<HttpState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Vec<Task>>> {
    let agent = state.core.agent(&name)?;
    let limit = q.limit.unwrap_or(50).clamp(1, 10_000);
    let tasks = state
        .core
        .tasks(Some(&agent.id), limit)?
        .into_iter()
        .map(|t| Task::from(&convert::task(t, &agent.name)))
        .collect();
    Ok(Json(tasks))
}

/// One task: its state, and once it ended, its exit code or signal.
#[utoipa::path(get, path = "/api/v1/tasks/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Task), (status = 404, body = ErrorBody)))]
pub async fn get_task(
    _: Admin,
    State(state): State<HttpState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Task>> {
    let task = state.core.task(&id)?;
    Ok(Json(task_json(&state, task)?))
}

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    Stdout,
    Stderr,
    /// Both, in the order they were received.
    Both,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OutputQuery {
    /// Which stream (default: both).
    stream: Option<OutputStream>,
    /// Keep the response open and stream output until the task ends.
    #[serde(default)]
    follow: bool,
}

/// A task's output bytes exactly as produced (and with `follow`, live until it ends).
#[utoipa::path(get, path = "/api/v1/tasks/{id}/output", params(("id" = String, Path), OutputQuery),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, body = ErrorBody)))]
pub async fn output(
    _: Admin,
    State(state): State<HttpState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<OutputQuery>,
) -> ApiResult<Response> {
    state.core.task(&id)?;
    let wanted = q.stream.unwrap_or(OutputStream::Both);
    let (wtx, mut wrx) = mpsc::channel(16);
    let core = state.core.clone();
    let watched = id.clone();
    tokio::spawn(async move {
        if let Err(e) = core.watch_task(&watched, q.follow, wtx).await {
            tracing::error!(task = %watched, error = %e, "output watch failed");
        }
    });
    let (btx, brx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    state.spawn_stream(async move {
        loop {
            // A client that leaves while the task is quiet is noticed too, not only at the next send.
            let item = tokio::select! {
                item = wrx.recv() => item,
                () = btx.closed() => break,
            };
            let Some(WatchItem::Output(chunk)) = item else {
                break;
            };
            let keep = match wanted {
                OutputStream::Both => true,
                OutputStream::Stdout => chunk.stream == Stream::Stdout,
                OutputStream::Stderr => chunk.stream == Stream::Stderr,
            };
            if keep && btx.send(Ok(chunk.data)).await.is_err() {
                break;
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(ReceiverStream::new(brx)),
    )
        .into_response())
}

/// Cancels a task: a queued one never runs; a running one gets SIGTERM, then SIGKILL after its grace.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/cancel", params(("id" = String, Path)),
    responses((status = 200, body = Task), (status = 404, body = ErrorBody)))]
pub async fn cancel(
    _: Admin,
    State(state): State<HttpState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Task>> {
    let task = state.core.cancel_task(&id).await?;
    Ok(Json(task_json(&state, task)?))
}
