//! Serving the operator side: the CLI's gRPC control API, the REST API and the dashboard, on the TCP
//! port (TLS, and plaintext HTTP to loopback peers) and on `hub.sock` in the data dir.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use docker_agent_proto::v1::control_service_server::ControlServiceServer;
use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinHandle;

use crate::api::control::ControlSvc;
use crate::api::control::service::AdminAuth;
use crate::api::http;
use crate::core::Core;
use crate::error::Result;
use crate::tls::TlsMaterial;

/// How long in-flight operator calls get to finish on shutdown.
pub const GRACE: Duration = Duration::from_secs(5);

/// Everything the operator side serves with.
pub struct Operator {
    pub core: Arc<Core>,
    pub admin_token: String,
    pub hub_id: String,
    /// Where xterm.js's files are (Debian's `libjs-xterm` and `node-xterm`).
    pub xterm_dir: PathBuf,
    pub xterm_lib_dir: PathBuf,
    /// Connections each of the port and the socket may hold.
    pub connections: usize,
    /// How long a dashboard login lives unused; zero: no bound.
    pub web_idle: Duration,
}

impl Operator {
    /// Serves the port and (when bound) the local socket until `shutdown` turns true, then gives open
    /// connections `GRACE`.
    pub fn serve(
        self,
        port: TcpListener,
        local_socket: Option<(UnixListener, PathBuf)>,
        tls: &TlsMaterial,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<JoinHandle<()>> {
        let control = tonic::service::interceptor::InterceptedService::new(
            ControlServiceServer::new(ControlSvc::new(self.core.clone()))
                .max_decoding_message_size(crate::api::MAX_MESSAGE_BYTES),
            AdminAuth::new(&self.admin_token),
        );
        let state = http::HttpState {
            core: self.core.clone(),
            auth: Arc::new(http::auth::Auth::new(
                &self.admin_token,
                &self.hub_id,
                self.core.store.clone(),
                self.web_idle,
            )),
            creates: Default::default(),
            shutdown: shutdown.clone(),
            ui: Arc::new(http::ui::UiState::new(self.xterm_dir, self.xterm_lib_dir)),
        };
        let web = http::router(state);
        let routers = http::listener::Routers {
            tls: tonic::service::Routes::from(web.clone())
                .add_service(control)
                .into_axum_router()
                .layer(axum::Extension(http::auth::Secure(true))),
            plain: web
                .layer(axum::middleware::from_fn(http::loopback_host_only))
                .layer(axum::Extension(http::auth::Secure(false))),
        };
        let tls = http::listener::tls_config(&tls.server_cert_pem, &tls.server_key_pem)?;
        let local = local_socket.map(|(listener, path)| {
            http::local_socket::serve(
                listener,
                path,
                routers.tls.clone(),
                self.connections,
                shutdown.clone(),
                GRACE,
            )
        });
        let tcp = http::listener::serve(port, tls, routers, self.connections, shutdown, GRACE);
        Ok(tokio::spawn(async move {
            match local {
                Some(local) => {
                    tokio::join!(tcp, local);
                }
                None => tcp.await,
            }
        }))
    }
}

/// Where a browser on this host reaches the operator listener.
pub fn browser_addr(addr: SocketAddr) -> SocketAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}
