//! Stdin that is never lost or duplicated. Per task, the hub keeps the bytes it has handed to the
//! agent until the agent says its process consumed them (`StdinAck`). A client's stdin waits while a
//! window's worth is unacknowledged, so a fast producer is held back at the CLI instead of growing the
//! agent; after a link drop the unacknowledged bytes go again, by offset, behind the welcome, and the
//! agent drops what it already has.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

/// Unacknowledged stdin a task may have: what may wait in its agent for the process to read it.
pub const WINDOW: u64 = 2 << 20;

/// The capability an agent announces when it acknowledges stdin and drops resent bytes by offset.
pub const STDIN_ACK_CAPABILITY: &str = "stdin-ack";

/// One task's stdin as the hub has sent it.
#[derive(Debug, Default)]
struct Window {
    agent_id: String,
    /// Consumed by the process, as the agent said.
    acked: u64,
    /// Offset after the last byte handed to the agent.
    end: u64,
    /// Handed over, not yet acknowledged: (offset, bytes), in order.
    pending: VecDeque<(u64, Bytes)>,
    closed: bool,
}

/// Every task's stdin window.
#[derive(Debug, Default)]
pub struct StdinWindows {
    windows: Mutex<HashMap<String, Window>>,
    /// Woken by every acknowledgement and every forgotten window.
    room: Notify,
    /// Per task, held by whoever sends it stdin (several clients may attach to a terminal session),
    /// so its offsets reach the agent in order.
    senders: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// What an agent needs again after a link drop: its stdin pieces from what it acknowledged, then the
/// close if there was one.
#[derive(Debug, PartialEq, Eq)]
pub struct Resend {
    pub task_id: String,
    pub pieces: Vec<(u64, Bytes)>,
    pub closed: bool,
}

impl StdinWindows {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Window>> {
        self.windows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new task's stdin, from offset 0.
    pub fn open(&self, agent_id: &str, task_id: &str) {
        self.lock()
            .entry(task_id.to_string())
            .or_insert_with(|| Window {
                agent_id: agent_id.to_string(),
                ..Default::default()
            });
        self.room.notify_waiters();
    }

    /// A running task the agent reports (its hello) as having taken `taken` bytes of stdin. After a
    /// hub restart this is where its window comes from: what follows starts at `taken`.
    pub fn resume(&self, agent_id: &str, task_id: &str, taken: u64) {
        self.lock()
            .entry(task_id.to_string())
            .or_insert_with(|| Window {
                agent_id: agent_id.to_string(),
                acked: taken,
                end: taken,
                ..Default::default()
            });
        self.room.notify_waiters();
    }

    /// Records `data` as the task's next stdin and returns its offset, once the task has a window and
    /// fewer than `WINDOW` bytes in it are unacknowledged (no bound while `bounded` says no: an agent
    /// that never acknowledges; asked again at every wake-up, since it can connect meanwhile). None
    /// once `ended` says the task is over.
    pub async fn push(
        &self,
        task_id: &str,
        data: Bytes,
        bounded: impl Fn() -> bool,
        ended: impl Fn() -> bool,
    ) -> Option<u64> {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            let bounded = bounded();
            if let Some(window) = self.lock().get_mut(task_id)
                && (!bounded || window.end - window.acked < WINDOW)
            {
                let offset = window.end;
                window.end += data.len() as u64;
                if bounded {
                    window.pending.push_back((offset, data));
                }
                return Some(offset);
            }
            if ended() {
                return None;
            }
            room.await;
        }
    }

    /// The task's stdin ends after what was pushed.
    pub fn close(&self, task_id: &str) {
        if let Some(window) = self.lock().get_mut(task_id) {
            window.closed = true;
        }
    }

    /// The agent's process consumed the task's stdin up to `consumed`. Ignored unless `agent_id`
    /// sent it that stdin: an agent acknowledges only its own tasks'.
    pub fn ack(&self, agent_id: &str, task_id: &str, consumed: u64) {
        let mut windows = self.lock();
        let Some(window) = windows.get_mut(task_id) else {
            return;
        };
        if window.agent_id != agent_id || consumed <= window.acked {
            return;
        }
        window.acked = consumed.min(window.end);
        while let Some((offset, data)) = window.pending.front() {
            if offset + data.len() as u64 > window.acked {
                break;
            }
            window.pending.pop_front();
        }
        drop(windows);
        self.room.notify_waiters();
    }

    /// What agent `agent_id` lacks of its tasks' stdin, from what each acknowledged.
    pub fn resend(&self, agent_id: &str) -> Vec<Resend> {
        self.lock()
            .iter()
            .filter(|(_, w)| w.agent_id == agent_id && (!w.pending.is_empty() || w.closed))
            .map(|(task_id, w)| Resend {
                task_id: task_id.clone(),
                pieces: w
                    .pending
                    .iter()
                    .map(|(offset, data)| {
                        // The first piece may be partly consumed already.
                        let skip = w.acked.saturating_sub(*offset).min(data.len() as u64);
                        (offset + skip, data.slice(skip as usize..))
                    })
                    .collect(),
                closed: w.closed,
            })
            .collect()
    }

    /// What a task's stdin sender holds while it records and sends (see `senders`).
    pub fn sender(&self, task_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.senders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(task_id.to_string())
            .or_default()
            .clone()
    }

    /// Wakes every sender waiting for room, to look again (an agent that never acknowledges stdin
    /// has connected).
    pub fn wake(&self) {
        self.room.notify_waiters();
    }

    /// The task ended: its stdin goes nowhere now, and whoever waits for room stops waiting.
    pub fn forget(&self, task_id: &str) {
        self.senders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(task_id);
        if self.lock().remove(task_id).is_some() {
            self.room.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unacknowledged_stdin_is_resent_from_the_ack_and_the_window_holds_senders_back() {
        let windows = std::sync::Arc::new(StdinWindows::default());
        let half = Bytes::from(vec![b'a'; (WINDOW / 2) as usize]);
        let live = || false;
        let acks = || true;
        windows.open("ag", "t");
        assert_eq!(windows.push("t", half.clone(), acks, live).await, Some(0));
        assert_eq!(
            windows.push("t", half.clone(), acks, live).await,
            Some(WINDOW / 2)
        );
        // A third half must wait for an acknowledgement.
        let blocked = {
            let windows = windows.clone();
            let half = half.clone();
            tokio::spawn(async move { windows.push("t", half, || true, || false).await })
        };
        tokio::task::yield_now().await;
        assert!(!blocked.is_finished());
        // Another agent cannot acknowledge this task's stdin.
        windows.ack("other", "t", WINDOW);
        tokio::task::yield_now().await;
        assert!(!blocked.is_finished());
        // Part of the first piece consumed: the resend starts inside it.
        windows.ack("ag", "t", 10);
        assert_eq!(blocked.await.unwrap(), Some(WINDOW));
        windows.close("t");
        let resend = windows.resend("ag");
        assert_eq!(resend.len(), 1);
        let pieces = &resend[0].pieces;
        assert_eq!(pieces[0].0, 10);
        assert_eq!(pieces[0].1.len() as u64, WINDOW / 2 - 10);
        assert_eq!(
            pieces.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
            vec![10, WINDOW / 2, WINDOW]
        );
        assert!(resend[0].closed);
        assert!(windows.resend("other").is_empty());
        // Everything consumed: nothing to resend but the close.
        windows.ack("ag", "t", WINDOW * 3 / 2);
        assert!(windows.resend("ag")[0].pieces.is_empty());
        windows.forget("t");
        assert!(windows.resend("ag").is_empty());
        // Stdin for a task with no window (ended) goes nowhere.
        assert_eq!(windows.push("t", half, || true, || true).await, None);
    }

    #[tokio::test]
    async fn a_sender_waiting_on_an_agent_that_never_acknowledges_goes_on_when_it_connects() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let windows = std::sync::Arc::new(StdinWindows::default());
        let acks = std::sync::Arc::new(AtomicBool::new(true));
        windows.open("ag", "t");
        let full = Bytes::from(vec![b'a'; WINDOW as usize]);
        assert_eq!(windows.push("t", full, || true, || false).await, Some(0));
        let waiting = {
            let (windows, acks) = (windows.clone(), acks.clone());
            tokio::spawn(async move {
                let bounded = || acks.load(Ordering::Relaxed);
                windows
                    .push("t", Bytes::from_static(b"x"), bounded, || false)
                    .await
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        // The agent that connected announced no acknowledgements.
        acks.store(false, Ordering::Relaxed);
        windows.wake();
        assert_eq!(waiting.await.unwrap(), Some(WINDOW));
    }

    #[tokio::test]
    async fn after_a_hub_restart_stdin_waits_for_the_agents_report_and_follows_it() {
        let windows = std::sync::Arc::new(StdinWindows::default());
        let waiting = {
            let windows = windows.clone();
            tokio::spawn(async move {
                windows
                    .push("t", Bytes::from_static(b"more"), || true, || false)
                    .await
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        windows.resume("ag", "t", 1000);
        assert_eq!(waiting.await.unwrap(), Some(1000));
        // A later report changes nothing: this hub's window is the truth.
        windows.resume("ag", "t", 5);
        assert_eq!(windows.resend("ag")[0].pieces[0].0, 1000);
    }
}
