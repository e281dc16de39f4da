//! Which Docker engine the driver talks to: the local defaults (`DOCKER_HOST`, else the local
//! socket), a Unix socket, or a remote engine over TCP, with TLS from a directory laid out as the
//! docker CLI's (`ca.pem`, `cert.pem`, `key.pem`).

use std::path::{Path, PathBuf};

use bollard::{API_DEFAULT_VERSION, Docker};

use super::map_err;
use crate::driver::Result;

/// The files a TLS directory must hold, as `docker --tlsverify` expects them.
const TLS_FILES: [&str; 3] = ["ca.pem", "cert.pem", "key.pem"];
/// Seconds a single engine request may take (bollard's default).
const REQUEST_TIMEOUT_SECS: u64 = 120;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum EngineAddress {
    /// As the docker CLI finds it: `DOCKER_HOST`, else `/var/run/docker.sock`.
    #[default]
    Local,
    Unix(PathBuf),
    /// `host:port`, in plain HTTP without a TLS directory (for test clusters on private addresses).
    Tcp {
        addr: String,
        tls_dir: Option<PathBuf>,
    },
}

impl EngineAddress {
    /// `unix:///path` or `tcp://host:port`; `tls_dir` only goes with TCP. The message says what is wrong.
    pub fn parse(url: &str, tls_dir: Option<&Path>) -> std::result::Result<Self, String> {
        if let Some(path) = url.strip_prefix("unix://") {
            if tls_dir.is_some() {
                return Err("--engine-tls-dir goes with a tcp:// engine, not a Unix socket".into());
            }
            if !path.starts_with('/') {
                return Err(format!(
                    "engine {url:?}: a Unix socket needs an absolute path (unix:///var/run/docker.sock)"
                ));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        let Some(addr) = url.strip_prefix("tcp://") else {
            return Err(format!(
                "engine {url:?} must be unix:///PATH or tcp://HOST:PORT"
            ));
        };
        let addr = addr.trim_end_matches('/');
        let port_ok = addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(format!("engine {url:?} must name a port: tcp://HOST:PORT"));
        }
        if let Some(dir) = tls_dir {
            for file in TLS_FILES {
                if !dir.join(file).is_file() {
                    return Err(format!(
                        "engine TLS directory {} has no {file} (it needs ca.pem, cert.pem and key.pem)",
                        dir.display()
                    ));
                }
            }
        }
        Ok(Self::Tcp {
            addr: addr.to_string(),
            tls_dir: tls_dir.map(Path::to_path_buf),
        })
    }

    /// Whether the engine may be on another machine, so nothing on this one (the agent sockets, the
    /// network's gateway) is where its containers are.
    pub fn is_remote(&self) -> bool {
        matches!(self, Self::Tcp { .. })
    }

    pub(super) fn connect(&self) -> Result<Docker> {
        let what = || format!("the Docker engine at {self}");
        match self {
            Self::Local => Docker::connect_with_local_defaults().map_err(map_err(what())),
            Self::Unix(path) => Docker::connect_with_unix(
                &path.display().to_string(),
                REQUEST_TIMEOUT_SECS,
                API_DEFAULT_VERSION,
            )
            .map_err(map_err(what())),
            Self::Tcp {
                addr,
                tls_dir: None,
            } => Docker::connect_with_http(addr, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
                .map_err(map_err(what())),
            Self::Tcp {
                addr,
                tls_dir: Some(dir),
            } => Docker::connect_with_ssl(
                addr,
                &dir.join("key.pem"),
                &dir.join("cert.pem"),
                &dir.join("ca.pem"),
                REQUEST_TIMEOUT_SECS,
                API_DEFAULT_VERSION,
            )
            .map_err(map_err(what())),
        }
    }
}

impl std::fmt::Display for EngineAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local => f.write_str("DOCKER_HOST or the local socket"),
            Self::Unix(path) => write!(f, "unix://{}", path.display()),
            Self::Tcp { addr, tls_dir } => {
                write!(f, "tcp://{addr}")?;
                if tls_dir.is_some() {
                    f.write_str(" (TLS)")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_docker_cli_takes_and_names_what_is_wrong() {
        assert_eq!(
            EngineAddress::parse("unix:///run/docker.sock", None),
            Ok(EngineAddress::Unix("/run/docker.sock".into()))
        );
        assert_eq!(
            EngineAddress::parse("tcp://10.0.0.5:2375", None),
            Ok(EngineAddress::Tcp {
                addr: "10.0.0.5:2375".into(),
                tls_dir: None
            })
        );
        assert!(
            EngineAddress::parse("tcp://10.0.0.5:2375", None)
                .unwrap()
                .is_remote()
        );
        for (url, needle) in [
            ("http://x:1", "must be unix:///PATH or tcp://HOST:PORT"),
            ("tcp://manager", "must name a port"),
            ("tcp://:2375", "must name a port"),
            ("unix://run/docker.sock", "absolute path"),
        ] {
            let err = EngineAddress::parse(url, None).unwrap_err();
            assert!(err.contains(needle), "{url}: {err}");
        }
        let empty = tempfile::tempdir().unwrap();
        let err = EngineAddress::parse("tcp://m:2376", Some(empty.path())).unwrap_err();
        assert!(err.contains("has no ca.pem"), "{err}");
        let err = EngineAddress::parse("unix:///s", Some(empty.path())).unwrap_err();
        assert!(err.contains("goes with a tcp:// engine"), "{err}");
        for file in TLS_FILES {
            std::fs::write(empty.path().join(file), "x").unwrap();
        }
        assert!(EngineAddress::parse("tcp://m:2376", Some(empty.path())).is_ok());
    }
}
