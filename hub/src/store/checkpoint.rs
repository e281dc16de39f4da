//! WAL checkpoints on a thread of their own, so no store call waits for one.
//!
//! SQLite's automatic checkpoint runs inside whichever commit crosses 1000 WAL pages, on the
//! connection every store call shares, and syncs the database file: at 10,000 agents heartbeating
//! that happened about twice a second and showed as a 20 ms tail on exec. Here a second connection
//! checkpoints passively once a second (writers go on meanwhile), and the next write after a complete
//! checkpoint starts the WAL over, so it stays small.

use std::path::Path;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use rusqlite::Connection;

const EVERY: Duration = Duration::from_secs(1);

/// Turns off automatic checkpoints on `main` and checkpoints `path` until `main` is dropped.
pub(super) fn start(
    main: &Connection,
    alive: Weak<Mutex<Connection>>,
    path: &Path,
) -> super::Result<()> {
    let own = Connection::open(path)?;
    own.busy_timeout(Duration::from_secs(5))?;
    main.pragma_update(None, "wal_autocheckpoint", 0)?;
    std::thread::Builder::new()
        .name("store-checkpoint".into())
        .spawn(move || {
            while alive.strong_count() > 0 {
                std::thread::sleep(EVERY);
                if let Err(e) = own.execute_batch("PRAGMA wal_checkpoint(PASSIVE);") {
                    tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
                }
            }
        })
        .map_err(|e| {
            super::StoreError::Output(format!("cannot start the checkpoint thread: {e}"))
        })?;
    Ok(())
}
