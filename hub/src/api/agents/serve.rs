//! Serving the agent side: the TCP port and every agent's own socket, all through one guard whose
//! caps come from the agent side's share of the open-file limit, into one gRPC agent service.

use std::sync::Arc;
use std::time::Duration;

use docker_agent_proto::v1::agent_service_server::AgentServiceServer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;

use crate::api::agents::AgentSvc;
use crate::api::agents::guard::{AgentGuard, Limits};
use crate::api::agents::listener::{self, AgentListener};
use crate::api::agents::sockets::AgentSockets;
use crate::core::Core;
use crate::error::Result;
use crate::lifecycle::Lifecycle;

/// The agent side's gRPC server; TLS is done before it, in `listener`.
fn agent_server() -> Server {
    Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        // HTTP/2's default 64 KiB windows would cap output at one window per round trip.
        .initial_stream_window_size(2 << 20)
        .initial_connection_window_size(4 << 20)
}

/// Serves the port (`shared_addresses`: agents may share an address, so addresses say nothing of
/// who is who) and, when there are sockets, binds the socket of every agent whose container mounts
/// one.
pub fn serve(
    core: &Arc<Core>,
    port: TcpListener,
    shared_addresses: bool,
    sockets: Option<&Arc<AgentSockets>>,
    tls: &rustls::ServerConfig,
    limits: Limits,
) -> Result<JoinHandle<()>> {
    let guard = AgentGuard::new(limits);
    let acceptor = listener::acceptor(tls);
    let (conns, incoming) = tokio::sync::mpsc::channel(64);
    if let Some(sockets) = sockets {
        sockets.serve(acceptor.clone(), guard.clone(), conns.clone());
        // Only agents whose containers mount a socket directory: ones made before per-agent sockets,
        // or with `--agent-socket=false`, use the port.
        for agent in core.agents()? {
            if agent.lifecycle == Lifecycle::Destroyed || !sockets.dir(&agent.id).is_dir() {
                continue;
            }
            if let Err(e) = sockets.open(&agent.id) {
                tracing::warn!(agent = %agent.name, error = %e, "no agent socket for this agent; it will use the port");
            }
        }
    }
    let service = AgentServiceServer::new(AgentSvc::new(core.clone()))
        .max_decoding_message_size(crate::api::MAX_MESSAGE_BYTES);
    let tcp = AgentListener::Tcp {
        listener: port,
        shared: shared_addresses,
    };
    Ok(tokio::spawn(async move {
        let accept = listener::accept_loop(tcp, acceptor, guard, conns);
        let serve = agent_server()
            .add_service(service)
            .serve_with_incoming(ReceiverStream::new(incoming));
        let (_, served) = tokio::join!(accept, serve);
        if let Err(e) = served {
            tracing::error!(error = %e, "agent listener failed");
        }
    }))
}
