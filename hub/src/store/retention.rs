//! Retention: ended tasks' records and output files are deleted past an age, and oldest first past a
//! total size of stored output (`hub --retain-tasks`, `--retain-output`, `prune --tasks`). A task
//! that has not ended is never touched.

use rusqlite::params;

use super::{Result, Store, now_ms};

/// What retention keeps; zero in either field: no bound of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Ended tasks older than this (by when they ended) go.
    pub max_age_ms: i64,
    /// Past this many bytes of stored output, ended tasks go oldest first until it fits.
    pub max_output_bytes: u64,
}

/// What a pass deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pruned {
    pub tasks: u64,
    pub output_bytes: u64,
}

/// How big the store is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreSize {
    pub tasks: u64,
    pub output_bytes: u64,
    /// The database file (without its write-ahead log).
    pub database_bytes: u64,
}

const ENDED: &str = "state IN ('finished', 'lost', 'cancelled')";

impl Store {
    /// Deletes what `retention` does not keep; with `dry_run`, only counts it.
    pub fn prune_tasks(&self, retention: Retention, dry_run: bool) -> Result<Pruned> {
        let doomed = {
            let conn = self.conn();
            let mut doomed: Vec<(String, u64)> = Vec::new();
            if retention.max_age_ms > 0 {
                let cutoff = now_ms() - retention.max_age_ms;
                let mut stmt = conn.prepare(&format!(
                    "SELECT id, output_bytes FROM tasks WHERE {ENDED} AND finished_at < ?1"
                ))?;
                let rows = stmt.query_map([cutoff], |r| Ok((r.get(0)?, r.get(1)?)))?;
                doomed = rows.collect::<rusqlite::Result<_>>()?;
            }
            if retention.max_output_bytes > 0 {
                let total: u64 = conn.query_row(
                    "SELECT COALESCE(SUM(output_bytes), 0) FROM tasks",
                    [],
                    |r| r.get(0),
                )?;
                let mut left = total.saturating_sub(doomed.iter().map(|(_, b)| b).sum());
                if left > retention.max_output_bytes {
                    let mut stmt = conn.prepare(&format!(
                        "SELECT id, output_bytes FROM tasks WHERE {ENDED} AND output_bytes > 0 \
                         ORDER BY finished_at, created_at"
                    ))?;
                    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))?;
                    for row in rows {
                        let (id, bytes): (String, u64) = row?;
                        if left <= retention.max_output_bytes {
                            break;
                        }
                        if doomed.iter().any(|(d, _)| *d == id) {
                            continue;
                        }
                        left = left.saturating_sub(bytes);
                        doomed.push((id, bytes));
                    }
                }
            }
            doomed
        };
        let pruned = Pruned {
            tasks: doomed.len() as u64,
            output_bytes: doomed.iter().map(|(_, b)| b).sum(),
        };
        if dry_run || doomed.is_empty() {
            return Ok(pruned);
        }
        {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            {
                // Checked again here: nothing can have un-ended, but the guard costs nothing.
                let mut delete =
                    tx.prepare(&format!("DELETE FROM tasks WHERE id = ?1 AND {ENDED}"))?;
                for (id, _) in &doomed {
                    delete.execute(params![id])?;
                }
            }
            tx.commit()?;
        }
        // The rows are gone first: a crash in between leaves files nobody reads, never a row
        // pointing at a missing file.
        for (id, _) in &doomed {
            self.output.remove(id);
        }
        Ok(pruned)
    }

    /// The store's size: tasks, stored output and the database file.
    pub fn size(&self) -> Result<StoreSize> {
        let conn = self.conn();
        let (tasks, output_bytes): (u64, u64) = conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(output_bytes), 0) FROM tasks",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let database_bytes: u64 = conn.query_row(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
            [],
            |r| r.get(0),
        )?;
        Ok(StoreSize {
            tasks,
            output_bytes,
            database_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::agents::tests::new_agent;
    use crate::store::{NewTask, TaskState};
    use docker_agent_proto::v1::{Stream, TaskSpec};

    /// A store with tasks "old", "mid" and "new" (ended in that order, 100 bytes of output each) and
    /// "live" (running, 100 bytes).
    fn store() -> Store {
        let store = Store::open_in_memory().unwrap();
        let agent = store.insert_agent(&new_agent("demo")).unwrap();
        for (i, id) in ["old", "mid", "new", "live"].iter().enumerate() {
            store
                .insert_task(&NewTask {
                    id: (*id).into(),
                    agent_id: agent.id.clone(),
                    spec: TaskSpec {
                        argv: vec!["true".into()],
                        ..Default::default()
                    },
                })
                .unwrap();
            store
                .append_output(
                    id,
                    &agent.id,
                    Stream::Stdout,
                    0,
                    &bytes::Bytes::from(vec![b'x'; 100]),
                )
                .unwrap();
            if *id != "live" {
                store.end_task(id, TaskState::Lost, "gone").unwrap();
                // Ended a day, two days and three days ago.
                let at = now_ms() - (3 - i as i64) * 86_400_000;
                store
                    .conn()
                    .execute(
                        "UPDATE tasks SET finished_at = ?2 WHERE id = ?1",
                        params![id, at],
                    )
                    .unwrap();
            }
        }
        store
    }

    fn ids(store: &Store) -> Vec<String> {
        let conn = store.conn();
        let mut stmt = conn.prepare("SELECT id FROM tasks ORDER BY id").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn ended_tasks_past_the_age_go_and_running_ones_never() {
        let store = store();
        let before = store.size().unwrap();
        assert_eq!((before.tasks, before.output_bytes > 0), (4, true));
        let age = Retention {
            max_age_ms: 36 * 3_600_000,
            ..Default::default()
        };
        // A dry run counts and deletes nothing.
        assert_eq!(store.prune_tasks(age, true).unwrap().tasks, 2);
        assert_eq!(ids(&store).len(), 4);
        let pruned = store.prune_tasks(age, false).unwrap();
        assert_eq!(pruned.tasks, 2);
        assert_eq!(ids(&store), ["live", "new"]);
        assert!(store.output_after("old", 0, 10).unwrap().is_empty());
        assert!(!store.output.dir().join("old.out").exists());
        // Everything ended goes with an age of a millisecond; the running task stays.
        let all = Retention {
            max_age_ms: 1,
            ..Default::default()
        };
        store.prune_tasks(all, false).unwrap();
        assert_eq!(ids(&store), ["live"]);
        assert_eq!(store.size().unwrap().tasks, 1);
    }

    #[test]
    fn past_the_output_bound_the_oldest_ended_tasks_go_first() {
        let store = store();
        let per_task = store.size().unwrap().output_bytes / 4;
        // Room for two tasks' output: the two oldest ended ones go, the running one stays.
        let size = Retention {
            max_output_bytes: 2 * per_task,
            ..Default::default()
        };
        assert_eq!(store.prune_tasks(size, false).unwrap().tasks, 2);
        assert_eq!(ids(&store), ["live", "new"]);
        // A bound nothing ended can meet: only ended tasks go, never the running one.
        let tiny = Retention {
            max_output_bytes: 1,
            ..Default::default()
        };
        store.prune_tasks(tiny, false).unwrap();
        assert_eq!(ids(&store), ["live"]);
    }
}
