//! `/api/v1/agents` and `/api/v1/profiles`: list, get, create, start, stop, restart, destroy.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;

use super::dto::{self, Agent, CreateAgent, Destroyed, Event, Profiles};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use crate::api::control::convert;
use crate::api::http::auth::Admin;
use crate::api::http::creates::Settled;
use crate::api::http::error::{ApiError, ErrorBody};
use crate::api::http::{HttpState, detached};
use crate::create::CreateRequest;
use crate::error::HubError;
use crate::store::AgentRecord;

type ApiResult<T> = Result<T, ApiError>;

/// The agent as the API shows it, with its task counts.
pub(super) async fn agent_json(state: &HttpState, record: AgentRecord) -> ApiResult<Agent> {
    let e = state.core.fleet_entry(record)?;
    let mut agent = convert::agent(e.agent, e.running_tasks, e.failed_tasks);
    agent.node = state
        .core
        .placements()
        .await
        .remove(&agent.id)
        .unwrap_or_default();
    Ok(Agent::from(&agent))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only agents in this lifecycle state.
    lifecycle: Option<String>,
    /// Only agents of this profile.
    profile: Option<String>,
    /// Include destroyed agents (kept so their tasks stay readable).
    #[serde(default)]
    all: bool,
}

/// Every agent, oldest first.
#[utoipa::path(get, path = "/api/v1/agents", params(ListQuery),
    responses((status = 200, body = [Agent]), (status = 401, body = ErrorBody)))]
pub async fn list(
    _: Admin,
    State(state): State<HttpState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Vec<Agent>>> {
    let mut placements = state.core.placements().await;
    let agents = state
        .core
        .fleet()?
        .into_iter()
        .filter(|e| q.all || e.agent.lifecycle != crate::lifecycle::Lifecycle::Destroyed)
        .filter(|e| {
            q.lifecycle
                .as_deref()
                .is_none_or(|l| e.agent.lifecycle.as_str() == l)
        })
        .filter(|e| q.profile.as_deref().is_none_or(|p| e.agent.profile == p))
        .map(|e| {
            let mut agent = convert::agent(e.agent, e.running_tasks, e.failed_tasks);
            agent.node = placements.remove(&agent.id).unwrap_or_default();
            Agent::from(&agent)
        })
        .collect();
    Ok(Json(agents))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CreateQuery {
    /// Wait until the agent is ready (default) and answer 201; with `false`, answer 202 as soon as
    /// the agent exists and follow it on `/api/v1/events`.
    wait: Option<bool>,
}

/// Creates an agent: builds its image if needed, starts its container and waits for it to register
/// and finish its profile's setup. A create that fails leaves nothing behind.
#[utoipa::path(post, path = "/api/v1/agents", params(CreateQuery), request_body = CreateAgent,
    responses((status = 201, body = Agent, description = "ready"),
        (status = 202, body = Agent, description = "created; still starting (wait=false)"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody, description = "unknown profile or snapshot"),
        (status = 409, body = ErrorBody, description = "the name is taken, or setup failed")))]
pub async fn create(
    _: Admin,
    State(state): State<HttpState>,
    ApiQuery(q): ApiQuery<CreateQuery>,
    ApiJson(body): ApiJson<CreateAgent>,
) -> ApiResult<(StatusCode, Json<Agent>)> {
    let name = body.name.clone();
    let req = CreateRequest {
        name: body.name,
        profile: body.profile.unwrap_or_default(),
        env: body.env,
        ready_timeout: body
            .ready_timeout_secs
            .filter(|s| *s > 0)
            .map(Duration::from_secs),
        from_snapshot: body.from_snapshot.filter(|s| !s.is_empty()),
        allow_docker_socket: body.allow_docker_socket,
        group: body.group.filter(|g| !g.is_empty()),
    };
    let mut done = state.creates.start(state.core.clone(), req);
    if q.wait.unwrap_or(true) {
        let record = (&mut done)
            .await
            .map_err(|_| HubError::Internal("the create task ended without an outcome".into()))??;
        return Ok((StatusCode::CREATED, Json(agent_json(&state, record).await?)));
    }
    match state.creates.settle(&state.core, &name, done).await {
        Settled::Failed(e) => Err(e.into()),
        Settled::Ready(record) => {
            Ok((StatusCode::CREATED, Json(agent_json(&state, record).await?)))
        }
        Settled::Exists(record) => Ok((
            StatusCode::ACCEPTED,
            Json(agent_json(&state, record).await?),
        )),
    }
}

/// One agent.
#[utoipa::path(get, path = "/api/v1/agents/{name}", params(("name" = String, Path)),
    responses((status = 200, body = Agent), (status = 404, body = ErrorBody)))]
pub async fn get_agent(
    _: Admin,
    State(state): State<HttpState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Agent>> {
    let record = state.core.agent(&name)?;
    Ok(Json(agent_json(&state, record).await?))
}

/// Starts a stopped agent (or resumes one whose setup failed) and waits until it is ready.
#[utoipa::path(post, path = "/api/v1/agents/{name}/start", params(("name" = String, Path)),
    responses((status = 200, body = Agent), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn start(
    _: Admin,
    State(state): State<HttpState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Agent>> {
    let core = state.core.clone();
    let record = detached(async move { core.start_agent(&name).await }).await?;
    Ok(Json(agent_json(&state, record).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StopQuery {
    /// Seconds between SIGTERM and SIGKILL (default: Docker's 10).
    timeout_secs: Option<u32>,
}

/// Stops an agent's container; its tasks end, its workspace stays.
#[utoipa::path(post, path = "/api/v1/agents/{name}/stop", params(("name" = String, Path), StopQuery),
    responses((status = 200, body = Agent), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn stop(
    _: Admin,
    State(state): State<HttpState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<StopQuery>,
) -> ApiResult<Json<Agent>> {
    let core = state.core.clone();
    let record = detached(async move { core.stop_agent(&name, q.timeout_secs).await }).await?;
    Ok(Json(agent_json(&state, record).await?))
}

/// Stops and starts an agent, waiting until it is ready again.
#[utoipa::path(post, path = "/api/v1/agents/{name}/restart", params(("name" = String, Path), StopQuery),
    responses((status = 200, body = Agent), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn restart(
    _: Admin,
    State(state): State<HttpState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<StopQuery>,
) -> ApiResult<Json<Agent>> {
    let core = state.core.clone();
    let record = detached(async move { core.restart_agent(&name, q.timeout_secs).await }).await?;
    Ok(Json(agent_json(&state, record).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DestroyQuery {
    /// Also remove the agent's /workspace volume.
    #[serde(default)]
    purge: bool,
}

/// Removes an agent's container (and with `purge` its workspace volume). Its tasks stay readable.
#[utoipa::path(delete, path = "/api/v1/agents/{name}", params(("name" = String, Path), DestroyQuery),
    responses((status = 200, body = Destroyed), (status = 404, body = ErrorBody)))]
pub async fn destroy(
    _: Admin,
    State(state): State<HttpState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<DestroyQuery>,
) -> ApiResult<Json<Destroyed>> {
    let core = state.core.clone();
    let n = name.clone();
    let (container_removed, volume_removed) =
        detached(async move { core.destroy_agent(&n, q.purge).await }).await?;
    Ok(Json(Destroyed {
        name,
        container_removed,
        volume_removed,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// At most this many (default 100, at most 10000), newest last.
    limit: Option<u32>,
}

/// An agent's recorded lifecycle and connection changes.
#[utoipa::path(get, path = "/api/v1/agents/{name}/events", params(("name" = String, Path), HistoryQuery),
    responses((status = 200, body = [Event]), (status = 404, body = ErrorBody)))]
pub async fn history(
    _: Admin,
    State(state): State<HttpState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> ApiResult<Json<Vec<Event>>> {
    let agent = state.core.agent(&name)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let events = state.core.events(Some(&agent.name), limit)?;
    Ok(Json(events.into_iter().map(Event::from).collect()))
}

/// The profiles agents can be created from (built-in and the hub's profile directory).
#[utoipa::path(get, path = "/api/v1/profiles",
    responses((status = 200, body = Profiles)))]
pub async fn profiles(_: Admin, State(state): State<HttpState>) -> Json<Profiles> {
    let catalog = state.core.profiles();
    Json(Profiles {
        profiles: catalog
            .iter()
            .map(|p| dto::Profile::from(&convert::profile(p)))
            .collect(),
        errors: catalog.errors.values().map(|e| e.to_string()).collect(),
    })
}
