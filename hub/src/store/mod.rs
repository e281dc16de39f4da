//! The SQLite store: agents, tasks, their output and the event timeline. Everything the hub must not lose lives here.

mod agents;
mod checkpoint;
mod events;
mod logins;
mod output;
mod quota;
mod retention;
mod schema;
mod tasks;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::Connection;

pub use agents::{AgentRecord, NewAgent};
pub use events::EventRecord;
pub use logins::Login;
pub use output::StoredChunk;
pub use quota::{OutputCap, OutputLimits};
pub use retention::{Pruned, Retention, StoreSize};
pub use tasks::{NewTask, OutputAppend, TaskRecord, TaskState};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("task output file {0}")]
    Output(String),
    #[error(
        "the store was written by a newer docker-agent (schema {found}, this build knows {known})"
    )]
    TooNew { found: i64, known: i64 },
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A handle to the store. Cheap to clone. Calls are short synchronous SQLite statements; in WAL mode
/// with `synchronous=NORMAL` a commit does not wait for the disk, and checkpoints (which do) run on
/// their own thread (`checkpoint.rs`), so they run inline on the runtime.
#[derive(Clone, Debug)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    /// Output bytes live in files next to the database (`output/`).
    output: Arc<output::OutputFiles>,
    quota: Arc<quota::Quota>,
}

impl Store {
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        let dir = path.parent().unwrap_or(Path::new(".")).join("output");
        let store = Self::init(conn, output::OutputFiles::open(dir)?)?;
        checkpoint::start(&store.conn(), Arc::downgrade(&store.conn), path)?;
        Ok(store)
    }

    /// An in-memory database with output files in a private temporary directory (tests).
    pub fn open_in_memory() -> Result<Self> {
        Self::init(
            Connection::open_in_memory()?,
            output::OutputFiles::temporary()?,
        )
    }

    fn init(conn: Connection, output: output::OutputFiles) -> Result<Self> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        schema::migrate(&conn)?;
        let quota = quota::Quota::new(output.dir().to_path_buf());
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            output: Arc::new(output),
            quota: Arc::new(quota),
        })
    }

    /// The hub's output bounds (`OutputLimits::DEFAULT` until set).
    pub fn set_output_limits(&self, limits: OutputLimits) {
        self.quota.set_limits(limits);
    }

    pub fn output_limits(&self) -> OutputLimits {
        self.quota.limits()
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (statements are atomic), so the
        // poison flag carries no information worth failing on.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A trivial query, for readiness checks.
    pub fn ping(&self) -> Result<()> {
        self.conn().query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    /// Flushes the WAL into the main database file; called on shutdown.
    pub fn checkpoint(&self) -> Result<()> {
        let conn = self.conn();
        // The checkpoint thread may hold the checkpoint lock for a moment; TRUNCATE then reports busy.
        for _ in 0..50 {
            let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
            if busy == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(())
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
