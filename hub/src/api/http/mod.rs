//! The operator listener's HTTP side: the REST API under `/api/v1`, the dashboard, `/healthz`, `/readyz`
//! and `/metrics`, beside the CLI's gRPC on the same port (see `listener.rs` for how they share it).

pub mod api;
pub mod auth;
mod body_deadline;
pub mod creates;
pub mod error;
pub mod listener;
pub mod local_socket;
pub mod ops;
pub mod ui;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::core::Core;

/// What every handler gets.
#[derive(Clone, Debug)]
pub struct HttpState {
    pub core: Arc<Core>,
    pub auth: Arc<auth::Auth>,
    pub creates: Arc<creates::Creates>,
    pub ui: Arc<ui::UiState>,
    /// Turns true when the hub shuts down.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl HttpState {
    /// Spawns the work that feeds a long-lived response (event streams, followed output, terminals).
    /// It stops when the hub shuts down, so an open browser never holds the shutdown up.
    pub fn spawn_stream<F>(&self, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = work => {}
                _ = shutdown.wait_for(|stop| *stop) => {}
            }
        });
    }

    /// A server-sent event stream fed by `producer` (see [`HttpState::spawn_stream`]); the producer
    /// also stops when the client goes away (its sender fails).
    pub fn event_stream<F, Fut>(
        &self,
        producer: F,
    ) -> impl futures::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>
    + use<F, Fut>
    where
        F: FnOnce(tokio::sync::mpsc::Sender<axum::response::sse::Event>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        self.spawn_stream(producer(tx));
        futures::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok)
    }
}

/// Runs a lifecycle operation on its own task, so a client that leaves (a closed tab, a cancelled
/// request) never cuts a transition short. A panic comes back as an internal error.
pub async fn detached<T, F>(work: F) -> crate::error::Result<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = crate::error::Result<T>> + Send + 'static,
{
    tokio::spawn(work).await.unwrap_or_else(|e| {
        Err(crate::error::HubError::Internal(format!(
            "a hub task failed: {e}"
        )))
    })
}

/// Every HTTP route. gRPC is added by the caller for TLS connections only.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .merge(ops::router())
        .nest("/api/v1", api::router())
        .merge(ui::router())
        .with_state(state)
        .layer(axum::middleware::from_fn(body_deadline::body_deadline))
        .layer(axum::middleware::map_response(security_headers))
}

/// Headers that keep the dashboard from being framed, sniffed or made to load foreign scripts. The CSP
/// allows inline styles only for the SVG charts' attributes; scripts come from this origin alone.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    // Pages carry CSRF tokens and task output: never cached. A page and its live fragment share a URL.
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    h.insert(header::VARY, HeaderValue::from_static("X-Fragment"));
    response
}

/// For plaintext (loopback) connections: only requests addressed to this host by a loopback name.
/// A web page whose DNS name is re-pointed at 127.0.0.1 (DNS rebinding) is refused with 421.
pub async fn loopback_host_only(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    if host.is_some_and(is_loopback_host) {
        return next.run(request).await;
    }
    (
        axum::http::StatusCode::MISDIRECTED_REQUEST,
        "address this hub as 127.0.0.1, [::1] or localhost (or use https)",
    )
        .into_response()
}

fn is_loopback_host(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port))
            if !name.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && !name.ends_with(':') =>
        {
            name
        }
        _ => host,
    };
    matches!(
        name.to_ascii_lowercase().as_str(),
        "localhost" | "127.0.0.1" | "[::1]"
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_names_only() {
        for ok in [
            "localhost",
            "localhost:7080",
            "127.0.0.1:7080",
            "[::1]:7080",
            "LOCALHOST:1",
        ] {
            assert!(super::is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:7080",
            "127.0.0.2:7080",
            "localhost.evil.example",
            "::1",
        ] {
            assert!(!super::is_loopback_host(bad), "{bad}");
        }
    }
}
