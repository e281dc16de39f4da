//! Static files: the dashboard's own CSS and scripts (compiled into the hub), and xterm.js read from
//! Debian's `libjs-xterm` (or `--xterm-dir`), never vendored into this repository.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::http::HttpState;

const APP_CSS: &str = include_str!("../../../../dashboard/static/app.css");
const APP_JS: &str = include_str!("../../../../dashboard/static/app.js");
const TERMINAL_JS: &str = include_str!("../../../../dashboard/static/terminal.js");

/// The only xterm files the pages load; nothing else under the directory is served.
const XTERM_FILES: [&str; 3] = ["xterm.js", "xterm.css", "addons/fit/fit.js"];

fn content_type(file: &str) -> &'static str {
    if file.ends_with(".css") {
        "text/css; charset=utf-8"
    } else {
        "text/javascript; charset=utf-8"
    }
}

pub async fn embedded(Path(file): Path<String>) -> Response {
    let body = match file.as_str() {
        "app.css" => APP_CSS,
        "app.js" => APP_JS,
        "terminal.js" => TERMINAL_JS,
        _ => return (StatusCode::NOT_FOUND, "no such file").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type(&file)),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub async fn xterm(State(state): State<HttpState>, Path(file): Path<String>) -> Response {
    if !XTERM_FILES.contains(&file.as_str()) {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    }
    let path = state.ui.xterm_dir.join(&file);
    match tokio::fs::read(&path).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, content_type(&file)),
                (header::CACHE_CONTROL, "max-age=3600"),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "xterm.js is not available (install libjs-xterm)");
            (
                StatusCode::NOT_FOUND,
                "xterm.js is not installed on the hub's host (Debian package libjs-xterm)",
            )
                .into_response()
        }
    }
}
