//! In-memory fan-out: hub-wide agent events, and per-task live output for watchers. The store is the source of truth; these only say "look, something new".

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::broadcast;

use crate::lifecycle::{Connection, Lifecycle};
use crate::store::StoredChunk;

/// A change to an agent, for waiters (`create` waiting for ready) and live views.
#[derive(Debug, Clone, PartialEq)]
pub enum HubEvent {
    Lifecycle {
        agent_id: String,
        name: String,
        state: Lifecycle,
        reason: String,
    },
    Connection {
        agent_id: String,
        name: String,
        state: Connection,
    },
    Removed {
        agent_id: String,
        name: String,
    },
}

/// Something new about a task.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskUpdate {
    /// Newly stored output.
    Output(StoredChunk),
    /// The task reached a terminal state; read it from the store.
    Ended,
}

/// Chunks can be 1 MiB: a slow watcher holds at most this many, then catches up from the store.
const TASK_CHANNEL: usize = 32;

#[derive(Debug)]
pub struct Bus {
    events: broadcast::Sender<HubEvent>,
    /// Counts heartbeats. Kept apart from `events` because a large fleet heartbeats thousands of times a
    /// second: live views sample it instead of receiving each one.
    heartbeats: tokio::sync::watch::Sender<u64>,
    tasks: Mutex<HashMap<String, broadcast::Sender<TaskUpdate>>>,
}

impl Default for Bus {
    fn default() -> Self {
        Self {
            events: broadcast::channel(1024).0,
            heartbeats: tokio::sync::watch::channel(0).0,
            tasks: Mutex::default(),
        }
    }
}

impl Bus {
    pub fn subscribe_events(&self) -> broadcast::Receiver<HubEvent> {
        self.events.subscribe()
    }

    pub fn publish_event(&self, event: HubEvent) {
        let _ = self.events.send(event);
    }

    pub fn heartbeat(&self) {
        self.heartbeats.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn subscribe_heartbeats(&self) -> tokio::sync::watch::Receiver<u64> {
        self.heartbeats.subscribe()
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, HashMap<String, broadcast::Sender<TaskUpdate>>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn subscribe_task(&self, task_id: &str) -> broadcast::Receiver<TaskUpdate> {
        self.tasks()
            .entry(task_id.to_string())
            .or_insert_with(|| broadcast::channel(TASK_CHANNEL).0)
            .subscribe()
    }

    /// Publishes to current watchers only; nobody watching means nothing to do.
    pub fn publish_output(&self, task_id: &str, chunk: StoredChunk) {
        if let Some(tx) = self.tasks().get(task_id) {
            let _ = tx.send(TaskUpdate::Output(chunk));
        }
    }

    pub fn publish_end(&self, task_id: &str) {
        if let Some(tx) = self.tasks().remove(task_id) {
            let _ = tx.send(TaskUpdate::Ended);
        }
    }

    /// Forgets a task's channel when its last watcher is gone.
    pub fn release_task(&self, task_id: &str) {
        let mut tasks = self.tasks();
        if tasks
            .get(task_id)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            tasks.remove(task_id);
        }
    }

    #[cfg(test)]
    pub fn task_channels(&self) -> usize {
        self.tasks().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use docker_agent_proto::v1::Stream;

    #[test]
    fn output_reaches_watchers_and_channels_are_released() {
        let bus = Bus::default();
        let mut rx = bus.subscribe_task("t");
        let chunk = StoredChunk {
            seq: 1,
            stream: Stream::Stdout,
            offset: 0,
            data: bytes::Bytes::from_static(b"x"),
        };
        bus.publish_output("t", chunk.clone());
        assert_eq!(rx.try_recv().unwrap(), TaskUpdate::Output(chunk));
        bus.publish_end("t");
        assert_eq!(rx.try_recv().unwrap(), TaskUpdate::Ended);
        assert_eq!(bus.task_channels(), 0);
        let rx2 = bus.subscribe_task("u");
        drop(rx2);
        bus.release_task("u");
        assert_eq!(bus.task_channels(), 0);
    }
}
