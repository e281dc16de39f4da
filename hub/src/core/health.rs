//! The last hour of each agent's CPU and memory, for the dashboard's charts. Kept in memory and
//! thinned to one sample per [`SPACING`] (16 bytes each), so 10,000 agents cost about 40 MB; it starts
//! empty when the hub restarts.

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

/// A [`Sample`] as kept: 16 bytes instead of 32, since a hub holds 240 of them per agent after an
/// hour (at 10,000 agents, 40 MB instead of 80). Seconds and KiB are finer than the charts show.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Packed {
    at_s: u32,
    cpu_percent: f32,
    memory_kib: u32,
    limit_kib: u32,
}

fn kib(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

impl Packed {
    fn new(at_ms: i64, health: &Health) -> Self {
        Self {
            at_s: u32::try_from(at_ms.max(0) / 1000).unwrap_or(u32::MAX),
            cpu_percent: health.cpu_percent as f32,
            memory_kib: kib(health.memory_used_bytes),
            limit_kib: kib(health.memory_limit_bytes),
        }
    }

    fn at_ms(&self) -> i64 {
        i64::from(self.at_s) * 1000
    }

    fn unpack(&self) -> Sample {
        Sample {
            at_ms: self.at_ms(),
            cpu_percent: self.cpu_percent,
            memory_bytes: u64::from(self.memory_kib) * 1024,
            memory_limit: u64::from(self.limit_kib) * 1024,
        }
    }
}

#[derive(Debug, Default)]
pub struct HealthHistory {
    agents: Mutex<HashMap<String, VecDeque<Packed>>>,
}

impl HealthHistory {
    pub fn record(&self, agent_id: &str, health: &Health) {
        self.record_at(agent_id, health, now_ms());
    }

    fn record_at(&self, agent_id: &str, health: &Health, at_ms: i64) {
        let sample = Packed::new(at_ms, health);
        let at_ms = sample.at_ms();
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        let samples = agents.entry(agent_id.to_string()).or_default();
        if samples
            .back()
            .is_some_and(|last| at_ms - last.at_ms() < SPACING.as_millis() as i64)
        {
            return;
        }
        let oldest = at_ms - WINDOW.as_millis() as i64;
        while samples.front().is_some_and(|s| s.at_ms() < oldest) {
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
            .map(|s| {
                s.iter()
                    .filter(|s| s.at_ms() >= oldest)
                    .map(Packed::unpack)
                    .collect()
            })
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

    #[test]
    fn samples_are_kept_in_sixteen_bytes_and_read_back_to_the_kib() {
        assert_eq!(std::mem::size_of::<Packed>(), 16);
        let h = HealthHistory::default();
        let at = now_ms();
        h.record_at(
            "b",
            &Health {
                cpu_percent: 12.5,
                memory_used_bytes: 3 << 30,
                memory_limit_bytes: 8 << 30,
                ..Default::default()
            },
            at,
        );
        let got = h.samples("b");
        assert_eq!(
            got,
            [Sample {
                at_ms: at / 1000 * 1000,
                cpu_percent: 12.5,
                memory_bytes: 3 << 30,
                memory_limit: 8 << 30,
            }]
        );
    }
}
