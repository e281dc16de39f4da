//! The agent listener's accept loop: connection caps (in all and per peer address) and a deadline for
//! the TLS handshake, before tonic sees a connection. A container flooding the port with connections
//! that never handshake, or never say hello, cannot exhaust the hub's descriptors or starve other agents.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

use crate::conn_limit::{ConnLimits, ConnPermit};

/// A client must finish its TLS handshake within this; one that opens a session must then say hello
/// within `agent_svc`'s own deadline.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections at most: room for the 10,000 agents a hub is meant to hold, and their reconnects.
const MAX_CONNECTIONS: usize = 20_000;
/// Per address, when every container dials from its own (the hub's bridge network): an agent holds one
/// connection, two while a reconnect overlaps the old one's keepalive timeout.
pub const MAX_PER_CONTAINER: usize = 32;
/// Per address when agents may share one (`--agent-listen ADDR` behind NAT, a remote engine): only
/// the total and the handshake deadline bound them.
pub const MAX_PER_SHARED_ADDRESS: usize = MAX_CONNECTIONS;

/// A handshaken connection that keeps its place in the caps until tonic drops it.
pub struct AgentConn {
    inner: TlsStream<TcpStream>,
    _permit: ConnPermit,
}

impl Connected for AgentConn {
    type ConnectInfo = <TlsStream<TcpStream> as Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for AgentConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for AgentConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepts on `listener` and hands handshaken connections to `out` until `out` is closed.
pub async fn accept_loop(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    per_peer: usize,
    out: mpsc::Sender<io::Result<AgentConn>>,
) {
    // tonic's server speaks HTTP/2 only: offering HTTP/1.1 would only make a confused client fail later.
    let mut tls = (*tls).clone();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let limits = ConnLimits::new(MAX_CONNECTIONS, per_peer);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = out.closed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: keep serving the connections we have.
                if let Some(count) = limits.note_refusal() {
                    tracing::warn!(error = %e, count, "agent listener failed to accept");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match limits.admit(Some(peer.ip().to_canonical())) {
            Ok(permit) => permit,
            Err(refused) => {
                if let Some(count) = limits.note_refusal() {
                    tracing::warn!(%peer, count, "agent listener closed new connections: {refused}");
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (acceptor, out, limits) = (acceptor.clone(), out.clone(), limits.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(inner)) => {
                    let _ = out
                        .send(Ok(AgentConn {
                            inner,
                            _permit: permit,
                        }))
                        .await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "agent TLS handshake failed"),
                Err(_) => {
                    if let Some(count) = limits.note_refusal() {
                        tracing::warn!(%peer, count, "agent connections closed: no TLS handshake within {HANDSHAKE_TIMEOUT:?}");
                    }
                }
            }
        });
    }
}
