//! The control service's profile, snapshot, container-log and prune calls; `control_svc` delegates to them to keep one concern per file.

use docker_agent_proto::v1 as pb;
use futures::StreamExt;
use tonic::{Response, Status};

use super::service::{BoxStream, ControlSvc};
use crate::agent::snapshot::Snapshot;
use crate::driver::LogsOptions;
use crate::error::HubError;

use super::convert::profile as summary;

fn snapshot_message(s: Snapshot) -> pb::Snapshot {
    pb::Snapshot {
        tag: s.tag,
        image: s.image,
        id: s.id,
        agent: s.agent,
        profile: s.profile.name,
        created_at_ms: s.created_ms,
        size_bytes: s.size_bytes,
    }
}

impl ControlSvc {
    pub(super) fn list_profiles_impl(&self) -> pb::ListProfilesResponse {
        let catalog = self.core.profiles();
        pb::ListProfilesResponse {
            profiles: catalog.iter().map(summary).collect(),
            errors: catalog.errors.values().map(|e| e.to_string()).collect(),
        }
    }

    pub(super) async fn get_profile_impl(&self, name: &str) -> Result<pb::ProfileDetail, Status> {
        let catalog = self.core.profiles();
        let profile = catalog.get(name).map_err(HubError::from)?;
        let image = self
            .core
            .images
            .image_tag(profile)
            .await
            .map(|(tag, _)| tag)
            .unwrap_or_default();
        Ok(pb::ProfileDetail {
            summary: Some(summary(profile)),
            toml: profile.to_toml(),
            json: serde_json::to_string_pretty(&profile.to_json_value())
                .map_err(|e| Status::internal(e.to_string()))?,
            image,
        })
    }

    pub(super) async fn create_snapshot_impl(
        &self,
        req: pb::CreateSnapshotRequest,
    ) -> Result<pb::Snapshot, Status> {
        let tag = (!req.tag.is_empty()).then_some(req.tag);
        let core = self.core.clone();
        // Its own task: a client that goes away must not stop a snapshot half-way, with a throwaway
        // container and an untagged image left behind.
        let snapshot = tokio::spawn(async move { core.snapshot_agent(&req.agent, tag).await })
            .await
            .map_err(|e| Status::internal(format!("snapshot task failed: {e}")))??;
        Ok(snapshot_message(snapshot))
    }

    pub(super) async fn list_snapshots_impl(&self) -> Result<pb::ListSnapshotsResponse, Status> {
        let snapshots = self.core.list_snapshots().await?;
        Ok(pb::ListSnapshotsResponse {
            snapshots: snapshots.into_iter().map(snapshot_message).collect(),
        })
    }

    pub(super) async fn remove_snapshot_impl(&self, tag: &str) -> Result<(), Status> {
        self.core.remove_snapshot(tag).await?;
        Ok(())
    }

    pub(super) async fn prune_impl(
        &self,
        req: pb::PruneRequest,
    ) -> Result<pb::PruneResponse, Status> {
        if req.tasks {
            let retention = crate::store::Retention {
                // Every ended task: one that ended this millisecond is older than zero.
                max_age_ms: i64::try_from(req.older_than_ms).unwrap_or(i64::MAX).max(1),
                max_output_bytes: 0,
            };
            let pruned = self.core.prune_tasks(retention, !req.remove).await?;
            return Ok(pb::PruneResponse {
                removed: req.remove,
                tasks: pruned.tasks,
                task_output_bytes: pruned.output_bytes,
                ..Default::default()
            });
        }
        let orphans = if req.remove {
            self.core.remove_orphans().await?
        } else {
            self.core.orphans().await?
        };
        Ok(pb::PruneResponse {
            orphans: orphans
                .into_iter()
                .map(|c| pb::Orphan {
                    agent: c
                        .labels
                        .get(crate::driver::labels::AGENT)
                        .cloned()
                        .unwrap_or_default(),
                    container_id: c.id,
                    name: c.name,
                    status: c.status,
                })
                .collect(),
            removed: req.remove,
            ..Default::default()
        })
    }

    pub(super) fn agent_logs_impl(
        &self,
        req: pb::AgentLogsRequest,
    ) -> Result<Response<BoxStream<pb::LogChunk>>, Status> {
        let agent = self.core.agent(&req.name)?;
        if agent.lifecycle == crate::lifecycle::Lifecycle::Destroyed {
            return Err(HubError::FailedPrecondition(format!(
                "agent {:?} was destroyed; its container log went with it",
                agent.name
            ))
            .into());
        }
        let container = agent.container_id.unwrap_or(agent.container_name);
        let options = LogsOptions {
            follow: req.follow,
            tail: req.tail,
            since: (req.since_unix > 0).then_some(req.since_unix),
            timestamps: req.timestamps,
        };
        let stream = self.core.driver.logs(&container, options).map(|item| {
            item.map(|chunk| pb::LogChunk {
                stderr: chunk.stderr,
                data: chunk.data,
            })
            .map_err(|e| Status::from(HubError::from(e)))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
