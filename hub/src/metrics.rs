//! Prometheus metrics: counters bumped where things happen, gauges read from the store when scraped.
//!
//! One registry per process: the counters are bumped from places (the driver's error mapping, the
//! store's callers) that have no handle on a hub, and a process runs one hub.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use docker_agent_proto::v1::{Stream, TaskResult, task_result::Outcome};

use crate::lifecycle::Lifecycle;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabel {
    stream: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BoundLabel {
    bound: &'static str,
}

/// Why the agent side refused a connection or session (`agent_guard::Refused`).
pub const REFUSALS: [&str; 7] = [
    "total",
    "unauthenticated",
    "per_source",
    "rate",
    "per_agent",
    "cut_off",
    "wrong_socket",
];

const LIFECYCLES: [Lifecycle; 7] = [
    Lifecycle::Creating,
    Lifecycle::Starting,
    Lifecycle::Ready,
    Lifecycle::StartError,
    Lifecycle::Stopping,
    Lifecycle::Stopped,
    Lifecycle::Rescheduled,
];

pub struct Metrics {
    registry: Registry,
    agents: Family<StateLabel, Gauge>,
    connected: Gauge,
    tasks: Family<OutcomeLabel, Counter>,
    task_duration: Histogram,
    sessions: Counter,
    reconnects: Counter,
    bytes: Family<StreamLabel, Counter>,
    docker_errors: Family<KindLabel, Counter>,
    refused: Family<ReasonLabel, Counter>,
    cut_offs: Counter,
    output_dropped: Family<BoundLabel, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("docker_agent");
        let agents = Family::<StateLabel, Gauge>::default();
        registry.register(
            "agents",
            "Agents by lifecycle state (destroyed agents are not counted)",
            agents.clone(),
        );
        let connected = Gauge::default();
        registry.register(
            "connected_agents",
            "Agents with a live session",
            connected.clone(),
        );
        let tasks = Family::<OutcomeLabel, Counter>::default();
        registry.register("tasks", "Tasks that ended, by outcome", tasks.clone());
        // Tasks run from milliseconds (`true`) to hours (builds).
        let task_duration = Histogram::new([
            0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
        ]);
        registry.register(
            "task_duration_seconds",
            "How long finished tasks ran",
            task_duration.clone(),
        );
        let sessions = Counter::default();
        registry.register(
            "agent_sessions",
            "Agent sessions opened (first connections and reconnects)",
            sessions.clone(),
        );
        let reconnects = Counter::default();
        registry.register(
            "agent_reconnects",
            "Agent sessions opened by agents that had been connected before",
            reconnects.clone(),
        );
        let bytes = Family::<StreamLabel, Counter>::default();
        registry.register(
            "output_bytes",
            "Task output bytes received and stored, by stream",
            bytes.clone(),
        );
        let docker_errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "docker_errors",
            "Docker Engine API calls that failed, by kind",
            docker_errors.clone(),
        );
        let refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "agent_side_refusals",
            "Agent-side connections and sessions refused, by reason",
            refused.clone(),
        );
        let cut_offs = Counter::default();
        registry.register(
            "agent_side_cut_offs",
            "Agents and addresses cut off for repeated protocol violations",
            cut_offs.clone(),
        );
        let output_dropped = Family::<BoundLabel, Counter>::default();
        registry.register(
            "output_dropped_tasks",
            "Tasks whose further output the hub stopped storing, by the bound reached",
            output_dropped.clone(),
        );
        // Every series exists from the start at 0, so rates and alerts work before the first event.
        for reason in REFUSALS {
            let _ = refused.get_or_create(&ReasonLabel { reason });
        }
        for bound in ["task", "agent", "disk"] {
            let _ = output_dropped.get_or_create(&BoundLabel { bound });
        }
        for outcome in [
            "succeeded",
            "failed",
            "killed",
            "oom_killed",
            "timed_out",
            "error",
            "lost",
            "cancelled",
        ] {
            let _ = tasks.get_or_create(&OutcomeLabel { outcome });
        }
        for kind in ["not_found", "conflict", "unreachable", "engine"] {
            let _ = docker_errors.get_or_create(&KindLabel { kind });
        }
        for stream in ["stdout", "stderr"] {
            let _ = bytes.get_or_create(&StreamLabel { stream });
        }
        Self {
            registry,
            agents,
            connected,
            tasks,
            task_duration,
            sessions,
            reconnects,
            bytes,
            docker_errors,
            refused,
            cut_offs,
            output_dropped,
        }
    }

    /// The agent side refused a connection or session; `reason` is one of `REFUSALS`.
    pub fn agent_side_refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn agent_side_cut_off(&self) {
        self.cut_offs.inc();
    }

    /// A task reached an output bound (`task`, `agent` or `disk`).
    pub fn output_dropped(&self, bound: &'static str) {
        self.output_dropped
            .get_or_create(&BoundLabel { bound })
            .inc();
    }

    /// A task ended with a result from its agent.
    pub fn task_finished(&self, result: &TaskResult) {
        let outcome = match &result.outcome {
            _ if result.timed_out => "timed_out",
            _ if result.oom_killed => "oom_killed",
            Some(Outcome::ExitCode(0)) => "succeeded",
            Some(Outcome::ExitCode(_)) => "failed",
            Some(Outcome::Signal(_)) => "killed",
            Some(Outcome::Error(_)) | None => "error",
        };
        self.tasks.get_or_create(&OutcomeLabel { outcome }).inc();
        self.task_duration
            .observe(result.duration_ms as f64 / 1000.0);
    }

    /// A task ended without a result (`lost`, `cancelled`).
    pub fn task_ended(&self, outcome: &'static str) {
        self.tasks.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn link_opened(&self, reconnect: bool) {
        self.sessions.inc();
        if reconnect {
            self.reconnects.inc();
        }
    }

    pub fn output_stored(&self, stream: Stream, bytes: usize) {
        let stream = match stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Unspecified => "unspecified",
        };
        self.bytes
            .get_or_create(&StreamLabel { stream })
            .inc_by(bytes as u64);
    }

    pub fn docker_error(&self, kind: &'static str) {
        self.docker_errors.get_or_create(&KindLabel { kind }).inc();
    }

    /// The text exposition, with the gauges set from `agents` (every live agent's lifecycle) and
    /// `connected` first.
    pub fn render(&self, agents: impl IntoIterator<Item = Lifecycle>, connected: usize) -> String {
        let mut counts = [0i64; LIFECYCLES.len()];
        for state in agents {
            if let Some(i) = LIFECYCLES.iter().position(|s| *s == state) {
                counts[i] += 1;
            }
        }
        for (state, count) in LIFECYCLES.iter().zip(counts) {
            self.agents
                .get_or_create(&StateLabel {
                    state: state.as_str(),
                })
                .set(count);
        }
        self.connected.set(connected as i64);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_follow_the_fleet_and_counters_accumulate() {
        let m = Metrics::new();
        m.task_finished(&TaskResult {
            outcome: Some(Outcome::ExitCode(3)),
            duration_ms: 1500,
            ..Default::default()
        });
        m.output_stored(Stream::Stderr, 10);
        let text = m.render([Lifecycle::Ready, Lifecycle::Ready, Lifecycle::Stopped], 2);
        assert!(
            text.contains("docker_agent_agents{state=\"ready\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("docker_agent_agents{state=\"creating\"} 0"),
            "{text}"
        );
        assert!(text.contains("docker_agent_connected_agents 2"), "{text}");
        assert!(
            text.contains("docker_agent_tasks_total{outcome=\"failed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("docker_agent_task_duration_seconds_sum 1.5"),
            "{text}"
        );
        assert!(
            text.contains("docker_agent_output_bytes_total{stream=\"stderr\"} 10"),
            "{text}"
        );
        let text = m.render([], 0);
        assert!(
            text.contains("docker_agent_agents{state=\"ready\"} 0"),
            "{text}"
        );
    }
}
