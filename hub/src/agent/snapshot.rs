//! Snapshots: an agent's container filesystem and its /workspace committed to one image, listed and removed by tag, and used by `create --from-snapshot` to start an agent with the files the source had.

use std::collections::HashMap;

use crate::core::Core;
use crate::driver::{ContainerSpec, DriverError, ImageInfo, labels};
use crate::error::{HubError, Result};
use crate::lifecycle::Lifecycle;
use crate::profile::{Format, Profile, parse};

/// Snapshot images are `docker-agent/snapshot:<tag>`.
pub const SNAPSHOT_REPO: &str = "docker-agent/snapshot";

/// A snapshot image, as its labels describe it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub tag: String,
    /// `docker-agent/snapshot:<tag>`.
    pub image: String,
    pub id: String,
    /// The agent it was taken from.
    pub agent: String,
    pub profile: Profile,
    pub created_ms: i64,
    pub size_bytes: i64,
}

/// Snapshot tags become image tags: lower-case letters, digits, '_', '.', '-'.
pub fn validate_tag(tag: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && tag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(HubError::InvalidArgument(format!(
            "invalid snapshot tag {tag:?}: use 1-128 lower-case letters, digits, '_', '.' and '-', starting with a letter or digit"
        )))
    }
}

/// `NAME-YYYYMMDD-HHMMSS` (UTC), the tag of a snapshot taken without `--tag`.
fn default_tag(agent: &str, now: std::time::SystemTime) -> String {
    let stamp = humantime::format_rfc3339_seconds(now).to_string();
    let digits: String = stamp.chars().filter(char::is_ascii_digit).collect();
    format!("{agent}-{}-{}", &digits[..8], &digits[8..14])
}

impl Core {
    fn snapshot_from_image(&self, tag: &str, info: ImageInfo) -> Result<Snapshot> {
        let get = |key: &str| info.labels.get(key).cloned().unwrap_or_default();
        let profile = parse(
            &get(labels::PROFILE_JSON),
            Format::Json,
            &format!("snapshot {tag}"),
        )?
        .with_origin(&format!("snapshot {tag}"));
        Ok(Snapshot {
            tag: tag.to_string(),
            image: format!("{SNAPSHOT_REPO}:{tag}"),
            id: info.id,
            agent: get(labels::SNAPSHOT_OF),
            profile,
            created_ms: get(labels::CREATED).parse().unwrap_or(0),
            size_bytes: info.size_bytes,
        })
    }

    /// The snapshot tagged `tag`, if this hub made it.
    pub async fn snapshot(&self, tag: &str) -> Result<Snapshot> {
        validate_tag(tag)?;
        let reference = format!("{SNAPSHOT_REPO}:{tag}");
        match self.driver.inspect_image(&reference).await? {
            Some(info)
                if info.labels.get(labels::HUB) == Some(&self.settings.hub_id)
                    && info.labels.contains_key(labels::SNAPSHOT) =>
            {
                self.snapshot_from_image(tag, info)
            }
            _ => Err(HubError::InvalidArgument(format!(
                "snapshot {tag:?} not found (see `docker-agent snapshots`)"
            ))),
        }
    }

    pub async fn list_snapshots(&self) -> Result<Vec<Snapshot>> {
        let filter = [
            format!("{}=true", labels::MANAGED),
            format!("{}={}", labels::HUB, self.settings.hub_id),
            labels::SNAPSHOT.to_string(),
        ];
        let mut out = Vec::new();
        for info in self.driver.list_images(&filter).await? {
            let Some(tag) = info.labels.get(labels::SNAPSHOT).cloned() else {
                continue;
            };
            match self.snapshot_from_image(&tag, info) {
                Ok(s) => out.push(s),
                Err(e) => tracing::warn!(%tag, error = %e, "skipping an unreadable snapshot"),
            }
        }
        out.sort_by(|a, b| a.created_ms.cmp(&b.created_ms).then(a.tag.cmp(&b.tag)));
        Ok(out)
    }

    /// Commits the agent's container and its /workspace into `docker-agent/snapshot:<tag>`. The
    /// container filesystem is committed first (Docker pauses it for that); the workspace, which a
    /// commit leaves out because it is a volume, is then copied into a throwaway container of that
    /// image, which is committed again under the tag. Nothing is left behind if a step fails.
    pub async fn snapshot_agent(&self, name: &str, tag: Option<String>) -> Result<Snapshot> {
        let agent = self.agent(name)?;
        if matches!(agent.lifecycle, Lifecycle::Creating | Lifecycle::Destroyed) {
            return Err(HubError::FailedPrecondition(format!(
                "agent {name:?} is {}; there is nothing to snapshot",
                agent.lifecycle
            )));
        }
        let tag = tag.unwrap_or_else(|| default_tag(name, std::time::SystemTime::now()));
        validate_tag(&tag)?;
        let reference = format!("{SNAPSHOT_REPO}:{tag}");
        if self.driver.image_id(&reference).await?.is_some() {
            return Err(HubError::Conflict(format!(
                "snapshot {tag:?} already exists; remove it with `docker-agent snapshots rm {tag}` or choose another --tag"
            )));
        }
        let container = agent
            .container_id
            .clone()
            .unwrap_or_else(|| agent.container_name.clone());
        let state = self
            .driver
            .inspect_container(&container)
            .await?
            .ok_or_else(|| {
                HubError::FailedPrecondition(format!(
                    "the container of agent {name:?} is gone; nothing to snapshot"
                ))
            })?;
        let profile_json = state
            .labels
            .get(labels::PROFILE_JSON)
            .cloned()
            .ok_or_else(|| {
                HubError::FailedPrecondition(format!(
                    "agent {name:?} was made by an older hub that did not record its profile; it cannot be snapshotted"
                ))
            })?;
        // A commit keeps the container's environment, which holds whatever `create -e` passed (secrets
        // included). Blank it: an agent made from the snapshot gets its profile's environment again.
        let blank: Vec<String> = agent.env.keys().map(|k| format!("{k}=\"\"")).collect();
        let changes = if blank.is_empty() {
            String::new()
        } else {
            format!("ENV {}", blank.join(" "))
        };
        let intermediate = self
            .driver
            .commit_container(&state.id, SNAPSHOT_REPO, None, HashMap::new(), &changes)
            .await?;
        let temp_name = format!(
            "docker-agent-snapshot-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let temp = self
            .driver
            .create_container(&ContainerSpec {
                name: temp_name.clone(),
                image: intermediate.clone(),
                // The committed image carries the source container's labels, and a container inherits
                // its image's: blank the agent's identity so this one is never taken for the agent.
                labels: HashMap::from([
                    (labels::MANAGED.to_string(), "true".to_string()),
                    (labels::HUB.to_string(), self.settings.hub_id.clone()),
                    (labels::AGENT_ID.to_string(), String::new()),
                    (labels::AGENT.to_string(), String::new()),
                ]),
                network: "none".into(),
                ..Default::default()
            })
            .await;
        let temp = match temp {
            Ok(id) => id,
            Err(e) => {
                let _ = self.driver.remove_image(&intermediate).await;
                return Err(e.into());
            }
        };
        let labels = HashMap::from([
            (labels::MANAGED.to_string(), "true".to_string()),
            (labels::HUB.to_string(), self.settings.hub_id.clone()),
            (labels::SNAPSHOT.to_string(), tag.clone()),
            (labels::SNAPSHOT_OF.to_string(), agent.name.clone()),
            (labels::PROFILE.to_string(), agent.profile.clone()),
            (labels::PROFILE_JSON.to_string(), profile_json),
            (
                labels::CREATED.to_string(),
                crate::store::now_ms().to_string(),
            ),
        ]);
        let committed = async {
            let workspace = self.driver.download_archive(&state.id, "/workspace");
            self.driver.upload_archive(&temp, "/", workspace).await?;
            self.driver
                .commit_container(&temp, SNAPSHOT_REPO, Some(&tag), labels, "")
                .await
        }
        .await;
        if let Err(e) = self.driver.remove_container(&temp).await {
            tracing::error!(container = %temp_name, error = %e, "failed to remove a snapshot's temporary container");
        }
        if let Err(e) = committed {
            // Untagged and unused now, so it can go.
            let _ = self.driver.remove_image(&intermediate).await;
            return Err(e.into());
        }
        tracing::info!(agent = %name, %tag, "snapshot taken");
        self.snapshot(&tag).await
    }

    /// Removes a snapshot image; refused while an agent was made from it.
    pub async fn remove_snapshot(&self, tag: &str) -> Result<()> {
        let snapshot = self.snapshot(tag).await?;
        let users: Vec<String> = self
            .store
            .list_agents()?
            .into_iter()
            .filter(|a| a.image == snapshot.image && a.lifecycle != Lifecycle::Destroyed)
            .map(|a| a.name)
            .collect();
        if !users.is_empty() {
            return Err(HubError::FailedPrecondition(format!(
                "snapshot {tag:?} is in use by agent {}; destroy {} first",
                users.join(", "),
                if users.len() == 1 { "it" } else { "them" }
            )));
        }
        match self.driver.remove_image(&snapshot.image).await {
            Ok(()) => Ok(()),
            Err(DriverError::Conflict(m)) => Err(HubError::FailedPrecondition(format!(
                "snapshot {tag:?} is still in use: {m}"
            ))),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        for good in ["v1", "b1-20261123-190419", "a.b_c-d"] {
            assert!(validate_tag(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "A", "a b", "a/b", &"x".repeat(129)] {
            assert!(validate_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_tags_carry_the_agent_and_the_utc_time() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000);
        let tag = default_tag("b1", t);
        assert_eq!(tag, "b1-20261118-110640");
        assert!(validate_tag(&tag).is_ok());
    }
}
