//! What a create writes into the container before its first start: the credentials, the setup plan and the profile's files, with their owners, modes and parent directories.

use prost::Message;

use super::container::{CA_PATH, SECRETS_DIR, TOKEN_PATH, WORKSPACE};
use crate::core::Core;
use crate::driver::FileSpec;
use crate::error::Result;
use crate::profile::{FileOwner, Profile, TASK_UID};

/// Where the agent finds its setup plan; root-only, like the credentials.
pub const SETUP_PATH: &str = "/etc/docker-agent/setup.pb";

/// The profile's setup steps as the agent reads them (`SetupPlan`, protobuf), or nothing without steps.
pub fn setup_plan_file(profile: &Profile) -> Option<FileSpec> {
    if profile.setup_tasks.is_empty() {
        return None;
    }
    let plan = docker_agent_proto::v1::SetupPlan {
        steps: profile
            .setup_tasks
            .iter()
            .map(|t| docker_agent_proto::v1::SetupStep {
                command: t.command.clone(),
                description: t.description.clone(),
                user: t.user.clone().unwrap_or_default(),
                timeout_ms: t.timeout.map_or(0, |d| d.as_millis() as u64),
            })
            .collect(),
    };
    Some(FileSpec {
        path: SETUP_PATH.into(),
        mode: 0o400,
        contents: plan.encode_to_vec(),
        ..Default::default()
    })
}

/// The profile's files, with their missing parent directories under the user's home or /workspace
/// owned by the user too (Docker would make them root's).
pub fn profile_files(profile: &Profile) -> Vec<FileSpec> {
    let (uid, gid) = if profile.user == "root" {
        (0, 0)
    } else {
        (TASK_UID, TASK_UID)
    };
    let mut out: Vec<FileSpec> = Vec::new();
    for file in &profile.files {
        let (owner, user_root) = profile.file_owner(file);
        let (file_uid, file_gid) = match owner {
            FileOwner::User => (uid, gid),
            FileOwner::Root => (0, 0),
        };
        if let Some(root) = user_root {
            let mut dir = std::path::Path::new(&file.path).parent();
            let mut parents = Vec::new();
            while let Some(d) = dir {
                if d == std::path::Path::new(&root) || !d.starts_with(&root) {
                    break;
                }
                parents.push(d.display().to_string());
                dir = d.parent();
            }
            for path in parents.into_iter().rev() {
                if out.iter().any(|f| f.path == path) {
                    continue;
                }
                out.push(FileSpec {
                    path,
                    mode: 0o755,
                    uid,
                    gid,
                    dir: true,
                    ..Default::default()
                });
            }
        }
        out.push(FileSpec {
            path: file.path.clone(),
            mode: file.mode,
            uid: file_uid,
            gid: file_gid,
            contents: file.content.as_bytes().to_vec(),
            dir: false,
        });
    }
    out
}

impl Core {
    /// Writes the credentials, and for a new image the setup plan and the profile's files, into a
    /// created container.
    pub(super) async fn upload_agent_files(
        &self,
        id: &str,
        profile: &Profile,
        from_snapshot: bool,
        token: &str,
    ) -> Result<()> {
        let mut files = vec![
            // The volume's root: root-only, so tasks cannot even list it.
            FileSpec {
                path: SECRETS_DIR.into(),
                mode: 0o700,
                dir: true,
                ..Default::default()
            },
            FileSpec {
                path: TOKEN_PATH.into(),
                mode: 0o400,
                contents: token.as_bytes().to_vec(),
                ..Default::default()
            },
            FileSpec {
                path: CA_PATH.into(),
                mode: 0o444,
                contents: self.settings.ca_pem.as_bytes().to_vec(),
                ..Default::default()
            },
        ];
        if !from_snapshot {
            files.extend(setup_plan_file(profile));
            files.extend(profile_files(profile));
        }
        if profile.read_only_root {
            // Docker writes into a read-only root only through a volume: one upload per volume (the
            // profile allows files under /workspace alone), and the credentials volume's root keeps
            // the 0700 the image gives it.
            let (secrets, workspace): (Vec<FileSpec>, Vec<FileSpec>) = files
                .into_iter()
                .filter(|f| f.path != SECRETS_DIR)
                .partition(|f| f.path.starts_with(&format!("{SECRETS_DIR}/")));
            self.driver.upload_files(id, SECRETS_DIR, &secrets).await?;
            if !workspace.is_empty() {
                self.driver.upload_files(id, WORKSPACE, &workspace).await?;
            }
        } else {
            self.driver.upload_files(id, "/", &files).await?;
        }
        Ok(())
    }
}
