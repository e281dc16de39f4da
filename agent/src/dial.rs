//! Dialing the hub: its agent socket when the hub mounted one, else resolve without NSS and connect to the
//! IP; either way, verify TLS against the pinned CA under the hub's name.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tonic::codegen::http::Uri;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::config::Config;
use crate::hosts::{self, ResolveError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings find a dead link (cut network, frozen hub) while the stream is idle.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("invalid hub endpoint: {0}")]
    Endpoint(#[source] tonic::transport::Error),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot connect to {}: {source}", path.display())]
    Socket {
        path: std::path::PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
}

/// Full error chain on one line: tonic's transport errors hide the useful part (refused, bad certificate) in sources.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = inner.source();
    }
    s
}

/// `uri` is where tonic connects, unless a connector decides (the socket).
fn endpoint(uri: String, config: &Config) -> Result<Endpoint, DialError> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&config.ca_pem))
        .domain_name(config.hub.server_name.clone());
    let mut ep = Endpoint::from_shared(uri)
        .map_err(DialError::Endpoint)?
        .tls_config(tls)
        .map_err(DialError::Endpoint)?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        // HTTP/2's default 64 KiB windows would cap output at one window per round trip.
        .initial_stream_window_size(2 << 20)
        .initial_connection_window_size(4 << 20);
    // Requests carry the URL's authority, not the IP we dialed.
    if let Ok(origin) = config.hub.url.parse::<Uri>() {
        ep = ep.origin(origin);
    }
    Ok(ep)
}

/// Connects over the hub's socket when it has one that answers; else resolves the hub afresh and
/// connects to the first address that answers.
pub async fn connect(config: &Config) -> Result<Channel, DialError> {
    if let Some(path) = &config.hub.socket {
        match connect_socket(path, config).await {
            Ok(channel) => return Ok(channel),
            // Not mounted (an older container), a hub restarting, another user's socket: the URL still works.
            Err(e) => {
                tracing::debug!(socket = %path.display(), error = %chain(&e), "hub socket failed; dialling the URL")
            }
        }
    }
    let addrs = hosts::resolve(&config.hub.host, config.hub.port).await?;
    let mut last = None;
    for addr in addrs {
        match endpoint(format!("https://{addr}"), config)?.connect().await {
            Ok(channel) => return Ok(channel),
            Err(source) => last = Some(DialError::Connect { addr, source }),
        }
    }
    Err(last.unwrap_or_else(|| ResolveError::NoAddress(config.hub.host.clone()).into()))
}

async fn connect_socket(path: &Path, config: &Config) -> Result<Channel, DialError> {
    let socket = path.to_path_buf();
    let connector = tower::service_fn(move |_: Uri| {
        let path = socket.clone();
        async move {
            let stream = tokio::net::UnixStream::connect(path).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    // An https URI, so tonic runs TLS over the socket; the connector ignores where it points.
    endpoint(config.hub.url.clone(), config)?
        .connect_with_connector(connector)
        .await
        .map_err(|source| DialError::Socket {
            path: path.to_path_buf(),
            source,
        })
}
