//! A task's stdin on the agent: bytes taken in offset order (what the hub sends again after a link
//! drop is dropped here if already taken), and how far the process has consumed them, which the hub
//! is told (`StdinAck`) so it sends more. The hub keeps at most its window unacknowledged, which
//! bounds what waits here for a slow reader.

use bytes::Bytes;

use super::StdinTx;

#[derive(Debug, Default)]
pub struct TaskStdin {
    /// To the task's stdin pump; None once the task has no stdin (or never had).
    tx: Option<StdinTx>,
    /// Offset after the last byte taken.
    taken: u64,
    /// Offset after the last byte the process consumed (or that was dropped because it stopped
    /// reading).
    consumed: u64,
    /// What this link has told the hub of `consumed`.
    told: u64,
    closed: bool,
}

impl TaskStdin {
    pub fn new(tx: Option<StdinTx>) -> Self {
        Self {
            tx,
            ..Default::default()
        }
    }

    pub fn tx(&self) -> Option<&StdinTx> {
        self.tx.as_ref()
    }

    pub fn taken(&self) -> u64 {
        self.taken
    }

    /// Takes `data`, which starts at `offset` of the task's stdin: what was taken before is dropped.
    /// Bytes nobody will read (the pump is gone) count as consumed at once, so the hub never waits
    /// for them.
    pub fn take(&mut self, offset: u64, data: Bytes) {
        let end = offset + data.len() as u64;
        if end <= self.taken || self.closed {
            return;
        }
        if offset > self.taken {
            // The hub never skips; if it did, the bytes between are lost and the order must go on.
            tracing::warn!(
                expected = self.taken,
                offset,
                "stdin arrived past a gap; the bytes between are lost"
            );
        }
        let fresh = data.slice(self.taken.saturating_sub(offset) as usize..);
        self.taken = end;
        let queued = self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.send(Some(fresh)).is_ok());
        if !queued {
            self.tx = None;
            self.consumed = self.taken;
        }
    }

    /// The end of the task's stdin, after everything taken (once: a resent close changes nothing).
    pub fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            if let Some(tx) = &self.tx {
                drop(tx.send(None));
            }
        }
    }

    /// The pump wrote (or gave up on) the first `written` bytes it was given.
    pub fn consumed(&mut self, written: u64) {
        self.consumed = self.consumed.max(written.min(self.taken));
    }

    /// The pump is gone (the process closed its stdin, or ended): nothing more will be read.
    pub fn gone(&mut self) {
        self.tx = None;
        self.consumed = self.taken;
    }

    /// Drops the channel when the task ends.
    pub fn end(&mut self) {
        self.tx = None;
    }

    /// The acknowledgement the hub has not had yet on this link, if any.
    pub fn next_ack(&mut self) -> Option<u64> {
        (self.consumed > self.told).then(|| {
            self.told = self.consumed;
            self.consumed
        })
    }

    /// A new link: the hub may have missed what the old one carried, so it is told again.
    pub fn relink(&mut self) {
        self.told = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    #[test]
    fn resent_stdin_is_taken_once_and_consumption_is_acknowledged_once_per_link() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut stdin = TaskStdin::new(Some(tx));
        stdin.take(0, Bytes::from_static(b"hello "));
        // A resend overlapping what was taken: only the new part goes on.
        stdin.take(3, Bytes::from_static(b"lo world"));
        stdin.take(0, Bytes::from_static(b"hello"));
        assert_eq!(rx.try_recv().unwrap().unwrap(), &b"hello "[..]);
        assert_eq!(rx.try_recv().unwrap().unwrap(), &b"world"[..]);
        assert!(rx.try_recv().is_err());
        assert_eq!(stdin.taken(), 11);

        assert_eq!(stdin.next_ack(), None);
        stdin.consumed(6);
        assert_eq!(stdin.next_ack(), Some(6));
        assert_eq!(stdin.next_ack(), None);
        stdin.relink();
        assert_eq!(stdin.next_ack(), Some(6));

        stdin.close();
        stdin.close();
        assert_eq!(rx.try_recv().unwrap(), None);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn stdin_nobody_reads_counts_as_consumed_so_the_hub_never_waits() {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut stdin = TaskStdin::new(Some(tx));
        stdin.take(0, Bytes::from_static(b"queued"));
        // The process closed its stdin: what was queued and what comes later are consumed.
        stdin.gone();
        drop(rx);
        stdin.take(6, Bytes::from_static(b"later"));
        assert_eq!(stdin.next_ack(), Some(11));
        let mut none = TaskStdin::new(None);
        none.take(0, Bytes::from_static(b"x"));
        assert_eq!(none.next_ack(), Some(1));
    }
}
