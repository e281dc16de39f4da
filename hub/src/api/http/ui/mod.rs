//! The dashboard: server-rendered pages (askama templates in `dashboard/templates`), forms with CSRF
//! tokens, live updates over server-sent events, and the web terminal.

mod actions;
mod agent_page;
mod assets;
mod charts;
mod live;
mod pages;
mod task_page;
mod terminal;
pub(super) mod view;
mod xterm_bundle;

use std::path::PathBuf;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use super::HttpState;

#[derive(Debug)]
pub struct UiState {
    /// libjs-xterm: the stylesheet and the fit addon.
    pub xterm_dir: PathBuf,
    /// node-xterm: the modules.
    pub xterm_lib_dir: PathBuf,
    /// The browser bundle, once it has been made (failures are retried: the package may be installed
    /// while the hub runs).
    bundle: std::sync::Mutex<Option<std::sync::Arc<String>>>,
}

impl UiState {
    pub fn new(xterm_dir: PathBuf, xterm_lib_dir: PathBuf) -> Self {
        Self {
            xterm_dir,
            xterm_lib_dir,
            bundle: Default::default(),
        }
    }

    /// xterm.js as one browser script.
    pub fn xterm_bundle(&self) -> Result<std::sync::Arc<String>, String> {
        let mut cached = self.bundle.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(js) = cached.as_ref() {
            return Ok(js.clone());
        }
        let js = std::sync::Arc::new(xterm_bundle::build(
            &self.xterm_lib_dir,
            &self.xterm_dir.join("addons/fit/fit.js"),
        )?);
        *cached = Some(js.clone());
        Ok(js)
    }

    pub fn xterm_available(&self) -> bool {
        self.xterm_lib_dir.join("public/Terminal.js").is_file()
            && self.xterm_dir.join("xterm.css").is_file()
    }
}

pub fn router() -> Router<HttpState> {
    Router::new()
        .route("/login", get(actions::login_form).post(actions::login))
        .route("/logout", post(actions::logout))
        .route("/", get(pages::fleet))
        .route("/create", get(pages::create_form).post(actions::create))
        .route("/events", get(pages::events))
        .route("/agents/{name}", get(agent_page::agent))
        .route(
            "/agents/{name}/destroy",
            get(pages::destroy_confirm).post(actions::destroy),
        )
        .route("/agents/{name}/run", post(actions::run))
        .route("/agents/{name}/terminal", get(pages::terminal))
        .route("/agents/{name}/terminal/ws", get(terminal::ws))
        .route("/agents/{name}/{action}", post(actions::agent_action))
        .route("/tasks/{id}", get(task_page::task))
        .route("/tasks/{id}/raw", get(task_page::raw_output))
        .route("/tasks/{id}/cancel", post(actions::cancel_task))
        .route("/ui/live", get(live::page_live))
        .route("/ui/tasks/{id}/live", get(live::task_live))
        .route("/static/{file}", get(assets::embedded))
        .route("/static/xterm/{file}", get(assets::xterm))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found").into_response() })
}
