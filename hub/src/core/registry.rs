//! Live agent links: which agent is connected on which stream. Generations make sure a late cleanup of an old stream never evicts the new one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use docker_agent_proto::v1::HubMessage;
use docker_agent_proto::v1::hub_message::Msg;
use tokio::sync::{Notify, mpsc};

/// An agent's outbound queue. Messages are boxed: a channel allocates its first block of 32 slots
/// up front, and 32 inline messages cost ~5 KiB per connected agent, nearly always empty.
pub type Outbound = mpsc::Sender<Box<HubMessage>>;

#[derive(Debug)]
struct Link {
    generation: u64,
    instance_id: String,
    tx: Outbound,
    last_seen: Instant,
    /// The agent acknowledges stdin (`core::stdin`): senders keep to its window.
    acks_stdin: bool,
    /// Told when this link is replaced or removed, so its loop ends at once even if its stream stays
    /// open and silent (a permit is stored if the loop is not waiting yet).
    ended: Arc<Notify>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.ended.notify_one();
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("agent is connected from another process (instance {0}); refusing a second link")]
    Duplicate(String),
    #[error("agent is not connected")]
    NotConnected,
}

/// The table of connected agents.
#[derive(Debug, Default)]
pub struct Registry {
    links: Mutex<HashMap<String, Link>>,
    next_generation: AtomicU64,
    /// Woken on every register and unregister.
    changed: Notify,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Link>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new stream for `agent_id`. The same agent process reconnecting replaces its old stream
    /// (which may not have noticed it is dead yet); a different process is refused while the old one is live.
    pub fn register(
        &self,
        agent_id: &str,
        instance_id: &str,
        tx: Outbound,
    ) -> Result<u64, RegistryError> {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed) + 1;
        let mut links = self.lock();
        if let Some(old) = links.get(agent_id)
            && old.instance_id != instance_id
            && !old.tx.is_closed()
        {
            return Err(RegistryError::Duplicate(old.instance_id.clone()));
        }
        links.insert(
            agent_id.to_string(),
            Link {
                generation,
                instance_id: instance_id.to_string(),
                tx,
                last_seen: Instant::now(),
                acks_stdin: false,
                ended: Arc::new(Notify::new()),
            },
        );
        drop(links);
        self.changed.notify_waiters();
        Ok(generation)
    }

    /// Removes the link only if it is still the one of `generation`. Returns whether it did.
    pub fn unregister(&self, agent_id: &str, generation: u64) -> bool {
        let mut links = self.lock();
        let current = links.get(agent_id).map(|s| s.generation);
        let removed = current == Some(generation);
        if removed {
            links.remove(agent_id);
        }
        drop(links);
        if removed {
            self.changed.notify_waiters();
        }
        removed
    }

    /// Drops the link of an agent being destroyed: its stream ends when the sender goes away.
    pub fn evict(&self, agent_id: &str) {
        if self.lock().remove(agent_id).is_some() {
            self.changed.notify_waiters();
        }
    }

    /// Notified when the link of `generation` is replaced or removed; None if it already is.
    pub fn ended(&self, agent_id: &str, generation: u64) -> Option<Arc<Notify>> {
        self.lock()
            .get(agent_id)
            .filter(|s| s.generation == generation)
            .map(|s| s.ended.clone())
    }

    pub fn is_current(&self, agent_id: &str, generation: u64) -> bool {
        self.lock().get(agent_id).map(|s| s.generation) == Some(generation)
    }

    /// The link of `generation` acknowledges stdin (its hello announced it).
    pub fn set_acks_stdin(&self, agent_id: &str, generation: u64) {
        if let Some(link) = self
            .lock()
            .get_mut(agent_id)
            .filter(|l| l.generation == generation)
        {
            link.acks_stdin = true;
        }
    }

    /// Whether stdin to this agent keeps to a window: its link acknowledges stdin, or it has no link
    /// now (the agents the hub makes do; the window waits for it to come back).
    pub fn acks_stdin(&self, agent_id: &str) -> bool {
        self.lock().get(agent_id).is_none_or(|l| l.acks_stdin)
    }

    pub fn is_connected(&self, agent_id: &str) -> bool {
        self.lock().get(agent_id).is_some_and(|s| !s.tx.is_closed())
    }

    pub fn connected_count(&self) -> usize {
        self.lock().len()
    }

    pub fn touch(&self, agent_id: &str, generation: u64) {
        if let Some(s) = self.lock().get_mut(agent_id)
            && s.generation == generation
        {
            s.last_seen = Instant::now();
        }
    }

    /// Agents whose last message is older than `limit`.
    pub fn silent_for(&self, limit: std::time::Duration) -> Vec<(String, u64)> {
        self.lock()
            .iter()
            .filter(|(_, s)| s.last_seen.elapsed() > limit)
            .map(|(id, s)| (id.clone(), s.generation))
            .collect()
    }

    /// Queues a message on the agent's stream. Fails when the agent is not connected.
    pub async fn send(&self, agent_id: &str, msg: Msg) -> Result<(), RegistryError> {
        let tx = self.lock().get(agent_id).map(|s| s.tx.clone());
        let tx = tx.ok_or(RegistryError::NotConnected)?;
        tx.send(Box::new(HubMessage { msg: Some(msg) }))
            .await
            .map_err(|_| RegistryError::NotConnected)
    }

    /// Resolves at the next register or unregister after this call. Check state after calling it and
    /// before awaiting it, so no change can slip in between.
    pub fn changed(&self) -> std::pin::Pin<Box<tokio::sync::futures::Notified<'_>>> {
        let mut notified = Box::pin(self.changed.notified());
        notified.as_mut().enable();
        notified
    }

    /// The instance holding a live link for `agent_id`, if it is not `instance_id`.
    pub fn held_by_other(&self, agent_id: &str, instance_id: &str) -> Option<String> {
        self.lock()
            .get(agent_id)
            .filter(|s| s.instance_id != instance_id && !s.tx.is_closed())
            .map(|s| s.instance_id.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_cleanup_does_not_evict_the_new_session() {
        let reg = Registry::default();
        let (tx1, _rx1) = mpsc::channel(1);
        let (tx2, _rx2) = mpsc::channel(1);
        let g1 = reg.register("a", "inst", tx1).unwrap();
        let g2 = reg.register("a", "inst", tx2).unwrap();
        assert_ne!(g1, g2);
        assert!(
            !reg.unregister("a", g1),
            "old generation must not remove the new link"
        );
        assert!(reg.is_current("a", g2));
        assert!(reg.unregister("a", g2));
        assert!(!reg.is_connected("a"));
    }

    #[test]
    fn a_second_process_is_refused_while_the_first_is_live() {
        let reg = Registry::default();
        let (tx1, rx1) = mpsc::channel(1);
        reg.register("a", "one", tx1).unwrap();
        let (tx2, _rx2) = mpsc::channel(1);
        assert_eq!(
            reg.register("a", "two", tx2.clone()),
            Err(RegistryError::Duplicate("one".into()))
        );
        // Once the first stream is gone, the second process may take over.
        drop(rx1);
        assert!(reg.register("a", "two", tx2).is_ok());
    }

    #[tokio::test]
    async fn changed_fires_on_register_after_it_was_taken() {
        let reg = Registry::default();
        let changed = reg.changed();
        assert!(reg.send("a", Msg::Ping(Default::default())).await.is_err());
        let (tx, mut rx) = mpsc::channel(1);
        reg.register("a", "inst", tx).unwrap();
        changed.await;
        reg.send("a", Msg::Ping(Default::default())).await.unwrap();
        assert!(matches!(rx.recv().await.unwrap().msg, Some(Msg::Ping(_))));
        assert_eq!(reg.held_by_other("a", "inst"), None);
        assert_eq!(reg.held_by_other("a", "other"), Some("inst".to_string()));
    }

    #[tokio::test]
    async fn a_replaced_or_evicted_session_is_told_at_once() {
        let reg = Registry::default();
        let (tx1, _rx1) = mpsc::channel(1);
        let first = reg.register("a", "inst", tx1).unwrap();
        let ended = reg.ended("a", first).expect("current");
        let (tx2, _rx2) = mpsc::channel(1);
        let second = reg.register("a", "inst", tx2).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), ended.notified())
            .await
            .expect("the replaced link is told");
        assert!(reg.ended("a", first).is_none());
        let ended = reg.ended("a", second).expect("current");
        reg.evict("a");
        tokio::time::timeout(std::time::Duration::from_secs(5), ended.notified())
            .await
            .expect("the evicted link is told");
    }
}
