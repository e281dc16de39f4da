//! The dashboard's pages (GET) and their layout: fleet, create form, events, destroy confirmation and
//! the terminal page (the agent and task pages have their own files). Each page renders whole, or
//! with `X-Fragment: 1` only its `<main>`, which the live script fetches to refresh regions in place.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::view::{self, Badge};
use crate::agent::fleet::FleetEntry;
use crate::api::http::HttpState;
use crate::api::http::auth::WebUser;
use crate::lifecycle::{Connection, Lifecycle};
use crate::store::AgentRecord;

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

pub(super) fn uptime(a: &AgentRecord) -> String {
    match (&a.health, a.connection) {
        (Some(h), Connection::Connected) => view::duration_ms(h.uptime_secs * 1000),
        _ => "—".into(),
    }
}

pub(super) fn memory_text(a: &AgentRecord) -> (String, u32) {
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

const STATES: [Lifecycle; 7] = [
    Lifecycle::Creating,
    Lifecycle::Starting,
    Lifecycle::Ready,
    Lifecycle::StartError,
    Lifecycle::Stopping,
    Lifecycle::Stopped,
    Lifecycle::Rescheduled,
];

pub async fn fleet(
    user: WebUser,
    headers: HeaderMap,
    State(state): State<HttpState>,
    Query(q): Query<FleetQuery>,
) -> Response {
    let page = Page::new(&headers, &user, "Fleet", "fleet").live("/ui/live");
    let fleet = match state.core.fleet() {
        Ok(fleet) => fleet,
        Err(e) => {
            tracing::error!(error = %e, "dashboard: cannot read the fleet");
            return error_page(
                page,
                StatusCode::INTERNAL_SERVER_ERROR,
                "the hub could not read its store; see its log",
            );
        }
    };
    let live: Vec<&FleetEntry> = fleet
        .iter()
        .filter(|e| e.agent.lifecycle != Lifecycle::Destroyed)
        .collect();
    let want_state = q.state.filter(|s| !s.is_empty());
    let want_profile = q.profile.filter(|s| !s.is_empty());
    let mut profiles: Vec<String> = live.iter().map(|e| e.agent.profile.clone()).collect();
    profiles.sort();
    profiles.dedup();
    let rows: Vec<AgentRow> = live
        .iter()
        .filter(|e| {
            want_state
                .as_deref()
                .is_none_or(|s| e.agent.lifecycle.as_str() == s)
        })
        .filter(|e| want_profile.as_deref().is_none_or(|p| e.agent.profile == p))
        .map(|e| row(&e.agent, e.running_tasks, e.failed_tasks))
        .collect();
    FleetPage {
        page,
        shown: rows.len(),
        total: live.len(),
        ready: live
            .iter()
            .filter(|a| a.agent.lifecycle == Lifecycle::Ready)
            .count(),
        connected: live
            .iter()
            .filter(|a| a.agent.connection == Connection::Connected)
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
        Some(a) => format!("/ui/live?agent={}", crate::api::http::auth::urlencode(a)),
        None => "/ui/live".into(),
    };
    let page = Page::new(&headers, &user, "Events", "events").live(live);
    let events = match state.core.events(filter, 200) {
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
    /// The session to re-attach to; None: a new shell.
    session: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct TerminalQuery {
    session: Option<String>,
}

pub async fn terminal(
    user: WebUser,
    headers: HeaderMap,
    State(state): State<HttpState>,
    Path(name): Path<String>,
    Query(q): Query<TerminalQuery>,
) -> Response {
    let page = Page::new(&headers, &user, format!("{name} terminal"), "fleet");
    if let Err(e) = state.core.agent(&name) {
        return error_page(page, StatusCode::NOT_FOUND, e.public().1);
    }
    TerminalPage {
        page,
        name,
        xterm_missing: !state.ui.xterm_available(),
        // Task ids are hex; anything else is not a session and would only go into the page's URL.
        session: q
            .session
            .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit())),
    }
    .into_response()
}
