//! Watching a task: its stored output, then live output until it ends, then the final record.

use tokio::sync::{broadcast, mpsc};

use crate::core::Core;
use crate::core::bus::TaskUpdate;
use crate::error::Result;
use crate::store::{StoredChunk, TaskRecord};

impl Core {
    /// The newest `limit` tasks, of one agent or of all.
    pub fn tasks(&self, agent_id: Option<&str>, limit: u32) -> Result<Vec<TaskRecord>> {
        Ok(self.store.list_tasks(agent_id, limit)?)
    }

    /// A task's stored output after `after_seq`, in arrival order (a page's worth: up to 100,000 chunks).
    pub fn output_after(&self, task_id: &str, after_seq: i64) -> Result<Vec<StoredChunk>> {
        Ok(self.store.output_after(task_id, after_seq, 100_000)?)
    }

    /// Where to watch a task from to see (about) the last `keep` bytes of its output.
    pub fn output_tail_seq(&self, task_id: &str, keep: u64) -> Result<i64> {
        Ok(self.store.output_tail_seq(task_id, keep)?)
    }

    /// Streams a task's output into `tx`: everything stored, then (when `follow`) live output until the
    /// task ends, then the final record. Returns when done or when the receiver is gone.
    pub async fn watch_task(
        &self,
        task_id: &str,
        follow: bool,
        tx: mpsc::Sender<WatchItem>,
    ) -> Result<()> {
        self.watch_task_after(task_id, 0, follow, tx).await
    }

    /// [`Core::watch_task`] for a watcher that already has the chunks up to `after_seq`.
    pub async fn watch_task_after(
        &self,
        task_id: &str,
        after_seq: i64,
        follow: bool,
        tx: mpsc::Sender<WatchItem>,
    ) -> Result<()> {
        let mut live = follow.then(|| self.bus.subscribe_task(task_id));
        let result = self.watch_inner(task_id, after_seq, &mut live, tx).await;
        drop(live);
        self.bus.release_task(task_id);
        result
    }

    async fn watch_inner(
        &self,
        task_id: &str,
        after_seq: i64,
        live: &mut Option<broadcast::Receiver<TaskUpdate>>,
        tx: mpsc::Sender<WatchItem>,
    ) -> Result<()> {
        let mut last_seq = after_seq;
        if !self.send_stored(task_id, &mut last_seq, &tx).await? {
            return Ok(());
        }
        if let Some(rx) = live {
            // The task may have ended before we subscribed; then the store already has everything.
            // After that, every way a task ends publishes `Ended`: the store is read again only after
            // missed updates, not once per chunk.
            let mut ended = self.task(task_id)?.state.is_terminal();
            while !ended {
                let update = tokio::select! {
                    update = rx.recv() => update,
                    // The client went away: stop watching rather than wait for the task to end.
                    () = tx.closed() => return Ok(()),
                };
                match update {
                    Ok(TaskUpdate::Output(chunk)) => {
                        if chunk.seq > last_seq {
                            last_seq = chunk.seq;
                            if tx.send(WatchItem::Output(chunk)).await.is_err() {
                                return Ok(());
                            }
                        }
                    }
                    Ok(TaskUpdate::Ended) | Err(broadcast::error::RecvError::Closed) => break,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if !self.send_stored(task_id, &mut last_seq, &tx).await? {
                            return Ok(());
                        }
                        ended = self.task(task_id)?.state.is_terminal();
                    }
                }
            }
            if !self.send_stored(task_id, &mut last_seq, &tx).await? {
                return Ok(());
            }
        }
        let _ = tx
            .send(WatchItem::Done(Box::new(self.task(task_id)?)))
            .await;
        Ok(())
    }

    /// Sends stored output after `last_seq`. Returns false when the receiver is gone.
    async fn send_stored(
        &self,
        task_id: &str,
        last_seq: &mut i64,
        tx: &mpsc::Sender<WatchItem>,
    ) -> Result<bool> {
        loop {
            let page = self.store.output_after(task_id, *last_seq, 256)?;
            if page.is_empty() {
                return Ok(true);
            }
            for chunk in page {
                *last_seq = chunk.seq;
                if tx.send(WatchItem::Output(chunk)).await.is_err() {
                    return Ok(false);
                }
            }
        }
    }
}

/// What a watcher receives.
#[derive(Debug)]
pub enum WatchItem {
    Output(StoredChunk),
    Done(Box<TaskRecord>),
}
