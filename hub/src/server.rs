//! Starting and stopping a hub, in order: config check, data dir and store, Docker and the agents'
//! network, both listeners, TLS, the shared state, reconciliation, then serving the agent side
//! (`api::agents::serve`) and the operator side (`api::operator`) and the watchers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::api::agents::guard::Limits;
use crate::api::agents::sockets::AgentSockets;
use crate::api::http;
use crate::api::operator::{GRACE, Operator};
use crate::config::DriverKind;
use crate::config::{AgentListen, HubConfig};
use crate::core::registry::Registry;
use crate::core::{Core, Settings};
use crate::datadir::{DataDir, Endpoint};
use crate::driver::{DockerDriver, Driver, NetworkInfo, SwarmDriver};
use crate::error::{HubError, Result};
use crate::image::ImageBuilder;
use crate::profile::ProfileCatalog;
use crate::store::Store;
use crate::tls::{self, AGENT_HOSTNAME, TlsMaterial};

pub use crate::api::operator::browser_addr;

/// A started hub. Dropping it does not stop it; call [`RunningHub::shutdown`].
pub struct RunningHub {
    pub operator_addr: SocketAddr,
    pub agent_addr: SocketAddr,
    pub agent_url: String,
    pub hub_id: String,
    core: Arc<Core>,
    data_dir: DataDir,
    sockets: Option<Arc<AgentSockets>>,
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

fn local_addr(listener: &TcpListener) -> Result<SocketAddr> {
    listener
        .local_addr()
        .map_err(|e| HubError::Internal(e.to_string()))
}

/// Each agent's own socket under the data dir, unless `--agent-socket=false` (then an earlier hub's are
/// removed, so agents whose containers mount them go straight to the port). None, logged, when the
/// directory cannot be made: agents use the port.
fn agent_sockets(config: &HubConfig, data_dir: &DataDir) -> Option<Arc<AgentSockets>> {
    let root = data_dir.path(crate::datadir::AGENT_SOCKET_DIR);
    if !config.agent_socket || config.engine.is_remote() {
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

/// The hub's certificate, for every name and address agents and operators reach it by.
fn certificates(
    data_dir: &DataDir,
    hub_id: &str,
    network: &NetworkInfo,
    agent_url: &str,
    bound: [SocketAddr; 2],
) -> Result<TlsMaterial> {
    let mut ips = vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        network.gateway,
    ];
    for ip in bound.map(|a| a.ip()) {
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
    Ok(tls::load_or_create(data_dir, hub_id, &names, &ips)?)
}

/// Starts a hub from validated config and returns once both listeners are bound.
pub async fn start(config: HubConfig) -> Result<RunningHub> {
    config.validate()?;
    let fds = crate::api::limits::raise_fd_limit();
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

    let driver: Arc<dyn Driver> = match (config.driver, &config.registry) {
        (DriverKind::Swarm, Some(registry)) => {
            Arc::new(SwarmDriver::connect(&config.engine, registry).await?)
        }
        _ => Arc::new(DockerDriver::connect(&config.engine).await?),
    };
    driver.ping().await?;
    let engine_cpus = driver.engine_cpus().await?;
    let network =
        crate::agent::networks::ensure_agents_network(driver.as_ref(), &config.network).await?;

    let agent_listener = bind(match config.agent_listen {
        AgentListen::Gateway(port) => SocketAddr::new(network.gateway, port),
        AgentListen::Addr(addr) => addr,
    })
    .await?;
    let agent_addr = local_addr(&agent_listener)?;
    let operator_listener = bind(config.operator_listen).await?;
    let operator_addr = local_addr(&operator_listener)?;
    if !operator_addr.ip().is_loopback() {
        tracing::warn!(%operator_addr, "the operator listener is reachable from outside this host");
    }
    let local_socket = http::local_socket::bind(&data_dir.path(crate::datadir::SOCKET_FILE));
    let sockets = agent_sockets(&config, &data_dir);
    let agent_url = config
        .agent_url
        .clone()
        .unwrap_or_else(|| format!("https://{AGENT_HOSTNAME}:{}", agent_addr.port()));
    let tls = certificates(
        &data_dir,
        &hub_id,
        &network,
        &agent_url,
        [agent_addr, operator_addr],
    )?;

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
            retention: crate::store::Retention {
                max_age_ms: i64::try_from(config.retain_tasks.as_millis()).unwrap_or(i64::MAX),
                max_output_bytes: config.retain_output,
            },
        },
        store,
        images: ImageBuilder::new(
            driver.clone(),
            config.agent_binary.clone(),
            config.base_image.clone(),
            data_dir.path("build"),
        ),
        driver,
        agent_sockets: sockets
            .clone()
            .map(|s| s as Arc<dyn crate::core::SocketDirs>),
        registry: Registry::default(),
        bus: Default::default(),
        health: Default::default(),
        transitions: Default::default(),
        stream_locks: Default::default(),
        dispatched: Default::default(),
        stdin: Default::default(),
        attached: Default::default(),
    });
    core.reconcile().await?;
    core.expire_unattached_sessions()?;

    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    let agent = crate::api::agents::serve::serve(
        &core,
        agent_listener,
        matches!(config.agent_listen, AgentListen::Addr(_)),
        sockets.as_ref(),
        &*http::listener::tls_config(&tls.server_cert_pem, &tls.server_key_pem)?,
        Limits {
            cooldown: config.agent_cooldown,
            ..Limits::for_connections(fds.agent_connections)
        },
    )?;
    let operator = Operator {
        core: core.clone(),
        admin_token,
        hub_id: hub_id.clone(),
        xterm_dir: config.xterm_dir.clone(),
        xterm_lib_dir: config.xterm_lib_dir.clone(),
        connections: fds.operator_connections / 2,
        web_idle: config.web_idle,
    }
    .serve(operator_listener, local_socket, &tls, shutdown_rx)?;
    let background = vec![
        tokio::spawn(core.clone().watch_docker()),
        tokio::spawn(core.clone().retain_tasks()),
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
        sockets,
        shutdown,
        operator,
        agent,
        background,
    })
}

impl RunningHub {
    /// Stops taking work, lets in-flight operator calls finish (briefly), flushes the store. Containers and
    /// their tasks keep running; agents reconnect to the next hub. Agent streams never finish by
    /// themselves, so the agent side is closed at once: agents reconnect and lose nothing.
    pub async fn shutdown(self) {
        tracing::info!("hub shutting down");
        self.data_dir.remove_endpoint();
        let _ = self.shutdown.send(true);
        self.agent.abort();
        // Agents then find no socket and dial the port until the next hub binds new ones.
        if let Some(sockets) = &self.sockets {
            sockets.close_all();
        }
        for task in &self.background {
            task.abort();
        }
        let mut operator = self.operator;
        // The listener gives its connections GRACE itself; this only bounds a stuck listener.
        if tokio::time::timeout(GRACE + Duration::from_secs(1), &mut operator)
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
