//! Finding and dialing the hub: its address, CA and admin token come from the data dir the hub wrote.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use docker_agent_hub::datadir::DataDir;
use docker_agent_proto::v1::control_service_client::ControlServiceClient;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

pub type Client = ControlServiceClient<InterceptedService<Channel, Bearer>>;

/// Adds the admin token to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

pub fn data_dir(home: Option<&Path>) -> PathBuf {
    home.map(Path::to_path_buf)
        .unwrap_or_else(docker_agent_hub::datadir::default_data_dir)
}

/// Connects to the hub named by `--hub`, else the one that wrote `home`: through its socket when it has one
/// (no TLS on this host's own hop), else its TCP port.
pub async fn connect(home: &Path, hub: Option<&str>) -> Result<Client> {
    let dir = DataDir::open_for_client(home);
    let channel = match hub {
        Some(addr) => connect_tcp(&dir, home, addr).await?,
        None => match connect_socket(&dir.path(docker_agent_hub::datadir::SOCKET_FILE)).await {
            Some(channel) => channel,
            // No socket (an older hub, a path too long) or a stale one: the TCP port says the rest.
            None => match dir.read_endpoint()? {
                Some(endpoint) => connect_tcp(&dir, home, &endpoint.operator_addr).await?,
                None => bail!(
                    "the hub is not running (no {} found); start it with `docker-agent hub`",
                    dir.path(docker_agent_hub::datadir::ENDPOINT_FILE).display()
                ),
            },
        },
    };
    let token = dir
        .read_admin_token()
        .with_context(|| format!("failed to read the admin token in {}", home.display()))?;
    let bearer: MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .map_err(|_| anyhow!("the admin token in {} is not valid text", home.display()))?;
    Ok(
        ControlServiceClient::with_interceptor(channel, Bearer(bearer))
            .max_decoding_message_size(64 << 20),
    )
}

/// HTTP/2 settings shared by both ways in.
fn tuned(endpoint: Endpoint) -> Endpoint {
    endpoint
        .connect_timeout(Duration::from_secs(5))
        // HTTP/2's default 64 KiB windows would cap exec output at one window per round trip.
        .initial_stream_window_size(2 << 20)
        .initial_connection_window_size(4 << 20)
}

/// `None` when nothing answers on the socket.
async fn connect_socket(path: &Path) -> Option<Channel> {
    if !path.exists() {
        return None;
    }
    let path = path.to_path_buf();
    // The URI is required but unused: the connector below decides where to go.
    let endpoint = tuned(Endpoint::from_static("http://hub.sock"));
    let connector = tower::service_fn(move |_: tonic::transport::Uri| {
        let path = path.clone();
        async move {
            let stream = tokio::net::UnixStream::connect(path).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    endpoint.connect_with_connector(connector).await.ok()
}

async fn connect_tcp(dir: &DataDir, home: &Path, addr: &str) -> Result<Channel> {
    let ca = dir
        .read_ca_pem()
        .with_context(|| format!("failed to read the hub's CA in {}", home.display()))?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    let endpoint = Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|_| anyhow!("invalid hub address {addr:?}"))?
        .tls_config(tls)
        .context("failed to configure TLS")?
        .tcp_nodelay(true);
    tuned(endpoint).connect().await.map_err(|e| {
        let mut source: &dyn std::error::Error = &e;
        while let Some(next) = source.source() {
            source = next;
        }
        anyhow!("cannot reach the hub at {addr}: {source}; is `docker-agent hub` running?")
    })
}

/// Turns a gRPC status into a one-line error.
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    match status.code() {
        tonic::Code::Unavailable
            if status.message().contains("transport") || status.message().is_empty() =>
        {
            anyhow!("lost the connection to the hub: {}", status.message())
        }
        tonic::Code::Unauthenticated => anyhow!(
            "{} (check DOCKER_AGENT_HOME points at this hub's data dir)",
            status.message()
        ),
        _ => anyhow!("{}", status.message()),
    }
}
