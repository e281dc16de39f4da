//! The hub's side of the agent stream: hello/welcome reconciliation, then heartbeats, output, results and acknowledgements.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use docker_agent_proto::v1::agent_message::Msg as AgentMsg;
use docker_agent_proto::v1::hub_message::Msg;
use docker_agent_proto::v1::{
    Ack, AgentMessage, DropOutput, Hello, OutputChunk, ResendFrom, SetupStatus, Stream, TaskResult,
    Welcome,
};
use futures::{Stream as FutStream, StreamExt};

use crate::agent::conduct::{Conduct, Violation};
use crate::core::Core;
use crate::error::{HubError, Result};
use crate::lifecycle::Connection;
use crate::store::{AgentRecord, TaskState};

/// How often stored-output acknowledgements go back to the agent, so it can free its spool.
const ACK_INTERVAL: Duration = Duration::from_millis(200);
/// ... and sooner, once this much output was stored since the last acknowledgement (at most; less for a
/// small agent spool): a fast producer waits for room in the agent's spool, so acks pace throughput.
const ACK_BYTES: usize = 1 << 20;
/// Output of a task the agent was told to drop that may still arrive: what was in flight when it was
/// told (the link's window, a few messages). More than this and the agent is not listening.
const UNWANTED_OUTPUT_GRACE: u64 = 16 << 20;
/// The capability an agent announces when it understands `DropOutput`.
pub const DROP_OUTPUT_CAPABILITY: &str = "drop-output";

/// What a link knows of the agent's end of the link.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// The connection's standing with the guard, for violations; None without the agent listener (tests).
    pub conn: Option<Arc<dyn Conduct>>,
    /// The agent understands `DropOutput` (its hello says so).
    pub drops_output: bool,
}

impl Peer {
    pub fn new(conn: Option<Arc<dyn Conduct>>, hello: &Hello) -> Self {
        Self {
            conn,
            drops_output: hello
                .capabilities
                .iter()
                .any(|c| c == DROP_OUTPUT_CAPABILITY),
        }
    }
}

/// Per link: output that arrived after the agent was told to drop it.
#[derive(Debug, Default)]
struct Unwanted {
    bytes: HashMap<String, u64>,
}

impl Core {
    /// Reconciles what the agent reports with the store and builds the welcome.
    pub fn welcome_for(&self, agent: &AgentRecord, hello: &Hello) -> Result<Welcome> {
        if hello.protocol_version != docker_agent_proto::PROTOCOL_VERSION {
            return Err(HubError::FailedPrecondition(format!(
                "agent speaks protocol {}, the hub speaks {}",
                hello.protocol_version,
                docker_agent_proto::PROTOCOL_VERSION
            )));
        }
        let same_instance = !agent.instance_id.is_empty() && agent.instance_id == hello.instance_id;
        let mut welcome = Welcome {
            hub_id: self.settings.hub_id.clone(),
            heartbeat_interval_ms: self.settings.heartbeat_interval.as_millis() as u32,
            ..Default::default()
        };
        let mut reported = HashSet::new();
        for report in &hello.tasks {
            reported.insert(report.task_id.clone());
            let task = self
                .store
                .task(&report.task_id)?
                .filter(|t| t.agent_id == agent.id);
            match task {
                None => {
                    welcome.cancel.push(report.task_id.clone());
                    welcome.forget.push(report.task_id.clone());
                }
                Some(t) if t.state.is_terminal() => {
                    if report.running {
                        welcome.cancel.push(t.id.clone());
                    }
                    if t.state == TaskState::Finished || !report.running {
                        welcome.forget.push(t.id.clone());
                    }
                }
                Some(t) => {
                    if let Some(cap) = t.output_dropped {
                        welcome.drop_output.push(DropOutput {
                            task_id: t.id.clone(),
                            reason: cap.as_str().to_string(),
                        });
                    }
                    // A task still held back by the agent's setup is not running yet, but is cancelled all the same.
                    if t.cancel_requested && report.result.is_none() {
                        welcome.cancel.push(t.id.clone());
                    }
                    if report.running || report.result.is_some() {
                        self.store.mark_started(
                            &t.id,
                            if t.started_at > 0 {
                                t.started_at
                            } else {
                                crate::store::now_ms()
                            },
                        )?;
                    }
                    if t.spec.stdin {
                        self.stdin.resume(&agent.id, &t.id, report.stdin_taken);
                    }
                    welcome.resend.push(ResendFrom {
                        task_id: t.id.clone(),
                        stdout_offset: t.stdout_len,
                        stderr_offset: t.stderr_len,
                    });
                }
            }
        }
        let open = [TaskState::Dispatched, TaskState::Running];
        for task in self.store.tasks_in_states(&agent.id, &open)? {
            if reported.contains(&task.id) {
                continue;
            }
            if task.state == TaskState::Dispatched && same_instance && task.cancel_requested {
                // Cancelled while its RunTask was lost with the old link: it never ran, and never will.
                self.end_task(&task.id, TaskState::Cancelled, crate::task::NEVER_STARTED)?;
            } else if task.state == TaskState::Dispatched && same_instance {
                // The RunTask was lost with the old link; the agent never saw it. Send it again.
                self.store.requeue(&task.id)?;
            } else {
                let why = if same_instance {
                    "the agent no longer knows this task"
                } else {
                    "the agent restarted while the task was running"
                };
                tracing::warn!(task = %task.id, agent = %agent.name, why, "task lost");
                self.end_task(&task.id, TaskState::Lost, why)?;
            }
        }
        let system = hello.system.clone().unwrap_or_default();
        self.store.set_agent_identity(
            &agent.id,
            &hello.instance_id,
            &hello.agent_version,
            &system,
        )?;
        Ok(welcome)
    }

    /// Marks the agent connected, and ready unless its setup still runs or failed, and sends it its
    /// queue (the agent holds tasks back until its setup has ended). Called once the welcome is queued.
    pub async fn agent_registered(
        &self,
        agent: &AgentRecord,
        setup: Option<&SetupStatus>,
    ) -> Result<()> {
        // Only agents heartbeat; one that has done so before is coming back.
        crate::metrics::metrics().link_opened(agent.last_heartbeat > 0);
        self.set_connection(&agent.id, Connection::Connected)?;
        self.apply_setup_status(&agent.id, setup)?;
        self.dispatch_queued(&agent.id).await
    }

    /// Handles the agent's messages until the stream ends or this link is replaced.
    pub async fn run_link<S>(
        self: Arc<Self>,
        agent: AgentRecord,
        generation: u64,
        mut inbound: S,
        peer: Peer,
    ) where
        S: FutStream<Item = std::result::Result<AgentMessage, tonic::Status>> + Unpin + Send,
    {
        let mut acks: HashMap<String, Ack> = HashMap::new();
        let mut unwanted = Unwanted::default();
        let mut unacked_bytes = 0usize;
        // A quarter of the agent's spool, so a small spool is never left waiting for the timer.
        let ack_bytes = self.settings.agent_spool_bytes.map_or(ACK_BYTES, |spool| {
            ((spool / 4) as usize).clamp(64 << 10, ACK_BYTES)
        });
        // Armed only while acknowledgements wait: an idle link then wakes for nothing but its
        // agent's messages (a periodic tick per link cost a third of a core at 10,000 agents).
        let ack_timer = tokio::time::sleep(ACK_INTERVAL);
        tokio::pin!(ack_timer);
        let mut ack_armed = false;
        let ended = self.registry.ended(&agent.id, generation);
        let end = loop {
            let Some(ended) = &ended else {
                break "replaced or removed before it began".to_string();
            };
            tokio::select! {
                () = ended.notified() => break "replaced by a newer link, or removed".to_string(),
                msg = inbound.next() => {
                    let msg = match msg {
                        Some(Ok(m)) => m,
                        Some(Err(status)) => break format!("stream error: {}", status.message()),
                        None => break "stream closed by the agent".to_string(),
                    };
                    if !self.registry.is_current(&agent.id, generation) {
                        break "replaced by a newer link".to_string();
                    }
                    self.registry.touch(&agent.id, generation);
                    if let Some(AgentMsg::Output(chunk)) = &msg.msg {
                        unacked_bytes += chunk.data.len();
                    }
                    // Boxed, like the other awaits in this loop: a link's task otherwise carries the
                    // largest of their states for its whole life (5.4 KiB per connected agent, measured).
                    match Box::pin(self.on_agent_message(&agent, msg, &mut acks, &peer, &mut unwanted)).await {
                        Ok(None) => {}
                        Ok(Some(violation)) => {
                            if peer.conn.as_ref().is_some_and(|c| c.strike(violation)) {
                                break format!("cut off for protocol violations (last: {violation})");
                            }
                        }
                        Err(e) => {
                            // Unstored output must not be followed by acknowledged output: end the link, and
                            // the agent resends everything from the stored offsets when it reconnects.
                            tracing::error!(agent = %agent.name, error = %e, "failed to handle an agent message");
                            break format!("store error: {e}");
                        }
                    }
                    if unacked_bytes >= ack_bytes {
                        unacked_bytes = 0;
                        Box::pin(self.flush_acks(&agent.id, &mut acks)).await;
                    }
                    if !acks.is_empty() && !ack_armed {
                        ack_timer.as_mut().reset(tokio::time::Instant::now() + ACK_INTERVAL);
                        ack_armed = true;
                    }
                }
                () = &mut ack_timer, if ack_armed => {
                    ack_armed = false;
                    if !self.registry.is_current(&agent.id, generation) {
                        break "replaced by a newer link".to_string();
                    }
                    unacked_bytes = 0;
                    Box::pin(self.flush_acks(&agent.id, &mut acks)).await;
                }
            }
        };
        Box::pin(self.flush_acks(&agent.id, &mut acks)).await;
        tracing::info!(agent = %agent.name, generation, reason = %end, "agent link ended");
        if self.registry.unregister(&agent.id, generation)
            && let Err(e) = self.set_connection(&agent.id, Connection::Disconnected)
        {
            tracing::error!(agent = %agent.name, error = %e, "failed to record the disconnect");
        }
    }

    async fn flush_acks(&self, agent_id: &str, acks: &mut HashMap<String, Ack>) {
        for (_, ack) in acks.drain() {
            // A lost ack only means the agent resends; the store drops the duplicates.
            let _ = self.registry.send(agent_id, Msg::Ack(ack)).await;
        }
    }

    /// Handles one message; `Some` names a violation of the protocol it committed (the message was
    /// dropped).
    async fn on_agent_message(
        &self,
        agent: &AgentRecord,
        msg: AgentMessage,
        acks: &mut HashMap<String, Ack>,
        peer: &Peer,
        unwanted: &mut Unwanted,
    ) -> Result<Option<Violation>> {
        match msg.msg {
            Some(AgentMsg::Heartbeat(hb)) => {
                let current = self.store.record_heartbeat(&agent.id, hb.health.as_ref())?;
                if let Some(health) = &hb.health {
                    self.health.record(&agent.id, health);
                }
                self.bus.heartbeat();
                // A heartbeat on the current link proves the link, whatever a racing Docker event or
                // the sweeper recorded meanwhile.
                if current.is_some_and(|c| c != Connection::Connected) {
                    self.set_connection(&agent.id, Connection::Connected)?;
                }
            }
            Some(AgentMsg::Started(started)) if self.owns(agent, &started.task_id)? => {
                self.store
                    .mark_started(&started.task_id, started.started_at_ms)?;
            }
            Some(AgentMsg::Started(_)) => return Ok(Some(Violation::ForeignTask)),
            Some(AgentMsg::Output(chunk)) => {
                return self.on_output(agent, chunk, acks, peer, unwanted).await;
            }
            Some(AgentMsg::Result(result)) => return self.on_result(agent, result, acks).await,
            Some(AgentMsg::Setup(status)) => self.apply_setup_status(&agent.id, Some(&status))?,
            // Checked against the task's agent inside: another agent's acknowledgement changes nothing.
            Some(AgentMsg::StdinAck(ack)) => self.stdin.ack(&agent.id, &ack.task_id, ack.consumed),
            Some(AgentMsg::Hello(_)) => {
                tracing::warn!(agent = %agent.name, "ignoring a second hello");
                return Ok(Some(Violation::Malformed));
            }
            None => {}
        }
        Ok(None)
    }

    fn owns(&self, agent: &AgentRecord, task_id: &str) -> Result<bool> {
        let owned = self
            .store
            .task(task_id)?
            .is_some_and(|t| t.agent_id == agent.id);
        if !owned {
            tracing::debug!(agent = %agent.name, task = task_id, "agent reported a task that is not its own");
        }
        Ok(owned)
    }

    async fn on_output(
        &self,
        agent: &AgentRecord,
        chunk: OutputChunk,
        acks: &mut HashMap<String, Ack>,
        peer: &Peer,
        unwanted: &mut Unwanted,
    ) -> Result<Option<Violation>> {
        let stream = Stream::try_from(chunk.stream).unwrap_or(Stream::Unspecified);
        if stream == Stream::Unspecified {
            // Not the agent's code (it always names the stream): dropped, rather than taken for a store
            // error that would end the link, and come back with the resend, forever.
            tracing::debug!(agent = %agent.name, task = %chunk.task_id, stream = chunk.stream, "dropped output that names no stream");
            return Ok(Some(Violation::Malformed));
        }
        let in_range = chunk
            .offset
            .checked_add(chunk.data.len() as u64)
            .is_some_and(|end| end <= i64::MAX as u64);
        if !in_range {
            return Err(HubError::InvalidArgument(format!(
                "output offset {} for task {} is out of range",
                chunk.offset, chunk.task_id
            )));
        }
        // One read answers both "is it this agent's task?" and "what is stored already?".
        let appended = self.store.append_output(
            &chunk.task_id,
            &agent.id,
            stream,
            chunk.offset,
            &chunk.data,
        )?;
        let Some(appended) = appended else {
            // Logged by the guard when it adds up to a cut-off; a line per message would flood the log.
            tracing::debug!(agent = %agent.name, task = %chunk.task_id, "agent sent output for a task that is not its own");
            return Ok(Some(Violation::ForeignTask));
        };
        if appended.gap > 0 {
            tracing::warn!(task = %chunk.task_id, bytes = appended.gap, "output missing: the agent's spool overflowed");
        }
        let mut violation = None;
        if let Some(cap) = appended.capped {
            crate::metrics::metrics().output_dropped(cap.as_str());
            tracing::warn!(agent = %agent.name, task = %chunk.task_id, bound = cap.as_str(), "task output reached its bound: the rest is dropped, and the task says so");
            if peer.drops_output {
                let drop = DropOutput {
                    task_id: chunk.task_id.clone(),
                    reason: cap.as_str().to_string(),
                };
                let _ = self.registry.send(&agent.id, Msg::DropOutput(drop)).await;
            }
        } else if appended.dropped > 0 && peer.drops_output {
            let late = unwanted.bytes.entry(chunk.task_id.clone()).or_default();
            *late += appended.dropped;
            if *late > UNWANTED_OUTPUT_GRACE {
                *late = 0;
                violation = Some(Violation::UnwantedOutput);
            }
        }
        if let Some(new) = appended.new {
            crate::metrics::metrics().output_stored(stream, new.data.len());
            self.bus.publish_output(&chunk.task_id, new);
        }
        let ack = acks.entry(chunk.task_id.clone()).or_insert_with(|| Ack {
            task_id: chunk.task_id.clone(),
            ..Default::default()
        });
        match stream {
            Stream::Stdout => ack.stdout_offset = ack.stdout_offset.max(appended.end),
            Stream::Stderr => ack.stderr_offset = ack.stderr_offset.max(appended.end),
            Stream::Unspecified => {}
        }
        Ok(violation)
    }

    async fn on_result(
        &self,
        agent: &AgentRecord,
        result: TaskResult,
        acks: &mut HashMap<String, Ack>,
    ) -> Result<Option<Violation>> {
        if !self.owns(agent, &result.task_id)? {
            return Ok(Some(Violation::ForeignTask));
        }
        let task_id = result.task_id.clone();
        if self.store.finish_task(&task_id, &result)? {
            crate::metrics::metrics().task_finished(&result);
            tracing::debug!(task = %task_id, outcome = ?result.outcome, "task finished");
        }
        self.task_ended(&task_id);
        let stored = self.task(&task_id)?;
        acks.remove(&task_id);
        let ack = Ack {
            task_id,
            stdout_offset: stored.stdout_len,
            stderr_offset: stored.stderr_len,
            result: true,
        };
        let _ = self.registry.send(&agent.id, Msg::Ack(ack)).await;
        Ok(None)
    }
}
