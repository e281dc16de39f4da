//! Starting and stopping a hub: config check, data dir, store, Docker, TLS, both listeners, background watchers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use docker_agent_proto::v1::agent_service_server::AgentServiceServer;
use docker_agent_proto::v1::control_service_server::ControlServiceServer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;

use crate::config::{AgentListen, HubConfig};
use crate::core::{Core, Settings};
use crate::datadir::{DataDir, Endpoint};
use crate::driver::{DockerDriver, Driver};
use crate::error::{HubError, Result};
use crate::grpc::agent_guard::{AgentGuard, Limits};
use crate::grpc::agent_listener;
use crate::grpc::agent_sockets::AgentSockets;
use crate::grpc::control_svc::AdminAuth;
use crate::grpc::{AgentSvc, ControlSvc};
use crate::http;
use crate::image::ImageBuilder;
use crate::profile::ProfileCatalog;
use crate::registry::Registry;
use crate::store::Store;
use crate::tls::{self, AGENT_HOSTNAME};

/// How long in-flight operator calls get to finish on shutdown. Agent streams never finish by
/// themselves, so the agent listener is closed at once: agents reconnect and lose nothing.
const OPERATOR_GRACE: Duration = Duration::from_secs(5);

/// A started hub. Dropping it does not stop it; call [`RunningHub::shutdown`].
pub struct RunningHub {
    pub operator_addr: SocketAddr,
    pub agent_addr: SocketAddr,
    pub agent_url: String,
    pub hub_id: String,
    core: Arc<Core>,
    data_dir: DataDir,
    shutdown: tokio::sync::watch::Sender<bool>,
    operator: JoinHandle<()>,
    agent: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HubError::Bind {
            addr: addr.to_string(),
            source,
        })
}

/// The agent side's gRPC server; TLS is done before it, in `grpc::agent_listener`.
fn agent_server() -> Server {
    Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        // HTTP/2's default 64 KiB windows would cap output at one window per round trip.
        .initial_stream_window_size(2 << 20)
        .initial_connection_window_size(4 << 20)
}

/// Each agent's own socket under the data dir, unless `--agent-socket=false` (then an earlier hub's are
/// removed, so agents whose containers mount them go straight to the port). None, logged, when the
/// directory cannot be made: agents use the port.
fn agent_sockets(config: &HubConfig, data_dir: &DataDir) -> Option<Arc<AgentSockets>> {
    let root = data_dir.path(crate::datadir::AGENT_SOCKET_DIR);
    if !config.agent_socket {
        let _ = std::fs::remove_dir_all(&root);
        return None;
    }
    match AgentSockets::new(&root) {
        Ok(sockets) => Some(Arc::new(sockets)),
        Err(e) => {
            tracing::warn!(dir = %root.display(), error = %e, "cannot make the agent sockets' directory; agents will use the TCP port");
            None
        }
    }
}

/// Serves the agent side: the TCP port and every agent's own socket, all through the guard
/// (`grpc::agent_guard`), whose caps come from the agent side's share of the open-file limit. Binds the
/// socket of every agent the store knows.
fn serve_agents(
    core: &Arc<Core>,
    listener: TcpListener,
    shared_addresses: bool,
    tls: &rustls::ServerConfig,
    limits: Limits,
) -> Result<JoinHandle<()>> {
    let guard = AgentGuard::new(limits);
    let acceptor = agent_listener::acceptor(tls);
    let (conns, incoming) = tokio::sync::mpsc::channel(64);
    if let Some(sockets) = &core.agent_sockets {
        sockets.serve(acceptor.clone(), guard.clone(), conns.clone());
        // Only agents whose containers mount a socket directory: ones made before per-agent sockets,
        // or with `--agent-socket=false`, use the port.
        for agent in core.store.list_agents()? {
            if agent.lifecycle == crate::lifecycle::Lifecycle::Destroyed
                || !sockets.dir(&agent.id).is_dir()
            {
                continue;
            }
            if let Err(e) = sockets.open(&agent.id) {
                tracing::warn!(agent = %agent.name, error = %e, "no agent socket for this agent; it will use the port");
            }
        }
    }
    let service = AgentServiceServer::new(AgentSvc::new(core.clone()))
        .max_decoding_message_size(crate::grpc::MAX_MESSAGE_BYTES);
    let tcp = agent_listener::AgentListener::Tcp {
        listener,
        shared: shared_addresses,
    };
    Ok(tokio::spawn(async move {
        let accept = agent_listener::accept_loop(tcp, acceptor, guard, conns);
        let serve = agent_server()
            .add_service(service)
            .serve_with_incoming(ReceiverStream::new(incoming));
        let (_, served) = tokio::join!(accept, serve);
        if let Err(e) = served {
            tracing::error!(error = %e, "agent listener failed");
        }
    }))
}

/// Where a browser on this host reaches the operator listener.
pub fn browser_addr(addr: SocketAddr) -> SocketAddr {
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

/// Starts a hub from validated config and returns once both listeners are bound.
pub async fn start(config: HubConfig) -> Result<RunningHub> {
    config.validate()?;
    let fds = crate::conn_limit::raise_fd_limit();
    let data_dir = DataDir::open_for_hub(&config.data_dir)?;
    let hub_id = data_dir.hub_id()?;
    let admin_token = data_dir.ensure_admin_token()?;
    let store = Store::open(&data_dir.db_path())?;
    store.set_output_limits(config.output_limits);
    let profiles_dir = config
        .profiles_dir
        .clone()
        .unwrap_or_else(|| config.data_dir.join("profiles"));
    // A broken profile file must not keep the hub down: it is reported here and on every use.
    for error in ProfileCatalog::load(Some(&profiles_dir)).errors.values() {
        tracing::warn!(%error, "profile not loaded");
    }

    let driver: Arc<dyn Driver> = Arc::new(DockerDriver::connect().await?);
    driver.ping().await?;
    let engine_cpus = driver.engine_cpus().await?;
    let network = crate::networks::ensure_agents_network(driver.as_ref(), &config.network).await?;

    let agent_bind = match config.agent_listen {
        AgentListen::Gateway(port) => SocketAddr::new(network.gateway, port),
        AgentListen::Addr(addr) => addr,
    };
    let agent_listener = bind(agent_bind).await?;
    let agent_addr = agent_listener
        .local_addr()
        .map_err(|e| HubError::Internal(e.to_string()))?;
    let operator_listener = bind(config.operator_listen).await?;
    let operator_addr = operator_listener
        .local_addr()
        .map_err(|e| HubError::Internal(e.to_string()))?;
    if !operator_addr.ip().is_loopback() {
        tracing::warn!(%operator_addr, "the operator listener is reachable from outside this host");
    }
    let local_socket = http::local_socket::bind(&data_dir.path(crate::datadir::SOCKET_FILE));
    let agent_sockets = agent_sockets(&config, &data_dir);
    let agent_url = config
        .agent_url
        .clone()
        .unwrap_or_else(|| format!("https://{AGENT_HOSTNAME}:{}", agent_addr.port()));

    let mut ips = vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        network.gateway,
    ];
    for ip in [agent_addr.ip(), operator_addr.ip()] {
        if !ip.is_unspecified() && !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    let mut names = vec!["localhost".to_string(), AGENT_HOSTNAME.to_string()];
    if let Some(host) = agent_url
        .strip_prefix("https://")
        .and_then(|r| r.rsplit_once(':'))
        .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
        && host.parse::<IpAddr>().is_err()
        && !names.contains(&host)
    {
        names.push(host);
    }
    let tls = tls::load_or_create(&data_dir, &hub_id, &names, &ips)?;

    let images = ImageBuilder::new(
        driver.clone(),
        config.agent_binary.clone(),
        config.base_image.clone(),
        data_dir.path("build"),
    );
    let core = Arc::new(Core {
        settings: Settings {
            hub_id: hub_id.clone(),
            network: config.network.clone(),
            agent_url: agent_url.clone(),
            heartbeat_interval: config.heartbeat_interval,
            ready_timeout: config.ready_timeout,
            kill_grace: config.kill_grace,
            ca_pem: tls.ca_pem.clone(),
            agent_spool_bytes: config.agent_spool_bytes,
            data_dir: config.data_dir.clone(),
            profiles_dir: Some(profiles_dir),
            engine_cpus,
            session_timeout: config.session_timeout,
        },
        store,
        driver,
        agent_sockets: agent_sockets.clone(),
        registry: Registry::default(),
        bus: Default::default(),
        images,
        health: Default::default(),
        transitions: Default::default(),
        stream_locks: Default::default(),
        dispatched: Default::default(),
        attached: Default::default(),
    });
    core.reconcile().await?;
    core.expire_unattached_sessions()?;

    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    let agent_tls = http::listener::tls_config(&tls.server_cert_pem, &tls.server_key_pem)?;
    let limits = Limits {
        cooldown: config.agent_cooldown,
        ..Limits::for_connections(fds.agent_connections)
    };
    let agent = serve_agents(
        &core,
        agent_listener,
        matches!(config.agent_listen, AgentListen::Addr(_)),
        &agent_tls,
        limits,
    )?;
    let control = tonic::service::interceptor::InterceptedService::new(
        ControlServiceServer::new(ControlSvc::new(core.clone()))
            .max_decoding_message_size(crate::grpc::MAX_MESSAGE_BYTES),
        AdminAuth::new(&admin_token),
    );
    let http_state = http::HttpState {
        core: core.clone(),
        auth: Arc::new(http::auth::Auth::new(
            &admin_token,
            &hub_id,
            core.store.clone(),
        )),
        creates: Default::default(),
        shutdown: shutdown_rx.clone(),
        ui: Arc::new(http::ui::UiState::new(
            config.xterm_dir.clone(),
            config.xterm_lib_dir.clone(),
        )),
    };
    let web = http::router(http_state);
    let routers = http::listener::Routers {
        tls: tonic::service::Routes::from(web.clone())
            .add_service(control)
            .into_axum_router()
            .layer(axum::Extension(http::auth::Secure(true))),
        plain: web
            .layer(axum::middleware::from_fn(http::loopback_host_only))
            .layer(axum::Extension(http::auth::Secure(false))),
    };
    let operator_tls = http::listener::tls_config(&tls.server_cert_pem, &tls.server_key_pem)?;
    let local = local_socket.map(|(listener, path)| {
        http::local_socket::serve(
            listener,
            path,
            routers.tls.clone(),
            fds.operator_connections / 2,
            shutdown_rx.clone(),
            OPERATOR_GRACE,
        )
    });
    let tcp = http::listener::serve(
        operator_listener,
        operator_tls,
        routers,
        fds.operator_connections / 2,
        shutdown_rx.clone(),
        OPERATOR_GRACE,
    );
    let operator = tokio::spawn(async move {
        match local {
            Some(local) => {
                tokio::join!(tcp, local);
            }
            None => tcp.await,
        }
    });
    let background = vec![
        tokio::spawn(core.clone().watch_docker()),
        tokio::spawn(core.clone().sweep_heartbeats()),
    ];

    data_dir.write_endpoint(&Endpoint {
        hub_id: hub_id.clone(),
        operator_addr: operator_addr.to_string(),
        agent_url: agent_url.clone(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    })?;
    tracing::info!(%operator_addr, %agent_addr, %agent_url, hub_id, data_dir = %config.data_dir.display(), "hub ready");
    tracing::info!("dashboard: http://{}/", browser_addr(operator_addr));
    Ok(RunningHub {
        operator_addr,
        agent_addr,
        agent_url,
        hub_id,
        core,
        data_dir,
        shutdown,
        operator,
        agent,
        background,
    })
}

impl RunningHub {
    /// Stops taking work, lets in-flight operator calls finish (briefly), flushes the store. Containers and
    /// their tasks keep running; agents reconnect to the next hub.
    pub async fn shutdown(self) {
        tracing::info!("hub shutting down");
        self.data_dir.remove_endpoint();
        let _ = self.shutdown.send(true);
        self.agent.abort();
        // Agents then find no socket and dial the port until the next hub binds new ones.
        if let Some(sockets) = &self.core.agent_sockets {
            sockets.close_all();
        }
        for task in &self.background {
            task.abort();
        }
        let mut operator = self.operator;
        // The listener gives its connections OPERATOR_GRACE itself; this only bounds a stuck listener.
        if tokio::time::timeout(OPERATOR_GRACE + Duration::from_secs(1), &mut operator)
            .await
            .is_err()
        {
            operator.abort();
        }
        if let Err(e) = self.core.store.checkpoint() {
            tracing::error!(error = %e, "failed to checkpoint the store");
        }
        tracing::info!("hub stopped");
    }
}

impl RunningHub {
    /// Builds the default profile's image in the background if it is missing, so the first `create` is quick.
    /// Progress goes to the log; a create that needs the image meanwhile waits for this build.
    pub fn warm_default_image(&self) {
        let core = self.core.clone();
        tokio::spawn(async move {
            let Ok(profile) = core
                .profiles()
                .get(crate::profile::DEFAULT_PROFILE)
                .cloned()
            else {
                return;
            };
            let log = |p: crate::image::Progress| tracing::info!(stage = p.stage, "{}", p.message);
            match core.images.ensure(&profile, &log).await {
                Ok(tag) => tracing::info!(%tag, "default image ready"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not prepare the default image; `create` will retry")
                }
            }
        });
    }
}
