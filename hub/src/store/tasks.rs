//! Task rows and their output. A task is written here before it is dispatched; output is appended by byte offset so a resent chunk is stored once.

use docker_agent_proto::v1::{Stream, TaskResult, TaskSpec};
use prost::Message;
use rusqlite::{OptionalExtension, Row, params};

use super::{OutputCap, Result, Store, StoreError, StoredChunk, now_ms};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Queued,
    Dispatched,
    Running,
    Finished,
    Lost,
    Cancelled,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Dispatched => "dispatched",
            TaskState::Running => "running",
            TaskState::Finished => "finished",
            TaskState::Lost => "lost",
            TaskState::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Finished | TaskState::Lost | TaskState::Cancelled
        )
    }

    fn parse(s: &str) -> std::result::Result<Self, StoreError> {
        Ok(match s {
            "queued" => TaskState::Queued,
            "dispatched" => TaskState::Dispatched,
            "running" => TaskState::Running,
            "finished" => TaskState::Finished,
            "lost" => TaskState::Lost,
            "cancelled" => TaskState::Cancelled,
            other => return Err(StoreError::Corrupt(format!("unknown task state {other:?}"))),
        })
    }
}

/// Whether a result counts as a failure: anything but exit code 0 in time.
fn result_failed(result: &TaskResult) -> bool {
    use docker_agent_proto::v1::task_result::Outcome;
    result.timed_out || !matches!(result.outcome, Some(Outcome::ExitCode(0)))
}

#[derive(Debug, Clone)]
pub struct NewTask {
    pub id: String,
    pub agent_id: String,
    pub spec: TaskSpec,
}

#[derive(Debug, Clone)]
pub struct TaskRecord {
    pub id: String,
    pub agent_id: String,
    pub spec: TaskSpec,
    pub state: TaskState,
    pub created_at: i64,
    pub dispatched_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub result: Option<TaskResult>,
    pub error: String,
    pub cancel_requested: bool,
    pub stdout_len: u64,
    pub stderr_len: u64,
    /// Why stored output stopped before the task's end, if it did.
    pub output_dropped: Option<OutputCap>,
}

/// What an append did: the part of the chunk that was new (empty for a duplicate) and the stream's new end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputAppend {
    pub new: Option<StoredChunk>,
    pub end: u64,
    /// Bytes between the stored end and the chunk that the agent no longer had (its spool overflowed).
    pub gap: u64,
    /// This chunk reached a bound: the rest of the task's output is dropped from now on.
    pub capped: Option<OutputCap>,
    /// Bytes of this chunk that were new but not stored: past a bound reached now or before.
    pub dropped: u64,
}

const COLUMNS: &str = "id, agent_id, spec, state, created_at, dispatched_at, started_at, finished_at, result, error, \
    stdout_len, stderr_len, cancel_requested, output_dropped";

fn from_row(row: &Row<'_>) -> rusqlite::Result<std::result::Result<TaskRecord, StoreError>> {
    let spec: Vec<u8> = row.get(2)?;
    let state: String = row.get(3)?;
    let result: Option<Vec<u8>> = row.get(8)?;
    let parsed = (|| {
        Ok(TaskRecord {
            id: row.get(0)?,
            agent_id: row.get(1)?,
            spec: TaskSpec::decode(spec.as_slice())
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            state: TaskState::parse(&state)?,
            created_at: row.get(4)?,
            dispatched_at: row.get(5)?,
            started_at: row.get(6)?,
            finished_at: row.get(7)?,
            result: result
                .map(|b| TaskResult::decode(b.as_slice()))
                .transpose()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            error: row.get(9)?,
            stdout_len: row.get::<_, i64>(10)? as u64,
            stderr_len: row.get::<_, i64>(11)? as u64,
            cancel_requested: row.get(12)?,
            output_dropped: OutputCap::parse(&row.get::<_, String>(13)?),
        })
    })();
    Ok(parsed)
}

fn len_column(stream: Stream) -> Result<&'static str> {
    match stream {
        Stream::Stdout => Ok("stdout_len"),
        Stream::Stderr => Ok("stderr_len"),
        Stream::Unspecified => Err(StoreError::Corrupt("output chunk without a stream".into())),
    }
}

impl Store {
    pub fn insert_task(&self, t: &NewTask) -> Result<TaskRecord> {
        self.conn().execute(
            "INSERT INTO tasks (id, agent_id, spec, state, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                t.id,
                t.agent_id,
                t.spec.encode_to_vec(),
                TaskState::Queued.as_str(),
                now_ms()
            ],
        )?;
        self.task(&t.id)?
            .ok_or_else(|| StoreError::Corrupt("inserted task vanished".into()))
    }

    pub fn task(&self, id: &str) -> Result<Option<TaskRecord>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {COLUMNS} FROM tasks WHERE id = ?1"))?;
        stmt.query_row([id], from_row).optional()?.transpose()
    }

    /// Newest first.
    pub fn list_tasks(&self, agent_id: Option<&str>, limit: u32) -> Result<Vec<TaskRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM tasks WHERE (?1 IS NULL OR agent_id = ?1) ORDER BY created_at DESC, rowid DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![agent_id, limit], from_row)?;
        rows.map(|r| r?).collect()
    }

    /// Tasks of an agent in the given states, oldest first (dispatch order).
    pub fn tasks_in_states(&self, agent_id: &str, states: &[TaskState]) -> Result<Vec<TaskRecord>> {
        let names: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM tasks WHERE agent_id = ?1 AND state IN ({}) ORDER BY created_at, rowid",
            names.join(",")
        ))?;
        let rows = stmt.query_map([agent_id], from_row)?;
        rows.map(|r| r?).collect()
    }

    /// Claims a queued task for dispatch. Returns false when it was no longer queued (cancelled, or claimed
    /// by a concurrent dispatch), in which case it must not be sent.
    pub fn mark_dispatched(&self, id: &str) -> Result<bool> {
        let changed = self.conn().execute(
            "UPDATE tasks SET state = 'dispatched', dispatched_at = ?2 \
             WHERE id = ?1 AND state = 'queued' AND cancel_requested = 0",
            params![id, now_ms()],
        )?;
        Ok(changed > 0)
    }

    /// Cancels a task that is still queued. Returns false when it had already left the queue (a
    /// concurrent dispatch claimed it): then the agent must be told instead.
    pub fn cancel_queued(&self, id: &str, why: &str) -> Result<bool> {
        let changed = self.conn().execute(
            "UPDATE tasks SET state = 'cancelled', error = ?3, finished_at = ?2 WHERE id = ?1 AND state = 'queued'",
            params![id, now_ms(), why],
        )?;
        Ok(changed > 0)
    }

    /// Records a cancel for a task that has left the queue; the agent is told now or at its next hello.
    pub fn request_cancel(&self, id: &str) -> Result<()> {
        self.conn()
            .execute("UPDATE tasks SET cancel_requested = 1 WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Puts dispatched-but-unconfirmed tasks back in the queue (the link dropped before the agent said anything).
    pub fn requeue(&self, id: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE tasks SET state = 'queued' WHERE id = ?1 AND state = 'dispatched'",
            [id],
        )?;
        Ok(())
    }

    pub fn mark_started(&self, id: &str, started_at: i64) -> Result<()> {
        self.conn().execute(
            "UPDATE tasks SET state = 'running', started_at = ?2 WHERE id = ?1 AND state IN ('queued', 'dispatched')",
            params![id, started_at],
        )?;
        Ok(())
    }

    /// Stores the result. Returns false when the task had already ended (a resent result).
    pub fn finish_task(&self, id: &str, result: &TaskResult) -> Result<bool> {
        let finished_at = if result.finished_at_ms > 0 {
            result.finished_at_ms
        } else {
            now_ms()
        };
        let changed = self.conn().execute(
            "UPDATE tasks SET state = 'finished', finished_at = ?2, result = ?3, \
             started_at = CASE WHEN started_at = 0 THEN ?2 - ?4 ELSE started_at END, failed = ?5 \
             WHERE id = ?1 AND state NOT IN ('finished', 'lost', 'cancelled')",
            params![
                id,
                finished_at,
                result.encode_to_vec(),
                result.duration_ms as i64,
                result_failed(result),
            ],
        )?;
        self.output.close(id);
        Ok(changed > 0)
    }

    /// Ends a task that will never report (the agent restarted or was destroyed) or was cancelled before it ran.
    pub fn end_task(&self, id: &str, state: TaskState, error: &str) -> Result<bool> {
        let changed = self.conn().execute(
            "UPDATE tasks SET state = ?2, error = ?3, finished_at = ?4, failed = ?5 \
             WHERE id = ?1 AND state NOT IN ('finished', 'lost', 'cancelled')",
            params![
                id,
                state.as_str(),
                error,
                now_ms(),
                state == TaskState::Lost
            ],
        )?;
        self.output.close(id);
        Ok(changed > 0)
    }

    /// Appends the part of a chunk the store does not have yet, within the output bounds (`quota.rs`):
    /// past one, the rest of the task's output is dropped and the task records why. Chunks that end at
    /// or before the stored end are duplicates from a resend and change nothing.
    /// Returns None, storing nothing, when the task is not `agent_id`'s.
    pub fn append_output(
        &self,
        task_id: &str,
        agent_id: &str,
        stream: Stream,
        offset: u64,
        data: &bytes::Bytes,
    ) -> Result<Option<OutputAppend>> {
        let column = len_column(stream)?;
        // The connection lock also serialises writers of one task's file.
        let conn = self.conn();
        // Cached statements: this runs for every chunk of output, and parsing the SQL each time took
        // 40% as long as running it (profiled).
        let Some((end, committed, stored, dropped, own_limits)) = conn
            .prepare_cached(&format!(
                "SELECT t.{column}, t.output_bytes, t.stdout_len + t.stderr_len, t.output_dropped, \
                 a.max_task_output, a.max_agent_output \
                 FROM tasks t JOIN agents a ON a.id = t.agent_id WHERE t.id = ?1 AND t.agent_id = ?2"
            ))?
            .query_row([task_id, agent_id], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                    r.get::<_, String>(3)?,
                    (r.get::<_, i64>(4)? as u64, r.get::<_, i64>(5)? as u64),
                ))
            })
            .optional()?
        else {
            return Ok(None);
        };
        let chunk_end = offset + data.len() as u64;
        if chunk_end <= end {
            return Ok(Some(OutputAppend {
                new: None,
                end,
                gap: 0,
                capped: None,
                dropped: 0,
            }));
        }
        let (start, gap) = if offset >= end {
            (offset, offset - end)
        } else {
            (end, 0)
        };
        let fresh = data.slice((start - offset) as usize..);
        if !dropped.is_empty() {
            return Ok(Some(OutputAppend {
                new: None,
                end: chunk_end,
                gap: 0,
                capped: None,
                dropped: fresh.len() as u64,
            }));
        }
        let (allowed, capped) =
            self.quota
                .allow(agent_id, own_limits, stored, fresh.len() as u64, || {
                    conn.prepare_cached(
                        "SELECT COALESCE(SUM(stdout_len + stderr_len), 0) FROM tasks WHERE agent_id = ?1",
                    )?
                    .query_row([agent_id], |r| r.get::<_, i64>(0).map(|n| n as u64))
                })?;
        let kept = fresh.slice(..allowed as usize);
        let new_committed = if kept.is_empty() {
            committed
        } else {
            self.output
                .write(task_id, committed, stream, start, &kept)?
        };
        conn.prepare_cached(&format!(
            "UPDATE tasks SET {column} = ?2, output_bytes = ?3, output_dropped = ?4 WHERE id = ?1"
        ))?
        .execute(params![
            task_id,
            (start + allowed) as i64,
            new_committed as i64,
            capped.map_or("", OutputCap::as_str)
        ])?;
        Ok(Some(OutputAppend {
            new: (!kept.is_empty()).then(|| StoredChunk {
                seq: new_committed as i64,
                stream,
                offset: start,
                data: kept,
            }),
            end: chunk_end,
            gap,
            capped,
            dropped: fresh.len() as u64 - allowed,
        }))
    }

    /// How much of a task's output file is committed (None: no such task).
    fn committed_output(&self, task_id: &str) -> Result<Option<i64>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT output_bytes FROM tasks WHERE id = ?1",
                [task_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The `after_seq` to read from to get (about) the last `keep` bytes of a task's output.
    pub fn output_tail_seq(&self, task_id: &str, keep: u64) -> Result<i64> {
        let committed = self.committed_output(task_id)?;
        match committed {
            Some(c) if c > 0 => Ok(self.output.tail_start(task_id, c as u64, keep)? as i64),
            _ => Ok(0),
        }
    }

    /// Stored output after `after_seq` (0: from the start), in arrival order, at most `limit` chunks.
    pub fn output_after(
        &self,
        task_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<StoredChunk>> {
        let committed = self.committed_output(task_id)?;
        match committed {
            Some(committed) => self.output.read(
                task_id,
                after_seq.max(0) as u64,
                committed as u64,
                limit as usize,
            ),
            None => Ok(Vec::new()),
        }
    }

    /// Per agent id: how many of its tasks failed.
    pub fn failed_task_counts(&self) -> Result<std::collections::HashMap<String, u32>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT agent_id, COUNT(*) FROM tasks WHERE failed = 1 GROUP BY agent_id",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Running (or dispatched) task counts per agent id.
    pub fn open_task_counts(&self) -> Result<std::collections::HashMap<String, u32>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT agent_id, COUNT(*) FROM tasks WHERE state IN ('dispatched', 'running') GROUP BY agent_id",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::agents::tests::new_agent;

    fn store_with_task() -> (Store, String) {
        let store = Store::open_in_memory().unwrap();
        let a = store.insert_agent(&new_agent("demo")).unwrap();
        let t = store
            .insert_task(&NewTask {
                id: "t1".into(),
                agent_id: a.id,
                spec: TaskSpec {
                    argv: vec!["true".into()],
                    ..Default::default()
                },
            })
            .unwrap();
        assert_eq!(t.state, TaskState::Queued);
        (store, t.id)
    }

    /// Appends to the task of `store_with_task`, whose agent is "id-demo".
    fn append(
        store: &Store,
        id: &str,
        stream: Stream,
        offset: u64,
        data: &'static [u8],
    ) -> OutputAppend {
        store
            .append_output(
                id,
                "id-demo",
                stream,
                offset,
                &bytes::Bytes::from_static(data),
            )
            .unwrap()
            .expect("the task is this agent's")
    }

    #[test]
    fn resent_output_is_stored_once() {
        let (store, id) = store_with_task();
        let a = append(&store, &id, Stream::Stdout, 0, b"hello ");
        assert_eq!(a.end, 6);
        // A resend overlapping what we have: only "world" is new.
        let b = append(&store, &id, Stream::Stdout, 3, b"lo world");
        assert_eq!(b.new.as_ref().unwrap().data, &b"world"[..]);
        assert_eq!(b.new.as_ref().unwrap().offset, 6);
        // A pure duplicate.
        let c = append(&store, &id, Stream::Stdout, 0, b"hello");
        assert!(c.new.is_none());
        append(&store, &id, Stream::Stderr, 0, b"err");
        let all = store.output_after(&id, 0, 100).unwrap();
        let stdout: Vec<u8> = all
            .iter()
            .filter(|c| c.stream == Stream::Stdout)
            .flat_map(|c| c.data.to_vec())
            .collect();
        assert_eq!(stdout, b"hello world");
        let t = store.task(&id).unwrap().unwrap();
        assert_eq!((t.stdout_len, t.stderr_len), (11, 3));
        // Arrival order is kept across streams.
        assert_eq!(all.last().unwrap().stream, Stream::Stderr);
    }

    #[test]
    fn a_gap_is_reported() {
        let (store, id) = store_with_task();
        let a = append(&store, &id, Stream::Stdout, 10, b"x");
        assert_eq!(a.gap, 10);
        assert_eq!(a.end, 11);
    }

    #[test]
    fn output_for_another_agents_task_is_refused() {
        let (store, id) = store_with_task();
        let got = store
            .append_output(
                &id,
                "someone-else",
                Stream::Stdout,
                0,
                &bytes::Bytes::from_static(b"x"),
            )
            .unwrap();
        assert!(got.is_none());
        assert!(store.output_after(&id, 0, 10).unwrap().is_empty());
    }

    #[test]
    fn state_changes_and_idempotent_finish() {
        let (store, id) = store_with_task();
        store.mark_dispatched(&id).unwrap();
        store.mark_started(&id, 1000).unwrap();
        assert_eq!(store.task(&id).unwrap().unwrap().state, TaskState::Running);
        let result = TaskResult {
            task_id: id.clone(),
            outcome: Some(docker_agent_proto::v1::task_result::Outcome::ExitCode(3)),
            ..Default::default()
        };
        assert!(store.finish_task(&id, &result).unwrap());
        assert!(!store.finish_task(&id, &result).unwrap());
        assert!(!store.end_task(&id, TaskState::Lost, "x").unwrap());
        let t = store.task(&id).unwrap().unwrap();
        assert_eq!(t.state, TaskState::Finished);
        assert_eq!(t.result.unwrap().outcome, result.outcome);
    }

    #[test]
    fn cancel_and_dispatch_cannot_both_win() {
        let (store, id) = store_with_task();
        assert!(store.mark_dispatched(&id).unwrap());
        // The dispatch claimed it first: cancelling it as queued must fail, so the agent is told instead.
        assert!(!store.cancel_queued(&id, "test").unwrap());
        store.request_cancel(&id).unwrap();
        store.requeue(&id).unwrap();
        // A task with a cancel on record is never claimed again.
        assert!(!store.mark_dispatched(&id).unwrap());
        assert!(store.cancel_queued(&id, "test").unwrap());
        assert_eq!(
            store.task(&id).unwrap().unwrap().state,
            TaskState::Cancelled
        );
    }

    #[test]
    fn listing_by_state() {
        let (store, id) = store_with_task();
        let agent = store.task(&id).unwrap().unwrap().agent_id;
        assert_eq!(
            store
                .tasks_in_states(&agent, &[TaskState::Queued])
                .unwrap()
                .len(),
            1
        );
        store.mark_dispatched(&id).unwrap();
        assert!(
            store
                .tasks_in_states(&agent, &[TaskState::Queued])
                .unwrap()
                .is_empty()
        );
        store.requeue(&id).unwrap();
        assert_eq!(
            store
                .tasks_in_states(&agent, &[TaskState::Queued])
                .unwrap()
                .len(),
            1
        );
    }
}
