//! Who holds what on the agent side. Every connection is attributed to a source before its TLS
//! handshake: an agent's own socket (which only that agent's container mounts) or a container's address
//! on the agents' network. A source gets a few unauthenticated connections at a time, out of a small
//! budget of its own, and a rate of new ones; an agent, once authenticated, a few connections. Every
//! connection must say an authenticated hello within a deadline of its accept, whether or not it opens
//! a stream. A source that keeps breaking the protocol (deadlines missed, bad tokens, foreign tasks'
//! output) is cut off: its connections are closed and new ones refused for a cooldown.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;

use crate::agent::conduct::{Conduct, Violation};
use crate::api::limits::LogThrottle;

/// Where a connection came from, as far as the hub can tell before any byte is read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// The agent socket of this agent id: only its container mounts it.
    Socket(String),
    /// An address on the agents' network, where each container has its own.
    Address(IpAddr),
    /// An address that agents may share (behind NAT, or `--agent-listen` elsewhere): no per-source
    /// limits, only the totals and the deadline.
    Shared,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Socket(id) => write!(f, "agent {id}'s socket"),
            Source::Address(ip) => write!(f, "{ip}"),
            Source::Shared => write!(f, "a shared address"),
        }
    }
}

/// What the guard counts, cools down and cuts off: an agent (by id), or an address before its
/// connection has said who it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Agent(String),
    Address(IpAddr),
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Agent(id) => write!(f, "agent {id}"),
            Key::Address(ip) => write!(f, "address {ip}"),
        }
    }
}

impl Source {
    fn key(&self) -> Option<Key> {
        match self {
            Source::Socket(id) => Some(Key::Agent(id.clone())),
            Source::Address(ip) => Some(Key::Address(*ip)),
            Source::Shared => None,
        }
    }
}

/// Why a connection or link was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// All agent-side connections are taken.
    Total(usize),
    /// The budget of unauthenticated connections is taken.
    Unauthenticated(usize),
    /// This source holds its share of unauthenticated connections.
    PerSource(usize),
    /// This source opens connections faster than any agent does.
    Rate,
    /// This agent holds its share of authenticated connections.
    PerAgent(usize),
    /// Cut off for repeated violations; refused until the cooldown ends.
    CutOff(Duration),
    /// Credentials of another agent on this agent's socket.
    WrongSocket,
}

impl Refused {
    /// Its name in the `agent_side_refusals` metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::Total(_) => "total",
            Refused::Unauthenticated(_) => "unauthenticated",
            Refused::PerSource(_) => "per_source",
            Refused::Rate => "rate",
            Refused::PerAgent(_) => "per_agent",
            Refused::CutOff(_) => "cut_off",
            Refused::WrongSocket => "wrong_socket",
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Total(n) => write!(f, "the agent side holds {n} connections, its limit"),
            Refused::Unauthenticated(n) => {
                write!(f, "{n} connections are waiting to authenticate, the limit")
            }
            Refused::PerSource(n) => write!(
                f,
                "this source holds {n} unauthenticated connections, its limit"
            ),
            Refused::Rate => write!(f, "this source opens connections too fast"),
            Refused::PerAgent(n) => write!(f, "this agent holds {n} connections, its limit"),
            Refused::CutOff(left) => write!(
                f,
                "cut off for repeated protocol violations ({}s left)",
                left.as_secs().max(1)
            ),
            Refused::WrongSocket => write!(f, "credentials of another agent on this socket"),
        }
    }
}

/// The guard's numbers. `Limits::from_descriptors` derives the totals from the open-file limit.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Agent-side connections at most, authenticated or not.
    pub total: usize,
    /// Unauthenticated connections at most, over every source: what a flood can take.
    pub unauthenticated: usize,
    pub unauthenticated_per_source: usize,
    pub per_agent: usize,
    /// New connections a source may open in a burst, and per second after it.
    pub accept_burst: u32,
    pub accepts_per_second: u32,
    /// From accept to an authenticated hello.
    pub hello_deadline: Duration,
    /// This many violations within `strike_window` cut a source off for `cooldown`.
    pub strikes: usize,
    pub strike_window: Duration,
    pub cooldown: Duration,
}

impl Limits {
    /// The caps for a hub that may hold `agent_connections` agent-side connections (its share of the
    /// open-file limit; see `conn_limit::FdBudget`).
    pub fn for_connections(agent_connections: usize) -> Self {
        Self {
            total: agent_connections,
            // Enough for a thousand agents reconnecting at once after a hub restart; a flood from
            // every container at once gets no more.
            unauthenticated: (agent_connections / 8).clamp(64, 2048),
            // An agent dials one connection, two while a reconnect overlaps the old link.
            unauthenticated_per_source: 4,
            per_agent: 4,
            accept_burst: 16,
            accepts_per_second: 4,
            hello_deadline: Duration::from_secs(10),
            strikes: 8,
            strike_window: Duration::from_secs(60),
            cooldown: Duration::from_secs(30),
        }
    }
}

/// One connection's standing with the guard, shared by its IO object and the service handling it.
#[derive(Debug)]
pub struct ConnState {
    me: std::sync::Weak<ConnState>,
    source: Source,
    /// The agent id it authenticated as.
    agent: Mutex<Option<String>>,
    closed: AtomicBool,
    waker: AtomicWaker,
    /// For whoever waits on the connection outside its IO (the TLS handshake).
    closing: tokio::sync::Notify,
    guard: Arc<AgentGuard>,
}

impl ConnState {
    pub fn source(&self) -> &Source {
        &self.source
    }

    pub fn guard(&self) -> &Arc<AgentGuard> {
        &self.guard
    }

    pub fn is_authenticated(&self) -> bool {
        self.lock_agent().is_some()
    }

    /// The connection should end: its IO object fails its next read and write.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Wakes whoever reads this connection when it is closed.
    pub fn register(&self, waker: &std::task::Waker) {
        self.waker.register(waker);
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.waker.wake();
        self.closing.notify_waiters();
    }

    /// Resolves once the connection is closed by the guard.
    pub async fn closed(&self) {
        let notified = self.closing.notified();
        if self.is_closed() {
            return;
        }
        notified.await;
    }

    fn lock_agent(&self) -> MutexGuard<'_, Option<String>> {
        self.agent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the connection as `agent_id`'s, moving it from the unauthenticated budget to the agent's.
    pub fn authenticate(&self, agent_id: &str) -> Result<(), Refused> {
        self.guard.authenticate(self, agent_id)
    }

    /// The same as `Conduct::strike`, for callers holding the concrete state.
    pub fn strike(&self, violation: Violation) -> bool {
        Conduct::strike(self, violation)
    }
}

impl Conduct for ConnState {
    /// Records a violation on this connection; true when it cut the source off (the connection is
    /// then closed already).
    fn strike(&self, violation: Violation) -> bool {
        let key = match self.lock_agent().as_ref() {
            Some(id) => Some(Key::Agent(id.clone())),
            None => self.source.key(),
        };
        match key {
            Some(key) => self.guard.strike(key, violation),
            None => false,
        }
    }
}

/// A connection's place in the caps; dropping it (with the connection) frees it.
#[derive(Debug)]
pub struct Lease {
    state: Arc<ConnState>,
}

impl Lease {
    pub fn state(&self) -> &Arc<ConnState> {
        &self.state
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.state.guard.release(&self.state);
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    unauthenticated: usize,
    sources: HashMap<Key, KeyState>,
    /// Admissions since idle sources were last swept.
    since_sweep: usize,
}

impl Counts {
    /// The state of `key`, made when it is new; refused while it is cut off.
    fn open_entry(
        &mut self,
        key: Key,
        now: Instant,
        limits: &Limits,
    ) -> Result<&mut KeyState, Refused> {
        let entry = self
            .sources
            .entry(key)
            .or_insert_with(|| KeyState::new(limits.accept_burst, now));
        match entry.cut_off_left(now) {
            Some(left) => Err(Refused::CutOff(left)),
            None => Ok(entry),
        }
    }
}

/// Every this many admissions, sources with nothing left to remember are forgotten (a source is
/// otherwise forgotten when its last connection goes, unless its bucket is still refilling).
const SWEEP_EVERY: usize = 1024;

#[derive(Debug)]
struct KeyState {
    /// Unauthenticated connections from this source (for an address), or on this agent's socket.
    unauthenticated: usize,
    /// Authenticated connections (agents only).
    authenticated: usize,
    tokens: f64,
    refilled: Instant,
    strikes: Vec<Instant>,
    cut_off_until: Option<Instant>,
    /// Open connections, to close when the key is cut off.
    conns: Vec<std::sync::Weak<ConnState>>,
}

impl KeyState {
    fn new(burst: u32, now: Instant) -> Self {
        Self {
            unauthenticated: 0,
            authenticated: 0,
            tokens: f64::from(burst),
            refilled: now,
            strikes: Vec::new(),
            cut_off_until: None,
            conns: Vec::new(),
        }
    }

    fn cut_off_left(&self, now: Instant) -> Option<Duration> {
        self.cut_off_until
            .and_then(|until| until.checked_duration_since(now))
            .filter(|left| !left.is_zero())
    }

    /// Nothing to remember: no connection, no recent strike, no cooldown, a bucket that has filled up.
    fn is_idle(&self, now: Instant, limits: &Limits) -> bool {
        let refilled = self.tokens
            + now.duration_since(self.refilled).as_secs_f64()
                * f64::from(limits.accepts_per_second);
        self.unauthenticated == 0
            && self.authenticated == 0
            && self.conns.iter().all(|c| c.strong_count() == 0)
            && self.cut_off_left(now).is_none()
            && self
                .strikes
                .last()
                .is_none_or(|at| now.duration_since(*at) > limits.strike_window)
            && refilled >= f64::from(limits.accept_burst)
    }
}

/// The agent side's connection accounting (see the module doc).
#[derive(Debug)]
pub struct AgentGuard {
    limits: Limits,
    counts: Mutex<Counts>,
    refusals: LogThrottle,
    deadlines: LogThrottle,
}

impl AgentGuard {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            counts: Mutex::default(),
            refusals: LogThrottle::default(),
            deadlines: LogThrottle::default(),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a new connection from `source`, checked before its TLS handshake so a refusal costs
    /// nothing but the accept. The refusal is logged here (once per interval, with a count).
    pub fn admit(self: &Arc<Self>, source: Source) -> Result<Lease, Refused> {
        let refused = self.try_admit(&source);
        match refused {
            Ok(lease) => Ok(lease),
            Err(why) => {
                crate::metrics::metrics().agent_side_refused(why.reason());
                if let Some(count) = self.refusals.note() {
                    tracing::warn!(%source, count, "agent side refused new connections: {why}");
                }
                // What only a flood does counts toward a cut-off, which then refuses at once.
                if matches!(why, Refused::PerSource(_) | Refused::Rate)
                    && let Some(key) = source.key()
                {
                    self.strike(key, Violation::Flood);
                }
                Err(why)
            }
        }
    }

    fn try_admit(self: &Arc<Self>, source: &Source) -> Result<Lease, Refused> {
        let now = Instant::now();
        let limits = &self.limits;
        let mut counts = self.lock();
        counts.since_sweep += 1;
        if counts.since_sweep >= SWEEP_EVERY {
            counts.since_sweep = 0;
            counts.sources.retain(|_, s| !s.is_idle(now, limits));
        }
        if counts.total >= limits.total {
            return Err(Refused::Total(limits.total));
        }
        if counts.unauthenticated >= limits.unauthenticated {
            return Err(Refused::Unauthenticated(limits.unauthenticated));
        }
        let state = Arc::new_cyclic(|me| ConnState {
            me: me.clone(),
            source: source.clone(),
            agent: Mutex::new(None),
            closed: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            closing: tokio::sync::Notify::new(),
            guard: self.clone(),
        });
        if let Some(key) = source.key() {
            let entry = counts.open_entry(key, now, limits)?;
            let elapsed = now.duration_since(entry.refilled).as_secs_f64();
            entry.tokens = (entry.tokens + elapsed * f64::from(limits.accepts_per_second))
                .min(f64::from(limits.accept_burst));
            entry.refilled = now;
            if entry.tokens < 1.0 {
                return Err(Refused::Rate);
            }
            if entry.unauthenticated >= limits.unauthenticated_per_source {
                return Err(Refused::PerSource(limits.unauthenticated_per_source));
            }
            entry.tokens -= 1.0;
            entry.unauthenticated += 1;
            entry.conns.retain(|c| c.strong_count() > 0);
            entry.conns.push(Arc::downgrade(&state));
        }
        counts.total += 1;
        counts.unauthenticated += 1;
        Ok(Lease { state })
    }

    fn authenticate(&self, conn: &ConnState, agent_id: &str) -> Result<(), Refused> {
        let mut agent = conn.lock_agent();
        match agent.as_deref() {
            Some(id) if id == agent_id => return Ok(()),
            Some(_) => return Err(Refused::WrongSocket),
            None => {}
        }
        if matches!(&conn.source, Source::Socket(id) if id != agent_id) {
            return Err(Refused::WrongSocket);
        }
        let now = Instant::now();
        let limits = &self.limits;
        let mut counts = self.lock();
        let entry = counts.open_entry(Key::Agent(agent_id.to_string()), now, limits)?;
        if entry.authenticated >= limits.per_agent {
            return Err(Refused::PerAgent(limits.per_agent));
        }
        entry.authenticated += 1;
        if !matches!(conn.source, Source::Socket(_)) {
            entry.conns.retain(|c| c.strong_count() > 0);
            entry.conns.push(conn.me.clone());
        }
        let from = conn.source.key();
        counts.unauthenticated -= 1;
        if let Some(from) = from
            && let Some(source) = counts.sources.get_mut(&from)
        {
            source.unauthenticated -= 1;
        }
        *agent = Some(agent_id.to_string());
        Ok(())
    }

    fn release(&self, conn: &ConnState) {
        let now = Instant::now();
        let agent = conn.lock_agent().clone();
        let mut counts = self.lock();
        counts.total -= 1;
        let mut touched = Vec::with_capacity(2);
        match agent {
            Some(id) => {
                let key = Key::Agent(id);
                if let Some(entry) = counts.sources.get_mut(&key) {
                    entry.authenticated -= 1;
                }
                touched.push(key);
            }
            None => {
                counts.unauthenticated -= 1;
                if let Some(key) = conn.source.key() {
                    if let Some(entry) = counts.sources.get_mut(&key) {
                        entry.unauthenticated -= 1;
                    }
                    touched.push(key);
                }
            }
        }
        if let Some(key) = conn.source.key() {
            touched.push(key);
        }
        for key in touched {
            let idle = counts.sources.get_mut(&key).is_some_and(|entry| {
                entry.conns.retain(|c| c.strong_count() > 0);
                entry.is_idle(now, &self.limits)
            });
            if idle {
                counts.sources.remove(&key);
            }
        }
    }

    /// Logs a connection closed at its hello deadline (once per interval, with a count) and strikes it.
    pub fn missed_deadline(&self, conn: &ConnState) {
        if let Some(count) = self.deadlines.note() {
            tracing::warn!(source = %conn.source, count, "agent connections closed: no authenticated hello within {:?} of the accept", self.limits.hello_deadline);
        }
        conn.strike(Violation::NoHello);
    }

    fn strike(&self, key: Key, violation: Violation) -> bool {
        let now = Instant::now();
        let limits = &self.limits;
        let to_close = {
            let mut counts = self.lock();
            let entry = counts
                .sources
                .entry(key.clone())
                .or_insert_with(|| KeyState::new(limits.accept_burst, now));
            if entry.cut_off_left(now).is_some() {
                // Already cut off: what is still open is closing.
                return true;
            }
            entry
                .strikes
                .retain(|at| now.duration_since(*at) <= limits.strike_window);
            entry.strikes.push(now);
            if entry.strikes.len() < limits.strikes {
                return false;
            }
            entry.strikes.clear();
            entry.cut_off_until = Some(now + limits.cooldown);
            std::mem::take(&mut entry.conns)
        };
        crate::metrics::metrics().agent_side_cut_off();
        tracing::warn!(
            source = %key,
            last = %violation,
            "cut off for {}s after {} protocol violations within {}s: its connections are closed and new ones refused",
            limits.cooldown.as_secs(),
            limits.strikes,
            limits.strike_window.as_secs()
        );
        for conn in to_close.iter().filter_map(std::sync::Weak::upgrade) {
            conn.close();
        }
        true
    }

    /// Whether `agent_id` is cut off now (its links are refused).
    pub fn is_cut_off(&self, agent_id: &str) -> bool {
        self.cut_off_left(&Source::Socket(agent_id.to_string()))
            .is_some()
    }

    /// How long `source` stays cut off, if it is.
    pub fn cut_off_left(&self, source: &Source) -> Option<Duration> {
        let key = source.key()?;
        let counts = self.lock();
        counts
            .sources
            .get(&key)
            .and_then(|e| e.cut_off_left(Instant::now()))
    }

    /// Connections open now, and how many of them have not authenticated (for tests and metrics).
    pub fn open(&self) -> (usize, usize) {
        let counts = self.lock();
        (counts.total, counts.unauthenticated)
    }
}

#[cfg(test)]
#[path = "guard_tests.rs"]
mod tests;
