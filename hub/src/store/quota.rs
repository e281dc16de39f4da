//! How much output the hub stores: per task and per agent (the profile's `max_output` and
//! `max_agent_output`, else the hub's defaults), and nothing new while the data dir's file system is
//! below its free-space floor. Past a bound a task's output is dropped, not stored, and the task says
//! why; a task that writes without end cannot fill the hub's disk.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The hub's bounds; an agent's own (from its profile) replace the first two when set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimits {
    /// Bytes of output stored per task (stdout and stderr together).
    pub task: u64,
    /// Bytes of output stored per agent, over all its tasks.
    pub agent: u64,
    /// Free bytes the data dir's file system keeps; below it no new output is stored.
    pub min_free_disk: u64,
}

impl OutputLimits {
    pub const DEFAULT: Self = Self {
        task: 2 << 30,
        agent: 16 << 30,
        min_free_disk: 1 << 30,
    };
}

impl Default for OutputLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a task's output stopped being stored (`tasks.output_dropped`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputCap {
    /// The task stored its `max_output`.
    Task,
    /// Its agent stored its `max_agent_output` over all its tasks.
    Agent,
    /// The data dir's file system fell below its free-space floor.
    Disk,
}

impl OutputCap {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputCap::Task => "task",
            OutputCap::Agent => "agent",
            OutputCap::Disk => "disk",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "task" => Some(OutputCap::Task),
            "agent" => Some(OutputCap::Agent),
            "disk" => Some(OutputCap::Disk),
            _ => None,
        }
    }
}

/// How often the free space is read while output arrives.
const DISK_CHECK_EVERY: Duration = Duration::from_secs(1);

/// The store's output accounting.
#[derive(Debug)]
pub(super) struct Quota {
    limits: Mutex<OutputLimits>,
    /// Stored output per agent id, loaded from the tasks table the first time the agent writes.
    totals: Mutex<HashMap<String, u64>>,
    dir: PathBuf,
    checked: Mutex<Option<Instant>>,
    low: AtomicBool,
}

impl Quota {
    pub(super) fn new(dir: PathBuf) -> Self {
        Self {
            limits: Mutex::new(OutputLimits::DEFAULT),
            totals: Mutex::default(),
            dir,
            checked: Mutex::new(None),
            low: AtomicBool::new(false),
        }
    }

    pub(super) fn set_limits(&self, limits: OutputLimits) {
        *lock(&self.limits) = limits;
        *lock(&self.checked) = None;
    }

    pub(super) fn limits(&self) -> OutputLimits {
        *lock(&self.limits)
    }

    /// How many of `len` new bytes of a task may be stored, and the bound that stopped the rest.
    /// `stored` is what the task holds; `agent_total` loads the agent's total when it is not known yet.
    /// Counts what it allows against the agent.
    pub(super) fn allow(
        &self,
        agent_id: &str,
        own: (u64, u64),
        stored: u64,
        len: u64,
        agent_total: impl FnOnce() -> rusqlite::Result<u64>,
    ) -> rusqlite::Result<(u64, Option<OutputCap>)> {
        if self.disk_low() {
            return Ok((0, Some(OutputCap::Disk)));
        }
        let limits = self.limits();
        let task_limit = if own.0 > 0 { own.0 } else { limits.task };
        let agent_limit = if own.1 > 0 { own.1 } else { limits.agent };
        let mut totals = lock(&self.totals);
        let total = match totals.get_mut(agent_id) {
            Some(total) => total,
            None => totals.entry(agent_id.to_string()).or_insert(agent_total()?),
        };
        let task_room = task_limit.saturating_sub(stored);
        let agent_room = agent_limit.saturating_sub(*total);
        let allowed = len.min(task_room).min(agent_room);
        *total += allowed;
        let bound = if task_room <= agent_room {
            OutputCap::Task
        } else {
            OutputCap::Agent
        };
        let cap = (allowed < len).then_some(bound);
        Ok((allowed, cap))
    }

    /// Whether the data dir's file system is below the floor, read at most once a second. The change
    /// either way is logged: loudly when output stops being stored.
    pub(super) fn disk_low(&self) -> bool {
        {
            let mut checked = lock(&self.checked);
            if checked.is_some_and(|at| at.elapsed() < DISK_CHECK_EVERY) {
                return self.low.load(Ordering::Relaxed);
            }
            *checked = Some(Instant::now());
        }
        let floor = self.limits().min_free_disk;
        let free = match nix::sys::statvfs::statvfs(&self.dir) {
            Ok(vfs) => vfs.blocks_available() * vfs.fragment_size(),
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read the output directory's free space");
                return self.low.load(Ordering::Relaxed);
            }
        };
        // Storing resumes a little above the floor, so it does not flap around it.
        let was_low = self.low.load(Ordering::Relaxed);
        let low = if was_low {
            free < floor.saturating_add((floor / 8).max(64 << 20))
        } else {
            free < floor
        };
        if low != was_low {
            self.low.store(low, Ordering::Relaxed);
            if low {
                tracing::error!(dir = %self.dir.display(), free, floor, "the hub's disk is below its free-space floor (--min-free-disk): new task output is dropped, and flagged on each task, until space is freed");
            } else {
                tracing::info!(dir = %self.dir.display(), free, floor, "the hub's disk is above its free-space floor again: task output is stored again");
            }
        }
        low
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(limits: OutputLimits) -> Quota {
        let q = Quota::new(std::env::temp_dir());
        q.set_limits(limits);
        q
    }

    #[test]
    fn a_task_stores_up_to_its_bound_and_an_agent_up_to_its_own() {
        let q = quota(OutputLimits {
            task: 100,
            agent: 250,
            min_free_disk: 0,
        });
        assert_eq!(q.allow("a", (0, 0), 0, 60, || Ok(0)).unwrap(), (60, None));
        assert_eq!(
            q.allow("a", (0, 0), 60, 60, || unreachable!()).unwrap(),
            (40, Some(OutputCap::Task))
        );
        // The agent already stored 100; another task reaches the agent's bound first.
        assert_eq!(
            q.allow("a", (0, 0), 0, 100, || unreachable!()).unwrap(),
            (100, None)
        );
        assert_eq!(
            q.allow("a", (0, 0), 0, 100, || unreachable!()).unwrap(),
            (50, Some(OutputCap::Agent))
        );
        // A profile's own bounds replace the hub's; another agent's total starts from the store.
        assert_eq!(
            q.allow("b", (10, 0), 0, 20, || Ok(0)).unwrap(),
            (10, Some(OutputCap::Task))
        );
        assert_eq!(
            q.allow("c", (0, 1000), 0, 20, || Ok(995)).unwrap(),
            (5, Some(OutputCap::Agent))
        );
    }

    #[test]
    fn nothing_is_stored_below_the_free_space_floor() {
        let q = quota(OutputLimits {
            min_free_disk: u64::MAX,
            ..OutputLimits::DEFAULT
        });
        assert_eq!(
            q.allow("a", (0, 0), 0, 10, || Ok(0)).unwrap(),
            (0, Some(OutputCap::Disk))
        );
        q.set_limits(OutputLimits {
            min_free_disk: 0,
            ..OutputLimits::DEFAULT
        });
        assert_eq!(q.allow("a", (0, 0), 0, 10, || Ok(0)).unwrap(), (10, None));
    }
}
