//! Each agent's own socket: `agent-socket/<agent id>/agent.sock` in the data dir, whose directory only
//! that agent's container mounts (read-only, at `/run/docker-agent/hub`). A connection on it can only
//! come from that container, so it is attributed and capped per agent before a byte is read, and it
//! may only authenticate as that agent. The directory is mounted, not the socket, so a restarted hub's
//! new socket is the one the container sees; it is removed only with the agent.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_rustls::TlsAcceptor;

use crate::api::agents::guard::AgentGuard;
use crate::api::agents::listener::{AgentConn, AgentListener, accept_loop, bind};
use crate::datadir::AGENT_SOCKET_FILE;

/// The longest path a Unix socket address holds (`sun_path`, less its terminating NUL).
const MAX_PATH: usize = 107;

/// The agent sockets a hub serves, one accept loop each, all feeding the agent service.
#[derive(Debug)]
pub struct AgentSockets {
    /// `agent-socket/` in the data dir, absolute (bind mounts need it).
    root: PathBuf,
    inner: Mutex<Option<Serving>>,
    loops: Mutex<HashMap<String, AbortHandle>>,
}

/// What accept loops need; set once the agent listener is up.
struct Serving {
    acceptor: TlsAcceptor,
    guard: Arc<AgentGuard>,
    out: mpsc::Sender<io::Result<AgentConn>>,
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving").finish_non_exhaustive()
    }
}

impl AgentSockets {
    /// Sockets under `root` (made 0755 if missing: containers' processes must pass through it).
    pub fn new(root: &Path) -> io::Result<Self> {
        let root = std::path::absolute(root)?;
        std::fs::create_dir_all(&root)?;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))?;
        // A socket from before per-agent sockets: containers that mount the whole directory find
        // nothing there and use the port, where their address is their identity.
        let _ = std::fs::remove_file(root.join(AGENT_SOCKET_FILE));
        Ok(Self {
            root,
            inner: Mutex::new(None),
            loops: Mutex::default(),
        })
    }

    /// Starts serving: sockets opened before this are bound now, later ones at once.
    pub fn serve(
        &self,
        acceptor: TlsAcceptor,
        guard: Arc<AgentGuard>,
        out: mpsc::Sender<io::Result<AgentConn>>,
    ) {
        *self.inner.lock().unwrap_or_else(|e| e.into_inner()) = Some(Serving {
            acceptor,
            guard,
            out,
        });
    }

    /// The directory a container of `agent_id` mounts.
    pub fn dir(&self, agent_id: &str) -> PathBuf {
        self.root.join(agent_id)
    }

    /// Makes `agent_id`'s directory and serves its socket there (replacing an earlier hub's). Returns
    /// the directory to mount. An error means the agent will use the port.
    pub fn open(&self, agent_id: &str) -> io::Result<PathBuf> {
        // Ids are made by the hub (hex), but nothing that could leave the root is ever joined.
        if agent_id.is_empty() || !agent_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("agent id {agent_id:?} cannot name a socket directory"),
            ));
        }
        let dir = self.dir(agent_id);
        let path = dir.join(AGENT_SOCKET_FILE);
        if path.as_os_str().len() > MAX_PATH {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is too long for a socket address", path.display()),
            ));
        }
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(serving) = inner.as_ref() else {
            return Ok(dir);
        };
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = bind(&path)?;
        let task = tokio::spawn(accept_loop(
            AgentListener::Unix {
                listener: Some(listener),
                path,
                agent_id: agent_id.to_string(),
            },
            serving.acceptor.clone(),
            serving.guard.clone(),
            serving.out.clone(),
        ));
        let old = self
            .loops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(agent_id.to_string(), task.abort_handle());
        if let Some(old) = old {
            old.abort();
        }
        Ok(dir)
    }

    /// Stops serving `agent_id`'s socket and removes its directory (the agent is gone).
    pub fn remove(&self, agent_id: &str) {
        if let Some(task) = self
            .loops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(agent_id)
        {
            task.abort();
        }
        if !agent_id.is_empty() && agent_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            let _ = std::fs::remove_dir_all(self.dir(agent_id));
        }
    }

    /// Shutdown: stops every loop and removes the sockets, keeping the directories containers mount,
    /// so agents dial the port until the next hub binds new sockets in them.
    pub fn close_all(&self) {
        let loops = std::mem::take(&mut *self.loops.lock().unwrap_or_else(|e| e.into_inner()));
        for (agent_id, task) in loops {
            task.abort();
            let _ = std::fs::remove_file(self.dir(&agent_id).join(AGENT_SOCKET_FILE));
        }
    }

    /// How many sockets are served now (bound, or closed for a cooldown).
    pub fn len(&self) -> usize {
        self.loops.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl crate::core::SocketDirs for AgentSockets {
    fn open(&self, agent_id: &str) -> io::Result<PathBuf> {
        AgentSockets::open(self, agent_id)
    }

    fn remove(&self, agent_id: &str) {
        AgentSockets::remove(self, agent_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_socket_per_agent_in_a_directory_that_outlives_the_hub() {
        let dir = tempfile::tempdir().unwrap();
        let sockets = AgentSockets::new(&dir.path().join("agent-socket")).unwrap();
        // Before serving, open only makes the directory (create needs it to mount).
        let made = sockets.open("abc123").unwrap();
        assert!(made.is_dir());
        assert!(sockets.is_empty());
        let data_dir = crate::datadir::DataDir::open_for_hub(dir.path()).unwrap();
        let tls =
            crate::tls::load_or_create(&data_dir, "hub1", &["localhost".into()], &[]).unwrap();
        let config =
            crate::api::http::listener::tls_config(&tls.server_cert_pem, &tls.server_key_pem)
                .unwrap();
        let guard = AgentGuard::new(crate::api::agents::guard::Limits::for_connections(100));
        let (tx, _rx) = mpsc::channel(4);
        sockets.serve(crate::api::agents::listener::acceptor(&config), guard, tx);
        let made = sockets.open("abc123").unwrap();
        let socket = made.join(AGENT_SOCKET_FILE);
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o666);
        assert_eq!(sockets.len(), 1);
        assert!(sockets.open("../etc").is_err());
        sockets.close_all();
        assert!(
            !socket.exists() && made.is_dir(),
            "the directory stays mounted"
        );
        sockets.open("abc123").unwrap();
        assert!(socket.exists());
        sockets.remove("abc123");
        assert!(!made.exists());
    }
}
