//! Task output not yet acknowledged by the hub: kept in memory across disconnects, resent from the hub's offsets, bounded in total.

use std::collections::{HashMap, VecDeque};

use bytes::{Bytes, BytesMut};

/// How much of a task's pipe is read at once (a pipe holds 64 KiB by default).
pub const READ_CHUNK: usize = 64 * 1024;

/// A pending piece at least this long goes out as it is, without being copied into a larger chunk; so
/// does a piece that is all there is to send. Shorter pieces queued behind each other are copied into
/// one message: full pipe reads (64 KiB) sent one message each cost the hub a store commit and a
/// fan-out per 64 KiB, and the copy is cheaper than that (exec output 420 → 550 MiB/s, measured).
const SEND_AS_IS: usize = 256 * 1024;

/// Largest `OutputChunk.data` we send. Reads queued while the link was busy go out together: fewer,
/// larger messages cost the hub less per byte (one store write and one fan-out per chunk).
pub const MAX_CHUNK: usize = 1 << 20;

/// Index of a stream in `TaskOutput::streams`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamId {
    Stdout = 0,
    Stderr = 1,
}

impl StreamId {
    pub const BOTH: [StreamId; 2] = [StreamId::Stdout, StreamId::Stderr];

    pub fn other(self) -> StreamId {
        match self {
            StreamId::Stdout => StreamId::Stderr,
            StreamId::Stderr => StreamId::Stdout,
        }
    }
}

/// One stream's bytes in `[base, end)`, plus how far the current link has sent and the hub has acknowledged.
#[derive(Debug, Default)]
pub struct StreamBuf {
    /// Reads as they arrived: slices of the read buffers, so the bytes are never copied on the way out
    /// unless small reads are coalesced.
    chunks: VecDeque<Bytes>,
    /// Bytes of `chunks[0]` already dropped.
    head_skip: usize,
    base: u64,
    end: u64,
    sent: u64,
    acked: u64,
}

impl StreamBuf {
    pub fn end(&self) -> u64 {
        self.end
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    pub fn held(&self) -> u64 {
        self.end - self.base
    }

    fn push(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.end += data.len() as u64;
            self.chunks.push_back(data);
        }
    }

    /// Drops up to `n` of the oldest bytes. Returns how many went and whether any of them had not been sent yet.
    fn drop_oldest(&mut self, n: u64) -> (u64, bool) {
        let n = n.min(self.held());
        let mut left = n;
        while left > 0 {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let avail = (front.len() - self.head_skip) as u64;
            if avail <= left {
                left -= avail;
                self.chunks.pop_front();
                self.head_skip = 0;
            } else {
                // `left < avail`, a chunk's length, so it fits in usize.
                self.head_skip += left as usize;
                left = 0;
            }
        }
        let lost_unsent = self.base + n > self.sent;
        self.base += n;
        (n, lost_unsent)
    }

    /// The hub holds everything below `offset`. Returns the bytes freed.
    fn ack(&mut self, offset: u64) -> u64 {
        let offset = offset.min(self.end);
        self.acked = self.acked.max(offset);
        self.sent = self.sent.max(offset);
        if offset > self.base {
            self.drop_oldest(offset - self.base).0
        } else {
            0
        }
    }

    /// A new link: the hub holds everything below `hub_has` (`None`: what it acknowledged before).
    /// Returns the bytes freed and whether the hub misses bytes we no longer hold.
    fn rewind(&mut self, hub_has: Option<u64>) -> (u64, bool) {
        let has = hub_has.unwrap_or(self.acked).min(self.end);
        let freed = self.ack(has);
        let gap = has < self.base;
        self.sent = has.max(self.base);
        (freed, gap)
    }

    /// The next unsent bytes, at most `max`, coalescing small reads. Advances `sent`.
    fn next_chunk(&mut self, max: usize) -> Option<(u64, Bytes)> {
        // Bytes dropped before they were sent: skip the gap; the task is already flagged truncated.
        self.sent = self.sent.max(self.base);
        if self.sent >= self.end {
            return None;
        }
        let offset = self.sent;
        let want = (self.end - offset).min(max as u64) as usize;
        // Position of `offset` inside the held chunks.
        let mut skip = (offset - self.base) as usize + self.head_skip;
        let mut chunks = self.chunks.iter();
        let first = loop {
            let chunk = chunks
                .next()
                .expect("sent < end, so a held chunk contains it");
            if skip < chunk.len() {
                break chunk;
            }
            skip -= chunk.len();
        };
        let rest = first.len() - skip;
        let out = if rest >= want || rest >= SEND_AS_IS {
            first.slice(skip..skip + rest.min(want))
        } else {
            // Small reads (a task printing line by line) go out together: fewer, larger messages.
            let mut out = BytesMut::with_capacity(want);
            out.extend_from_slice(&first[skip..]);
            for chunk in chunks {
                let take = chunk.len().min(want - out.len());
                out.extend_from_slice(&chunk[..take]);
                if out.len() == want {
                    break;
                }
            }
            out.freeze()
        };
        self.sent += out.len() as u64;
        Some((offset, out))
    }

    fn all_sent(&self) -> bool {
        self.sent.max(self.base) >= self.end
    }
}

/// Both streams of one task.
#[derive(Debug, Default)]
pub struct TaskOutput {
    pub streams: [StreamBuf; 2],
    /// Some output was lost to the bound: reported as `output_truncated`.
    pub truncated: bool,
    /// The hub stores no more of it: new output is counted, not kept or sent.
    pub discarding: bool,
}

impl TaskOutput {
    fn held(&self) -> u64 {
        self.streams[0].held() + self.streams[1].held()
    }
}

/// All tasks' output, with the total kept under `limit`.
#[derive(Debug)]
pub struct Spool {
    limit: u64,
    total: u64,
    outputs: HashMap<String, TaskOutput>,
}

impl Spool {
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            total: 0,
            outputs: HashMap::new(),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn add(&mut self, task: &str) {
        self.outputs.entry(task.to_owned()).or_default();
    }

    pub fn remove(&mut self, task: &str) {
        if let Some(out) = self.outputs.remove(task) {
            self.total -= out.held();
        }
    }

    pub fn get(&self, task: &str) -> Option<&TaskOutput> {
        self.outputs.get(task)
    }

    pub fn ends(&self, task: &str) -> (u64, u64) {
        self.outputs
            .get(task)
            .map_or((0, 0), |o| (o.streams[0].end, o.streams[1].end))
    }

    pub fn truncated(&self, task: &str) -> bool {
        self.outputs.get(task).is_some_and(|o| o.truncated)
    }

    /// The hub stores no more of `task`'s output: what is held goes, and what comes is only counted
    /// (the ends stay right for the result).
    pub fn discard(&mut self, task: &str) {
        if let Some(out) = self.outputs.get_mut(task) {
            out.discarding = true;
            for s in &mut out.streams {
                let end = s.end;
                self.total -= s.ack(end);
            }
        }
    }

    /// Appends freshly read output, then drops the oldest bytes if the bound is exceeded:
    /// the producing task's first, then the largest other task's.
    pub fn append(&mut self, task: &str, stream: StreamId, data: Bytes) {
        let Some(out) = self.outputs.get_mut(task) else {
            return;
        };
        if out.discarding {
            let s = &mut out.streams[stream as usize];
            s.end += data.len() as u64;
            s.ack(s.end);
            return;
        }
        self.total += data.len() as u64;
        out.streams[stream as usize].push(data);
        if self.total <= self.limit {
            return;
        }
        let mut excess = self.total - self.limit;
        for s in [stream, stream.other()] {
            excess -= self.drop_from(task, s, excess);
            if excess == 0 {
                return;
            }
        }
        while excess > 0 {
            let Some(victim) = self
                .outputs
                .iter()
                .filter(|(_, o)| o.held() > 0)
                .max_by_key(|(_, o)| o.held())
                .map(|(id, _)| id.clone())
            else {
                return;
            };
            for s in StreamId::BOTH {
                excess -= self.drop_from(&victim, s, excess);
            }
        }
    }

    fn drop_from(&mut self, task: &str, stream: StreamId, n: u64) -> u64 {
        let Some(out) = self.outputs.get_mut(task) else {
            return 0;
        };
        let (dropped, lost_unsent) = out.streams[stream as usize].drop_oldest(n);
        // Sent-but-unacked bytes probably reached the hub; a new link's resend offsets will tell.
        if lost_unsent {
            out.truncated = true;
        }
        self.total -= dropped;
        dropped
    }

    /// Handles an Ack: frees everything below the offsets.
    pub fn ack(&mut self, task: &str, stdout: u64, stderr: u64) {
        if let Some(out) = self.outputs.get_mut(task) {
            let freed = out.streams[0].ack(stdout) + out.streams[1].ack(stderr);
            self.total -= freed;
        }
    }

    /// A new link: resend from what the hub holds (`None`: from what it acknowledged).
    /// A hub offset below what we still hold means bytes were lost, so the task is marked truncated.
    pub fn rewind(&mut self, task: &str, hub_has: Option<(u64, u64)>) {
        if let Some(out) = self.outputs.get_mut(task) {
            let (a, b) = match hub_has {
                Some((o, e)) => (Some(o), Some(e)),
                None => (None, None),
            };
            let (freed_out, gap_out) = out.streams[0].rewind(a);
            let (freed_err, gap_err) = out.streams[1].rewind(b);
            if gap_out || gap_err {
                out.truncated = true;
            }
            self.total -= freed_out + freed_err;
        }
    }

    /// The next chunk to send for `task` on `stream`, if any.
    pub fn next_chunk(&mut self, task: &str, stream: StreamId) -> Option<(u64, Bytes)> {
        self.outputs.get_mut(task)?.streams[stream as usize].next_chunk(MAX_CHUNK)
    }

    /// Everything produced so far has gone out on the current link.
    pub fn all_sent(&self, task: &str) -> bool {
        self.outputs
            .get(task)
            .is_none_or(|o| o.streams.iter().all(StreamBuf::all_sent))
    }

    /// Nothing is held for `task`: every byte was acknowledged (or lost to the bound).
    pub fn drained(&self, task: &str) -> bool {
        self.outputs.get(task).is_none_or(|o| o.held() == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use StreamId::{Stderr, Stdout};

    fn drain(spool: &mut Spool, task: &str, stream: StreamId) -> Vec<(u64, Vec<u8>)> {
        std::iter::from_fn(|| spool.next_chunk(task, stream))
            .map(|(offset, data)| (offset, data.to_vec()))
            .collect()
    }

    #[test]
    fn sends_in_order_and_coalesces() {
        let mut s = Spool::new(1 << 20);
        s.add("t");
        s.append("t", Stdout, Bytes::from_static(b"hello "));
        s.append("t", Stdout, Bytes::from_static(b"world"));
        s.append("t", Stderr, Bytes::from_static(b"oops"));
        assert_eq!(
            drain(&mut s, "t", Stdout),
            vec![(0, b"hello world".to_vec())]
        );
        assert_eq!(drain(&mut s, "t", Stderr), vec![(0, b"oops".to_vec())]);
        assert!(s.all_sent("t"));
        s.append("t", Stdout, Bytes::from_static(b"!"));
        assert!(!s.all_sent("t"));
        assert_eq!(drain(&mut s, "t", Stdout), vec![(11, b"!".to_vec())]);
        assert_eq!(s.ends("t"), (12, 4));
        assert_eq!(s.total(), 16);
    }

    #[test]
    fn large_reads_go_out_without_a_copy_and_small_ones_together() {
        let mut s = Spool::new(1 << 30);
        s.add("t");
        let read = Bytes::from(vec![1u8; 2 * SEND_AS_IS]);
        s.append("t", Stdout, read.clone());
        s.append("t", Stdout, Bytes::from_static(b"tail"));
        let (offset, sent) = s.next_chunk("t", Stdout).unwrap();
        assert_eq!((offset, sent.len()), (0, 2 * SEND_AS_IS));
        assert_eq!(sent.as_ptr(), read.as_ptr(), "the read itself, not a copy");
        // After a partial ack and a resend, the rest of a read is still a slice of it.
        s.ack("t", 10, 0);
        s.rewind("t", Some((10, 0)));
        let (offset, again) = s.next_chunk("t", Stdout).unwrap();
        assert_eq!(offset, 10);
        assert_eq!(again.as_ptr(), read[10..].as_ptr());
        // Below the threshold, what is pending is coalesced.
        s.append("t", Stdout, Bytes::from_static(b"+more"));
        let (_, last) = s.next_chunk("t", Stdout).unwrap();
        assert_eq!(&last[..], b"tail+more");
        // Full pipe reads queued while the link was busy go out as one message; one alone is not copied.
        let reads: Vec<Bytes> = (0..3u8).map(|i| Bytes::from(vec![i; READ_CHUNK])).collect();
        for read in &reads {
            s.append("t", Stdout, read.clone());
        }
        let (_, together) = s.next_chunk("t", Stdout).unwrap();
        assert_eq!(together, reads.concat());
        s.append("t", Stdout, reads[0].clone());
        let (_, alone) = s.next_chunk("t", Stdout).unwrap();
        assert_eq!(alone.as_ptr(), reads[0].as_ptr());
    }

    #[test]
    fn chunks_never_exceed_the_maximum() {
        let mut s = Spool::new(1 << 30);
        s.add("t");
        let big = vec![7u8; MAX_CHUNK + 10];
        s.append("t", Stdout, Bytes::from(big.clone()));
        s.append("t", Stdout, Bytes::from(big.clone()));
        let chunks = drain(&mut s, "t", Stdout);
        assert!(chunks.iter().all(|(_, d)| d.len() <= MAX_CHUNK));
        let mut expect = 0;
        for (off, d) in &chunks {
            assert_eq!(*off, expect);
            expect += d.len() as u64;
        }
        assert_eq!(expect, 2 * big.len() as u64);
    }

    #[test]
    fn ack_frees_and_drained_when_everything_acked() {
        let mut s = Spool::new(1 << 20);
        s.add("t");
        s.append("t", Stdout, Bytes::from_static(b"0123456789"));
        s.append("t", Stderr, Bytes::from_static(b"abc"));
        drain(&mut s, "t", Stdout);
        s.ack("t", 4, 0);
        assert_eq!(s.total(), 9);
        assert!(!s.drained("t"));
        // Offsets beyond what was produced are clamped.
        s.ack("t", 100, 3);
        assert_eq!(s.total(), 0);
        assert!(s.drained("t"));
        assert!(!s.truncated("t"));
    }

    #[test]
    fn resend_from_hub_offsets_after_reconnect() {
        let mut s = Spool::new(1 << 20);
        s.add("t");
        s.append("t", Stdout, Bytes::from_static(b"abcdefghij"));
        s.append("t", Stderr, Bytes::from_static(b"XYZ"));
        drain(&mut s, "t", Stdout);
        drain(&mut s, "t", Stderr);
        // The link died; the hub kept stdout up to 6 and no stderr.
        s.rewind("t", Some((6, 0)));
        assert_eq!(drain(&mut s, "t", Stdout), vec![(6, b"ghij".to_vec())]);
        assert_eq!(drain(&mut s, "t", Stderr), vec![(0, b"XYZ".to_vec())]);
        assert_eq!(s.total(), 7);
        assert!(!s.truncated("t"));
    }

    #[test]
    fn resend_everything_unacked_when_the_hub_names_no_offsets() {
        let mut s = Spool::new(1 << 20);
        s.add("t");
        s.append("t", Stdout, Bytes::from_static(b"abcdef"));
        drain(&mut s, "t", Stdout);
        s.ack("t", 2, 0);
        s.rewind("t", None);
        assert_eq!(drain(&mut s, "t", Stdout), vec![(2, b"cdef".to_vec())]);
    }

    #[test]
    fn overflow_drops_the_producers_oldest_bytes_and_flags_truncation() {
        let mut s = Spool::new(10);
        s.add("t");
        s.append("t", Stdout, Bytes::from_static(b"0123456"));
        s.append("t", Stdout, Bytes::from_static(b"789ABC"));
        assert_eq!(s.total(), 10);
        assert!(s.truncated("t"));
        assert_eq!(
            drain(&mut s, "t", Stdout),
            vec![(3, b"3456789ABC".to_vec())]
        );
        assert_eq!(s.ends("t"), (13, 0));
    }

    #[test]
    fn overflow_of_sent_bytes_is_only_flagged_if_the_hub_lacks_them() {
        let mut s = Spool::new(8);
        s.add("t");
        s.append("t", Stdout, Bytes::from_static(b"abcdef"));
        drain(&mut s, "t", Stdout);
        s.append("t", Stdout, Bytes::from_static(b"ghij"));
        // "ab" went out but is unacked: dropped, but not (yet) a loss.
        assert_eq!(s.total(), 8);
        assert!(!s.truncated("t"));
        // Reconnect: the hub says it holds stdout up to 4, beyond what we dropped; fine.
        let mut ok = Spool::new(8);
        ok.add("t");
        ok.append("t", Stdout, Bytes::from_static(b"abcdef"));
        drain(&mut ok, "t", Stdout);
        ok.append("t", Stdout, Bytes::from_static(b"ghij"));
        ok.rewind("t", Some((4, 0)));
        assert!(!ok.truncated("t"));
        assert_eq!(drain(&mut ok, "t", Stdout), vec![(4, b"efghij".to_vec())]);
        // The hub only got the first byte: "b" is gone for good.
        s.rewind("t", Some((1, 0)));
        assert!(s.truncated("t"));
        assert_eq!(drain(&mut s, "t", Stdout), vec![(2, b"cdefghij".to_vec())]);
    }

    #[test]
    fn overflow_falls_back_to_the_largest_other_task() {
        let mut s = Spool::new(10);
        s.add("big");
        s.add("small");
        s.append("big", Stdout, Bytes::from_static(b"0123456789"));
        s.append("small", Stderr, Bytes::from_static(b"xy"));
        // The producer's own oldest bytes go first.
        assert_eq!(s.total(), 10);
        assert!(s.truncated("small"));
        assert!(!s.truncated("big"));
        assert_eq!(s.get("small").unwrap().streams[1].held(), 0);
        // A producer holding nothing more to drop: the largest other task pays.
        s.remove("small");
        s.add("tiny");
        s.limit = 5;
        s.append("tiny", Stdout, Bytes::from_static(b"z"));
        assert_eq!(s.total(), 5);
        assert!(s.truncated("tiny"));
        assert!(s.truncated("big"));
        assert_eq!(s.get("big").unwrap().streams[0].base(), 5);
    }

    #[test]
    fn remove_releases_the_budget() {
        let mut s = Spool::new(100);
        s.add("a");
        s.append("a", Stdout, Bytes::from_static(b"12345"));
        s.remove("a");
        assert_eq!(s.total(), 0);
        s.append("a", Stdout, Bytes::from_static(b"ignored: unknown task"));
        assert_eq!(s.total(), 0);
    }
}
