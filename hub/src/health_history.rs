//! The last hour of each agent's CPU and memory, for the dashboard's charts. Kept in memory and
//! thinned to one sample per [`SPACING`], so 10,000 agents cost a few tens of MB; it starts empty
//! when the hub restarts.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use docker_agent_proto::v1::Health;

use crate::store::now_ms;

pub const WINDOW: Duration = Duration::from_secs(3600);
pub const SPACING: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at_ms: i64,
    /// Percent of one core.
    pub cpu_percent: f32,
    pub memory_bytes: u64,
    /// 0 when the container has no limit.
    pub memory_limit: u64,
}

#[derive(Debug, Default)]
pub struct HealthHistory {
    agents: Mutex<HashMap<String, VecDeque<Sample>>>,
}

impl HealthHistory {
    pub fn record(&self, agent_id: &str, health: &Health) {
        self.record_at(agent_id, health, now_ms());
    }

    fn record_at(&self, agent_id: &str, health: &Health, at_ms: i64) {
        let sample = Sample {
            at_ms,
            cpu_percent: health.cpu_percent as f32,
            memory_bytes: health.memory_used_bytes,
            memory_limit: health.memory_limit_bytes,
        };
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        let samples = agents.entry(agent_id.to_string()).or_default();
        if samples
            .back()
            .is_some_and(|last| at_ms - last.at_ms < SPACING.as_millis() as i64)
        {
            return;
        }
        let oldest = at_ms - WINDOW.as_millis() as i64;
        while samples.front().is_some_and(|s| s.at_ms < oldest) {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// The samples of the last hour, oldest first.
    pub fn samples(&self, agent_id: &str) -> Vec<Sample> {
        let oldest = now_ms() - WINDOW.as_millis() as i64;
        self.agents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(agent_id)
            .map(|s| s.iter().filter(|s| s.at_ms >= oldest).copied().collect())
            .unwrap_or_default()
    }

    pub fn forget(&self, agent_id: &str) {
        self.agents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(agent_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thins_to_the_spacing_and_drops_what_is_older_than_the_window() {
        let h = HealthHistory::default();
        let health = |cpu| Health {
            cpu_percent: cpu,
            memory_used_bytes: 10,
            ..Default::default()
        };
        let t0 = 1_000_000_000;
        h.record_at("a", &health(1.0), t0);
        h.record_at("a", &health(2.0), t0 + 5_000);
        h.record_at("a", &health(3.0), t0 + 15_000);
        let all = h.agents.lock().unwrap()["a"].clone();
        assert_eq!(
            all.iter().map(|s| s.cpu_percent).collect::<Vec<_>>(),
            [1.0, 3.0]
        );
        h.record_at("a", &health(4.0), t0 + 3_600_000 + 10_000);
        let all = h.agents.lock().unwrap()["a"].clone();
        assert_eq!(
            all.iter().map(|s| s.cpu_percent).collect::<Vec<_>>(),
            [3.0, 4.0]
        );
        h.forget("a");
        assert!(h.samples("a").is_empty());
    }
}
