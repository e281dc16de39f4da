//! The control service the CLI drives: agent lifecycle, listing, exec with live output and stdin, tasks. Every call needs the admin token.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use docker_agent_proto::v1 as pb;
use docker_agent_proto::v1::control_service_server::ControlService;
use docker_agent_proto::v1::exec_request::Msg as ExecMsg;
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
use crate::exec::{ExecEvent, ExecInput, ExecStart, Leave};
use crate::image::Progress;
use crate::store::TaskRecord;
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
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    async fn agent_message(
        &self,
        record: crate::store::AgentRecord,
    ) -> Result<pb::Agent, HubError> {
        let e = self.core.fleet_entry(record)?;
        let mut agent = convert::agent(e.agent, e.running_tasks, e.failed_tasks);
        agent.node = self
            .core
            .placements()
            .await
            .remove(&agent.id)
            .unwrap_or_default();
        Ok(agent)
    }

    fn task_message(&self, task: TaskRecord) -> Result<pb::Task, HubError> {
        let name = self.core.agent_name(&task.agent_id)?;
        Ok(convert::task(task, &name))
    }
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
            let result = match core.create_agent(create, &progress).await {
                Ok(agent) => svc.agent_message(agent).await,
                Err(e) => Err(e),
            };
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
        Ok(Response::new(self.agent_message(agent).await?))
    }

    async fn stop_agent(
        &self,
        request: Request<pb::StopAgentRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let req = request.into_inner();
        let timeout = (req.timeout_secs > 0).then_some(req.timeout_secs);
        let agent = self.core.stop_agent(&req.name, timeout).await?;
        Ok(Response::new(self.agent_message(agent).await?))
    }

    async fn restart_agent(
        &self,
        request: Request<pb::StopAgentRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let req = request.into_inner();
        let timeout = (req.timeout_secs > 0).then_some(req.timeout_secs);
        let agent = self.core.restart_agent(&req.name, timeout).await?;
        Ok(Response::new(self.agent_message(agent).await?))
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
        Ok(Response::new(self.agent_message(agent).await?))
    }

    async fn list_agents(
        &self,
        _: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let mut placements = self.core.placements().await;
        let agents = self
            .core
            .fleet()?
            .into_iter()
            .map(|e| {
                let mut agent = convert::agent(e.agent, e.running_tasks, e.failed_tasks);
                agent.node = placements.remove(&agent.id).unwrap_or_default();
                agent
            })
            .collect();
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }

    async fn list_nodes(
        &self,
        _: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        let nodes = self
            .core
            .nodes()
            .await?
            .into_iter()
            .map(|(n, agents)| pb::Node {
                id: n.id,
                hostname: n.hostname,
                role: n.role,
                state: n.state,
                availability: n.availability,
                cpus: n.cpus,
                memory_bytes: n.memory_bytes,
                agents,
            })
            .collect();
        Ok(Response::new(pb::ListNodesResponse { nodes }))
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
        let how = if start.attach.is_empty() {
            ExecStart::Run(required(start.spec, "task spec")?)
        } else {
            ExecStart::Attach {
                task_id: start.attach,
                replay_bytes: start.replay_bytes,
            }
        };
        let mut exec = self.core.open_exec(&start.agent, how).await?;
        let (tx, rx) = mpsc::channel(256);
        tx.send(Ok(pb::ExecEvent {
            event: Some(pb::exec_event::Event::Task(
                self.task_message(exec.task.clone())?,
            )),
        }))
        .await
        .map_err(|_| Status::cancelled("client went away"))?;

        let inputs = exec.inputs();
        tokio::spawn(async move {
            while let Some(Ok(req)) = inbound.next().await {
                let input = match req.msg {
                    Some(ExecMsg::Stdin(data)) => ExecInput::Stdin(data),
                    Some(ExecMsg::CloseStdin(_)) => ExecInput::CloseStdin,
                    Some(ExecMsg::Signal(signal)) => ExecInput::Signal(signal),
                    Some(ExecMsg::Resize(size)) => ExecInput::Resize(size),
                    Some(ExecMsg::Start(_)) | None => continue,
                };
                if !inputs.send(input).await {
                    break;
                }
            }
        });
        let svc = self.clone();
        tokio::spawn(async move {
            let task_id = exec.task.id.clone();
            loop {
                let event = tokio::select! {
                    event = exec.events.recv() => event,
                    () = tx.closed() => break,
                };
                let event = match event {
                    None => break,
                    Some(Ok(ExecEvent::Output(chunk))) => {
                        pb::exec_event::Event::Output(convert::chunk(&task_id, chunk))
                    }
                    Some(Ok(ExecEvent::Done(task))) => match svc.task_message(*task) {
                        Ok(t) => pb::exec_event::Event::Task(t),
                        Err(e) => {
                            let _ = tx.send(Err(Status::from(e))).await;
                            break;
                        }
                    },
                    Some(Err(e)) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        break;
                    }
                };
                if tx
                    .send(Ok(pb::ExecEvent { event: Some(event) }))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            // A CLI that goes away leaves its task running (Ctrl-C is a signal, sent as input).
            exec.leave(Leave::Detach);
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
            .tasks(agent_id.as_deref(), limit)?
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
        // As a signal on an exec: a task still queued is cancelled, since nothing has run yet.
        let inputs = self.core.exec_inputs(&task.id);
        let signal = req.signal;
        tokio::spawn(async move { inputs.send(ExecInput::Signal(signal)).await });
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
