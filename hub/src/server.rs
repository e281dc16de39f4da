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

/// The agent listener's gRPC server; TLS is done before it, in `grpc::agent_listener`.
fn agent_server() -> Server {
    Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        // HTTP/2's default 64 KiB windows would cap output at one window per round trip.
        .initial_stream_window_size(2 << 20)
        .initial_connection_window_size(4 << 20)
}

/// Binds the agent socket in its own directory of the data dir, which each new container mounts: the
/// directory, not the socket, so a restarted hub's new socket is what containers see. Returns the
/// listener and the directory (absolute, as a bind mount needs). Mode 0666: any process in an agent
/// container may connect, as any may reach the TCP port; TLS and the agent's token are what admit it.
/// Host users cannot reach it: the data dir is 0700.
fn bind_agent_socket(data_dir: &DataDir) -> Option<(tokio::net::UnixListener, std::path::PathBuf)> {
    use std::os::unix::fs::PermissionsExt;
    let fallback = "agents will use the TCP port";
    let path = match std::path::absolute(data_dir.agent_socket()) {
        Ok(path) => path,
        Err(e) => {
            tracing::warn!(error = %e, "cannot place the agent socket; {fallback}");
            return None;
        }
    };
    let dir = path.parent()?.to_path_buf();
    let made = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)));
    if let Err(e) = made {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot make the agent socket's directory; {fallback}");
        return None;
    }
    let (listener, _) = http::local_socket::bind_socket(&path, 0o666, "agent socket", fallback)?;
    Some((listener, dir))
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
    crate::conn_limit::raise_fd_limit();
    let data_dir = DataDir::open_for_hub(&config.data_dir)?;
    let hub_id = data_dir.hub_id()?;
    let admin_token = data_dir.ensure_admin_token()?;
    let store = Store::open(&data_dir.db_path())?;
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
    let network = driver
        .ensure_network(
            &config.network,
            [("dev.docker-agent.managed".to_string(), "true".to_string())].into(),
        )
        .await?;

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
    let agent_socket = if config.agent_socket {
        bind_agent_socket(&data_dir)
    } else {
        // An earlier hub's socket would only answer "refused"; without it, agents whose containers
        // mount the directory go straight to the port.
        let _ = std::fs::remove_file(data_dir.agent_socket());
        None
    };
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
            agent_socket_dir: agent_socket.as_ref().map(|(_, dir)| dir.clone()),
            data_dir: config.data_dir.clone(),
            profiles_dir: Some(profiles_dir),
            engine_cpus,
            session_timeout: config.session_timeout,
        },
        store,
        driver,
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
    let agent_service = AgentServiceServer::new(AgentSvc::new(core.clone()))
        .max_decoding_message_size(crate::grpc::MAX_MESSAGE_BYTES);
    let agent_tls = http::listener::tls_config(&tls.server_cert_pem, &tls.server_key_pem)?;
    let per_peer = match config.agent_listen {
        AgentListen::Gateway(_) => crate::grpc::agent_listener::MAX_PER_CONTAINER,
        AgentListen::Addr(_) => crate::grpc::agent_listener::MAX_PER_SHARED_ADDRESS,
    };
    let agent = tokio::spawn(async move {
        use crate::grpc::agent_listener::{AgentListener, accept_loop};
        let (conns, incoming) = tokio::sync::mpsc::channel(64);
        let accept = accept_loop(
            AgentListener::Tcp(agent_listener),
            agent_tls.clone(),
            per_peer,
            conns.clone(),
        );
        // No peer address on the socket: only the total caps it. A container flooding it only pushes
        // agents onto the TCP port, where the per-container cap holds.
        let accept_socket = async move {
            if let Some((listener, _)) = agent_socket {
                let per_peer = crate::grpc::agent_listener::MAX_PER_SHARED_ADDRESS;
                accept_loop(AgentListener::Unix(listener), agent_tls, per_peer, conns).await;
            }
        };
        let serve = agent_server()
            .add_service(agent_service)
            .serve_with_incoming(ReceiverStream::new(incoming));
        let (_, _, served) = tokio::join!(accept, accept_socket, serve);
        if let Err(e) = served {
            tracing::error!(error = %e, "agent listener failed");
        }
    });
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
            shutdown_rx.clone(),
            OPERATOR_GRACE,
        )
    });
    let tcp = http::listener::serve(
        operator_listener,
        operator_tls,
        routers,
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
        // Agents then find no socket and dial the port until the next hub binds a new one.
        let _ = std::fs::remove_file(self.data_dir.agent_socket());
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
