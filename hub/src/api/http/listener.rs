//! The operator listener's accept loop. One port serves two kinds of client:
//! - TLS (the first byte is a handshake): gRPC for the CLI and HTTP for the API and dashboard;
//! - plain HTTP, from loopback peers only: the dashboard and API in a local browser without trusting the
//!   hub's CA. gRPC is never served in plaintext, and nothing is served in plaintext to another host.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::api::limits::ConnLimits;
use crate::error::{HubError, Result};

/// A client must send its first byte and finish its TLS handshake within this, and an HTTP/1 client its
/// request headers: connections that never do are closed (slow-loris, half-open floods).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections from one remote address at most, so one client cannot take them all. Loopback peers (the local CLI
/// and browser, which may run hundreds of commands at once) count only in the total.
const MAX_PER_REMOTE_PEER: usize = 256;
/// TLS's first record type: handshake.
const TLS_HANDSHAKE: u8 = 0x16;

/// What a listener serves on each kind of connection.
#[derive(Clone)]
pub struct Routers {
    pub tls: Router,
    pub plain: Router,
}

/// The rustls config for the operator listener: the hub's server certificate, HTTP/2 and HTTP/1.1.
pub fn tls_config(cert_pem: &str, key_pem: &str) -> Result<Arc<rustls::ServerConfig>> {
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| HubError::Internal(format!("server certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| HubError::Internal(format!("server key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HubError::Internal(format!("TLS configuration: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| HubError::Internal(format!("TLS configuration: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves until `shutdown` turns true, then gives open connections `grace` to finish.
/// At most `max_connections` are open at once (the operator side's share of the open-file limit); more
/// are closed at once, so a flood cannot exhaust descriptors.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    routers: Routers,
    max_connections: usize,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    grace: Duration,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let limits = ConnLimits::new(max_connections, MAX_PER_REMOTE_PEER.min(max_connections));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                accept_failed(&limits, &e).await;
                continue;
            }
        };
        let ip = peer.ip().to_canonical();
        let slot = match limits.admit((!ip.is_loopback()).then_some(ip)) {
            Ok(slot) => slot,
            Err(refused) => {
                if let Some(count) = limits.note_refusal() {
                    tracing::warn!(%peer, count, "operator listener closed new connections: {refused}");
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = handle(
            stream,
            peer,
            acceptor.clone(),
            routers.clone(),
            graceful.watcher(),
        );
        tokio::spawn(async move {
            conn.await;
            drop(slot);
        });
    }
    drop(listener);
    close(graceful, grace).await;
}

/// Out of file descriptors and the like: logged (rate-limited), and the loop keeps serving the
/// connections it has.
pub(super) async fn accept_failed(limits: &ConnLimits, e: &std::io::Error) {
    if let Some(count) = limits.note_refusal() {
        tracing::warn!(error = %e, count, "operator listener failed to accept");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Gives open connections `grace` to finish, then closes them.
pub(super) async fn close(graceful: GracefulShutdown, grace: Duration) {
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("operator connections still open at shutdown were closed");
    }
}

async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    routers: Routers,
    watcher: Watcher,
) {
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return,
    }
    if first[0] == TLS_HANDSHAKE {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => serve_connection(TokioIo::new(tls), routers.tls, watcher).await,
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
        }
    } else if peer.ip().to_canonical().is_loopback() {
        serve_connection(TokioIo::new(stream), routers.plain, watcher).await;
    } else {
        tracing::warn!(%peer, "refused plaintext from another host; use https");
        let mut stream = stream;
        let body = "this listener takes plaintext from this host only; use https\n";
        let reply = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(reply.as_bytes()).await;
    }
}

pub(super) async fn serve_connection<I>(io: TokioIo<I>, router: Router, watcher: Watcher)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        // HTTP/2's default 64 KiB windows would cap exec output at one window per round trip.
        .initial_stream_window_size(2 << 20)
        .initial_connection_window_size(4 << 20);
    let service = TowerToHyperService::new(router);
    let conn = builder.serve_connection_with_upgrades(io, service);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(error = %e, "operator connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Runs `handle` for one connection from `peer` (whatever the socket says) and returns the reply.
    async fn exchange(peer: SocketAddr, request: &[u8]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let routers = Routers {
            tls: Router::new(),
            plain: Router::new().route("/healthz", axum::routing::get(|| async { "ok" })),
        };
        let dir = tempfile::tempdir().unwrap();
        let data_dir = crate::datadir::DataDir::open_for_hub(dir.path()).unwrap();
        let tls =
            crate::tls::load_or_create(&data_dir, "hub1", &["localhost".into()], &[]).unwrap();
        let config = tls_config(&tls.server_cert_pem, &tls.server_key_pem).unwrap();
        let acceptor = TlsAcceptor::from(config);
        let graceful = GracefulShutdown::new();
        tokio::spawn(handle(server, peer, acceptor, routers, graceful.watcher()));
        client.write_all(request).await.unwrap();
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut reply)).await;
        String::from_utf8_lossy(&reply).into_owned()
    }

    #[tokio::test]
    async fn plaintext_is_served_to_loopback_only() {
        let request = b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
        let local = exchange("127.0.0.1:40000".parse().unwrap(), request).await;
        assert!(
            local.starts_with("HTTP/1.1 200") && local.ends_with("ok"),
            "{local}"
        );
        let remote = exchange("10.1.2.3:40000".parse().unwrap(), request).await;
        assert!(
            remote.starts_with("HTTP/1.1 400") && remote.contains("use https"),
            "{remote}"
        );
    }
}
