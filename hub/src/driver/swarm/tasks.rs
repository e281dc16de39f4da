//! What Swarm says about an agent's service: its current task (which node, which container, which
//! state), the service as the hub's `ContainerState`, the node engines a task's container is on, and
//! task changes as container events (a node's container events stay on that node; the manager's task
//! list is the one view of them all).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::models::TaskState;
use bollard::query_parameters::{
    InspectServiceOptions, ListNodesOptions, ListServicesOptions, ListTasksOptions,
};

use crate::driver::docker::{EngineAddress, map_err, unix_ms};
use crate::driver::{
    ContainerEvent, ContainerEventKind, ContainerState, DockerDriver, Driver, DriverError,
    EventStream, NodeInfo, Result, labels,
};

/// How often the task list is read for events and waits.
const POLL: Duration = Duration::from_millis(500);

/// One task of a service, as far as the hub cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    pub id: String,
    pub node_id: String,
    pub container_id: Option<String>,
    pub state: Option<TaskState>,
    pub desired: Option<TaskState>,
    pub exit_code: i64,
    pub error: String,
    /// When the task was created (unix ms): the newest task is the service's current one.
    pub created_ms: i64,
}

impl TaskInfo {
    pub fn running(&self) -> bool {
        self.state == Some(TaskState::RUNNING)
    }

    /// Swarm wants it up: running, or `ready` while a restart's delay passes.
    pub fn wanted(&self) -> bool {
        matches!(self.desired, Some(TaskState::RUNNING | TaskState::READY))
    }
}

fn task_info(t: bollard::models::Task) -> TaskInfo {
    let status = t.status.unwrap_or_default();
    let container = status.container_status.unwrap_or_default();
    TaskInfo {
        id: t.id.unwrap_or_default(),
        node_id: t.node_id.unwrap_or_default(),
        container_id: container.container_id.filter(|c| !c.is_empty()),
        state: status.state,
        desired: t.desired_state,
        exit_code: container.exit_code.unwrap_or(0),
        error: status.err.unwrap_or_default(),
        created_ms: t.created_at.as_deref().and_then(unix_ms).unwrap_or(0),
    }
}

/// The current one of a service's tasks: the newest Swarm wants up, else the newest.
fn pick_current(mut tasks: Vec<TaskInfo>) -> Option<TaskInfo> {
    tasks.sort_by_key(|t| std::cmp::Reverse(t.created_ms));
    let wanted = tasks.iter().position(TaskInfo::wanted).unwrap_or(0);
    (!tasks.is_empty()).then(|| tasks.swap_remove(wanted))
}

/// Every task Swarm still remembers for `service`.
pub async fn list(docker: &Docker, service: &str) -> Result<Vec<TaskInfo>> {
    let filters = HashMap::from([("service".to_string(), vec![service.to_string()])]);
    let tasks = docker
        .list_tasks(Some(ListTasksOptions {
            filters: Some(filters),
        }))
        .await
        .map_err(map_err(format!("the tasks of service {service}")))?;
    Ok(tasks.into_iter().map(task_info).collect())
}

/// The service's current task.
pub async fn current(docker: &Docker, service: &str) -> Result<Option<TaskInfo>> {
    Ok(pick_current(list(docker, service).await?))
}

/// One of this hub's services: its name, labels and current task.
pub struct ServiceNow {
    pub name: String,
    pub labels: HashMap<String, String>,
    pub task: Option<TaskInfo>,
}

/// Every service of this hub with its current task, in two calls whatever their number (the
/// event poller reads it twice a second).
pub async fn services_now(docker: &Docker, hub_id: &str) -> Result<Vec<ServiceNow>> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![
            format!("{}=true", labels::MANAGED),
            format!("{}={hub_id}", labels::HUB),
        ],
    )]);
    let services = docker
        .list_services(Some(ListServicesOptions {
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(map_err("services"))?;
    let mut by_service: HashMap<String, Vec<TaskInfo>> = HashMap::new();
    for task in docker
        .list_tasks(None::<ListTasksOptions>)
        .await
        .map_err(map_err("tasks"))?
    {
        if let Some(service) = task.service_id.clone() {
            by_service.entry(service).or_default().push(task_info(task));
        }
    }
    Ok(services
        .into_iter()
        .filter_map(|s| {
            let spec = s.spec?;
            Some(ServiceNow {
                name: spec.name?,
                labels: spec.labels.unwrap_or_default(),
                task: pick_current(by_service.remove(&s.id?).unwrap_or_default()),
            })
        })
        .collect())
}

/// A service and its current task as the hub sees a container.
pub fn container_state(service: ServiceNow) -> ContainerState {
    let task = service.task;
    ContainerState {
        id: service.name.clone(),
        name: service.name,
        // Swarm never starts a task's container twice: a new container is a new task. So the
        // current task's creation is when its container's life began, known before the manager has
        // heard that it runs (its agent may dial in first).
        started_at_ms: task.as_ref().map_or(0, |t| t.created_ms),
        running: task.as_ref().is_some_and(TaskInfo::running),
        status: task
            .as_ref()
            .and_then(|t| t.state.map(|s| s.to_string()))
            .unwrap_or_else(|| "created".into()),
        exit_code: task.as_ref().map_or(0, |t| t.exit_code),
        oom_killed: false,
        error: task.map(|t| t.error).unwrap_or_default(),
        labels: service.labels,
    }
}

/// The service as the hub sees a container (None: no such service).
pub async fn service_state(docker: &Docker, service: &str) -> Result<Option<ContainerState>> {
    let inspect = match docker
        .inspect_service(service, None::<InspectServiceOptions>)
        .await
    {
        Ok(s) => s,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => return Ok(None),
        Err(e) => return Err(map_err(format!("service {service}"))(e)),
    };
    let labels = inspect.spec.and_then(|s| s.labels).unwrap_or_default();
    Ok(Some(container_state(ServiceNow {
        name: service.to_string(),
        labels,
        task: current(docker, service).await?,
    })))
}

/// Waits until no task of the service runs (after scaling it to 0).
pub async fn wait_until_stopped(docker: &Docker, service: &str, grace: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        let tasks = list(docker, service).await?;
        if !tasks.iter().any(TaskInfo::running) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(DriverError::Engine(format!(
                "service {service} still runs a task {}s after it was scaled to 0",
                grace.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until Swarm has given the service's task to a node; fails with the scheduler's reason when
/// no node can take it (constraints no node meets, resources no node has).
pub async fn wait_until_placed(docker: &Docker, service: &str, placement: &[String]) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let task = current(docker, service).await?;
        let pending = task.as_ref().is_none_or(|t| {
            matches!(
                t.state,
                None | Some(TaskState::NEW | TaskState::ALLOCATED | TaskState::PENDING)
            )
        });
        if !pending {
            return Ok(());
        }
        let reason = task.map(|t| t.error).unwrap_or_default();
        if reason.contains("no suitable node") {
            let wanted = if placement.is_empty() {
                String::new()
            } else {
                format!(" (placement {})", placement.join(", "))
            };
            return Err(DriverError::Engine(format!(
                "no Swarm node can run service {service}{wanted}: {reason}"
            )));
        }
        if tokio::time::Instant::now() >= deadline {
            // Still unplaced but not refused (a slow scheduler): the create's ready timeout decides.
            return Ok(());
        }
        tokio::time::sleep(POLL / 5).await;
    }
}

/// The Swarm's nodes as the hub lists them.
pub async fn nodes(docker: &Docker) -> Result<Vec<NodeInfo>> {
    let nodes = docker
        .list_nodes(None::<ListNodesOptions>)
        .await
        .map_err(map_err("the Swarm's nodes"))?;
    let mut out: Vec<NodeInfo> = nodes
        .into_iter()
        .map(|n| {
            let spec = n.spec.unwrap_or_default();
            let description = n.description.unwrap_or_default();
            let resources = description.resources.unwrap_or_default();
            NodeInfo {
                id: n.id.unwrap_or_default(),
                hostname: description.hostname.unwrap_or_default(),
                role: spec.role.map(|r| r.to_string()).unwrap_or_default(),
                state: n
                    .status
                    .and_then(|s| s.state)
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                availability: spec.availability.map(|a| a.to_string()).unwrap_or_default(),
                cpus: (resources.nano_cpus.unwrap_or(0) / 1_000_000_000).max(0) as u32,
                memory_bytes: resources.memory_bytes.unwrap_or(0).max(0) as u64,
            }
        })
        .collect();
    out.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    Ok(out)
}

/// Service name → the hostname of the node its current task is on, for this hub's services.
pub async fn placements(docker: &Docker, hub_id: &str) -> Result<HashMap<String, String>> {
    let hosts: HashMap<String, String> = nodes(docker)
        .await?
        .into_iter()
        .map(|n| (n.id, n.hostname))
        .collect();
    Ok(services_now(docker, hub_id)
        .await?
        .into_iter()
        .filter_map(|s| {
            let host = hosts.get(&s.task?.node_id)?;
            Some((s.name, host.clone()))
        })
        .collect())
}

/// The ids of the Swarm's nodes.
pub async fn node_ids(docker: &Docker) -> Result<Vec<String>> {
    let nodes = docker
        .list_nodes(None::<ListNodesOptions>)
        .await
        .map_err(map_err("the Swarm's nodes"))?;
    Ok(nodes.into_iter().filter_map(|n| n.id).collect())
}

/// Removes a volume from one node's engine, waiting while the removed service's container, which the
/// node takes away on its own time, still holds it.
pub async fn remove_volume_when_free(engine: &DockerDriver, name: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match engine.remove_volume(name).await {
            Ok(()) | Err(DriverError::NotFound(_)) => return Ok(()),
            Err(DriverError::Conflict(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(POLL).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The nodes' engines, connected on first use: each at the node's Swarm address, on the manager's
/// port and with the manager's TLS.
#[derive(Debug, Clone)]
pub struct Nodes {
    manager: Docker,
    engine: EngineAddress,
    cache: Arc<tokio::sync::Mutex<HashMap<String, DockerDriver>>>,
}

impl Nodes {
    pub fn new(manager: Docker, engine: EngineAddress) -> Self {
        Self {
            manager,
            engine,
            cache: Default::default(),
        }
    }

    pub async fn engine(&self, node_id: &str) -> Result<DockerDriver> {
        if let Some(node) = self.cache.lock().await.get(node_id) {
            return Ok(node.clone());
        }
        let EngineAddress::Tcp { addr, tls_dir } = &self.engine else {
            return Err(DriverError::Engine(
                "the Swarm driver reaches nodes' engines only when the manager is a tcp:// engine"
                    .into(),
            ));
        };
        let port = addr.rsplit_once(':').map_or("2376", |(_, p)| p);
        let node = self
            .manager
            .inspect_node(node_id)
            .await
            .map_err(map_err(format!("node {node_id}")))?;
        let host = node
            .status
            .and_then(|s| s.addr)
            .ok_or_else(|| DriverError::Engine(format!("node {node_id} has no address")))?;
        let address = EngineAddress::Tcp {
            addr: format!("{host}:{port}"),
            tls_dir: tls_dir.clone(),
        };
        let driver = DockerDriver::connect(&address).await?;
        self.cache
            .lock()
            .await
            .insert(node_id.to_string(), driver.clone());
        Ok(driver)
    }

    /// The node engine and container id of the service's current task.
    pub async fn locate(&self, service: &str) -> Result<(DockerDriver, String)> {
        let task = current(&self.manager, service)
            .await?
            .ok_or_else(|| DriverError::NotFound(format!("a task of service {service}")))?;
        let container = task
            .container_id
            .ok_or_else(|| DriverError::NotFound(format!("the container of service {service}")))?;
        Ok((self.engine(&task.node_id).await?, container))
    }
}

/// What the event poller remembers of each service's current task.
#[derive(Debug, Clone, Default)]
struct Seen {
    task_id: String,
    running: bool,
    node_id: String,
    labels: HashMap<String, String>,
}

type SeenMap = HashMap<String, Seen>;

/// Why a service's task moved: the node it left (its state and Swarm's message), the node it went to.
async fn why_moved(docker: &Docker, from: &str, to: &str) -> String {
    let describe = |node: Option<bollard::models::Node>| {
        let host = node
            .as_ref()
            .and_then(|n| n.description.as_ref()?.hostname.clone())
            .unwrap_or_else(|| "?".into());
        let status = node.and_then(|n| n.status).unwrap_or_default();
        let state = status.state.map(|s| s.to_string()).unwrap_or_default();
        (host, state, status.message.unwrap_or_default())
    };
    let (old, state, message) = describe(docker.inspect_node(from).await.ok());
    let (new, _, _) = describe(docker.inspect_node(to).await.ok());
    let mut why = format!("node {old} is {state}");
    if !message.is_empty() {
        why.push_str(&format!(" ({message})"));
    }
    why.push_str(&format!(
        "; moved to node {new}, where /workspace started empty"
    ));
    why
}

/// Task changes of this hub's services as container events: Start when a task starts running, Die
/// when the running one stops (or is replaced), Destroy when the service goes.
pub fn events(manager: DockerDriver, hub_id: String) -> EventStream {
    struct Poller {
        manager: DockerDriver,
        hub_id: String,
        seen: SeenMap,
        queue: VecDeque<ContainerEvent>,
        primed: bool,
    }
    let poller = Poller {
        manager,
        hub_id,
        seen: SeenMap::new(),
        queue: VecDeque::new(),
        primed: false,
    };
    Box::pin(futures::stream::unfold(poller, |mut p| async move {
        loop {
            if let Some(event) = p.queue.pop_front() {
                return Some((Ok(event), p));
            }
            if p.primed {
                tokio::time::sleep(POLL).await;
            }
            match poll(p.manager.client(), &p.hub_id, &mut p.seen).await {
                Ok(events) if p.primed => p.queue.extend(events),
                // The first read only learns what is there: like the engine's, these events start now.
                Ok(_) => p.primed = true,
                Err(e) => {
                    p.primed = true;
                    return Some((Err(e), p));
                }
            }
        }
    }))
}

/// One read of every service of this hub and its current task; the events since the last read.
async fn poll(docker: &Docker, hub_id: &str, seen: &mut SeenMap) -> Result<Vec<ContainerEvent>> {
    let mut events = Vec::new();
    let mut now = SeenMap::new();
    for ServiceNow { name, labels, task } in services_now(docker, hub_id).await? {
        let wanted = task.as_ref().is_some_and(TaskInfo::wanted);
        let current = Seen {
            task_id: task.as_ref().map(|t| t.id.clone()).unwrap_or_default(),
            running: task.as_ref().is_some_and(TaskInfo::running),
            node_id: task.as_ref().map(|t| t.node_id.clone()).unwrap_or_default(),
            labels: labels.clone(),
        };
        let exit_code = task.as_ref().map_or(0, |t| t.exit_code);
        let event = |kind| ContainerEvent {
            container_id: name.clone(),
            labels: labels.clone(),
            kind,
        };
        let before = seen.get(&name);
        let replaced =
            before.is_some_and(|b| !b.task_id.is_empty() && b.task_id != current.task_id);
        if replaced && wanted && current.node_id.is_empty() {
            // A replacement not yet given a node: whether it moved is told when it has one.
            now.insert(name.clone(), before.expect("replaced implies seen").clone());
            continue;
        }
        let moved = replaced
            && wanted
            && before.is_some_and(|b| !b.node_id.is_empty() && b.node_id != current.node_id);
        if moved {
            let from = &before.expect("moved implies seen").node_id;
            events.push(event(ContainerEventKind::Rescheduled {
                why: why_moved(docker, from, &current.node_id).await,
                since_ms: task.as_ref().map_or(0, |t| t.created_ms),
            }));
        } else if before.is_some_and(|b| b.running && (!current.running || replaced)) {
            events.push(event(ContainerEventKind::Die { exit_code }));
        }
        let was_running = before.is_some_and(|b| b.running && !replaced);
        if current.running && !was_running {
            events.push(event(ContainerEventKind::Start));
        }
        now.insert(name.clone(), current);
    }
    for (name, gone) in seen.drain() {
        if !now.contains_key(&name) {
            events.push(ContainerEvent {
                container_id: name,
                labels: gone.labels,
                kind: ContainerEventKind::Destroy,
            });
        }
    }
    *seen = now;
    Ok(events)
}
