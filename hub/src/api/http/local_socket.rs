//! The operator API on a Unix socket in the data dir (`hub.sock`, mode 0600), for the CLI on this host.
//!
//! Why: the local CLI is the hub's busiest client (every `exec` streams its output through it), and on
//! loopback TLS only costs: an encryption in the hub and a decryption in the CLI for every byte, and a
//! handshake for every command. The socket serves the same routes as the TLS port, in plaintext, and the
//! admin token is still required. Who may connect is decided by the file system, like Docker's socket:
//! the socket is the hub user's alone, inside the 0700 data dir that also holds the admin token, so any
//! process that can open it could read the token anyway.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::UnixListener;

use crate::api::limits::ConnLimits;

/// The longest path a Unix socket address holds (`sun_path`, less its terminating NUL).
const MAX_PATH: usize = 107;

/// Binds the operator socket at `path`, mode 0600. `None`, logged, when it cannot: the CLI then uses
/// the TCP port.
pub fn bind(path: &Path) -> Option<(UnixListener, PathBuf)> {
    bind_socket(
        path,
        0o600,
        "operator socket",
        "the CLI will use the TCP port",
    )
}

/// Binds a Unix socket at `path` with `mode`, replacing a stale one (the caller holds the data dir's lock,
/// so no other hub is serving it). `None`, logged with `fallback`, when it cannot.
pub fn bind_socket(
    path: &Path,
    mode: u32,
    what: &str,
    fallback: &str,
) -> Option<(UnixListener, PathBuf)> {
    if path.as_os_str().len() > MAX_PATH {
        tracing::warn!(path = %path.display(), "the data dir's path is too long for the {what}; {fallback}");
        return None;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot replace the old {what}; {fallback}");
            return None;
        }
    }
    let bound = UnixListener::bind(path).and_then(|listener| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        Ok(listener)
    });
    match bound {
        Ok(listener) => Some((listener, path.to_path_buf())),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot bind the {what}; {fallback}");
            let _ = std::fs::remove_file(path);
            None
        }
    }
}

/// Serves `router` until `shutdown` turns true, then gives open connections `grace`, then removes the
/// socket. At most `max_connections` are open at once.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    router: Router,
    max_connections: usize,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let limits = ConnLimits::new(max_connections, max_connections);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                super::listener::accept_failed(&limits, &e).await;
                continue;
            }
        };
        let slot = match limits.admit(None) {
            Ok(slot) => slot,
            Err(refused) => {
                if let Some(count) = limits.note_refusal() {
                    tracing::warn!(count, "operator socket closed new connections: {refused}");
                }
                continue;
            }
        };
        let conn = super::listener::serve_connection(
            TokioIo::new(stream),
            router.clone(),
            graceful.watcher(),
        );
        tokio::spawn(async move {
            conn.await;
            drop(slot);
        });
    }
    drop(listener);
    // New commands find no socket and say the hub is not running, rather than hanging on a closed one.
    let _ = std::fs::remove_file(&path);
    super::listener::close(graceful, grace).await;
}
