//! Images on the Docker engine: inspect, list, remove, build, import, commit, and container archives (for snapshots).

use std::collections::HashMap;

use bollard::errors::Error as BollardError;
use bollard::models::ContainerConfig;
use bollard::query_parameters::{
    BuildImageOptions, CommitContainerOptions, CreateImageOptions, DownloadFromContainerOptions,
    ListImagesOptions, RemoveImageOptions, UploadToContainerOptions,
};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::{DockerDriver, map_err};
use crate::driver::{ByteStream, DriverError, ImageInfo, LineStream, PathStat, Result};

impl DockerDriver {
    pub(super) async fn image(&self, reference: &str) -> Result<Option<ImageInfo>> {
        match self.docker.inspect_image(reference).await {
            Ok(image) => Ok(Some(ImageInfo {
                id: image.id.unwrap_or_default(),
                tags: image.repo_tags.unwrap_or_default(),
                labels: image.config.and_then(|c| c.labels).unwrap_or_default(),
                size_bytes: image.size.unwrap_or_default(),
            })),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(map_err(format!("image {reference}"))(e)),
        }
    }

    pub(super) async fn images_labelled(&self, labels: &[String]) -> Result<Vec<ImageInfo>> {
        let options = ListImagesOptions {
            filters: Some(HashMap::from([("label".to_string(), labels.to_vec())])),
            ..Default::default()
        };
        let list = self
            .docker
            .list_images(Some(options))
            .await
            .map_err(map_err("images"))?;
        Ok(list
            .into_iter()
            .map(|i| ImageInfo {
                id: i.id,
                tags: i.repo_tags,
                labels: i.labels,
                size_bytes: i.size,
            })
            .collect())
    }

    pub(super) async fn remove_image_ref(&self, reference: &str) -> Result<()> {
        let options = RemoveImageOptions {
            force: false,
            noprune: false,
            ..Default::default()
        };
        self.docker
            .remove_image(reference, Some(options), None)
            .await
            .map(|_| ())
            .map_err(map_err(format!("image {reference}")))
    }

    pub(super) async fn commit(
        &self,
        container: &str,
        repo: &str,
        tag: Option<&str>,
        labels: HashMap<String, String>,
        changes: &str,
    ) -> Result<String> {
        // Without a repo Docker makes an untagged image, which is what an intermediate step wants.
        let options = CommitContainerOptions {
            container: Some(container.to_string()),
            repo: tag.map(|_| repo.to_string()),
            tag: tag.map(str::to_string),
            pause: true,
            changes: (!changes.is_empty()).then(|| changes.to_string()),
            ..Default::default()
        };
        let config = ContainerConfig {
            labels: Some(labels),
            ..Default::default()
        };
        let id = self
            .docker
            .commit_container(options, config)
            .await
            .map_err(map_err(format!("container {container}")))?;
        Ok(id.id)
    }

    pub(super) fn download(&self, container: &str, path: &str) -> ByteStream {
        let what = format!("{path} in container {container}");
        let options = DownloadFromContainerOptions {
            path: path.to_string(),
        };
        Box::pin(
            self.docker
                .download_from_container(container, Some(options))
                .map_err(move |e| std::io::Error::other(map_err(what.clone())(e).to_string())),
        )
    }

    pub(super) async fn stat(&self, container: &str, path: &str) -> Result<Option<PathStat>> {
        let options = bollard::query_parameters::ContainerArchiveInfoOptions {
            path: path.to_string(),
        };
        match self
            .docker
            .get_container_archive_info(container, Some(options))
            .await
        {
            // Go's os.FileMode: the directory bit is the top one.
            Ok(stat) => Ok(Some(PathStat {
                is_dir: stat.file_mode & (1 << 31) != 0,
                size: stat.size,
                mode: stat.file_mode & 0o7777,
            })),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(map_err(format!("{path} in container {container}"))(e)),
        }
    }

    pub(super) async fn upload(&self, container: &str, path: &str, tar: ByteStream) -> Result<()> {
        let options = UploadToContainerOptions {
            path: path.to_string(),
            ..Default::default()
        };
        self.docker
            .upload_to_container(container, Some(options), bollard::body_try_stream(tar))
            .await
            .map_err(map_err(format!("container {container}")))
    }

    pub(super) async fn import(
        &self,
        reference: &str,
        tar: ByteStream,
        changes: Vec<String>,
    ) -> Result<()> {
        let (repo, tag) = reference.rsplit_once(':').unwrap_or((reference, "latest"));
        let options = CreateImageOptions {
            from_src: Some("-".into()),
            repo: Some(repo.into()),
            tag: Some(tag.into()),
            changes,
            ..Default::default()
        };
        let body = bollard::body_try_stream(tar);
        let mut progress = self.docker.create_image(Some(options), Some(body), None);
        while let Some(item) = progress.next().await {
            item.map_err(map_err(format!("image {reference}")))?;
        }
        Ok(())
    }

    /// Builds with the classic builder: its `Step N/M` lines are the progress. Dropping the stream
    /// closes the request, which makes the engine abandon the build.
    pub(super) fn build<'a>(
        &'a self,
        reference: &'a str,
        context: Bytes,
        build_args: HashMap<String, String>,
    ) -> LineStream<'a> {
        let options = BuildImageOptions {
            dockerfile: "Dockerfile".into(),
            t: Some(reference.into()),
            rm: true,
            forcerm: true,
            buildargs: Some(build_args),
            ..Default::default()
        };
        let stream = self
            .docker
            .build_image(options, None, Some(bollard::body_full(context)))
            .map_err(move |e| map_err(format!("image {reference}"))(e))
            .and_then(|info| async move {
                if let Some(detail) = info.error_detail {
                    return Err(DriverError::Engine(
                        detail.message.unwrap_or_else(|| "build failed".into()),
                    ));
                }
                Ok(info.stream.or(info.status).unwrap_or_default())
            })
            .try_filter(|line| futures::future::ready(!line.trim().is_empty()));
        Box::pin(stream)
    }
}
