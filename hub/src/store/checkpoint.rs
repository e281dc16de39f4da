//! WAL checkpoints on a thread of their own, so store calls rarely wait for one.
//!
//! SQLite's automatic checkpoint runs inside whichever commit crosses 1000 WAL pages, on the
//! connection every store call shares, and syncs the database file: at 10,000 agents heartbeating
//! that happened about twice a second and showed as a 20 ms tail on exec. Here a second connection
//! checkpoints passively once a second while writers go on. The WAL starts over only at a write that
//! follows a checkpoint that copied every frame, which a busy hub's passive checkpoints never do
//! (commits land while they run); so once the WAL passes `CATCH_UP_FRAMES`, the remainder (what came
//! in during the passive pass) is copied with the store's writers held.

use std::path::Path;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use rusqlite::Connection;

const EVERY: Duration = Duration::from_secs(1);
/// WAL frames (pages, 4 KiB each) past which a checkpoint catches up with writers held: ~16 MiB.
const CATCH_UP_FRAMES: i64 = 4096;

/// `PRAGMA wal_checkpoint(PASSIVE)`: (busy, frames in the WAL, frames checkpointed).
fn passive(conn: &Connection) -> rusqlite::Result<(i64, i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
}

/// Turns off automatic checkpoints on `main` and checkpoints `path` until `main` is dropped.
pub(super) fn start(
    main: &Connection,
    alive: Weak<Mutex<Connection>>,
    path: &Path,
) -> super::Result<()> {
    let own = Connection::open(path)?;
    own.busy_timeout(Duration::from_secs(5))?;
    main.pragma_update(None, "wal_autocheckpoint", 0)?;
    // A WAL file that did grow is cut back to this when it starts over.
    main.pragma_update(None, "journal_size_limit", 64 << 20)?;
    std::thread::Builder::new()
        .name("store-checkpoint".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EVERY);
                let Some(store) = alive.upgrade() else { return };
                match passive(&own) {
                    Ok((_, frames, _)) if frames >= CATCH_UP_FRAMES => {
                        let _writers = store.lock().unwrap_or_else(|p| p.into_inner());
                        if let Err(e) = passive(&own) {
                            tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; retrying"),
                }
            }
        })
        .map_err(|e| {
            super::StoreError::Output(format!("cannot start the checkpoint thread: {e}"))
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Writes keep coming while the thread checkpoints; the WAL must still start over.
    #[test]
    fn the_wal_stays_bounded_under_constant_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let main = Connection::open(&path).unwrap();
        main.pragma_update(None, "journal_mode", "WAL").unwrap();
        main.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
            .unwrap();
        let main = Arc::new(Mutex::new(main));
        start(&main.lock().unwrap(), Arc::downgrade(&main), &path).unwrap();
        let wal = dir.path().join("t.db-wal");
        let mut largest = 0;
        let mut commits = 0u64;
        let started = std::time::Instant::now();
        // Several seconds of commits, each its own transaction, as heartbeats are.
        while started.elapsed() < Duration::from_secs(6) {
            main.lock()
                .unwrap()
                .execute(
                    "INSERT OR REPLACE INTO t VALUES (?1, zeroblob(100))",
                    [rand::random_range(0..5000i64)],
                )
                .unwrap();
            commits += 1;
            largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        }
        // Every commit appends at least one frame: a WAL that never starts over holds them all.
        // Started over each second, it holds about a second's worth.
        let frames = largest / 4096;
        assert!(commits > 12_000, "too few commits to tell: {commits}");
        assert!(
            frames < commits / 2,
            "the WAL grew to {frames} frames over {commits} commits"
        );
    }
}
