//! The hub's data directory: SQLite file, TLS material, admin token, hub id and the endpoint file the CLI reads.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::credentials;

/// File names inside the data dir. The CLI reads `ENDPOINT_FILE`, `ADMIN_TOKEN_FILE` and `CA_FILE`.
pub const ENDPOINT_FILE: &str = "hub.json";
/// The operator API for this host's CLI (see `http::local_socket`).
pub const SOCKET_FILE: &str = "hub.sock";
/// The directory each agent container mounts (read-only) to reach the agent socket in it.
pub const AGENT_SOCKET_DIR: &str = "agent-socket";
pub const AGENT_SOCKET_FILE: &str = "agent.sock";
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
pub const CA_FILE: &str = "tls/ca.pem";
const CA_KEY_FILE: &str = "tls/ca-key.pem";
const HUB_ID_FILE: &str = "hub-id";
const LOCK_FILE: &str = "hub.lock";
const DB_FILE: &str = "hub.db";

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("failed to {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another hub is already running on data dir {0}")]
    Locked(PathBuf),
    #[error("{path} is not valid: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError {
    let path = path.to_path_buf();
    move |source| DataDirError::Io {
        action,
        path,
        source,
    }
}

/// Where the hub and CLI find each other on one host. Written by the hub once both listeners are bound.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Endpoint {
    pub hub_id: String,
    /// `host:port` of the operator listener (CLI gRPC).
    pub operator_addr: String,
    /// URL the agents dial.
    pub agent_url: String,
    pub pid: u32,
    pub version: String,
}

/// The data directory. Holding one keeps the exclusive lock that stops a second hub from sharing it.
#[derive(Debug)]
pub struct DataDir {
    root: PathBuf,
    _lock: Option<File>,
}

impl DataDir {
    /// Opens (creating with mode 0700 if needed) and locks the data dir for a hub.
    pub fn open_for_hub(root: &Path) -> Result<Self, DataDirError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root.join("tls"))
            .map_err(io("create", root))?;
        let lock_path = root.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io("open", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(DataDirError::Locked(root.into())),
            Err(fs::TryLockError::Error(e)) => return Err(io("lock", &lock_path)(e)),
        }
        Ok(Self {
            root: root.to_path_buf(),
            _lock: Some(lock),
        })
    }

    /// Opens the data dir read-only, as the CLI does; nothing is created.
    pub fn open_for_client(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            _lock: None,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn db_path(&self) -> PathBuf {
        self.path(DB_FILE)
    }

    /// The hub's stable identity, made once. Containers are labelled with it.
    pub fn hub_id(&self) -> Result<String, DataDirError> {
        let path = self.path(HUB_ID_FILE);
        if let Some(id) = read_trimmed(&path)? {
            return Ok(id);
        }
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        write_private(&path, id.as_bytes())?;
        Ok(id)
    }

    /// The admin token for the CLI and API, made once with mode 0600.
    pub fn ensure_admin_token(&self) -> Result<String, DataDirError> {
        let path = self.path(ADMIN_TOKEN_FILE);
        if let Some(token) = read_trimmed(&path)? {
            let mode = fs::metadata(&path)
                .map_err(io("stat", &path))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(DataDirError::Invalid {
                    path,
                    reason: format!(
                        "mode is {:o}; it must be readable by its owner only (chmod 600)",
                        mode & 0o777
                    ),
                });
            }
            return Ok(token);
        }
        let token = credentials::new_token();
        write_private(&path, token.as_bytes())?;
        Ok(token)
    }

    pub fn read_admin_token(&self) -> Result<String, DataDirError> {
        let path = self.path(ADMIN_TOKEN_FILE);
        read_trimmed(&path)?.ok_or_else(|| DataDirError::Invalid {
            path,
            reason: "the file is empty".into(),
        })
    }

    pub fn read_ca_pem(&self) -> Result<String, DataDirError> {
        let path = self.path(CA_FILE);
        fs::read_to_string(&path).map_err(io("read", &path))
    }

    /// The CA certificate and key, if a previous start made them.
    pub fn read_ca(&self) -> Result<Option<(String, String)>, DataDirError> {
        let cert = self.path(CA_FILE);
        let key = self.path(CA_KEY_FILE);
        if !cert.exists() || !key.exists() {
            return Ok(None);
        }
        Ok(Some((
            fs::read_to_string(&cert).map_err(io("read", &cert))?,
            fs::read_to_string(&key).map_err(io("read", &key))?,
        )))
    }

    pub fn write_ca(&self, cert_pem: &str, key_pem: &str) -> Result<(), DataDirError> {
        write_private(&self.path(CA_KEY_FILE), key_pem.as_bytes())?;
        write_private(&self.path(CA_FILE), cert_pem.as_bytes())
    }

    pub fn write_endpoint(&self, endpoint: &Endpoint) -> Result<(), DataDirError> {
        let json = serde_json::to_vec_pretty(endpoint).expect("endpoint serialises");
        write_private(&self.path(ENDPOINT_FILE), &json)
    }

    /// Removed on a clean shutdown, so the CLI can tell "not running" from "not reachable".
    pub fn remove_endpoint(&self) {
        let _ = fs::remove_file(self.path(ENDPOINT_FILE));
    }

    pub fn read_endpoint(&self) -> Result<Option<Endpoint>, DataDirError> {
        let path = self.path(ENDPOINT_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("read", &path)(e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| DataDirError::Invalid {
                path,
                reason: e.to_string(),
            })
    }
}

fn read_trimmed(path: &Path) -> Result<Option<String>, DataDirError> {
    match fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", path)(e)),
    }
}

/// Writes atomically (temp file + rename) with mode 0600, so a reader never sees half a file.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), DataDirError> {
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    file.write_all(bytes).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("sync", &tmp))?;
    fs::rename(&tmp, path).map_err(io("rename", path))
}

/// The default data dir: `$XDG_DATA_HOME/docker-agent`, else `~/.local/share/docker-agent`.
pub fn default_data_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("docker-agent");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".local/share/docker-agent")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_token_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let dd = DataDir::open_for_hub(dir.path()).unwrap();
        let a = dd.ensure_admin_token().unwrap();
        let b = dd.ensure_admin_token().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        let mode = fs::metadata(dd.path(ADMIN_TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_second_hub_cannot_lock_the_same_dir() {
        let dir = tempfile::tempdir().unwrap();
        let _first = DataDir::open_for_hub(dir.path()).unwrap();
        let second = DataDir::open_for_hub(dir.path());
        assert!(matches!(second, Err(DataDirError::Locked(_))), "{second:?}");
    }

    #[test]
    fn loose_token_mode_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dd = DataDir::open_for_hub(dir.path()).unwrap();
        dd.ensure_admin_token().unwrap();
        fs::set_permissions(dd.path(ADMIN_TOKEN_FILE), fs::Permissions::from_mode(0o644)).unwrap();
        let err = dd.ensure_admin_token().unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
