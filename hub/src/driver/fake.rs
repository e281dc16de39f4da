//! An in-memory driver for unit tests of the hub's orchestration (never used against a real engine).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;

use bytes::Bytes;

use super::{
    ByteStream, ContainerSpec, ContainerState, Driver, DriverError, EventStream, FileSpec,
    ImageInfo, LineStream, LogStream, LogsOptions, NetworkInfo, NetworkSpec, PathStat, Result,
};

/// Which call should fail.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum FailAt {
    #[default]
    Nothing,
    Start,
    /// Start fails, and so does removing the container afterwards.
    StartAndRemove,
}

#[derive(Debug, Default)]
pub struct FakeDriver {
    pub fail: Mutex<FailAt>,
    pub containers: Mutex<HashMap<String, ContainerSpec>>,
    pub volumes: Mutex<HashSet<String>>,
    /// Every upload, in order: (container, files).
    pub uploads: Mutex<Vec<(String, Vec<FileSpec>)>>,
    /// Networks containers were connected to: (container, network).
    pub connected: Mutex<Vec<(String, String)>>,
    /// What `list_managed` reports (labelled containers, as a test sets them up).
    pub managed: Mutex<Vec<ContainerState>>,
}

impl FakeDriver {
    pub fn failing(at: FailAt) -> Self {
        Self {
            fail: Mutex::new(at),
            ..Default::default()
        }
    }

    fn fail(&self) -> FailAt {
        *self.fail.lock().unwrap()
    }
}

#[async_trait::async_trait]
impl Driver for FakeDriver {
    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn engine_cpus(&self) -> Result<u32> {
        Ok(2)
    }

    async fn inspect_image(&self, reference: &str) -> Result<Option<ImageInfo>> {
        Ok(Some(ImageInfo {
            id: format!("sha256:{reference}"),
            tags: vec![reference.to_string()],
            labels: HashMap::new(),
            size_bytes: 0,
        }))
    }

    async fn list_images(&self, _labels: &[String]) -> Result<Vec<ImageInfo>> {
        Ok(Vec::new())
    }

    async fn remove_image(&self, _reference: &str) -> Result<()> {
        Ok(())
    }

    async fn commit_container(
        &self,
        container: &str,
        _repo: &str,
        _tag: Option<&str>,
        _labels: HashMap<String, String>,
        _changes: &str,
    ) -> Result<String> {
        Ok(format!("sha256:commit-{container}"))
    }

    fn download_archive(&self, _container: &str, _path: &str) -> ByteStream {
        Box::pin(futures::stream::empty())
    }

    async fn path_stat(&self, _container: &str, _path: &str) -> Result<Option<PathStat>> {
        Ok(None)
    }

    async fn upload_archive(&self, _container: &str, _path: &str, _tar: ByteStream) -> Result<()> {
        Ok(())
    }

    async fn connect_network(&self, container: &str, network: &str) -> Result<()> {
        self.connected
            .lock()
            .unwrap()
            .push((container.to_string(), network.to_string()));
        Ok(())
    }

    fn logs(&self, _container: &str, _options: LogsOptions) -> LogStream {
        Box::pin(futures::stream::empty())
    }

    async fn network_exists(&self, name: &str) -> Result<bool> {
        Ok(name != "missing")
    }

    async fn ensure_network(&self, spec: &NetworkSpec) -> Result<NetworkInfo> {
        Ok(NetworkInfo {
            id: "net".into(),
            gateway: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            isolated: spec.isolated,
            containers: 0,
            labels: spec.labels.clone(),
        })
    }

    async fn inspect_network(&self, name: &str) -> Result<Option<NetworkInfo>> {
        if name == "missing" {
            return Ok(None);
        }
        self.ensure_network(&NetworkSpec {
            name: name.to_string(),
            ..Default::default()
        })
        .await
        .map(Some)
    }

    async fn remove_network(&self, _name: &str) -> Result<()> {
        Ok(())
    }

    async fn image_id(&self, reference: &str) -> Result<Option<String>> {
        Ok(Some(format!("sha256:{reference}")))
    }

    async fn import_rootfs(
        &self,
        _reference: &str,
        _tar: ByteStream,
        _changes: Vec<String>,
    ) -> Result<()> {
        Ok(())
    }

    fn build_image<'a>(
        &'a self,
        _r: &'a str,
        _c: Bytes,
        _a: HashMap<String, String>,
    ) -> LineStream<'a> {
        Box::pin(futures::stream::empty())
    }

    async fn create_volume(
        &self,
        name: &str,
        _labels: HashMap<String, String>,
        _driver: Option<&super::VolumeDriver>,
    ) -> Result<()> {
        self.volumes.lock().unwrap().insert(name.to_string());
        Ok(())
    }

    async fn remove_volume(&self, name: &str) -> Result<()> {
        self.volumes.lock().unwrap().remove(name);
        Ok(())
    }

    async fn volume_exists(&self, name: &str) -> Result<bool> {
        Ok(self.volumes.lock().unwrap().contains(name))
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String> {
        let id = format!("id-{}", spec.name);
        self.containers
            .lock()
            .unwrap()
            .insert(id.clone(), spec.clone());
        Ok(id)
    }

    async fn upload_files(&self, container: &str, _dir: &str, files: &[FileSpec]) -> Result<()> {
        self.uploads
            .lock()
            .unwrap()
            .push((container.to_string(), files.to_vec()));
        Ok(())
    }

    async fn start_container(&self, _container: &str) -> Result<()> {
        match self.fail() {
            FailAt::Start | FailAt::StartAndRemove => {
                Err(DriverError::Engine("cannot start: boom".into()))
            }
            FailAt::Nothing => Ok(()),
        }
    }

    async fn stop_container(&self, _container: &str, _timeout_secs: Option<u32>) -> Result<()> {
        Ok(())
    }

    async fn remove_container(&self, container: &str) -> Result<()> {
        if self.fail() == FailAt::StartAndRemove {
            return Err(DriverError::Unreachable("connection reset".into()));
        }
        self.containers.lock().unwrap().remove(container);
        self.managed.lock().unwrap().retain(|c| c.id != container);
        Ok(())
    }

    async fn inspect_container(&self, container: &str) -> Result<Option<ContainerState>> {
        Ok(self
            .containers
            .lock()
            .unwrap()
            .get(container)
            .map(|spec| ContainerState {
                id: container.to_string(),
                name: spec.name.clone(),
                started_at_ms: 0,
                running: false,
                status: "created".into(),
                exit_code: 0,
                oom_killed: false,
                error: String::new(),
                labels: spec.labels.clone(),
            }))
    }

    async fn logs_tail(&self, _container: &str, _lines: usize) -> Result<Vec<String>> {
        Ok(vec!["agent starting".into()])
    }

    async fn list_managed(&self, _hub_id: &str) -> Result<Vec<ContainerState>> {
        Ok(self.managed.lock().unwrap().clone())
    }

    fn events(&self, _hub_id: &str) -> EventStream {
        Box::pin(futures::stream::pending())
    }

    async fn nodes(&self) -> Result<Vec<super::NodeInfo>> {
        Ok(vec![super::NodeInfo {
            hostname: "fake".into(),
            role: "engine".into(),
            state: "ready".into(),
            ..Default::default()
        }])
    }
}
