//! Schema migrations, applied in order and recorded in `PRAGMA user_version`.

use rusqlite::Connection;

use super::{Result, StoreError};

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE agents (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    profile          TEXT NOT NULL,
    image            TEXT NOT NULL,
    container_name   TEXT NOT NULL,
    container_id     TEXT,
    volume           TEXT NOT NULL,
    token_hash       BLOB NOT NULL,
    lifecycle        TEXT NOT NULL,
    lifecycle_reason TEXT NOT NULL DEFAULT '',
    lifecycle_at     INTEGER NOT NULL,
    connection       TEXT NOT NULL,
    connection_at    INTEGER NOT NULL,
    connected_since  INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    last_heartbeat   INTEGER NOT NULL DEFAULT 0,
    health           BLOB,
    system           BLOB,
    agent_version    TEXT NOT NULL DEFAULT '',
    instance_id      TEXT NOT NULL DEFAULT '',
    cpus             REAL NOT NULL DEFAULT 0,
    memory_bytes     INTEGER NOT NULL DEFAULT 0,
    pids             INTEGER NOT NULL DEFAULT 0,
    env              TEXT NOT NULL DEFAULT '{}'
);
-- Destroyed agents stay as tombstones so their tasks and output can still be read; the name is free again.
CREATE UNIQUE INDEX agents_live_name ON agents(name) WHERE lifecycle != 'destroyed';

CREATE TABLE tasks (
    id               TEXT PRIMARY KEY,
    agent_id         TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    spec             BLOB NOT NULL,
    state            TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    dispatched_at    INTEGER NOT NULL DEFAULT 0,
    started_at       INTEGER NOT NULL DEFAULT 0,
    finished_at      INTEGER NOT NULL DEFAULT 0,
    result           BLOB,
    error            TEXT NOT NULL DEFAULT '',
    -- Set by cancel; survives reconnects so a cancel is never lost with a dropped link.
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    stdout_len       INTEGER NOT NULL DEFAULT 0,
    stderr_len       INTEGER NOT NULL DEFAULT 0,
    -- Committed length of the task's output file (output/<id>.out).
    output_bytes     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX tasks_by_agent ON tasks(agent_id, created_at);
CREATE INDEX tasks_by_state ON tasks(state);

CREATE TABLE events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       INTEGER NOT NULL,
    agent    TEXT NOT NULL,
    kind     TEXT NOT NULL,
    detail   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX events_by_agent ON events(agent, at);
"#,
    r#"
-- Dashboard logins. Only a hash of the cookie's value is kept, so a copy of the database opens no session.
CREATE TABLE web_sessions (
    id_hash    BLOB PRIMARY KEY,
    csrf       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
-- 1 when the task ended badly (non-zero exit, signal, error, timeout, lost), for the fleet's counts.
ALTER TABLE tasks ADD COLUMN failed INTEGER NOT NULL DEFAULT 0;
CREATE INDEX tasks_failed ON tasks(agent_id) WHERE failed = 1;
"#,
    r#"
-- Output bounds from the agent's profile; 0: the hub's (--max-task-output, --max-agent-output).
ALTER TABLE agents ADD COLUMN max_task_output INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN max_agent_output INTEGER NOT NULL DEFAULT 0;
-- When the agent's current instance (process) first said hello, unix ms: another instance is only
-- taken after its container started again.
ALTER TABLE agents ADD COLUMN instance_since INTEGER NOT NULL DEFAULT 0;
-- Why stored output stopped before the task's end: '' (it did not), 'task', 'agent' or 'disk'.
ALTER TABLE tasks ADD COLUMN output_dropped TEXT NOT NULL DEFAULT '';
"#,
    r#"
-- "Session" means a terminal session only; a dashboard's cookie is a login.
ALTER TABLE web_sessions RENAME TO logins;
-- Whether the lifecycle state is the setup's doing: '' (no), 'running' or 'failed'.
ALTER TABLE agents ADD COLUMN setup_phase TEXT NOT NULL DEFAULT '';
"#,
    r#"
-- When a login was last used, unix ms: one idle longer than `hub --web-idle` has ended.
ALTER TABLE logins ADD COLUMN last_used INTEGER NOT NULL DEFAULT 0;
UPDATE logins SET last_used = created_at;
"#,
];

pub(super) fn migrate(conn: &Connection) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::TooNew {
            found: version,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
