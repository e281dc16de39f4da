//! `docker-agent cp` on the hub: files in and out of an agent's container as tar streams, passed through chunk by chunk (never held whole) between the CLI and the engine's archive API, or the agent's own link where the engine cannot reach the container (`agent::files`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use docker_agent_proto::v1 as pb;
use docker_agent_proto::v1::copy_to_request::Msg as CopyMsg;
use futures::StreamExt;
use tonic::{Response, Status, Streaming};

use super::service::{BoxStream, ControlSvc};
use crate::driver::PathStat;
use crate::error::HubError;
use crate::lifecycle::Lifecycle;

/// An absolute path with no `..`, normalised, as profiles require too.
fn container_path(path: &str) -> Result<String, Status> {
    crate::profile::validate_abs_path(path).map_err(Status::invalid_argument)
}

impl ControlSvc {
    fn container_of(&self, name: &str) -> Result<String, Status> {
        let agent = self.core.agent(name)?;
        if agent.lifecycle == Lifecycle::Destroyed {
            return Err(
                HubError::FailedPrecondition(format!("agent {name:?} was destroyed")).into(),
            );
        }
        Ok(agent.container_id.unwrap_or(agent.container_name))
    }

    /// What is at `path` in agent `name`'s container, through whichever way reaches it.
    async fn stat(&self, name: &str, path: &str) -> Result<Option<PathStat>, Status> {
        let container = self.container_of(name)?;
        let stat = if self.core.driver.archives_through_engine() {
            self.core
                .driver
                .path_stat(&container, path)
                .await
                .map_err(HubError::from)?
        } else {
            self.core.stat_over_link(name, path).await?
        };
        Ok(stat)
    }

    pub(super) async fn stat_path_impl(
        &self,
        req: pb::PathRequest,
    ) -> Result<pb::PathStat, Status> {
        let path = container_path(&req.path)?;
        Ok(match self.stat(&req.name, &path).await? {
            Some(s) => pb::PathStat {
                exists: true,
                is_dir: s.is_dir,
                size: s.size,
                mode: s.mode,
            },
            None => pb::PathStat::default(),
        })
    }

    pub(super) async fn copy_from_impl(
        &self,
        req: pb::PathRequest,
    ) -> Result<Response<BoxStream<pb::CopyChunk>>, Status> {
        let path = container_path(&req.path)?;
        if self.stat(&req.name, &path).await?.is_none() {
            return Err(Status::not_found(format!(
                "{}:{path}: no such file or directory",
                req.name
            )));
        }
        let tar = if self.core.driver.archives_through_engine() {
            let container = self.container_of(&req.name)?;
            self.core.driver.download_archive(&container, &path)
        } else {
            self.core.download_over_link(&req.name, &path).await?
        };
        let stream = tar.map(|chunk| {
            chunk
                .map(|data| pb::CopyChunk { data })
                .map_err(|e| Status::internal(format!("copy failed: {e}")))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    pub(super) async fn copy_to_impl(
        &self,
        mut inbound: Streaming<pb::CopyToRequest>,
    ) -> Result<pb::CopyToResponse, Status> {
        let start = match inbound.message().await? {
            Some(pb::CopyToRequest {
                msg: Some(CopyMsg::Start(start)),
            }) => start,
            _ => return Err(Status::invalid_argument("the first message must be start")),
        };
        let path = container_path(&start.path)?;
        match self.stat(&start.name, &path).await? {
            Some(s) if s.is_dir => {}
            _ => {
                return Err(Status::failed_precondition(format!(
                    "{}:{path} is not a directory",
                    start.name
                )));
            }
        }
        let bytes = Arc::new(AtomicU64::new(0));
        let counted = bytes.clone();
        let body = inbound.map(move |m| match m {
            Ok(pb::CopyToRequest {
                msg: Some(CopyMsg::Data(data)),
            }) => {
                counted.fetch_add(data.len() as u64, Ordering::Relaxed);
                Ok(data)
            }
            Ok(_) => Err(std::io::Error::other("a second start in one copy")),
            Err(status) => Err(std::io::Error::other(status.message().to_string())),
        });
        if self.core.driver.archives_through_engine() {
            let container = self.container_of(&start.name)?;
            self.core
                .driver
                .upload_archive(&container, &path, Box::pin(body))
                .await
                .map_err(HubError::from)?;
        } else {
            self.core
                .upload_over_link(&start.name, &path, Box::pin(body))
                .await?;
        }
        Ok(pb::CopyToResponse {
            bytes: bytes.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_paths_are_absolute_and_stay_where_named() {
        assert_eq!(
            container_path("/workspace//a/./b/").unwrap(),
            "/workspace/a/b"
        );
        assert_eq!(container_path("/").unwrap(), "/");
        assert!(container_path("workspace").is_err());
        assert!(container_path("/workspace/../etc").is_err());
    }
}
