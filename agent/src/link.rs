//! One link with the hub (its `Session` rpc: one bidirectional stream): Hello, Welcome, then a reader for hub commands and a writer for output, results and heartbeats.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use docker_agent_proto::v1::{
    AgentMessage, Heartbeat, Hello, HubMessage, SystemInfo, Welcome, agent_message,
    agent_service_client::AgentServiceClient, hub_message::Msg,
};
use docker_agent_proto::{AGENT_ID_HEADER, PROTOCOL_VERSION};
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status, Streaming};

use crate::config::Config;
use crate::dial::{self, DialError};
use crate::health::HealthSource;
use crate::runner;
use crate::state::Shared;

pub const CAPABILITIES: [&str; 8] = [
    "exec",
    "stdin",
    "signal",
    "timeout",
    "spool",
    "pty",
    "drop-output",
    // Stdin by offset, acknowledged as the process consumes it (the hub's `task::stdin`).
    "stdin-ack",
];
/// Connect, TLS, the hub's response and its Welcome must all happen within this.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
/// Messages queued toward h2; small, since the spool already holds everything.
const OUTBOUND_QUEUE: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{}", dial::chain(.0))]
    Dial(#[from] DialError),
    #[error("the hub refused this agent ({}): {}", .0.code(), .0.message())]
    Refused(Status),
    /// Another process is this agent now (its container was replaced): this one's work is unwanted.
    #[error("superseded by another process of this agent: {}", .0.message())]
    Superseded(Status),
    #[error("hub error ({}): {}", .0.code(), .0.message())]
    Status(Status),
    #[error("no Welcome from the hub within {0:?}")]
    WelcomeTimeout(Duration),
    #[error("the hub sent something other than Welcome first")]
    NoWelcome,
    #[error("the hub closed the link")]
    Closed,
}

impl From<Status> for LinkError {
    fn from(s: Status) -> Self {
        match s.code() {
            Code::Unauthenticated | Code::PermissionDenied => LinkError::Refused(s),
            Code::FailedPrecondition => LinkError::Superseded(s),
            _ => LinkError::Status(s),
        }
    }
}

/// How a link ended.
#[derive(Debug)]
pub enum LinkEnd {
    /// Never got as far as a Welcome.
    Failed(LinkError),
    /// Was established for `lasted`, then broke.
    Ended { lasted: Duration, error: LinkError },
}

/// What stays the same for every link of this agent process.
#[derive(Debug)]
pub struct Identity {
    pub instance_id: String,
    pub system: SystemInfo,
}

fn hello(shared: &Shared, config: &Config, identity: &Identity) -> AgentMessage {
    AgentMessage {
        msg: Some(agent_message::Msg::Hello(Hello {
            agent_id: config.agent_id.clone(),
            protocol_version: PROTOCOL_VERSION,
            capabilities: CAPABILITIES.iter().map(|c| (*c).to_owned()).collect(),
            tasks: shared.table().reports(),
            instance_id: identity.instance_id.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            system: Some(identity.system.clone()),
            setup: shared.setup().for_hello(),
        })),
    }
}

/// Dials, says Hello and waits for Welcome.
async fn open(
    shared: &Shared,
    config: &Config,
    identity: &Identity,
    tx: &mpsc::Sender<AgentMessage>,
    rx: mpsc::Receiver<AgentMessage>,
) -> Result<(Streaming<HubMessage>, Welcome), LinkError> {
    let channel = dial::connect(config).await?;
    // The queue is empty, so this cannot wait.
    tx.send(hello(shared, config, identity))
        .await
        .map_err(|_| LinkError::Closed)?;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    // Both values were validated as header-safe at startup.
    let auth = MetadataValue::try_from(format!("Bearer {}", config.token.expose()))
        .map_err(|_| LinkError::Refused(Status::unauthenticated("token is not header-safe")))?;
    let id = MetadataValue::try_from(config.agent_id.as_str())
        .map_err(|_| LinkError::Refused(Status::unauthenticated("agent id is not header-safe")))?;
    request.metadata_mut().insert("authorization", auth);
    request.metadata_mut().insert(AGENT_ID_HEADER, id);
    let mut inbound = AgentServiceClient::new(channel)
        .session(request)
        .await?
        .into_inner();
    match inbound.message().await? {
        Some(HubMessage {
            msg: Some(Msg::Welcome(w)),
        }) => Ok((inbound, w)),
        Some(_) => Err(LinkError::NoWelcome),
        None => Err(LinkError::Closed),
    }
}

/// Runs one link to its end. Tasks keep running whatever happens here.
pub async fn run(
    shared: &Arc<Shared>,
    config: &Config,
    identity: &Identity,
    sampler: &mut dyn HealthSource,
) -> LinkEnd {
    let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
    let opened =
        tokio::time::timeout(WELCOME_TIMEOUT, open(shared, config, identity, &tx, rx)).await;
    let (mut inbound, welcome) = match opened {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return LinkEnd::Failed(e),
        Err(_) => return LinkEnd::Failed(LinkError::WelcomeTimeout(WELCOME_TIMEOUT)),
    };
    let stopped = shared.table().apply_welcome(&welcome);
    tracing::info!(
        hub = %welcome.hub_id,
        resend = welcome.resend.len(),
        cancel = stopped.len(),
        forget = welcome.forget.len(),
        "link established"
    );
    let heartbeat = match welcome.heartbeat_interval_ms {
        0 => DEFAULT_HEARTBEAT,
        // A floor keeps a misconfigured hub from turning heartbeats into a busy loop.
        ms => Duration::from_millis(u64::from(ms).max(100)),
    };
    let established = Instant::now();
    let ping = Notify::new();
    shared.connected.store(true, Ordering::Release);
    let error = tokio::select! {
        e = read_loop(shared, &mut inbound, &ping) => e,
        e = write_loop(shared, &tx, heartbeat, &ping, sampler) => e,
    };
    // Pumps waiting for acknowledgements that will not come now spool (bounded) instead.
    shared.connected.store(false, Ordering::Release);
    shared.space.notify_waiters();
    LinkEnd::Ended {
        lasted: established.elapsed(),
        error,
    }
}

async fn read_loop(
    shared: &Arc<Shared>,
    inbound: &mut Streaming<HubMessage>,
    ping: &Notify,
) -> LinkError {
    loop {
        let msg = match inbound.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return LinkError::Closed,
            Err(s) => return s.into(),
        };
        match msg.msg {
            Some(Msg::Run(task)) => runner::run(shared, task),
            Some(Msg::Stdin(data)) => runner::stdin(shared, data),
            Some(Msg::CloseStdin(c)) => runner::close_stdin(shared, c),
            Some(Msg::Signal(s)) => runner::signal(shared, s),
            Some(Msg::Cancel(c)) => runner::cancel(shared, &c.task_id),
            Some(Msg::Ack(a)) => {
                shared.table().ack(&a);
                shared.task_done.notify_waiters();
                shared.space.notify_waiters();
            }
            Some(Msg::DropOutput(d)) => {
                tracing::info!(task = %d.task_id, bound = %d.reason, "the hub stores no more of this task's output; discarding it");
                shared.table().discard_output(&d.task_id);
                shared.space.notify_waiters();
            }
            Some(Msg::Ping(_)) => ping.notify_one(),
            Some(Msg::Resize(r)) => runner::resize(shared, r),
            Some(Msg::Welcome(_)) => tracing::warn!("ignoring a second Welcome"),
            None => tracing::debug!("ignoring an empty or unknown hub message"),
        }
    }
}

fn heartbeat(shared: &Shared, sampler: &mut dyn HealthSource) -> AgentMessage {
    let idle = shared.table().spooled_bytes() == 0;
    let running_tasks = shared.table().running_ids();
    let count = u32::try_from(running_tasks.len()).unwrap_or(u32::MAX);
    AgentMessage {
        msg: Some(agent_message::Msg::Heartbeat(Heartbeat {
            health: Some(sampler.sample(count, idle)),
            running_tasks,
        })),
    }
}

async fn send_heartbeat(
    shared: &Shared,
    tx: &mpsc::Sender<AgentMessage>,
    sampler: &mut dyn HealthSource,
) -> Result<(), LinkError> {
    tx.send(heartbeat(shared, sampler))
        .await
        .map_err(|_| LinkError::Closed)
}

/// Sends whatever the task table has ready, with heartbeats interleaved even under a constant output stream.
async fn write_loop(
    shared: &Shared,
    tx: &mpsc::Sender<AgentMessage>,
    interval: Duration,
    ping: &Notify,
    sampler: &mut dyn HealthSource,
) -> LinkError {
    match write_loop_inner(shared, tx, interval, ping, sampler).await {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

async fn write_loop_inner(
    shared: &Shared,
    tx: &mpsc::Sender<AgentMessage>,
    interval: Duration,
    ping: &Notify,
    sampler: &mut dyn HealthSource,
) -> Result<std::convert::Infallible, LinkError> {
    // The first tick is immediate: one heartbeat right after Welcome.
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        // Heartbeats first (biased), so a task streaming without pause cannot starve them.
        let permit = tokio::select! {
            biased;
            _ = ticker.tick() => {
                send_heartbeat(shared, tx, sampler).await?;
                continue;
            }
            () = ping.notified() => {
                send_heartbeat(shared, tx, sampler).await?;
                continue;
            }
            p = tx.reserve() => p.map_err(|_| LinkError::Closed)?,
        };
        // Setup changes first: the status that ends the setup must precede the TaskStarted of a task it released.
        let setup = shared.setup().next_unsent();
        let next = match setup {
            Some(status) => Some(AgentMessage {
                msg: Some(agent_message::Msg::Setup(status)),
            }),
            None => shared.table().next_outbound(),
        };
        match next {
            Some(msg) => permit.send(msg),
            None => {
                drop(permit);
                tokio::select! {
                    biased;
                    _ = ticker.tick() => send_heartbeat(shared, tx, sampler).await?,
                    () = ping.notified() => send_heartbeat(shared, tx, sampler).await?,
                    () = shared.outbound.notified() => {}
                }
            }
        }
    }
}
