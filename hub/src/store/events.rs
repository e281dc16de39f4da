//! The event timeline: lifecycle and connection changes, kept for `status` and the dashboard.

use rusqlite::params;

use super::{Result, Store, now_ms};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub id: i64,
    pub at: i64,
    pub agent: String,
    pub kind: String,
    pub detail: String,
}

impl Store {
    pub fn record_event(&self, agent: &str, kind: &str, detail: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO events (at, agent, kind, detail) VALUES (?1, ?2, ?3, ?4)",
            params![now_ms(), agent, kind, detail],
        )?;
        Ok(())
    }

    /// The newest `limit` events of one agent (or all), oldest first.
    pub fn recent_events(&self, agent: Option<&str>, limit: u32) -> Result<Vec<EventRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, at, agent, kind, detail FROM \
             (SELECT * FROM events WHERE (?1 IS NULL OR agent = ?1) ORDER BY id DESC LIMIT ?2) ORDER BY id",
        )?;
        let rows = stmt.query_map(params![agent, limit], |r| {
            Ok(EventRecord {
                id: r.get(0)?,
                at: r.get(1)?,
                agent: r.get(2)?,
                kind: r.get(3)?,
                detail: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_back_oldest_first() {
        let store = Store::open_in_memory().unwrap();
        for i in 0..5 {
            store
                .record_event("demo", "lifecycle", &format!("e{i}"))
                .unwrap();
        }
        store.record_event("other", "lifecycle", "x").unwrap();
        let ev = store.recent_events(Some("demo"), 3).unwrap();
        let details: Vec<_> = ev.iter().map(|e| e.detail.as_str()).collect();
        assert_eq!(details, ["e2", "e3", "e4"]);
    }
}
