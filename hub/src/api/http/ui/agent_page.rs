//! The agent page: state, health charts, recent tasks, the container log tail and the actions; or,
//! while a create is still making it, that create's progress (or why it failed).

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::charts;
use super::pages::{Page, error_page, memory_text, uptime};
use super::task_page::{TaskRow, command_text, outcome, task_duration};
use super::view::{self, Badge};
use crate::api::http::HttpState;
use crate::api::http::auth::WebUser;
use crate::lifecycle::{Connection, Lifecycle};
use crate::store::{AgentRecord, TaskRecord};

#[derive(Debug, Clone)]
pub struct AgentView {
    pub name: String,
    pub lifecycle: Badge,
    pub connection: Badge,
    pub reason: String,
    pub profile: String,
    pub image: String,
    pub container: String,
    pub created: String,
    pub uptime: String,
    pub heartbeat: String,
    pub limits: String,
    pub cpu: String,
    pub memory: String,
    pub disk: String,
    pub processes: String,
    pub agent_version: String,
    pub can_start: bool,
    pub can_stop: bool,
    pub connected: bool,
}

fn agent_view(a: &AgentRecord) -> AgentView {
    let health = a
        .health
        .as_ref()
        .filter(|_| a.lifecycle == Lifecycle::Ready);
    let limit = |v: String, set: bool| if set { v } else { "no limit".to_string() };
    AgentView {
        name: a.name.clone(),
        lifecycle: view::lifecycle_badge(a.lifecycle),
        connection: view::connection_badge(a.connection),
        reason: a.lifecycle_reason.clone(),
        profile: a.profile.clone(),
        image: a.image.clone(),
        container: a
            .container_id
            .as_deref()
            .map(|id| id.chars().take(12).collect())
            .unwrap_or_else(|| "—".into()),
        created: view::clock(a.created_at),
        uptime: uptime(a),
        heartbeat: view::ago(a.last_heartbeat),
        limits: format!(
            "{} CPU · {} memory · {} processes",
            limit(format!("{}", a.cpus), a.cpus > 0.0),
            limit(view::bytes(a.memory_bytes), a.memory_bytes > 0),
            limit(a.pids.to_string(), a.pids > 0),
        ),
        cpu: health.map_or("—".into(), |h| {
            format!("{:.1}% · load {:.2}", h.cpu_percent, h.load1)
        }),
        memory: memory_text(a).0,
        disk: health.map_or("—".into(), |h| {
            format!(
                "{} used of {} (/workspace)",
                view::bytes(h.disk_used_bytes),
                view::bytes(h.disk_total_bytes)
            )
        }),
        processes: health.map_or("—".into(), |h| h.process_count.to_string()),
        agent_version: if a.agent_version.is_empty() {
            "—".into()
        } else {
            a.agent_version.clone()
        },
        can_start: matches!(a.lifecycle, Lifecycle::Stopped | Lifecycle::StartError),
        can_stop: matches!(
            a.lifecycle,
            Lifecycle::Ready | Lifecycle::Starting | Lifecycle::StartError
        ),
        connected: a.connection == Connection::Connected,
    }
}

fn task_row(t: &TaskRecord) -> TaskRow {
    let (failed, _, exit) = outcome(t);
    TaskRow {
        id: t.id.clone(),
        short_id: t.id.chars().take(8).collect(),
        command: command_text(t),
        badge: view::task_badge(t.state.as_str(), failed),
        exit,
        duration: task_duration(t),
        started: if t.started_at > 0 {
            view::ago(t.started_at)
        } else {
            "—".into()
        },
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "agent.html")]
pub struct AgentPage {
    page: Page,
    a: AgentView,
    notice: Option<String>,
    cpu_chart: String,
    memory_chart: String,
    tasks: Vec<TaskRow>,
    /// Its running terminal sessions, to re-attach to.
    sessions: Vec<TaskRow>,
    logs: String,
    log_lines: usize,
}

#[derive(Template, WebTemplate)]
#[template(path = "pending.html")]
pub struct PendingPage {
    page: Page,
    name: String,
    message: String,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct NoticeQuery {
    notice: Option<String>,
}

const LOG_LINES: usize = 100;

pub async fn agent(
    user: WebUser,
    headers: HeaderMap,
    State(state): State<HttpState>,
    Path(name): Path<String>,
    Query(q): Query<NoticeQuery>,
) -> Response {
    let page = Page::new(&headers, &user, name.clone(), "fleet").live(format!(
        "/ui/live?agent={}",
        crate::api::http::auth::urlencode(&name)
    ));
    let record = match state.core.find_agent(&name) {
        Ok(Some(a)) if a.lifecycle != Lifecycle::Destroyed => a,
        Ok(_) => {
            return match state.creates.status(&name) {
                Some(status) => PendingPage {
                    page,
                    name,
                    message: status.message,
                    error: status.error,
                }
                .into_response(),
                None => error_page(
                    page,
                    StatusCode::NOT_FOUND,
                    format!("agent {name:?} not found"),
                ),
            };
        }
        Err(e) => {
            tracing::error!(error = %e, "dashboard: cannot read an agent");
            return error_page(
                page,
                StatusCode::INTERNAL_SERVER_ERROR,
                "the hub could not read its store; see its log",
            );
        }
    };
    let tasks = state.core.tasks(Some(&record.id), 20).unwrap_or_default();
    let sessions = state
        .core
        .terminal_sessions(&record.id)
        .unwrap_or_default()
        .iter()
        .map(task_row)
        .collect();
    let samples = state.core.health.samples(&record.id);
    let container = record
        .container_id
        .clone()
        .unwrap_or_else(|| record.container_name.clone());
    let logs = match tokio::time::timeout(
        std::time::Duration::from_secs(2),
        state.core.driver.logs_tail(&container, LOG_LINES),
    )
    .await
    {
        Ok(Ok(lines)) => view::plain_text(lines.join("\n").as_bytes()),
        Ok(Err(e)) => format!("(no log: {e})"),
        Err(_) => "(the engine did not answer in time)".into(),
    };
    let mut a = agent_view(&record);
    // While a create started here is still at work (image build, container), its latest line says
    // more than the bare state.
    if matches!(record.lifecycle, Lifecycle::Creating | Lifecycle::Starting)
        && a.reason.is_empty()
        && let Some(status) = state.creates.status(&name)
    {
        a.reason = status.message;
    }
    AgentPage {
        page,
        cpu_chart: charts::cpu(&samples, record.cpus),
        memory_chart: charts::memory(&samples, record.memory_bytes),
        a,
        // Only our own words: a link must not be able to put text of its choosing on this page.
        notice: q
            .notice
            .filter(|n| matches!(n.as_str(), "started" | "stopped" | "restarted"))
            .map(|n| format!("{} {n}", record.name)),
        tasks: tasks.iter().map(task_row).collect(),
        sessions,
        logs,
        log_lines: LOG_LINES,
    }
    .into_response()
}
