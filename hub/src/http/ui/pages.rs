//! The dashboard's pages (GET): fleet, agent, task, create form, events, destroy confirmation and the
//! terminal page. Each renders whole, or with `X-Fragment: 1` only its `<main>`, which the live script
//! fetches to refresh the page's regions in place.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::charts;
use super::view::{self, Badge};
use crate::http::HttpState;
use crate::http::auth::WebUser;
use crate::lifecycle::{Connection, Lifecycle};
use crate::store::{AgentRecord, StoredChunk, TaskRecord, TaskState};

/// What the layout needs on every page.
#[derive(Debug, Clone)]
pub struct Page {
    pub title: String,
    pub nav: &'static str,
    pub csrf: String,
    /// Only `<main>`'s content (a live refresh).
    pub fragment: bool,
    /// The page's live stream (server-sent events), empty for none.
    pub live: String,
}

impl Page {
    pub fn new(
        headers: &HeaderMap,
        user: &WebUser,
        title: impl Into<String>,
        nav: &'static str,
    ) -> Self {
        Self {
            title: title.into(),
            nav,
            csrf: user.csrf.clone(),
            fragment: headers.get("x-fragment").is_some(),
            live: String::new(),
        }
    }

    pub fn live(mut self, url: impl Into<String>) -> Self {
        self.live = url.into();
        self
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub page: Page,
    pub heading: String,
    pub message: String,
}

/// A page saying what went wrong, with its status.
pub fn error_page(page: Page, status: StatusCode, message: impl Into<String>) -> Response {
    let heading = status.canonical_reason().unwrap_or("Error").to_string();
    (
        status,
        ErrorPage {
            page,
            heading,
            message: message.into(),
        },
    )
        .into_response()
}

#[derive(Debug, Clone)]
pub struct AgentRow {
    pub name: String,
    pub lifecycle: Badge,
    pub connection: Badge,
    pub reason: String,
    pub profile: String,
    pub uptime: String,
    pub cpu: String,
    pub memory: String,
    pub memory_pct: u32,
    pub heartbeat: String,
    pub running: u32,
    pub failed: u32,
}

fn uptime(a: &AgentRecord) -> String {
    match (&a.health, a.connection) {
        (Some(h), Connection::Connected) => view::duration_ms(h.uptime_secs * 1000),
        _ => "—".into(),
    }
}

fn memory_text(a: &AgentRecord) -> (String, u32) {
    let Some(h) = a
        .health
        .as_ref()
        .filter(|_| a.lifecycle == Lifecycle::Ready)
    else {
        return ("—".into(), 0);
    };
    let limit = if h.memory_limit_bytes > 0 {
        h.memory_limit_bytes
    } else {
        a.memory_bytes
    };
    if limit > 0 {
        let pct = (h.memory_used_bytes as f64 / limit as f64 * 100.0).clamp(0.0, 100.0);
        (
            format!(
                "{} / {}",
                view::bytes(h.memory_used_bytes),
                view::bytes(limit)
            ),
            pct.round() as u32,
        )
    } else {
        (view::bytes(h.memory_used_bytes), 0)
    }
}

fn row(a: &AgentRecord, running: u32, failed: u32) -> AgentRow {
    let (memory, memory_pct) = memory_text(a);
    AgentRow {
        name: a.name.clone(),
        lifecycle: view::lifecycle_badge(a.lifecycle),
        connection: view::connection_badge(a.connection),
        reason: if a.lifecycle == Lifecycle::Ready {
            String::new()
        } else {
            a.lifecycle_reason.clone()
        },
        profile: a.profile.clone(),
        uptime: uptime(a),
        cpu: match (&a.health, a.lifecycle) {
            (Some(h), Lifecycle::Ready) => format!("{:.1}%", h.cpu_percent),
            _ => "—".into(),
        },
        memory,
        memory_pct,
        heartbeat: view::ago(a.last_heartbeat),
        running,
        failed,
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "fleet.html")]
pub struct FleetPage {
    page: Page,
    rows: Vec<AgentRow>,
    states: Vec<(String, bool)>,
    profiles: Vec<(String, bool)>,
    shown: usize,
    total: usize,
    ready: usize,
    connected: usize,
    filtered: bool,
}

#[derive(Debug, Deserialize)]
pub struct FleetQuery {
    state: Option<String>,
    profile: Option<String>,
}

const STATES: [Lifecycle; 6] = [
    Lifecycle::Creating,
    Lifecycle::Starting,
    Lifecycle::Ready,
    Lifecycle::StartError,
    Lifecycle::Stopping,
    Lifecycle::Stopped,
];

pub async fn fleet(
    user: WebUser,
    headers: HeaderMap,
    State(state): State<HttpState>,
    Query(q): Query<FleetQuery>,
) -> Response {
    let page = Page::new(&headers, &user, "Fleet", "fleet").live("/ui/live");
    let loaded = (|| {
        Ok::<_, crate::store::StoreError>((
            state.core.store.list_agents()?,
            state.core.store.open_task_counts()?,
            state.core.store.failed_task_counts()?,
        ))
    })();
    let (agents, running, failed) = match loaded {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "dashboard: cannot read the fleet");
            return error_page(
                page,
                StatusCode::INTERNAL_SERVER_ERROR,
                "the hub could not read its store; see its log",
            );
        }
    };
    let live: Vec<&AgentRecord> = agents
        .iter()
        .filter(|a| a.lifecycle != Lifecycle::Destroyed)
        .collect();
    let want_state = q.state.filter(|s| !s.is_empty());
    let want_profile = q.profile.filter(|s| !s.is_empty());
    let mut profiles: Vec<String> = live.iter().map(|a| a.profile.clone()).collect();
    profiles.sort();
    profiles.dedup();
    let rows: Vec<AgentRow> = live
        .iter()
        .filter(|a| {
            want_state
                .as_deref()
                .is_none_or(|s| a.lifecycle.as_str() == s)
        })
        .filter(|a| want_profile.as_deref().is_none_or(|p| a.profile == p))
        .map(|a| {
            row(
                a,
                running.get(&a.id).copied().unwrap_or(0),
                failed.get(&a.id).copied().unwrap_or(0),
            )
        })
        .collect();
    FleetPage {
        page,
        shown: rows.len(),
        total: live.len(),
        ready: live
            .iter()
            .filter(|a| a.lifecycle == Lifecycle::Ready)
            .count(),
        connected: live
            .iter()
            .filter(|a| a.connection == Connection::Connected)
            .count(),
        filtered: want_state.is_some() || want_profile.is_some(),
        states: STATES
            .iter()
            .map(|s| {
                (
                    s.as_str().to_string(),
                    want_state.as_deref() == Some(s.as_str()),
                )
            })
            .collect(),
        profiles: profiles
            .into_iter()
            .map(|p| {
                let selected = want_profile.as_deref() == Some(p.as_str());
                (p, selected)
            })
            .collect(),
        rows,
    }
    .into_response()
}

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

fn command_text(t: &TaskRecord) -> String {
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
fn outcome(t: &TaskRecord) -> (bool, String, String) {
    use docker_agent_proto::v1::task_result::Outcome;
    match (&t.result, t.state) {
        (Some(r), _) => {
            let timed_out = if r.timed_out { " (timed out)" } else { "" };
            match &r.outcome {
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

fn task_duration(t: &TaskRecord) -> String {
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
        crate::http::auth::urlencode(&name)
    ));
    let record = match state.core.store.agent_by_name(&name) {
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
    let tasks = state
        .core
        .store
        .list_tasks(Some(&record.id), 20)
        .unwrap_or_default();
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
    AgentPage {
        page,
        cpu_chart: charts::cpu(&samples, record.cpus),
        memory_chart: charts::memory(&samples, record.memory_bytes),
        a: agent_view(&record),
        notice: q.notice,
        tasks: tasks.iter().map(task_row).collect(),
        logs,
        log_lines: LOG_LINES,
    }
    .into_response()
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

pub fn chunk_view(c: &StoredChunk) -> ChunkView {
    ChunkView {
        class: if c.stream == docker_agent_proto::v1::Stream::Stderr {
            "err"
        } else {
            "out"
        },
        text: view::plain_text(&c.data),
    }
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
    let agent = state
        .core
        .store
        .agent_by_id(&t.agent_id)
        .ok()
        .flatten()
        .map(|a| a.name)
        .unwrap_or_default();
    let from = state
        .core
        .store
        .output_tail_seq(&t.id, SHOWN_OUTPUT)
        .unwrap_or(0);
    let stored = state
        .core
        .store
        .output_after(&t.id, from, 100_000)
        .unwrap_or_default();
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
        chunks: stored.iter().map(chunk_view).collect(),
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
        while let Some(crate::tasks::WatchItem::Output(chunk)) = wrx.recv().await {
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

#[derive(Debug, Clone)]
pub struct ProfileOption {
    pub name: String,
    pub description: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "create.html")]
pub struct CreatePage {
    pub page: Page,
    pub error: Option<String>,
    pub name: String,
    pub profile: String,
    pub env: String,
    pub profiles: Vec<ProfileOption>,
    pub profile_errors: Vec<String>,
}

impl CreatePage {
    pub fn new(page: Page, state: &HttpState) -> Self {
        let catalog = state.core.profiles();
        Self {
            page,
            error: None,
            name: String::new(),
            profile: crate::profile::DEFAULT_PROFILE.to_string(),
            env: String::new(),
            profiles: catalog
                .iter()
                .map(|p| ProfileOption {
                    name: p.name.clone(),
                    description: p.description.clone(),
                })
                .collect(),
            profile_errors: catalog.errors.values().map(|e| e.to_string()).collect(),
        }
    }
}

pub async fn create_form(
    user: WebUser,
    headers: HeaderMap,
    State(state): State<HttpState>,
) -> Response {
    let page = Page::new(&headers, &user, "New agent", "create");
    CreatePage::new(page, &state).into_response()
}

#[derive(Debug, Clone)]
pub struct EventRow {
    pub at: String,
    pub agent: String,
    pub kind: String,
    pub detail: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "events.html")]
pub struct EventsPage {
    page: Page,
    agent: String,
    events: Vec<EventRow>,
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    agent: Option<String>,
}

pub async fn events(
    user: WebUser,
    headers: HeaderMap,
    State(state): State<HttpState>,
    Query(q): Query<EventsQuery>,
) -> Response {
    let agent = q.agent.unwrap_or_default();
    let filter = (!agent.is_empty()).then_some(agent.as_str());
    let live = match filter {
        Some(a) => format!("/ui/live?agent={}", crate::http::auth::urlencode(a)),
        None => "/ui/live".into(),
    };
    let page = Page::new(&headers, &user, "Events", "events").live(live);
    let events = match state.core.store.recent_events(filter, 200) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "dashboard: cannot read events");
            return error_page(
                page,
                StatusCode::INTERNAL_SERVER_ERROR,
                "the hub could not read its store; see its log",
            );
        }
    };
    EventsPage {
        page,
        agent,
        events: events
            .into_iter()
            .rev()
            .map(|e| EventRow {
                at: view::clock(e.at),
                agent: e.agent,
                kind: e.kind,
                detail: e.detail,
            })
            .collect(),
    }
    .into_response()
}

#[derive(Template, WebTemplate)]
#[template(path = "confirm.html")]
pub struct ConfirmPage {
    page: Page,
    name: String,
}

pub async fn destroy_confirm(
    user: WebUser,
    headers: HeaderMap,
    State(state): State<HttpState>,
    Path(name): Path<String>,
) -> Response {
    let page = Page::new(&headers, &user, format!("Destroy {name}"), "fleet");
    if let Err(e) = state.core.agent(&name) {
        return error_page(page, StatusCode::NOT_FOUND, e.public().1);
    }
    ConfirmPage { page, name }.into_response()
}

#[derive(Template, WebTemplate)]
#[template(path = "terminal.html")]
pub struct TerminalPage {
    page: Page,
    name: String,
    xterm_missing: bool,
}

pub async fn terminal(
    user: WebUser,
    headers: HeaderMap,
    State(state): State<HttpState>,
    Path(name): Path<String>,
) -> Response {
    let page = Page::new(&headers, &user, format!("{name} terminal"), "fleet");
    if let Err(e) = state.core.agent(&name) {
        return error_page(page, StatusCode::NOT_FOUND, e.public().1);
    }
    TerminalPage {
        page,
        name,
        xterm_missing: !state.ui.xterm_available(),
    }
    .into_response()
}
