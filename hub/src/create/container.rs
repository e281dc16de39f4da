//! The container a create makes: its spec (image, labels, limits, capabilities, mounts, the agent's
//! command line) from the agent's record and profile.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::core::Core;
use crate::driver::{ContainerSpec, MountSpec, labels};
use crate::profile::{MountKind, Profile};
use crate::store::AgentRecord;

/// Where the agent finds its credentials and setup plan; root-only, so tasks cannot read them.
pub(super) const SECRETS_DIR: &str = "/etc/docker-agent";
pub(super) const TOKEN_PATH: &str = "/etc/docker-agent/token";
pub(super) const CA_PATH: &str = "/etc/docker-agent/ca.pem";
pub(super) const WORKSPACE: &str = "/workspace";
/// Where the hub's agent socket directory is mounted.
pub(super) const AGENT_SOCKET_MOUNT: &str = "/run/docker-agent/hub";
/// The agent's setup progress when the root filesystem is read-only: on the credentials volume, which
/// is writable and lives as long as the container.
pub(super) const READ_ONLY_STATE_DIR: &str = "/etc/docker-agent/state";

/// Capabilities the agent needs after `cap-drop ALL`: switch to the task user, signal its processes,
/// and prepare /workspace. Task processes run as the task user and keep none of them.
/// NET_ADMIN is held by the agent alone, for the moment it takes to make link-local addresses (cloud
/// metadata) unreachable at start (`--block-link-local`); it gives it up before anything else runs.
pub(super) const AGENT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "SETUID",
    "SETGID",
    "KILL",
    "NET_ADMIN",
];

impl Core {
    /// The container of `record`: `secrets` is its credentials volume, `socket_dir` the agent socket's
    /// directory it mounts (None: the agent dials the port), `gateway` the hub's address on the
    /// agents' network.
    pub(super) fn container_spec(
        &self,
        record: &AgentRecord,
        profile: &Profile,
        labels: HashMap<String, String>,
        secrets: &str,
        socket_dir: Option<&Path>,
        gateway: IpAddr,
    ) -> ContainerSpec {
        let mut group_add = Vec::new();
        for socket in profile.docker_socket_mounts() {
            // Tasks reach the socket through its group, as a member of the host's docker group would.
            if let Ok(meta) = std::fs::metadata(&socket.source)
                && meta.file_type().is_socket()
                && meta.gid() != 0
            {
                group_add.push(meta.gid().to_string());
            }
        }
        ContainerSpec {
            name: record.container_name.clone(),
            image: record.image.clone(),
            labels,
            cmd: self.agent_args(record, profile, &group_add, socket_dir.is_some()),
            env: record.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            network: self.settings.network.clone(),
            extra_hosts: vec![format!("{}:{gateway}", crate::tls::AGENT_HOSTNAME)],
            volume: record.volume.clone(),
            volume_target: WORKSPACE.into(),
            nano_cpus: (record.cpus * 1e9) as i64,
            memory_bytes: record.memory_bytes as i64,
            pids_limit: record.pids,
            cap_add: AGENT_CAPS.iter().map(|c| c.to_string()).collect(),
            hostname: record.name.clone(),
            mounts: std::iter::once(MountSpec {
                bind: false,
                source: secrets.to_string(),
                target: SECRETS_DIR.into(),
                read_only: false,
            })
            .chain(socket_dir.map(|dir| MountSpec {
                bind: true,
                source: dir.display().to_string(),
                target: AGENT_SOCKET_MOUNT.into(),
                read_only: true,
            }))
            .chain(profile.mounts.iter().map(|m| MountSpec {
                bind: m.kind == MountKind::Bind,
                source: m.source.clone(),
                target: m.target.clone(),
                read_only: m.read_only,
            }))
            .collect(),
            group_add,
            read_only_root: profile.read_only_root,
            placement: profile.placement.clone(),
            tmpfs: if profile.read_only_root {
                vec!["/tmp".to_string()]
            } else {
                Vec::new()
            },
        }
    }

    /// The agent's command line: where to dial, who it is, who tasks run as. Nothing secret goes here
    /// (it shows in `docker inspect`); the token is a file.
    fn agent_args(
        &self,
        record: &AgentRecord,
        profile: &Profile,
        groups: &[String],
        socket: bool,
    ) -> Vec<String> {
        let mut args = vec![
            "--hub-url".to_string(),
            self.settings.agent_url.clone(),
            "--agent-id".to_string(),
            record.id.clone(),
            "--block-link-local".to_string(),
        ];
        if profile.user != crate::profile::DEFAULT_USER {
            args.extend(["--task-user".to_string(), profile.user.clone()]);
        }
        if !groups.is_empty() {
            args.extend(["--task-groups".to_string(), groups.join(",")]);
        }
        if profile.read_only_root {
            args.extend(["--state-dir".to_string(), READ_ONLY_STATE_DIR.to_string()]);
        }
        if let Some(bytes) = self.settings.agent_spool_bytes {
            args.extend(["--spool-bytes".to_string(), bytes.to_string()]);
        }
        if socket {
            let socket = format!("{AGENT_SOCKET_MOUNT}/{}", crate::datadir::AGENT_SOCKET_FILE);
            args.extend(["--hub-socket".to_string(), socket]);
        }
        args
    }

    pub(super) fn labels(&self, record: &AgentRecord) -> HashMap<String, String> {
        HashMap::from([
            (labels::MANAGED.to_string(), "true".to_string()),
            (labels::AGENT.to_string(), record.name.clone()),
            (labels::AGENT_ID.to_string(), record.id.clone()),
            (labels::PROFILE.to_string(), record.profile.clone()),
            (labels::HUB.to_string(), self.settings.hub_id.clone()),
        ])
    }
}
