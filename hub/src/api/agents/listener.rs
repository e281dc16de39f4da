//! The agent side's accept loops: the TCP port and each agent's own socket. Each connection is admitted
//! by the guard (`agent_guard`) before its TLS handshake, must finish the handshake within a deadline,
//! and carries its standing with the guard into tonic, where the agent service authenticates it. A
//! connection that has not said an authenticated hello by its deadline, or whose source is cut off,
//! fails its next read and is closed.

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

use crate::api::agents::guard::{AgentGuard, ConnState, Lease, Source};

/// A client must finish its TLS handshake within this of its accept.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where agents connect.
pub enum AgentListener {
    /// The TCP port. `shared`: agents may share an address (`--agent-listen ADDR`, behind NAT), so
    /// addresses say nothing about who is who; otherwise each container on the agents' network has its own.
    Tcp { listener: TcpListener, shared: bool },
    /// One agent's own socket, mounted into its container alone. Closed (None) while the agent is
    /// cut off.
    Unix {
        listener: Option<UnixListener>,
        path: std::path::PathBuf,
        agent_id: String,
    },
}

impl AgentListener {
    /// A new connection and where it came from.
    async fn accept(&self) -> io::Result<(Transport, Source, Option<std::net::SocketAddr>)> {
        match self {
            Self::Tcp { listener, shared } => {
                let (stream, peer) = listener.accept().await?;
                let source = if *shared {
                    Source::Shared
                } else {
                    Source::Address(peer.ip().to_canonical())
                };
                Ok((Transport::Tcp(stream), source, Some(peer)))
            }
            Self::Unix {
                listener: Some(listener),
                agent_id,
                ..
            } => Ok((
                Transport::Unix(listener.accept().await?.0),
                Source::Socket(agent_id.clone()),
                None,
            )),
            Self::Unix { listener: None, .. } => std::future::pending().await,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Tcp { .. } => "agent listener",
            Self::Unix { .. } => "agent socket",
        }
    }

    /// Who every connection on this listener comes from, when that is known before accepting.
    fn only_source(&self) -> Option<Source> {
        match self {
            Self::Tcp { .. } => None,
            Self::Unix { agent_id, .. } => Some(Source::Socket(agent_id.clone())),
        }
    }

    /// Closes an agent's socket for `cooldown` (it is cut off), then binds it again. While it is closed
    /// the container's connects fail in the kernel and cost the hub nothing, and what was queued is
    /// gone with it. Returns false when the socket cannot be bound again (the agent then uses the port).
    async fn close_for(&mut self, cooldown: std::time::Duration) -> bool {
        let Self::Unix { listener, path, .. } = self else {
            return true;
        };
        *listener = None;
        let _ = std::fs::remove_file(&*path);
        tokio::time::sleep(cooldown).await;
        match bind(path) {
            Ok(l) => {
                *listener = Some(l);
                true
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot bind an agent socket again after its cooldown; the agent will use the port");
                false
            }
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

/// What the agent service learns about the connection a request came on.
#[derive(Debug, Clone)]
pub struct AgentConnInfo {
    /// The peer's address; none on an agent socket.
    pub peer: Option<std::net::SocketAddr>,
    pub state: Arc<ConnState>,
}

/// A handshaken connection that keeps its place in the guard's caps until tonic drops it, and fails
/// once its hello deadline passes unauthenticated or its source is cut off.
pub struct AgentConn {
    inner: TlsStream<Transport>,
    peer: Option<std::net::SocketAddr>,
    lease: Lease,
    /// Until the connection authenticates.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Connected for AgentConn {
    type ConnectInfo = AgentConnInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        AgentConnInfo {
            peer: self.peer,
            state: self.lease.state().clone(),
        }
    }
}

impl AgentConn {
    /// Fails the connection when it was cut off, or reached its deadline without authenticating.
    /// Registers for both, so a connection nobody writes to is still woken and closed.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let state = self.lease.state();
        state.register(cx.waker());
        if state.is_closed() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "cut off for protocol violations",
            ));
        }
        if let Some(deadline) = &mut self.deadline {
            if state.is_authenticated() {
                self.deadline = None;
            } else if deadline.as_mut().poll(cx).is_ready() {
                self.deadline = None;
                let guard_state = self.lease.state().clone();
                guard_state.guard().missed_deadline(&guard_state);
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no authenticated hello in time",
                ));
            }
        }
        Ok(())
    }
}

impl AsyncRead for AgentConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Err(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for AgentConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.lease.state().is_closed() {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.lease.state().is_closed() {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
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

/// Binds an agent socket at `path`, mode 0666: any process in the container may connect, as any may
/// reach the port; TLS and the agent's token admit a connection. Nobody else can reach it: the data
/// dir is 0700.
pub fn bind(path: &std::path::Path) -> io::Result<tokio::net::UnixListener> {
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o666))?;
    Ok(listener)
}

/// The rustls config of the agent side: tonic's server speaks HTTP/2 only, so offering HTTP/1.1 would
/// only make a confused client fail later.
pub fn acceptor(tls: &rustls::ServerConfig) -> TlsAcceptor {
    let mut tls = tls.clone();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    TlsAcceptor::from(Arc::new(tls))
}

/// Accepts on `listener` and hands handshaken connections to `out` until `out` is closed.
pub async fn accept_loop(
    mut listener: AgentListener,
    acceptor: TlsAcceptor,
    guard: Arc<AgentGuard>,
    out: mpsc::Sender<io::Result<AgentConn>>,
) {
    let what = listener.name();
    let only_source = listener.only_source();
    let accept_errors = crate::api::limits::LogThrottle::default();
    loop {
        if let Some(left) = only_source.as_ref().and_then(|s| guard.cut_off_left(s)) {
            tokio::select! {
                bound = listener.close_for(left) => if !bound { return },
                _ = out.closed() => return,
            }
            continue;
        }
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = out.closed() => return,
        };
        let (stream, source, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: keep serving the connections we have.
                if let Some(count) = accept_errors.note() {
                    tracing::warn!(error = %e, count, "{what} failed to accept");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let accepted_at = tokio::time::Instant::now();
        // Refused before any byte is read or any handshake is done: a refusal costs only the accept,
        // and, reset rather than closed, leaves no TIME_WAIT behind (a flood makes thousands a second).
        let Ok(lease) = guard.admit(source) else {
            if let Transport::Tcp(s) = &stream {
                let _ = s.set_zero_linger();
            }
            continue;
        };
        if let Transport::Tcp(s) = &stream {
            let _ = s.set_nodelay(true);
        }
        let (acceptor, out) = (acceptor.clone(), out.clone());
        let hello_deadline = guard.limits().hello_deadline;
        tokio::spawn(async move {
            let state = lease.state().clone();
            let handshake = tokio::select! {
                handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => handshake,
                // Cut off mid-handshake: dropped now, not at the deadline.
                () = state.closed() => return,
            };
            match handshake {
                Ok(Ok(inner)) => {
                    let deadline = Box::pin(tokio::time::sleep_until(accepted_at + hello_deadline));
                    let _ = out
                        .send(Ok(AgentConn {
                            inner,
                            peer,
                            lease,
                            deadline: Some(deadline),
                        }))
                        .await;
                }
                Ok(Err(e)) => {
                    tracing::debug!(source = %lease.state().source(), error = %e, "agent TLS handshake failed")
                }
                Err(_) => state.guard().missed_deadline(&state),
            }
        });
    }
}
