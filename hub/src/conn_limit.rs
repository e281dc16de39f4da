//! Connection caps for the hub's listeners: a total, and one per peer address, so one flooding client
//! (a compromised container, a port scanner) cannot take every descriptor or crowd out everyone else;
//! and the open-file limit those caps rely on.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A flood makes a refusal per connection: the log gets one line per this, with the count.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// How many connections a listener holds at once, in all and per peer address.
#[derive(Debug)]
pub struct ConnLimits {
    total: usize,
    per_peer: usize,
    open: Mutex<Counts>,
    born: Instant,
    /// Milliseconds since `born` of the last logged refusal, and the refusals not logged since.
    last_logged_ms: AtomicU64,
    unlogged: AtomicU64,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_peer: HashMap<IpAddr, usize>,
}

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Total(usize),
    Peer(usize),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Total(n) => write!(f, "the listener holds {n} connections, its limit"),
            Refused::Peer(n) => write!(f, "this peer holds {n} connections, the per-peer limit"),
        }
    }
}

/// One open connection; dropping it frees its place.
#[derive(Debug)]
pub struct ConnPermit {
    limits: Arc<ConnLimits>,
    peer: Option<IpAddr>,
}

impl ConnLimits {
    pub fn new(total: usize, per_peer: usize) -> Arc<Self> {
        Arc::new(Self {
            total,
            per_peer,
            open: Mutex::default(),
            born: Instant::now(),
            last_logged_ms: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
        })
    }

    /// Counts a turned-away connection; `Some(n)` when it is time to log, with the number turned
    /// away since the last line (this one included).
    pub fn note_refusal(&self) -> Option<u64> {
        let now = self.born.elapsed().as_millis() as u64 + LOG_EVERY.as_millis() as u64;
        let last = self.last_logged_ms.load(Ordering::Relaxed);
        let count = self.unlogged.fetch_add(1, Ordering::Relaxed) + 1;
        if now.saturating_sub(last) < LOG_EVERY.as_millis() as u64
            || self
                .last_logged_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return None;
        }
        self.unlogged.fetch_sub(count, Ordering::Relaxed);
        Some(count)
    }

    /// A place for a connection from `peer`; `None` counts it in the total only (a peer exempt from the
    /// per-peer cap, such as loopback on the operator listener).
    pub fn admit(self: &Arc<Self>, peer: Option<IpAddr>) -> Result<ConnPermit, Refused> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.total >= self.total {
            return Err(Refused::Total(self.total));
        }
        if let Some(ip) = peer {
            let n = open.by_peer.entry(ip).or_default();
            if *n >= self.per_peer {
                return Err(Refused::Peer(self.per_peer));
            }
            *n += 1;
        }
        open.total += 1;
        Ok(ConnPermit {
            limits: self.clone(),
            peer,
        })
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total -= 1;
        if let Some(ip) = self.peer
            && let Some(n) = open.by_peer.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                open.by_peer.remove(&ip);
            }
        }
    }
}

/// Every agent holds a connection (and each task an output file now and then): the usual soft limit
/// of 1024 descriptors would stop a hub long before its connection caps. Raised to the hard limit.
pub fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    let raised = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && {
            let before = limit.rlim_cur;
            limit.rlim_cur = limit.rlim_max;
            before < limit.rlim_max && libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
        }
    };
    if raised {
        tracing::debug!(descriptors = limit.rlim_cur, "raised the open-file limit");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_peer_and_in_all_and_frees_places_on_drop() {
        let limits = ConnLimits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = limits.admit(Some(a)).unwrap();
        let _a2 = limits.admit(Some(a)).unwrap();
        assert_eq!(limits.admit(Some(a)).unwrap_err(), Refused::Peer(2));
        let _b1 = limits.admit(Some(b)).unwrap();
        assert_eq!(limits.admit(None).unwrap_err(), Refused::Total(3));
        drop(a1);
        let _a3 = limits.admit(Some(a)).unwrap();
        assert_eq!(limits.admit(Some(b)).unwrap_err(), Refused::Total(3));
        assert_eq!(limits.open.lock().unwrap().by_peer[&a], 2);
    }

    #[test]
    fn refusals_are_logged_once_per_interval_with_their_count() {
        let limits = ConnLimits::new(1, 1);
        assert_eq!(limits.note_refusal(), Some(1));
        assert_eq!(limits.note_refusal(), None);
        assert_eq!(limits.note_refusal(), None);
        assert_eq!(limits.unlogged.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn exempt_peers_count_only_in_the_total() {
        let limits = ConnLimits::new(10, 1);
        let held: Vec<_> = (0..5).map(|_| limits.admit(None).unwrap()).collect();
        assert_eq!(limits.open.lock().unwrap().total, 5);
        drop(held);
        let open = limits.open.lock().unwrap();
        assert_eq!((open.total, open.by_peer.len()), (0, 0));
    }
}
