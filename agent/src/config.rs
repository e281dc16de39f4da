//! The agent's validated configuration: every check happens here, before the first dial, so a bad flag fails fast with one line.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tonic::codegen::http::Uri;
use tonic::metadata::MetadataValue;

use crate::args::Args;
use crate::users::{self, TaskUser, UserError};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--hub-url {url:?}: {reason}")]
    HubUrl { url: String, reason: String },
    #[error("--agent-id {0:?}: must be non-empty printable ASCII")]
    AgentId(String),
    #[error("--token-file {path}: {reason}")]
    Token { path: PathBuf, reason: String },
    #[error("--ca-file {path}: {reason}")]
    Ca { path: PathBuf, reason: String },
    #[error("--tls-server-name {0:?}: not a valid DNS name or IP address")]
    ServerName(String),
    #[error("--task-user: {0}")]
    TaskUser(#[from] UserError),
    #[error("--spool-bytes must be at least 1")]
    SpoolBytes,
}

/// The bearer token: kept in memory only, and never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A token handed over in memory (the load mode's simulated agents); agents read theirs from a file.
    pub fn new(token: String) -> Self {
        Self(token)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Where the hub is and how to recognise it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubTarget {
    pub url: String,
    /// Host as written in the URL, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// Name checked against the hub's certificate (and sent as SNI).
    pub server_name: String,
    /// The hub's agent socket, tried before the URL.
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub hub: HubTarget,
    pub agent_id: String,
    pub token: Token,
    pub ca_pem: Vec<u8>,
    pub task_user: TaskUser,
    pub workdir: PathBuf,
    pub spool_bytes: u64,
    pub kill_grace: Duration,
    /// Read at start; a missing file means no setup steps.
    pub setup_file: PathBuf,
    pub state_dir: PathBuf,
}

pub fn parse_hub_url(url: &str) -> Result<(String, u16), ConfigError> {
    let fail = |reason: &str| ConfigError::HubUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url.parse().map_err(|_| fail("not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(fail(
            "must start with https:// (agents never talk to the hub in plaintext)",
        ));
    }
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| fail("has no host"))?;
    let port = uri
        .port_u16()
        .filter(|p| *p != 0)
        .ok_or_else(|| fail("has no port (https://HOST:PORT)"))?;
    if uri
        .path_and_query()
        .is_some_and(|p| p.as_str() != "/" && !p.as_str().is_empty())
    {
        return Err(fail("must not have a path"));
    }
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok((host, port))
}

/// Reads the token: trimmed, non-empty, and usable in an `authorization` header.
pub fn read_token(path: &Path) -> Result<Token, ConfigError> {
    let fail = |reason: String| ConfigError::Token {
        path: path.to_owned(),
        reason,
    };
    let raw = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let token = raw.trim();
    if token.is_empty() {
        return Err(fail("is empty".into()));
    }
    if MetadataValue::try_from(format!("Bearer {token}")).is_err()
        || token.contains(char::is_whitespace)
    {
        return Err(fail("holds characters not allowed in a token".into()));
    }
    Ok(Token(token.to_owned()))
}

/// Reads the CA file and checks it holds at least one certificate usable as a trust anchor.
pub fn read_ca(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let fail = |reason: String| ConfigError::Ca {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(fail("holds no PEM certificate".into()));
    }
    // tonic silently skips certificates it cannot parse, which would leave no root and fail every handshake later.
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| fail(format!("not a usable CA certificate: {e}")))?;
    }
    Ok(pem)
}

impl Config {
    pub fn from_args(args: &Args) -> Result<Config, ConfigError> {
        let (host, port) = parse_hub_url(&args.hub_url)?;
        let server_name = args.tls_server_name.clone().unwrap_or_else(|| host.clone());
        if ServerName::try_from(server_name.as_str()).is_err() {
            return Err(ConfigError::ServerName(server_name));
        }
        let agent_id = args.agent_id.trim();
        if agent_id.is_empty()
            || !agent_id.bytes().all(|b| b.is_ascii_graphic())
            || MetadataValue::try_from(agent_id).is_err()
        {
            return Err(ConfigError::AgentId(args.agent_id.clone()));
        }
        let token = read_token(&args.token_file)?;
        let ca_pem = read_ca(&args.ca_file)?;
        let mut task_user = users::lookup(&args.task_user)?;
        task_user.groups.extend(&args.task_groups);
        task_user.groups.sort_unstable();
        task_user.groups.dedup();
        if args.spool_bytes == 0 {
            return Err(ConfigError::SpoolBytes);
        }
        Ok(Config {
            hub: HubTarget {
                url: args.hub_url.clone(),
                host,
                port,
                server_name,
                socket: args.hub_socket.clone(),
            },
            agent_id: agent_id.to_owned(),
            token,
            ca_pem,
            task_user,
            workdir: args.workdir.clone(),
            spool_bytes: args.spool_bytes,
            kill_grace: Duration::from_millis(args.kill_grace_ms),
            setup_file: args.setup_file.clone(),
            state_dir: args.state_dir.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// A self-signed CA certificate (CN=test-ca), generated once with openssl for these tests.
    pub(crate) const TEST_CA: &str = include_str!("../testdata/ca.pem");

    #[test]
    fn hub_url_rules() {
        assert_eq!(
            parse_hub_url("https://host.docker.internal:7443").unwrap(),
            ("host.docker.internal".into(), 7443)
        );
        assert_eq!(
            parse_hub_url("https://[::1]:7443/").unwrap(),
            ("::1".into(), 7443)
        );
        for bad in [
            "http://h:1",
            "https://h",
            "https://:7443",
            "h:7443",
            "https://h:0",
            "https://h:1/path",
            "not a url",
        ] {
            assert!(parse_hub_url(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn token_rules() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "  abc123\n").unwrap();
        assert_eq!(read_token(&p).unwrap().expose(), "abc123");
        assert_eq!(
            format!("{:?}", read_token(&p).unwrap()),
            "Token(<redacted>)"
        );
        std::fs::write(&p, " \n").unwrap();
        assert!(read_token(&p).unwrap_err().to_string().contains("is empty"));
        std::fs::write(&p, "a b").unwrap();
        assert!(read_token(&p).is_err());
        assert!(
            read_token(&dir.path().join("missing"))
                .unwrap_err()
                .to_string()
                .contains("cannot read")
        );
    }

    #[test]
    fn ca_rules() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, TEST_CA).unwrap();
        assert!(read_ca(&p).is_ok());
        std::fs::write(&p, "hello").unwrap();
        assert!(
            read_ca(&p)
                .unwrap_err()
                .to_string()
                .contains("no PEM certificate")
        );
        std::fs::write(
            &p,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(read_ca(&p).is_err());
    }

    #[test]
    fn from_args_validates_everything() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&token, "secret\n").unwrap();
        std::fs::write(&ca, TEST_CA).unwrap();
        let args = |extra: &[&str]| {
            let defaults = [
                "--hub-url=https://127.0.0.1:7443".to_owned(),
                "--agent-id=a1".into(),
                format!("--token-file={}", token.display()),
                format!("--ca-file={}", ca.display()),
                "--task-user=root".into(),
            ];
            let flag = |s: &str| s.split('=').next().unwrap_or_default().to_owned();
            let mut v = vec!["agent".to_owned()];
            v.extend(
                defaults
                    .into_iter()
                    .filter(|d| !extra.iter().any(|e| flag(e) == flag(d))),
            );
            v.extend(extra.iter().map(|s| s.to_string()));
            Args::try_parse_from(v).unwrap()
        };
        let c = Config::from_args(&args(&[])).unwrap();
        assert_eq!(c.hub.server_name, "127.0.0.1");
        assert_eq!(c.task_user.uid, 0);
        assert_eq!(c.kill_grace, Duration::from_secs(5));
        assert_eq!(c.spool_bytes, 64 << 20);
        assert_eq!(c.workdir, PathBuf::from("/workspace"));
        assert_eq!(c.setup_file, PathBuf::from("/etc/docker-agent/setup.pb"));
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/docker-agent"));
        let c = Config::from_args(&args(&["--task-groups=999,5,999"])).unwrap();
        assert!(c.task_user.groups.contains(&999) && c.task_user.groups.contains(&5));
        assert_eq!(c.task_user.groups.iter().filter(|g| **g == 999).count(), 1);
        let c = Config::from_args(&args(&["--tls-server-name=hub.local"])).unwrap();
        assert_eq!(c.hub.server_name, "hub.local");
        assert!(Config::from_args(&args(&["--task-user=no-such-user-xyz"])).is_err());
        assert!(Config::from_args(&args(&["--agent-id="])).is_err());
        assert!(Config::from_args(&args(&["--spool-bytes=0"])).is_err());
        assert!(Config::from_args(&args(&["--tls-server-name=bad name"])).is_err());
    }
}
