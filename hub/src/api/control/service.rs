//! The control service the CLI drives: agent lifecycle, listing, exec with live output and stdin, tasks. Every call needs the admin token.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use docker_agent_proto::v1 as pb;
use docker_agent_proto::v1::control_service_server::ControlService;
use docker_agent_proto::v1::exec_request::Msg as ExecMsg;
use docker_agent_proto::v1::hub_message::Msg;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::Interceptor;
use tonic::{Request, Response, Status, Streaming};

use super::convert;
use crate::core::Core;
use crate::create::CreateRequest;
use crate::credentials;
use crate::error::HubError;
use crate::image::Progress;
use crate::store::{TaskRecord, TaskState};
use crate::task::WatchItem;

/// Checks the admin bearer token in constant time.
#[derive(Clone)]
pub struct AdminAuth {
    hash: Arc<Vec<u8>>,
}

impl AdminAuth {
    pub fn new(token: &str) -> Self {
        Self {
            hash: Arc::new(credentials::hash_token(token)),
        }
    }
}

impl Interceptor for AdminAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(credentials::bearer);
        match presented {
            Some(token) if credentials::token_matches(token, &self.hash) => Ok(request),
            _ => Err(Status::unauthenticated("invalid or missing admin token")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ControlSvc {
    pub(super) core: Arc<Core>,
}

impl ControlSvc {
    /// A running terminal task of `agent`, which another client may attach to.
    fn attachable(
        &self,
        agent: &crate::store::AgentRecord,
        task_id: &str,
    ) -> Result<TaskRecord, Status> {
        let task = self.core.task(task_id)?;
        if task.agent_id != agent.id {
            return Err(HubError::TaskNotFound(task_id.to_string()).into());
        }
        if task.spec.pty.is_none() {
            return Err(Status::failed_precondition(format!(
                "task {task_id} is not a terminal session (start one with `docker-agent shell`)"
            )));
        }
        if task.state.is_terminal() {
            return Err(Status::failed_precondition(format!(
                "session {task_id} has ended"
            )));
        }
        Ok(task)
    }

    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    fn agent_message(&self, record: crate::store::AgentRecord) -> Result<pb::Agent, HubError> {
        let running = self
            .core
            .store
            .open_task_counts()?
            .get(&record.id)
            .copied()
            .unwrap_or(0);
        Ok(convert::agent(record, running))
    }

    fn task_message(&self, task: TaskRecord) -> Result<pb::Task, HubError> {
        let name = self
            .core
            .store
            .agent_by_id(&task.agent_id)?
            .map(|a| a.name)
            .unwrap_or_default();
        Ok(convert::task(task, &name))
    }
}

/// What an attach replays of a session's output by default.
const SCROLLBACK: u64 = 64 * 1024;

/// The part of a stored chunk at or after `from` (a terminal task has only stdout).
fn scrollback(
    mut chunk: crate::store::StoredChunk,
    from: u64,
) -> Option<crate::store::StoredChunk> {
    let end = chunk.offset + chunk.data.len() as u64;
    if end <= from {
        return None;
    }
    if chunk.offset < from {
        chunk.data = chunk.data.slice((from - chunk.offset) as usize..);
        chunk.offset = from;
    }
    Some(chunk)
}

pub(super) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn required<T>(value: Option<T>, what: &str) -> Result<T, Status> {
    value.ok_or_else(|| Status::invalid_argument(format!("missing {what}")))
}

#[tonic::async_trait]
impl ControlService for ControlSvc {
    async fn hub_info(
        &self,
        _: Request<pb::HubInfoRequest>,
    ) -> Result<Response<pb::HubInfoResponse>, Status> {
        let s = &self.core.settings;
        Ok(Response::new(pb::HubInfoResponse {
            hub_id: s.hub_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            agent_endpoint: s.agent_url.clone(),
            network: s.network.clone(),
            data_dir: s.data_dir.display().to_string(),
            connected_agents: self.core.registry.connected_count() as u32,
        }))
    }

    type CreateAgentStream = BoxStream<pb::CreateAgentEvent>;

    async fn create_agent(
        &self,
        request: Request<pb::CreateAgentRequest>,
    ) -> Result<Response<Self::CreateAgentStream>, Status> {
        let req = request.into_inner();
        let create = CreateRequest {
            name: req.name,
            profile: req.profile,
            env: req.env.into_iter().collect::<BTreeMap<_, _>>(),
            ready_timeout: (req.ready_timeout_secs > 0)
                .then(|| Duration::from_secs(req.ready_timeout_secs.into())),
            from_snapshot: (!req.from_snapshot.is_empty()).then_some(req.from_snapshot),
            allow_docker_socket: req.allow_docker_socket,
            group: (!req.group.is_empty()).then_some(req.group),
        };
        let (tx, rx) = mpsc::channel(256);
        let core = self.core.clone();
        let svc = self.clone();
        // The create runs to completion even if the client goes away, so it never stops half-way.
        tokio::spawn(async move {
            let progress_tx = tx.clone();
            let progress = move |p: Progress| {
                let event = pb::CreateAgentEvent {
                    event: Some(pb::create_agent_event::Event::Progress(pb::Progress {
                        stage: p.stage.to_string(),
                        message: p.message,
                        current: p.steps.map_or(0, |(n, _)| n.into()),
                        total: p.steps.map_or(0, |(_, t)| t.into()),
                    })),
                };
                let _ = progress_tx.try_send(Ok(event));
            };
            let result = core
                .create_agent(create, &progress)
                .await
                .and_then(|agent| svc.agent_message(agent));
            let item = result
                .map(|agent| pb::CreateAgentEvent {
                    event: Some(pb::create_agent_event::Event::Ready(agent)),
                })
                .map_err(Status::from);
            let _ = tx.send(item).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn start_agent(
        &self,
        request: Request<pb::AgentRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let agent = self.core.start_agent(&request.into_inner().name).await?;
        Ok(Response::new(self.agent_message(agent)?))
    }

    async fn stop_agent(
        &self,
        request: Request<pb::StopAgentRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let req = request.into_inner();
        let timeout = (req.timeout_secs > 0).then_some(req.timeout_secs);
        let agent = self.core.stop_agent(&req.name, timeout).await?;
        Ok(Response::new(self.agent_message(agent)?))
    }

    async fn restart_agent(
        &self,
        request: Request<pb::StopAgentRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let req = request.into_inner();
        let timeout = (req.timeout_secs > 0).then_some(req.timeout_secs);
        let agent = self.core.restart_agent(&req.name, timeout).await?;
        Ok(Response::new(self.agent_message(agent)?))
    }

    async fn destroy_agent(
        &self,
        request: Request<pb::DestroyAgentRequest>,
    ) -> Result<Response<pb::DestroyAgentResponse>, Status> {
        let req = request.into_inner();
        let (container_removed, volume_removed) =
            self.core.destroy_agent(&req.name, req.purge).await?;
        Ok(Response::new(pb::DestroyAgentResponse {
            name: req.name,
            container_removed,
            volume_removed,
        }))
    }

    async fn get_agent(
        &self,
        request: Request<pb::AgentRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let agent = self.core.agent(&request.into_inner().name)?;
        Ok(Response::new(self.agent_message(agent)?))
    }

    async fn list_agents(
        &self,
        _: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let counts = self.core.store.open_task_counts().map_err(HubError::from)?;
        let agents = self
            .core
            .store
            .list_agents()
            .map_err(HubError::from)?
            .into_iter()
            .map(|a| {
                let running = counts.get(&a.id).copied().unwrap_or(0);
                convert::agent(a, running)
            })
            .collect();
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }

    type ExecStream = BoxStream<pb::ExecEvent>;

    async fn exec(
        &self,
        request: Request<Streaming<pb::ExecRequest>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let mut inbound = request.into_inner();
        let start = match inbound.message().await? {
            Some(pb::ExecRequest {
                msg: Some(ExecMsg::Start(start)),
            }) => start,
            _ => {
                return Err(Status::invalid_argument(
                    "exec must begin with a start message",
                ));
            }
        };
        let agent = self.core.agent(&start.agent)?;
        let (task, replay_from) = if start.attach.is_empty() {
            let task = self
                .core
                .submit_task(&agent, required(start.spec, "task spec")?)
                .await?;
            (task, 0)
        } else {
            let task = self.attachable(&agent, &start.attach)?;
            let replay = if start.replay_bytes > 0 {
                start.replay_bytes
            } else {
                SCROLLBACK
            };
            let from = task.stdout_len.saturating_sub(replay);
            (task, from)
        };
        let (tx, rx) = mpsc::channel(256);
        tx.send(Ok(pb::ExecEvent {
            event: Some(pb::exec_event::Event::Task(
                self.task_message(task.clone())?,
            )),
        }))
        .await
        .map_err(|_| Status::cancelled("client went away"))?;

        // Client input → agent, each message after the task itself. When the client goes away, the task
        // carries on.
        let core = self.core.clone();
        let task_id = task.id.clone();
        tokio::spawn(async move {
            while let Some(Ok(req)) = inbound.next().await {
                let msg = match req.msg {
                    Some(ExecMsg::Stdin(data)) => Msg::Stdin(pb::StdinData {
                        task_id: task_id.clone(),
                        data,
                    }),
                    Some(ExecMsg::CloseStdin(_)) => Msg::CloseStdin(pb::CloseStdin {
                        task_id: task_id.clone(),
                    }),
                    Some(ExecMsg::Signal(signal)) => Msg::Signal(pb::SignalTask {
                        task_id: task_id.clone(),
                        signal,
                    }),
                    Some(ExecMsg::Resize(size)) => Msg::Resize(pb::ResizePty {
                        task_id: task_id.clone(),
                        size: Some(size),
                    }),
                    Some(ExecMsg::Start(_)) | None => continue,
                };
                // Ctrl-C on a task still waiting for its agent cancels it: nothing has run yet.
                let queued = core
                    .store
                    .task(&task_id)
                    .ok()
                    .flatten()
                    .is_some_and(|t| t.state == TaskState::Queued);
                if matches!(msg, Msg::Signal(_)) && queued {
                    if let Err(e) = core.cancel_task(&task_id).await {
                        tracing::error!(task = %task_id, error = %e, "failed to cancel a queued task");
                    }
                    continue;
                }
                if !core.send_for_task(&task_id, msg).await {
                    break;
                }
            }
        });

        // Stored and live output → client, then the final task. A terminal session counts this client
        // as attached until it goes.
        let svc = self.clone();
        let attached = task
            .spec
            .pty
            .is_some()
            .then(|| self.core.attach_session(&task.id));
        let task_id = task.id;
        tokio::spawn(async move {
            let _attached = attached;
            let (wtx, mut wrx) = mpsc::channel(64);
            let core = svc.core.clone();
            let id = task_id.clone();
            let watcher = tokio::spawn(async move { core.watch_task(&id, true, wtx).await });
            loop {
                // A client that goes away while the task is quiet must be noticed too: it detaches.
                let item = tokio::select! {
                    item = wrx.recv() => item,
                    () = tx.closed() => break,
                };
                let Some(item) = item else { break };
                let event = match item {
                    WatchItem::Output(chunk) => match scrollback(chunk, replay_from) {
                        Some(chunk) => {
                            pb::exec_event::Event::Output(convert::chunk(&task_id, chunk))
                        }
                        None => continue,
                    },
                    WatchItem::Done(task) => match svc.task_message(*task) {
                        Ok(t) => pb::exec_event::Event::Task(t),
                        Err(e) => {
                            let _ = tx.send(Err(Status::from(e))).await;
                            break;
                        }
                    },
                };
                if tx
                    .send(Ok(pb::ExecEvent { event: Some(event) }))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            drop(wrx);
            if let Ok(Err(e)) = watcher.await {
                let _ = tx.send(Err(Status::from(e))).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn submit_task(
        &self,
        request: Request<pb::SubmitTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let req = request.into_inner();
        let agent = self.core.agent(&req.agent)?;
        let task = self
            .core
            .submit_task(&agent, required(req.spec, "task spec")?)
            .await?;
        Ok(Response::new(self.task_message(task)?))
    }

    async fn get_task(
        &self,
        request: Request<pb::TaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let task = self.core.task(&request.into_inner().task_id)?;
        Ok(Response::new(self.task_message(task)?))
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let req = request.into_inner();
        let agent_id = if req.agent.is_empty() {
            None
        } else {
            Some(self.core.agent(&req.agent)?.id)
        };
        let limit = if req.limit == 0 {
            50
        } else {
            req.limit.min(10_000)
        };
        let tasks = self
            .core
            .store
            .list_tasks(agent_id.as_deref(), limit)
            .map_err(HubError::from)?
            .into_iter()
            .map(|t| self.task_message(t))
            .collect::<Result<_, _>>()?;
        Ok(Response::new(pb::ListTasksResponse { tasks }))
    }

    type WatchTaskStream = BoxStream<pb::TaskEvent>;

    async fn watch_task(
        &self,
        request: Request<pb::WatchTaskRequest>,
    ) -> Result<Response<Self::WatchTaskStream>, Status> {
        let req = request.into_inner();
        self.core.task(&req.task_id)?;
        let (wtx, wrx) = mpsc::channel(64);
        let core = self.core.clone();
        let id = req.task_id.clone();
        tokio::spawn(async move {
            if let Err(e) = core.watch_task(&id, req.follow, wtx).await {
                tracing::error!(task = %id, error = %e, "watch failed");
            }
        });
        let svc = self.clone();
        let task_id = req.task_id;
        let stream = ReceiverStream::new(wrx).map(move |item| {
            let event = match item {
                WatchItem::Output(chunk) => {
                    pb::task_event::Event::Output(convert::chunk(&task_id, chunk))
                }
                WatchItem::Done(task) => pb::task_event::Event::Task(svc.task_message(*task)?),
            };
            Ok(pb::TaskEvent { event: Some(event) })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn signal_task(
        &self,
        request: Request<pb::SignalTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let req = request.into_inner();
        if !(1..=31).contains(&req.signal) {
            return Err(Status::invalid_argument(format!(
                "invalid signal number {}",
                req.signal
            )));
        }
        let task = self.core.task(&req.task_id)?;
        if task.state.is_terminal() {
            return Err(Status::failed_precondition(format!(
                "task {} has already ended",
                task.id
            )));
        }
        let core = self.core.clone();
        let msg = Msg::Signal(pb::SignalTask {
            task_id: task.id.clone(),
            signal: req.signal,
        });
        let id = task.id.clone();
        tokio::spawn(async move { core.send_for_task(&id, msg).await });
        Ok(Response::new(self.task_message(task)?))
    }

    async fn cancel_task(
        &self,
        request: Request<pb::TaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let task = self.core.cancel_task(&request.into_inner().task_id).await?;
        Ok(Response::new(self.task_message(task)?))
    }

    async fn list_profiles(
        &self,
        _: Request<pb::ListProfilesRequest>,
    ) -> Result<Response<pb::ListProfilesResponse>, Status> {
        Ok(Response::new(self.list_profiles_impl()))
    }

    async fn get_profile(
        &self,
        request: Request<pb::ProfileRequest>,
    ) -> Result<Response<pb::ProfileDetail>, Status> {
        Ok(Response::new(
            self.get_profile_impl(&request.into_inner().name).await?,
        ))
    }

    async fn create_snapshot(
        &self,
        request: Request<pb::CreateSnapshotRequest>,
    ) -> Result<Response<pb::Snapshot>, Status> {
        Ok(Response::new(
            self.create_snapshot_impl(request.into_inner()).await?,
        ))
    }

    async fn list_snapshots(
        &self,
        _: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        Ok(Response::new(self.list_snapshots_impl().await?))
    }

    async fn remove_snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::RemoveSnapshotResponse>, Status> {
        self.remove_snapshot_impl(&request.into_inner().tag).await?;
        Ok(Response::new(pb::RemoveSnapshotResponse {}))
    }

    type AgentLogsStream = BoxStream<pb::LogChunk>;

    async fn agent_logs(
        &self,
        request: Request<pb::AgentLogsRequest>,
    ) -> Result<Response<Self::AgentLogsStream>, Status> {
        self.agent_logs_impl(request.into_inner())
    }

    async fn stat_path(
        &self,
        request: Request<pb::PathRequest>,
    ) -> Result<Response<pb::PathStat>, Status> {
        Ok(Response::new(
            self.stat_path_impl(request.into_inner()).await?,
        ))
    }

    type CopyFromStream = BoxStream<pb::CopyChunk>;

    async fn copy_from(
        &self,
        request: Request<pb::PathRequest>,
    ) -> Result<Response<Self::CopyFromStream>, Status> {
        self.copy_from_impl(request.into_inner()).await
    }

    async fn prune(
        &self,
        request: Request<pb::PruneRequest>,
    ) -> Result<Response<pb::PruneResponse>, Status> {
        Ok(Response::new(self.prune_impl(request.into_inner()).await?))
    }

    async fn copy_to(
        &self,
        request: Request<Streaming<pb::CopyToRequest>>,
    ) -> Result<Response<pb::CopyToResponse>, Status> {
        Ok(Response::new(
            self.copy_to_impl(request.into_inner()).await?,
        ))
    }
}
