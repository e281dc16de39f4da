//! The agent service: authenticates the agent's token, takes its hello, answers welcome and hands the stream to the link loop. Every refusal that a real agent would not provoke is a strike against the connection's source (`agent_guard`).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use docker_agent_proto::v1::agent_message::Msg as AgentMsg;
use docker_agent_proto::v1::agent_service_server::AgentService;
use docker_agent_proto::v1::hub_message::Msg;
use docker_agent_proto::v1::{AgentMessage, HubMessage};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::agent::conduct::Violation;
use crate::api::agents::guard::{ConnState, Refused};
use crate::api::agents::listener::AgentConnInfo;
use crate::core::Core;
use crate::core::registry::RegistryError;
use crate::core::stdin::STDIN_ACK_CAPABILITY;
use crate::credentials;
use crate::lifecycle::Lifecycle;
use crate::store::AgentRecord;

/// The connection's own deadline (`agent_guard::Limits::hello_deadline`) usually ends a silent stream
/// first; this bounds one on a connection that has authenticated before.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Outbound queue per agent: task dispatch, stdin and acks.
const OUTBOUND_QUEUE: usize = 1024;

#[derive(Debug, Clone)]
pub struct AgentSvc {
    core: Arc<Core>,
}

impl AgentSvc {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    /// The agent's id and token must match a live agent; the error never says which part was wrong.
    fn authenticate(&self, metadata: &MetadataMap) -> Result<AgentRecord, Status> {
        let refused = || Status::unauthenticated("invalid agent credentials");
        let id = metadata
            .get(docker_agent_proto::AGENT_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(refused)?;
        let token = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(credentials::bearer)
            .ok_or_else(refused)?;
        let agent = self
            .core
            .agent_by_id(id)?
            .filter(|a| a.lifecycle != Lifecycle::Destroyed);
        match agent {
            Some(agent) if credentials::token_matches(token, &agent.token_hash) => Ok(agent),
            _ => {
                tracing::warn!(agent_id = id, "agent authentication failed");
                Err(refused())
            }
        }
    }
}

type HubStream = Pin<Box<dyn Stream<Item = Result<HubMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for AgentSvc {
    type SessionStream = HubStream;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<HubStream>, Status> {
        // Absent only when the service is served without the agent listener (tests).
        let conn = request
            .extensions()
            .get::<AgentConnInfo>()
            .map(|info| info.state.clone());
        let strike = |violation: Violation| {
            if let Some(conn) = &conn {
                conn.strike(violation);
            }
        };
        let agent = match self.authenticate(request.metadata()) {
            Ok(agent) => agent,
            Err(status) => {
                if status.code() == tonic::Code::Unauthenticated {
                    strike(Violation::BadCredentials);
                }
                return Err(status);
            }
        };
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(AgentMessage {
                msg: Some(AgentMsg::Hello(hello)),
            }))) => hello,
            Ok(Ok(_)) => {
                strike(Violation::BadHello);
                return Err(Status::invalid_argument("the first message must be hello"));
            }
            Ok(Err(status)) => return Err(status),
            Err(_) => {
                strike(Violation::NoHello);
                return Err(Status::deadline_exceeded(format!(
                    "no hello within {HELLO_TIMEOUT:?}"
                )));
            }
        };
        if hello.agent_id != agent.id {
            strike(Violation::BadHello);
            return Err(Status::permission_denied("hello names another agent"));
        }
        if let Some(conn) = &conn {
            admit_link(conn, &agent)?;
        }
        // From the duplicate check to registration, nothing else may put anything on this agent's stream
        // or race a second hello: the welcome, then its queued tasks, must be the first things sent.
        let order = self.core.stream_lock(&agent.id).lock_owned().await;
        // Refuse a second process before its hello changes anything (it would mark the live one's tasks lost).
        if let Some(other) = self
            .core
            .registry
            .held_by_other(&agent.id, &hello.instance_id)
        {
            // The container started again after the connected process said hello: that process is
            // in a container that is gone or cut off (its Swarm node lost, its link not yet timed
            // out), and this one is its replacement. Its link is dropped now, not after the timeout.
            let started = self.core.container_started_at(&agent).await?;
            if other == agent.instance_id && started > agent.instance_since {
                tracing::warn!(agent = %agent.name, old = other, new = %hello.instance_id, "the agent's container was replaced: dropping the old process's link");
                self.core.registry.evict(&agent.id);
            } else {
                tracing::warn!(agent = %agent.name, other, "refusing a second agent process with the same identity");
                strike(Violation::Duplicate);
                return Err(superseded(
                    "another process of this agent is connected; only one may be",
                ));
            }
        }
        // One agent process per container start: a new instance while the container has not started
        // again since the last one said hello is another process holding the agent's token (a task
        // running as root can read it), never the agent.
        if !agent.instance_id.is_empty() && agent.instance_id != hello.instance_id {
            let started = self.core.container_started_at(&agent).await?;
            // 0: the engine does not say (a fake in tests); then the rule cannot be kept, and is not.
            if started > 0 && started <= agent.instance_since {
                tracing::warn!(agent = %agent.name, instance = %hello.instance_id, "refusing another process with the agent's credentials: its container has not restarted");
                strike(Violation::Duplicate);
                return Err(superseded(
                    "another process of this agent already ran in this container; only a restarted container's agent is taken",
                ));
            }
        }
        let welcome = self.core.welcome_for(&agent, &hello)?;
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let welcome = Box::new(HubMessage {
            msg: Some(Msg::Welcome(welcome)),
        });
        tx.try_send(welcome)
            .map_err(|_| Status::internal("link closed"))?;
        // Queued tasks go out right behind the welcome, before the link is visible to senders of
        // stdin, signals or cancels, so none of those can overtake the task it is for.
        for run in self.core.claim_queued(&agent.id, OUTBOUND_QUEUE - 1)? {
            tx.try_send(Box::new(HubMessage { msg: Some(run) }))
                .map_err(|_| Status::internal("link closed"))?;
        }
        let generation = match self
            .core
            .registry
            .register(&agent.id, &hello.instance_id, tx)
        {
            Ok(g) => g,
            Err(RegistryError::Duplicate(other)) => {
                tracing::warn!(agent = %agent.name, other, "refusing a second agent process with the same identity");
                return Err(Status::already_exists(
                    "another process of this agent is connected; only one may be",
                ));
            }
            Err(RegistryError::NotConnected) => {
                return Err(Status::internal("registration failed"));
            }
        };
        if hello.capabilities.iter().any(|c| c == STDIN_ACK_CAPABILITY) {
            self.core.registry.set_acks_stdin(&agent.id, generation);
        } else {
            // An agent from before acknowledgements: stdin that waited for room while it was away
            // goes unbounded now, as it always did to such agents.
            self.core.stdin.wake();
        }
        // Stdin the agent may lack goes again behind the welcome and the queued tasks, before anything
        // else for its tasks: the stream lock is held until it is queued. From a task of its own, as
        // the stream is not read until this call returns.
        let resend = self.core.stdin.resend(&agent.id);
        if resend.is_empty() {
            drop(order);
        } else {
            let (core, id) = (self.core.clone(), agent.id.clone());
            tokio::spawn(async move {
                core.resend_stdin(&id, resend).await;
                drop(order);
            });
        }
        tracing::info!(agent = %agent.name, generation, instance = %hello.instance_id, tasks = hello.tasks.len(), "agent connected");
        let core = self.core.clone();
        tokio::spawn(async move {
            // Boxed so the task does not keep this one-off step's state for the link's life.
            if let Err(e) = Box::pin(core.agent_registered(&agent, hello.setup.as_ref())).await {
                tracing::error!(agent = %agent.name, error = %e, "failed to finish registration");
            }
            let conduct = conn.map(|c| c as Arc<dyn crate::agent::conduct::Conduct>);
            let peer = crate::agent::link::Peer::new(conduct, &hello);
            core.run_link(agent, generation, inbound, peer).await;
        });
        Ok(Response::new(Box::pin(
            ReceiverStream::new(rx).map(|m| Ok(*m)),
        )))
    }
}

/// The refusal of an agent process that is not the agent's current one (an orphan of a lost Swarm
/// node come back, or another process holding the token). FAILED_PRECONDITION is the agent's sign
/// to stop its tasks and exit: its container has been replaced, so nothing it runs is wanted.
fn superseded(why: &str) -> Status {
    Status::failed_precondition(format!("superseded: {why}; stop this process's tasks"))
}

/// Moves an authenticated connection into its agent's share of the caps, or refuses the link.
fn admit_link(conn: &ConnState, agent: &AgentRecord) -> Result<(), Status> {
    match conn.authenticate(&agent.id) {
        Ok(()) => Ok(()),
        Err(refused) => {
            crate::metrics::metrics().agent_side_refused(refused.reason());
            tracing::warn!(agent = %agent.name, source = %conn.source(), "agent link refused: {refused}");
            match refused {
                Refused::WrongSocket => {
                    conn.strike(Violation::WrongSocket);
                    Err(Status::permission_denied(
                        "these credentials belong to another agent's socket",
                    ))
                }
                Refused::PerAgent(_) => {
                    conn.strike(Violation::TooManyConnections);
                    Err(Status::resource_exhausted(refused.to_string()))
                }
                other => Err(Status::resource_exhausted(other.to_string())),
            }
        }
    }
}
