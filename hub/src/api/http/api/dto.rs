//! The REST API's own JSON shapes: request bodies, and answers no `--json` output shares. Agents,
//! tasks and profiles are `api::json`, shared with the CLI. Times are RFC 3339 in UTC; sizes are
//! bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::json::time;
pub use crate::api::json::{Agent, Health, Profile, Resources, Task};
use crate::store::EventRecord;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    /// 1-63 lower-case letters, digits and dashes, not starting or ending with a dash.
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// Default: minimal.
    #[serde(default)]
    pub profile: Option<String>,
    /// Extra environment for the agent's tasks.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Start from this snapshot tag instead of the profile's image.
    #[serde(default)]
    pub from_snapshot: Option<String>,
    /// Accept a profile that mounts the host's Docker socket (root on the host).
    #[serde(default)]
    pub allow_docker_socket: bool,
    /// Join this group of agents, which share a network (default: the profile's group, if any).
    #[serde(default)]
    pub group: Option<String>,
    /// How long to wait for the agent to register (default: the hub's).
    #[serde(default)]
    pub ready_timeout_secs: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Destroyed {
    pub name: String,
    pub container_removed: bool,
    pub volume_removed: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Profiles {
    pub profiles: Vec<Profile>,
    /// Profile files that could not be read, one line each.
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Event {
    pub id: i64,
    pub at: Option<String>,
    pub agent: String,
    pub kind: String,
    pub detail: String,
}

impl From<EventRecord> for Event {
    fn from(e: EventRecord) -> Self {
        Self {
            id: e.id,
            at: time(e.at),
            agent: e.agent,
            kind: e.kind,
            detail: e.detail,
        }
    }
}

/// One message on `/api/v1/events`: `event:` is `lifecycle`, `connection` or `removed`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LiveEvent {
    pub agent: String,
    pub agent_id: String,
    /// The new lifecycle or connection state; empty for `removed`.
    pub state: String,
    pub reason: String,
}
