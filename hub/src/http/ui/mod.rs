//! The dashboard: server-rendered pages (askama templates in `dashboard/templates`), forms with CSRF
//! tokens, live updates over server-sent events, and the web terminal.

mod actions;
mod assets;
mod charts;
mod live;
mod pages;
mod terminal;
mod view;

use std::path::PathBuf;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use super::HttpState;

#[derive(Debug)]
pub struct UiState {
    /// Where xterm.js is installed.
    pub xterm_dir: PathBuf,
}

impl UiState {
    pub fn new(xterm_dir: PathBuf) -> Self {
        Self { xterm_dir }
    }
}

pub fn router() -> Router<HttpState> {
    Router::new()
        .route("/login", get(actions::login_form).post(actions::login))
        .route("/logout", post(actions::logout))
        .route("/", get(pages::fleet))
        .route("/create", get(pages::create_form).post(actions::create))
        .route("/events", get(pages::events))
        .route("/agents/{name}", get(pages::agent))
        .route(
            "/agents/{name}/destroy",
            get(pages::destroy_confirm).post(actions::destroy),
        )
        .route("/agents/{name}/run", post(actions::run))
        .route("/agents/{name}/terminal", get(pages::terminal))
        .route("/agents/{name}/terminal/ws", get(terminal::ws))
        .route("/agents/{name}/{action}", post(actions::agent_action))
        .route("/tasks/{id}", get(pages::task))
        .route("/tasks/{id}/raw", get(pages::raw_output))
        .route("/tasks/{id}/cancel", post(actions::cancel_task))
        .route("/ui/live", get(live::page_live))
        .route("/ui/tasks/{id}/live", get(live::task_live))
        .route("/static/{file}", get(assets::embedded))
        .route("/static/xterm/{*path}", get(assets::xterm))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found").into_response() })
}
