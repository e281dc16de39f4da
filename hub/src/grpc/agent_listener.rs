//! The agent listeners' accept loop: connection caps (in all and per peer address) and a deadline for
//! the TLS handshake, before tonic sees a connection. A container flooding the port with connections
//! that never handshake, or never say hello, cannot exhaust the hub's descriptors or starve other agents.
//! The same loop serves the TCP port and the agent socket (`AGENT_SOCKET_DIR`): TLS on both.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
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

/// Where agents connect: the TCP port, or the Unix socket mounted into containers on this host.
pub enum AgentListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl AgentListener {
    /// A new connection, and the peer's address when it has one.
    async fn accept(&self) -> io::Result<(Transport, Option<std::net::SocketAddr>)> {
        match self {
            Self::Tcp(l) => {
                let (stream, peer) = l.accept().await?;
                let _ = stream.set_nodelay(true);
                Ok((Transport::Tcp(stream), Some(peer)))
            }
            Self::Unix(l) => Ok((Transport::Unix(l.accept().await?.0), None)),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Tcp(_) => "agent listener",
            Self::Unix(_) => "agent socket",
        }
    }
}

/// The byte stream under an agent's TLS.
pub enum Transport {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// Calls a poll method on whichever stream it is.
macro_rules! on_transport {
    ($self:ident, $method:ident($($arg:expr),*)) => {
        match $self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).$method($($arg),*),
            Transport::Unix(s) => Pin::new(s).$method($($arg),*),
        }
    };
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        on_transport!(self, poll_read(cx, buf))
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        on_transport!(self, poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        on_transport!(self, poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_transport!(self, poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_transport!(self, poll_shutdown(cx))
    }
}

/// A handshaken connection that keeps its place in the caps until tonic drops it.
pub struct AgentConn {
    inner: TlsStream<Transport>,
    peer: Option<std::net::SocketAddr>,
    _permit: ConnPermit,
}

impl Connected for AgentConn {
    /// The peer's address; none on the agent socket.
    type ConnectInfo = Option<std::net::SocketAddr>;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.peer
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
    listener: AgentListener,
    tls: Arc<rustls::ServerConfig>,
    per_peer: usize,
    out: mpsc::Sender<io::Result<AgentConn>>,
) {
    // tonic's server speaks HTTP/2 only: offering HTTP/1.1 would only make a confused client fail later.
    let mut tls = (*tls).clone();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let limits = ConnLimits::new(MAX_CONNECTIONS, per_peer);
    let what = listener.name();
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
                    tracing::warn!(error = %e, count, "{what} failed to accept");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // For logs: the peer's address, or the socket's name.
        let from = peer.map_or_else(|| what.to_string(), |p| p.to_string());
        let permit = match limits.admit(peer.map(|p| p.ip().to_canonical())) {
            Ok(permit) => permit,
            Err(refused) => {
                if let Some(count) = limits.note_refusal() {
                    tracing::warn!(%from, count, "{what} closed new connections: {refused}");
                }
                continue;
            }
        };
        let (acceptor, out, limits) = (acceptor.clone(), out.clone(), limits.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(inner)) => {
                    let _ = out
                        .send(Ok(AgentConn {
                            inner,
                            peer,
                            _permit: permit,
                        }))
                        .await;
                }
                Ok(Err(e)) => tracing::debug!(%from, error = %e, "agent TLS handshake failed"),
                Err(_) => {
                    if let Some(count) = limits.note_refusal() {
                        tracing::warn!(%from, count, "agent connections closed: no TLS handshake within {HANDSHAKE_TIMEOUT:?}");
                    }
                }
            }
        });
    }
}
