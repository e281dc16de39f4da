//! Agent rows: identity, Docker objects, credentials hash, both state axes and the latest health.

use std::collections::BTreeMap;

use docker_agent_proto::v1::{Health, SystemInfo};
use prost::Message;
use rusqlite::{OptionalExtension, Row, params};

use super::{Result, Store, StoreError, now_ms};
use crate::lifecycle::{Connection, Lifecycle, SetupPhase};

/// What `create` knows before any Docker object exists.
#[derive(Debug, Clone)]
pub struct NewAgent {
    pub id: String,
    pub name: String,
    pub profile: String,
    pub image: String,
    pub container_name: String,
    pub volume: String,
    pub token_hash: Vec<u8>,
    pub cpus: f64,
    pub memory_bytes: u64,
    pub pids: i64,
    pub env: BTreeMap<String, String>,
    /// The profile's output bounds; 0: the hub's.
    pub max_task_output: u64,
    pub max_agent_output: u64,
}

#[derive(Debug, Clone)]
pub struct AgentRecord {
    pub id: String,
    pub name: String,
    pub profile: String,
    pub image: String,
    pub container_name: String,
    pub container_id: Option<String>,
    pub volume: String,
    pub token_hash: Vec<u8>,
    pub lifecycle: Lifecycle,
    pub lifecycle_reason: String,
    pub lifecycle_at: i64,
    pub connection: Connection,
    pub connection_at: i64,
    pub connected_since: i64,
    pub created_at: i64,
    pub last_heartbeat: i64,
    pub health: Option<Health>,
    pub system: Option<SystemInfo>,
    pub agent_version: String,
    pub instance_id: String,
    pub cpus: f64,
    pub memory_bytes: u64,
    pub pids: i64,
    pub env: BTreeMap<String, String>,
    pub max_task_output: u64,
    pub max_agent_output: u64,
    /// When `instance_id` first said hello (unix ms).
    pub instance_since: i64,
    /// Whether the lifecycle state is the profile's setup's doing.
    pub setup: SetupPhase,
}

const COLUMNS: &str = "id, name, profile, image, container_name, container_id, volume, token_hash, lifecycle, \
    lifecycle_reason, lifecycle_at, connection, connection_at, connected_since, created_at, last_heartbeat, \
    health, system, agent_version, instance_id, cpus, memory_bytes, pids, env, max_task_output, max_agent_output, instance_since, setup_phase";

fn from_row(row: &Row<'_>) -> rusqlite::Result<std::result::Result<AgentRecord, StoreError>> {
    let lifecycle: String = row.get(8)?;
    let connection: String = row.get(11)?;
    let health: Option<Vec<u8>> = row.get(16)?;
    let system: Option<Vec<u8>> = row.get(17)?;
    let env: String = row.get(23)?;
    let parsed = (|| {
        Ok(AgentRecord {
            id: row.get(0)?,
            name: row.get(1)?,
            profile: row.get(2)?,
            image: row.get(3)?,
            container_name: row.get(4)?,
            container_id: row.get(5)?,
            volume: row.get(6)?,
            token_hash: row.get(7)?,
            lifecycle: lifecycle.parse().map_err(StoreError::Corrupt)?,
            lifecycle_reason: row.get(9)?,
            lifecycle_at: row.get(10)?,
            connection: connection.parse().map_err(StoreError::Corrupt)?,
            connection_at: row.get(12)?,
            connected_since: row.get(13)?,
            created_at: row.get(14)?,
            last_heartbeat: row.get(15)?,
            health: health
                .map(|b| Health::decode(b.as_slice()))
                .transpose()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            system: system
                .map(|b| SystemInfo::decode(b.as_slice()))
                .transpose()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            agent_version: row.get(18)?,
            instance_id: row.get(19)?,
            cpus: row.get(20)?,
            memory_bytes: row.get::<_, i64>(21)? as u64,
            pids: row.get(22)?,
            env: serde_json::from_str(&env).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            max_task_output: row.get::<_, i64>(24)? as u64,
            max_agent_output: row.get::<_, i64>(25)? as u64,
            instance_since: row.get(26)?,
            setup: SetupPhase::parse(&row.get::<_, String>(27)?),
        })
    })();
    Ok(parsed)
}

impl Store {
    pub fn insert_agent(&self, a: &NewAgent) -> Result<AgentRecord> {
        let now = now_ms();
        self.conn().execute(
            "INSERT INTO agents (id, name, profile, image, container_name, volume, token_hash, lifecycle, \
             lifecycle_at, connection, connection_at, created_at, cpus, memory_bytes, pids, env, \
             max_task_output, max_agent_output) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?9, ?9, ?11, ?12, ?13, ?14, ?15, ?16)",
            params![
                a.id,
                a.name,
                a.profile,
                a.image,
                a.container_name,
                a.volume,
                a.token_hash,
                Lifecycle::Creating.as_str(),
                now,
                Connection::Connecting.as_str(),
                a.cpus,
                a.memory_bytes as i64,
                a.pids,
                serde_json::to_string(&a.env).expect("env serialises"),
                a.max_task_output as i64,
                a.max_agent_output as i64,
            ],
        )?;
        self.agent_by_id(&a.id)?
            .ok_or_else(|| StoreError::Corrupt("inserted agent vanished".into()))
    }

    fn query_agent(&self, clause: &str, key: &str) -> Result<Option<AgentRecord>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {COLUMNS} FROM agents WHERE {clause}"))?;
        stmt.query_row([key], from_row).optional()?.transpose()
    }

    pub fn agent_by_name(&self, name: &str) -> Result<Option<AgentRecord>> {
        self.query_agent("name = ?1 AND lifecycle != 'destroyed'", name)
    }

    pub fn agent_by_id(&self, id: &str) -> Result<Option<AgentRecord>> {
        self.query_agent("id = ?1", id)
    }

    pub fn list_agents(&self) -> Result<Vec<AgentRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM agents WHERE lifecycle != 'destroyed' ORDER BY name"
        ))?;
        let rows = stmt.query_map([], from_row)?;
        rows.map(|r| r?).collect()
    }

    pub fn set_container_id(&self, id: &str, container_id: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE agents SET container_id = ?2 WHERE id = ?1",
            params![id, container_id],
        )?;
        Ok(())
    }

    pub fn set_lifecycle(&self, id: &str, state: Lifecycle, reason: &str) -> Result<()> {
        self.set_lifecycle_of(id, state, reason, SetupPhase::None)
    }

    /// `set_lifecycle`, recording whether the state is the setup's doing.
    pub fn set_lifecycle_of(
        &self,
        id: &str,
        state: Lifecycle,
        reason: &str,
        setup: SetupPhase,
    ) -> Result<()> {
        self.conn().execute(
            "UPDATE agents SET lifecycle = ?2, lifecycle_reason = ?3, lifecycle_at = ?4, setup_phase = ?5 \
             WHERE id = ?1",
            params![id, state.as_str(), reason, now_ms(), setup.as_str()],
        )?;
        Ok(())
    }

    pub fn set_connection(&self, id: &str, state: Connection) -> Result<()> {
        let now = now_ms();
        let conn = self.conn();
        if state == Connection::Connected {
            conn.execute(
                "UPDATE agents SET connection = ?2, connection_at = ?3, connected_since = ?3, last_heartbeat = ?3 \
                 WHERE id = ?1",
                params![id, state.as_str(), now],
            )?;
        } else {
            conn.execute(
                "UPDATE agents SET connection = ?2, connection_at = ?3 WHERE id = ?1",
                params![id, state.as_str(), now],
            )?;
        }
        Ok(())
    }

    /// Records what the agent said about itself in its hello.
    pub fn set_agent_identity(
        &self,
        id: &str,
        instance_id: &str,
        version: &str,
        system: &SystemInfo,
    ) -> Result<()> {
        self.conn().execute(
            "UPDATE agents SET instance_since = CASE WHEN instance_id = ?2 THEN instance_since ELSE ?5 END, \
             instance_id = ?2, agent_version = ?3, system = ?4 WHERE id = ?1",
            params![id, instance_id, version, system.encode_to_vec(), now_ms()],
        )?;
        Ok(())
    }

    /// Records a heartbeat (with its health, when it carries one) and returns the connection state the
    /// store holds, so the caller can correct it without reading the whole row.
    pub fn record_heartbeat(
        &self,
        id: &str,
        health: Option<&Health>,
    ) -> Result<Option<Connection>> {
        // Cached statements: a large fleet heartbeats thousands of times a second, and parsing the
        // SQL each time was a sixth of the hub's CPU at 10,000 agents.
        let conn = self.conn();
        conn.prepare_cached(
            "UPDATE agents SET last_heartbeat = ?2, health = COALESCE(?3, health) WHERE id = ?1",
        )?
        .execute(params![id, now_ms(), health.map(|h| h.encode_to_vec())])?;
        let state: Option<String> = conn
            .prepare_cached("SELECT connection FROM agents WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?;
        state
            .map(|s| s.parse().map_err(StoreError::Corrupt))
            .transpose()
    }

    pub fn delete_agent(&self, id: &str) -> Result<()> {
        self.conn()
            .execute("DELETE FROM agents WHERE id = ?1", [id])?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn new_agent(name: &str) -> NewAgent {
        NewAgent {
            id: format!("id-{name}"),
            name: name.into(),
            profile: "minimal".into(),
            image: "img".into(),
            container_name: format!("c-{name}"),
            volume: format!("v-{name}"),
            token_hash: vec![1, 2, 3],
            cpus: 1.5,
            memory_bytes: 1 << 30,
            pids: 512,
            env: BTreeMap::from([("A".into(), "1".into())]),
            max_task_output: 0,
            max_agent_output: 0,
        }
    }

    #[test]
    fn insert_update_and_read_back() {
        let store = Store::open_in_memory().unwrap();
        let a = store.insert_agent(&new_agent("demo")).unwrap();
        assert_eq!(a.lifecycle, Lifecycle::Creating);
        assert_eq!(a.connection, Connection::Connecting);
        assert_eq!(a.env.get("A").map(String::as_str), Some("1"));
        store.set_lifecycle(&a.id, Lifecycle::Ready, "").unwrap();
        store.set_connection(&a.id, Connection::Connected).unwrap();
        let health = Health {
            memory_used_bytes: 42,
            ..Default::default()
        };
        let seen = store.record_heartbeat(&a.id, Some(&health)).unwrap();
        assert_eq!(seen, Some(Connection::Connected));
        let b = store.agent_by_name("demo").unwrap().unwrap();
        assert_eq!(b.lifecycle, Lifecycle::Ready);
        assert_eq!(b.connection, Connection::Connected);
        assert_eq!(b.health.unwrap().memory_used_bytes, 42);
        assert!(b.connected_since > 0);
        assert_eq!(store.list_agents().unwrap().len(), 1);
    }

    #[test]
    fn names_are_unique_among_live_agents() {
        let store = Store::open_in_memory().unwrap();
        let first = store.insert_agent(&new_agent("demo")).unwrap();
        let mut dup = new_agent("demo");
        dup.id = "other".into();
        assert!(store.insert_agent(&dup).is_err());
        // Once destroyed, the name is free and the tombstone is still readable by id.
        store
            .set_lifecycle(&first.id, Lifecycle::Destroyed, "")
            .unwrap();
        assert!(store.agent_by_name("demo").unwrap().is_none());
        assert!(store.list_agents().unwrap().is_empty());
        store.insert_agent(&dup).unwrap();
        assert_eq!(
            store.agent_by_id(&first.id).unwrap().unwrap().lifecycle,
            Lifecycle::Destroyed
        );
    }
}
