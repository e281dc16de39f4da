//! Dashboard logins: the hash of the cookie's value, its CSRF token, when it expires and when it was
//! last used (a login idle too long has ended too).

use rusqlite::{OptionalExtension, params};

use super::{Result, Store, now_ms};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub csrf: String,
    pub expires_at: i64,
}

impl Store {
    /// Stores a new login and drops the expired ones.
    pub fn insert_login(&self, id_hash: &[u8], csrf: &str, expires_at: i64) -> Result<()> {
        let conn = self.conn();
        let now = now_ms();
        conn.execute("DELETE FROM logins WHERE expires_at <= ?1", [now])?;
        conn.execute(
            "INSERT INTO logins (id_hash, csrf, created_at, expires_at, last_used) VALUES (?1, ?2, ?3, ?4, ?3)",
            params![id_hash, csrf, now, expires_at],
        )?;
        Ok(())
    }

    /// The login with this hash, unless it has expired or was idle for `idle_ms` or more (0: no idle
    /// bound); using it counts as use.
    pub fn login(&self, id_hash: &[u8], idle_ms: i64) -> Result<Option<Login>> {
        let now = now_ms();
        let conn = self.conn();
        let login = conn
            .query_row(
                "SELECT csrf, expires_at FROM logins WHERE id_hash = ?1 AND expires_at > ?2 \
                 AND (?3 = 0 OR last_used > ?2 - ?3)",
                params![id_hash, now, idle_ms],
                |r| {
                    Ok(Login {
                        csrf: r.get(0)?,
                        expires_at: r.get(1)?,
                    })
                },
            )
            .optional()?;
        if login.is_some() {
            // At most one write a minute per login: a page's every request need not be one. The idle
            // bound is therefore kept to the minute.
            conn.execute(
                "UPDATE logins SET last_used = ?2 WHERE id_hash = ?1 AND last_used < ?2 - 60000",
                params![id_hash, now],
            )?;
        }
        Ok(login)
    }

    pub fn delete_login(&self, id_hash: &[u8]) -> Result<()> {
        self.conn()
            .execute("DELETE FROM logins WHERE id_hash = ?1", [id_hash])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_expire_and_log_out() {
        let store = Store::open_in_memory().unwrap();
        store
            .insert_login(b"live", "c1", now_ms() + 60_000)
            .unwrap();
        store.insert_login(b"old", "c2", now_ms() - 1).unwrap();
        assert_eq!(store.login(b"live", 0).unwrap().unwrap().csrf, "c1");
        assert_eq!(store.login(b"old", 0).unwrap(), None);
        store.delete_login(b"live").unwrap();
        assert_eq!(store.login(b"live", 0).unwrap(), None);
    }

    #[test]
    fn a_login_idle_past_its_bound_has_ended_and_use_keeps_one_alive() {
        let store = Store::open_in_memory().unwrap();
        store
            .insert_login(b"idle", "c", now_ms() + 3_600_000)
            .unwrap();
        store
            .insert_login(b"used", "c", now_ms() + 3_600_000)
            .unwrap();
        let idle_since = now_ms() - 120_000;
        store
            .conn()
            .execute("UPDATE logins SET last_used = ?1", [idle_since])
            .unwrap();
        // Idle two minutes: alive under a five-minute bound (and marked used), gone under one minute.
        assert!(store.login(b"used", 300_000).unwrap().is_some());
        assert!(store.login(b"used", 60_000).unwrap().is_some());
        assert_eq!(store.login(b"idle", 60_000).unwrap(), None);
        // No idle bound: only the absolute expiry counts.
        assert!(store.login(b"idle", 0).unwrap().is_some());
    }
}
