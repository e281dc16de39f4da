//! Hub configuration, validated completely before anything is bound or created.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{HubError, Result};

/// Where the agent listener binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentListen {
    /// On the agents' network gateway address: reachable from those containers and the host only.
    Gateway(u16),
    Addr(SocketAddr),
}

impl FromStr for AgentListen {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if let Some(port) = s.strip_prefix("gateway:") {
            return port
                .parse()
                .map(AgentListen::Gateway)
                .map_err(|_| format!("{s:?}: the port after gateway: must be a number (0-65535)"));
        }
        s.parse()
            .map(AgentListen::Addr)
            .map_err(|_| format!("{s:?}: expected gateway:PORT or IP:PORT"))
    }
}

/// Which driver runs the agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DriverKind {
    /// One Docker engine: each agent a container.
    #[default]
    Docker,
    /// A Docker Swarm manager: each agent a replicated service of one task, placed by Swarm.
    Swarm,
}

impl FromStr for DriverKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "docker" => Ok(Self::Docker),
            "swarm" => Ok(Self::Swarm),
            _ => Err(format!("{s:?}: expected docker or swarm")),
        }
    }
}

impl std::fmt::Display for AgentListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentListen::Gateway(port) => write!(f, "gateway:{port}"),
            AgentListen::Addr(addr) => write!(f, "{addr}"),
        }
    }
}

/// Where Debian's `libjs-xterm` puts xterm.js.
pub const DEFAULT_XTERM_DIR: &str = "/usr/share/javascript/xterm";
/// Where Debian's `node-xterm` puts xterm.js's modules.
pub const DEFAULT_XTERM_LIB_DIR: &str = "/usr/share/nodejs/xterm/lib";

#[derive(Debug, Clone)]
pub struct HubConfig {
    pub data_dir: PathBuf,
    /// CLI gRPC; loopback unless the operator says otherwise.
    pub operator_listen: SocketAddr,
    pub agent_listen: AgentListen,
    /// The URL agents dial; default `https://host.docker.internal:<agent port>`.
    pub agent_url: Option<String>,
    /// Also serve agents on a Unix socket in the data dir, mounted into each new container (TLS too).
    pub agent_socket: bool,
    /// The user-defined bridge network the agents live on.
    pub network: String,
    /// The Docker engine the agents run on; a remote one needs `agent_url` and an `agent_listen` address.
    pub engine: crate::driver::EngineAddress,
    pub driver: DriverKind,
    /// `host:port` of the registry Swarm nodes pull the hub's images from (`--driver swarm`).
    pub registry: Option<String>,
    pub agent_binary: Option<PathBuf>,
    /// `debootstrap` or an image reference present on the engine.
    pub base_image: String,
    pub heartbeat_interval: Duration,
    pub ready_timeout: Duration,
    pub kill_grace: Duration,
    /// Bound of each agent's spool of unacknowledged output (the agent's default when None).
    pub agent_spool_bytes: Option<u64>,
    /// How long a source cut off for protocol violations is refused.
    pub agent_cooldown: Duration,
    /// How much task output the hub stores, and the free space it keeps.
    pub output_limits: crate::store::OutputLimits,
    /// User profiles; default `<data dir>/profiles`.
    pub profiles_dir: Option<PathBuf>,
    /// How long a terminal session lives with nobody attached.
    pub session_timeout: Duration,
    /// Ended tasks older than this are deleted with their output; zero: kept forever.
    pub retain_tasks: Duration,
    /// Past this much stored output, ended tasks are deleted oldest first; zero: no bound.
    pub retain_output: u64,
    /// How long a dashboard login lives unused (it ends after 24 h whatever its use); zero: no bound.
    pub web_idle: Duration,
    /// Where xterm.js's stylesheet and fit addon are installed (Debian's `libjs-xterm`).
    pub xterm_dir: PathBuf,
    /// Where xterm.js's modules are installed (Debian's `node-xterm`), bundled for the browser.
    pub xterm_lib_dir: PathBuf,
}

impl HubConfig {
    /// Defaults for everything but the data dir.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            operator_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7080),
            agent_listen: AgentListen::Gateway(7443),
            agent_url: None,
            agent_socket: true,
            network: "docker-agent".into(),
            engine: Default::default(),
            driver: DriverKind::Docker,
            registry: None,
            agent_binary: None,
            base_image: crate::image::DEBOOTSTRAP_BASE.into(),
            heartbeat_interval: Duration::from_secs(5),
            ready_timeout: Duration::from_secs(120),
            kill_grace: Duration::from_secs(5),
            agent_spool_bytes: None,
            agent_cooldown: Duration::from_secs(30),
            output_limits: crate::store::OutputLimits::DEFAULT,
            profiles_dir: None,
            session_timeout: Duration::from_secs(300),
            web_idle: Duration::from_secs(12 * 3600),
            retain_tasks: Duration::from_secs(30 * 24 * 3600),
            retain_output: 20 << 30,
            xterm_dir: PathBuf::from(DEFAULT_XTERM_DIR),
            xterm_lib_dir: PathBuf::from(DEFAULT_XTERM_LIB_DIR),
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(HubError::Config(m));
        if self.data_dir.as_os_str().is_empty() {
            return bad("the data dir is empty".into());
        }
        if self.data_dir.exists() && !self.data_dir.is_dir() {
            return bad(format!(
                "data dir {} is not a directory",
                self.data_dir.display()
            ));
        }
        let network_ok = !self.network.is_empty()
            && self.network.len() <= 64
            && self
                .network
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !network_ok {
            return bad(format!("invalid network name {:?}", self.network));
        }
        if let Some(url) = &self.agent_url {
            let rest = url.strip_prefix("https://").unwrap_or("");
            if rest.is_empty() || !rest.contains(':') {
                return bad(format!(
                    "agent URL {url:?} must look like https://HOST:PORT"
                ));
            }
        }
        if self.driver == DriverKind::Swarm {
            if !self.engine.is_remote() {
                return bad(
                    "--driver swarm needs --engine tcp://MANAGER:PORT: the hub reaches every node's engine on that port".into(),
                );
            }
            match &self.registry {
                None => {
                    return bad(
                        "--driver swarm needs --registry HOST:PORT: every node pulls the agents' images from it".into(),
                    );
                }
                Some(r) if r.contains("://") || r.is_empty() || r.contains(char::is_whitespace) => {
                    return bad(format!(
                        "registry {r:?} must be HOST:PORT, without a scheme"
                    ));
                }
                Some(_) => {}
            }
        } else if self.registry.is_some() {
            return bad("--registry goes with --driver swarm".into());
        }
        if self.engine.is_remote() {
            // Its containers are on another machine: this one's gateway address and sockets are not there.
            if self.agent_url.is_none() {
                return bad(format!(
                    "engine {} is remote: set --agent-url to the address its containers reach this hub at",
                    self.engine
                ));
            }
            if matches!(self.agent_listen, AgentListen::Gateway(_)) {
                return bad(format!(
                    "engine {} is remote: set --agent-listen to an address of this host (IP:PORT) its containers can reach",
                    self.engine
                ));
            }
        }
        if let Some(dir) = &self.profiles_dir
            && !dir.is_dir()
        {
            return bad(format!(
                "profile directory {} does not exist or is not a directory",
                dir.display()
            ));
        }
        if let Some(path) = &self.agent_binary
            && !path.is_file()
        {
            return bad(format!("agent binary {} does not exist", path.display()));
        }
        if self.agent_spool_bytes.is_some_and(|b| b < 64 << 10) {
            return bad("the agent spool must be at least 64k".into());
        }
        if self.output_limits.task < 1 << 20 || self.output_limits.agent < 1 << 20 {
            return bad("the output bounds must be at least 1m each".into());
        }
        if self.base_image.trim().is_empty() {
            return bad("the base image is empty".into());
        }
        for (name, value, min) in [
            (
                "heartbeat interval",
                self.heartbeat_interval,
                Duration::from_millis(100),
            ),
            ("ready timeout", self.ready_timeout, Duration::from_secs(1)),
            ("kill grace", self.kill_grace, Duration::ZERO),
            (
                "agent cooldown",
                self.agent_cooldown,
                Duration::from_secs(1),
            ),
            (
                "session timeout",
                self.session_timeout,
                Duration::from_secs(1),
            ),
        ] {
            if value < min {
                return bad(format!("{name} must be at least {min:?}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_listen_forms() {
        assert_eq!(
            "gateway:7443".parse::<AgentListen>().unwrap(),
            AgentListen::Gateway(7443)
        );
        assert_eq!(
            "0.0.0.0:1".parse::<AgentListen>().unwrap(),
            AgentListen::Addr("0.0.0.0:1".parse().unwrap())
        );
        assert!("gateway:x".parse::<AgentListen>().is_err());
        assert!("nonsense".parse::<AgentListen>().is_err());
    }

    #[test]
    fn validation() {
        let dir = tempfile::tempdir().unwrap();
        let ok = HubConfig::new(dir.path().into());
        ok.validate().unwrap();
        let mut c = ok.clone();
        c.network = "bad name".into();
        assert!(c.validate().unwrap_err().to_string().contains("network"));
        let mut c = ok.clone();
        c.agent_url = Some("http://x:1".into());
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.heartbeat_interval = Duration::ZERO;
        assert!(c.validate().is_err());
        let mut c = ok;
        c.agent_binary = Some("/nonexistent/agent".into());
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("does not exist")
        );
    }
}
