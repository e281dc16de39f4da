//! Dashboard logins: the hash of the cookie's value, its CSRF token and when it expires.

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
            "INSERT INTO logins (id_hash, csrf, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params![id_hash, csrf, now, expires_at],
        )?;
        Ok(())
    }

    /// The login with this hash, unless it has expired.
    pub fn login(&self, id_hash: &[u8]) -> Result<Option<Login>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT csrf, expires_at FROM logins WHERE id_hash = ?1 AND expires_at > ?2",
                params![id_hash, now_ms()],
                |r| {
                    Ok(Login {
                        csrf: r.get(0)?,
                        expires_at: r.get(1)?,
                    })
                },
            )
            .optional()?)
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
        assert_eq!(store.login(b"live").unwrap().unwrap().csrf, "c1");
        assert_eq!(store.login(b"old").unwrap(), None);
        store.delete_login(b"live").unwrap();
        assert_eq!(store.login(b"live").unwrap(), None);
    }
}
