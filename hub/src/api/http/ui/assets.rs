//! Static files: the dashboard's own CSS and scripts (compiled into the hub), and xterm.js made from
//! Debian's `libjs-xterm` and `node-xterm` (see `xterm_bundle.rs`), never vendored into this repository.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::http::HttpState;

const APP_CSS: &str = include_str!("../../../../../dashboard/static/app.css");
const APP_JS: &str = include_str!("../../../../../dashboard/static/app.js");
const TERMINAL_JS: &str = include_str!("../../../../../dashboard/static/terminal.js");

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
    let body = match file.as_str() {
        "xterm.js" => {
            let ui = state.ui.clone();
            match tokio::task::spawn_blocking(move || ui.xterm_bundle()).await {
                Ok(Ok(js)) => js.as_str().to_owned(),
                Ok(Err(e)) => return missing(&e),
                Err(e) => return missing(&e.to_string()),
            }
        }
        "xterm.css" => {
            match tokio::fs::read_to_string(state.ui.xterm_dir.join("xterm.css")).await {
                Ok(css) => css,
                Err(e) => return missing(&e.to_string()),
            }
        }
        _ => return (StatusCode::NOT_FOUND, "no such file").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type(&file)),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        body,
    )
        .into_response()
}

fn missing(error: &str) -> Response {
    tracing::warn!(
        error,
        "xterm.js is not available (install libjs-xterm and node-xterm)"
    );
    (
        StatusCode::NOT_FOUND,
        "xterm.js is not installed on the hub's host (Debian packages libjs-xterm and node-xterm)",
    )
        .into_response()
}
