//! A scripted in-process hub: real TLS (its own rcgen CA) and the real AgentService, with each session handed to the test.

use std::net::SocketAddr;
use std::path::Path;

use docker_agent_agent::args::Args;
use docker_agent_agent::config::Config;
use docker_agent_proto::v1::agent_service_server::{AgentService, AgentServiceServer};
use docker_agent_proto::v1::{AgentMessage, HubMessage, agent_message, hub_message};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::metadata::MetadataMap;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

use crate::support::PATIENCE;

/// One agent session as the hub sees it.
pub struct HubLink {
    pub metadata: MetadataMap,
    inbound: Streaming<AgentMessage>,
    out: mpsc::Sender<Result<HubMessage, Status>>,
}

impl HubLink {
    pub async fn recv(&mut self) -> agent_message::Msg {
        let msg = tokio::time::timeout(PATIENCE, self.inbound.message())
            .await
            .expect("the agent went quiet")
            .expect("stream error")
            .expect("the agent closed the stream");
        msg.msg.expect("empty message")
    }

    /// Receives until `pick` returns something, collecting everything seen on the way.
    pub async fn recv_until<T>(
        &mut self,
        seen: &mut Vec<agent_message::Msg>,
        mut pick: impl FnMut(&agent_message::Msg) -> Option<T>,
    ) -> T {
        loop {
            let m = self.recv().await;
            let got = pick(&m);
            seen.push(m);
            if let Some(t) = got {
                return t;
            }
        }
    }

    pub async fn send(&self, msg: hub_message::Msg) {
        self.out
            .send(Ok(HubMessage { msg: Some(msg) }))
            .await
            .expect("the agent's session is gone");
    }
}

struct FakeHub {
    token: String,
    sessions: mpsc::UnboundedSender<HubLink>,
}

#[tonic::async_trait]
impl AgentService for FakeHub {
    type SessionStream = ReceiverStream<Result<HubMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let auth = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if auth != Some(format!("Bearer {}", self.token).as_str()) {
            return Err(Status::unauthenticated("bad token"));
        }
        let metadata = request.metadata().clone();
        let (out, rx) = mpsc::channel(64);
        let _ = self.sessions.send(HubLink {
            metadata,
            inbound: request.into_inner(),
            out,
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

pub struct Hub {
    pub addr: SocketAddr,
    pub ca_pem: String,
    sessions: mpsc::UnboundedReceiver<HubLink>,
}

/// Name in the hub's certificate; the agent dials an address and verifies this name.
pub const HUB_NAME: &str = "hub.test";

impl Hub {
    pub async fn start(token: &str) -> Hub {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![HUB_NAME.to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, sessions) = mpsc::unbounded_channel();
        let service = AgentServiceServer::new(FakeHub {
            token: token.to_owned(),
            sessions: tx,
        });
        let server = Server::builder()
            .tls_config(
                ServerTlsConfig::new()
                    .identity(Identity::from_pem(cert.pem(), key.serialize_pem())),
            )
            .unwrap()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener));
        tokio::spawn(server);
        Hub {
            addr,
            ca_pem: ca_cert.pem(),
            sessions,
        }
    }

    pub async fn next_link(&mut self) -> HubLink {
        tokio::time::timeout(PATIENCE, self.sessions.recv())
            .await
            .expect("the agent did not connect")
            .expect("hub stopped")
    }

    /// An agent configuration for this hub, through the real flag parsing and validation.
    pub fn agent_config(&self, dir: &Path, host: &str, token: &str) -> Config {
        let token_file = dir.join("token");
        let ca_file = dir.join("ca.pem");
        std::fs::write(&token_file, format!("{token}\n")).unwrap();
        std::fs::write(&ca_file, &self.ca_pem).unwrap();
        let user = crate::support::current_user();
        let args = <Args as clap::Parser>::try_parse_from([
            "docker-agent-agent".to_owned(),
            format!("--hub-url=https://{host}:{}", self.addr.port()),
            "--agent-id=agent-1".to_owned(),
            format!("--token-file={}", token_file.display()),
            format!("--ca-file={}", ca_file.display()),
            format!("--tls-server-name={HUB_NAME}"),
            format!("--task-user={}", user.name),
            format!("--workdir={}", dir.display()),
        ])
        .unwrap();
        Config::from_args(&args).unwrap()
    }
}
