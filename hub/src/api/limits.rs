//! Connection caps for the operator listener: a total, and one per peer address, so one flooding client
//! (a port scanner, a runaway script) cannot take every descriptor or crowd out everyone else; the
//! open-file limit and how it is shared between the agent side, the operator side and the hub's own
//! files; and a throttle for the log lines a flood makes.

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
    refusals: LogThrottle,
}

/// One log line per interval for something that happens per connection in a flood, with the count.
#[derive(Debug)]
pub struct LogThrottle {
    born: Instant,
    /// Milliseconds since `born` of the last logged event, and the events not logged since.
    last_logged_ms: AtomicU64,
    unlogged: AtomicU64,
}

impl Default for LogThrottle {
    fn default() -> Self {
        Self {
            born: Instant::now(),
            last_logged_ms: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
        }
    }
}

impl LogThrottle {
    /// Counts an event; `Some(n)` when it is time to log, with the number of events since the last
    /// line (this one included).
    pub fn note(&self) -> Option<u64> {
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
            refusals: LogThrottle::default(),
        })
    }

    /// Counts a turned-away connection; `Some(n)` when it is time to log (see `LogThrottle::note`).
    pub fn note_refusal(&self) -> Option<u64> {
        self.refusals.note()
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

/// How the hub's open files are shared. Every agent holds a connection and each streaming task an
/// output file; the operator side (CLI, API, dashboard) and the store need theirs whatever the agents
/// do, so the agent side gets a share of the limit, never all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// The process's open-file limit.
    pub limit: u64,
    /// Connections the agent side may hold (TCP port and agent sockets together, listening sockets
    /// included).
    pub agent_connections: usize,
    /// Connections the operator listener may hold.
    pub operator_connections: usize,
}

impl FdBudget {
    /// A quarter of the limit (at least 256) is kept from the agent side: half of it for operator
    /// connections (at most 4096), the rest for the store, output files, the engine and the runtime.
    pub fn from_limit(limit: u64) -> Self {
        let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
        let reserved = (limit_usize / 4).max(256);
        let agent_connections = limit_usize.saturating_sub(reserved).max(16);
        let operator_connections = (reserved / 2).clamp(16, 4096);
        Self {
            limit,
            agent_connections,
            operator_connections,
        }
    }
}

/// Raises the soft open-file limit to the hard limit (the usual soft limit of 1024 would stop a hub
/// long before its connection caps) and returns the budget derived from the limit in force.
pub fn raise_fd_limit() -> FdBudget {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let limit = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                tracing::debug!(descriptors = hard, "raised the open-file limit");
                hard
            }
            Err(e) => {
                tracing::warn!(error = %e, soft, hard, "could not raise the open-file limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the open-file limit; assuming 1024");
            1024
        }
    };
    FdBudget::from_limit(limit)
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
        assert_eq!(limits.refusals.unlogged.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn the_agent_side_never_gets_every_descriptor() {
        let big = FdBudget::from_limit(20_000);
        assert_eq!(big.agent_connections, 15_000);
        assert_eq!(big.operator_connections, 2_500);
        let small = FdBudget::from_limit(1024);
        assert_eq!(small.agent_connections, 768);
        assert_eq!(small.operator_connections, 128);
        let huge = FdBudget::from_limit(1 << 20);
        assert_eq!(huge.operator_connections, 4096);
        assert!(huge.agent_connections < 1 << 20);
        // A limit too small to share still leaves the agent side something.
        assert_eq!(FdBudget::from_limit(100).agent_connections, 16);
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
