//! The authentication matrix against a real hub: every way to present the wrong credentials to the
//! agent and operator listeners is refused and logged, and a re-created agent's old token is dead.

use std::net::IpAddr;
use std::time::Duration;

use docker_agent_proto::v1 as pb;
use docker_agent_proto::v1::agent_service_client::AgentServiceClient;
use docker_agent_proto::v1::control_service_client::ControlServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::support::web::Api;
use crate::support::{Hub, docker};

/// The agent listener's address as seen from this host: the hub network's gateway.
pub(crate) async fn agent_listener(hub: &Hub) -> (IpAddr, u16) {
    let network = docker()
        .await
        .inspect_network(
            &hub.network,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .unwrap();
    let gateway = network.ipam.unwrap().config.unwrap()[0]
        .gateway
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    (gateway, hub.agent_port)
}

fn ca(hub: &Hub) -> String {
    std::fs::read_to_string(hub.home().join("tls/ca.pem")).unwrap()
}

async fn channel(
    url: String,
    ca_pem: Option<&str>,
    domain: &str,
) -> Result<Channel, tonic::transport::Error> {
    let mut endpoint = Endpoint::from_shared(url)
        .unwrap()
        .connect_timeout(Duration::from_secs(5));
    if let Some(ca_pem) = ca_pem {
        endpoint = endpoint.tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca_pem))
                .domain_name(domain),
        )?;
    }
    endpoint.connect().await
}

/// A TLS channel to the operator listener, trusting the hub's CA (no token attached).
pub(crate) async fn operator_channel(hub: &Hub) -> Channel {
    channel(
        format!("https://{}", hub.operator_addr()),
        Some(&ca(hub)),
        "localhost",
    )
    .await
    .expect("TLS to the operator listener with the hub's CA")
}

/// Opens an agent session with these credentials and says hello; the hub's answer.
async fn agent_session(
    hub: &Hub,
    id: Option<&str>,
    token: Option<&str>,
) -> Result<(), tonic::Status> {
    agent_session_as(hub, id, token, "intruder").await
}

/// `agent_session` saying hello as the agent process `instance`.
async fn agent_session_as(
    hub: &Hub,
    id: Option<&str>,
    token: Option<&str>,
    instance: &str,
) -> Result<(), tonic::Status> {
    let (ip, port) = agent_listener(hub).await;
    let ch = channel(
        format!("https://{ip}:{port}"),
        Some(&ca(hub)),
        "host.docker.internal",
    )
    .await
    .expect("TLS to the agent listener with the hub's CA");
    let hello = pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Hello(pb::Hello {
            agent_id: id.unwrap_or_default().to_string(),
            protocol_version: 1,
            instance_id: instance.into(),
            ..Default::default()
        })),
    };
    // The stream stays open after the hello, as an agent's does.
    let outbound = futures::stream::iter([hello]).chain(futures::stream::pending());
    let mut request = tonic::Request::new(outbound);
    if let Some(id) = id {
        request
            .metadata_mut()
            .insert(docker_agent_proto::AGENT_ID_HEADER, id.parse().unwrap());
    }
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let mut inbound = AgentServiceClient::new(ch)
        .session(request)
        .await?
        .into_inner();
    // Accepted streams answer with a welcome; refusals may also come as the first message.
    match tokio::time::timeout(Duration::from_secs(10), inbound.message()).await {
        Ok(Ok(Some(_))) => Ok(()),
        Ok(Ok(None)) => Err(tonic::Status::unknown("stream closed")),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(tonic::Status::deadline_exceeded("no answer")),
    }
}

use futures::StreamExt;

#[tokio::test(flavor = "multi_thread")]
async fn every_wrong_credential_is_refused_and_logged() {
    let hub = Hub::builder().start().await;
    let (a, b) = (hub.name("a"), hub.name("b"));
    futures::future::join_all([hub.create(&a), hub.create(&b)]).await;
    let id = |name: &str| {
        let name = name.to_string();
        let hub = &hub;
        async move {
            hub.cli(&["status", &name, "--json"]).await.json()["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let (id_a, id_b) = (id(&a).await, id(&b).await);
    let token_a = String::from_utf8(hub.read_container_file(&a, "/etc/docker-agent/token").await)
        .unwrap()
        .trim()
        .to_string();
    let admin = hub.admin_token();

    // The agent listener.
    let cases: [(&str, Option<&str>, Option<&str>); 6] = [
        ("no token", Some(&id_a), None),
        ("no agent id", None, Some(&token_a)),
        ("a wrong token", Some(&id_a), Some(&"0".repeat(64))),
        ("agent A's token as agent B", Some(&id_b), Some(&token_a)),
        ("the admin token as an agent", Some(&id_a), Some(&admin)),
        (
            "A's own token while A is connected",
            Some(&id_a),
            Some(&token_a),
        ),
    ];
    for (what, id, token) in cases {
        let refused = agent_session(&hub, id, token).await;
        assert!(refused.is_err(), "{what} was accepted");
    }
    let log = hub.log_tail_all();
    assert!(
        log.matches("agent authentication failed").count() >= 3,
        "refusals are logged:\n{}",
        hub.log_tail()
    );

    // Plaintext and a foreign CA do not even get a connection.
    let (ip, port) = agent_listener(&hub).await;
    let plain = match channel(format!("http://{ip}:{port}"), None, "").await {
        Ok(ch) => AgentServiceClient::new(ch)
            .session(futures::stream::pending::<pb::AgentMessage>())
            .await
            .map(|_| ()),
        Err(_) => Err(tonic::Status::unavailable("refused")),
    };
    assert!(
        plain.is_err(),
        "plaintext to the agent listener was answered"
    );
    let foreign = rcgen::generate_simple_self_signed(vec!["host.docker.internal".into()]).unwrap();
    let foreign_ca = foreign.cert.pem();
    assert!(
        channel(
            format!("https://{ip}:{port}"),
            Some(&foreign_ca),
            "host.docker.internal"
        )
        .await
        .is_err(),
        "a client trusting another CA connected: the hub's certificate must not verify"
    );

    // The operator API refuses an agent's token, over gRPC and REST.
    let op = operator_channel(&hub).await;
    let mut list = tonic::Request::new(pb::ListAgentsRequest {});
    list.metadata_mut().insert(
        "authorization",
        format!("Bearer {token_a}").parse().unwrap(),
    );
    let status = ControlServiceClient::new(op.clone())
        .list_agents(list)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let unauth = ControlServiceClient::new(op)
        .list_agents(pb::ListAgentsRequest {})
        .await
        .unwrap_err();
    assert_eq!(unauth.code(), tonic::Code::Unauthenticated);
    let api = Api::new(&hub);
    let r = api
        .client
        .get(api.url("/api/v1/agents"))
        .bearer_auth(&token_a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::UNAUTHORIZED);

    // A re-created agent gets a fresh token; the old one opens nothing.
    hub.cli(&["destroy", &a]).await.ok();
    hub.create(&a).await;
    let new_id = id(&a).await;
    let new_token = String::from_utf8(hub.read_container_file(&a, "/etc/docker-agent/token").await)
        .unwrap()
        .trim()
        .to_string();
    assert_ne!(new_token, token_a);
    assert!(
        agent_session(&hub, Some(&new_id), Some(&token_a))
            .await
            .is_err()
    );
    assert!(
        agent_session(&hub, Some(&id_a), Some(&token_a))
            .await
            .is_err()
    );
    assert_eq!(hub.sh(&a, "echo rotated").await, "rotated\n");

    // The control: this client with an agent's real, unused credentials is let in, so the refusals
    // above are the hub's decisions, not a broken client. B's container is stopped first, so its
    // own agent is not holding the identity. Only as B's own agent process, though: the container
    // has not started again since, so any other process with B's token is an impersonator.
    hub.cli(&["stop", &b]).await.ok();
    let token_b = String::from_utf8(hub.read_container_file(&b, "/etc/docker-agent/token").await)
        .unwrap()
        .trim()
        .to_string();
    let refused = agent_session(&hub, Some(&id_b), Some(&token_b))
        .await
        .expect_err("another process with B's token was taken for B");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(refused.message().starts_with("superseded: "), "{refused:?}");
    let logs = hub.cli(&["logs", &b]).await;
    let instance = format!("{}{}", logs.stdout, logs.stderr)
        .split_whitespace()
        .find_map(|w| w.strip_prefix("instance="))
        .expect("the agent logs its instance")
        .to_string();
    agent_session_as(&hub, Some(&id_b), Some(&token_b), &instance)
        .await
        .expect("real credentials are accepted");
    hub.cli(&["destroy", &a, "--purge"]).await.ok();
}
