//! The three-node Swarm test cluster (`cli/tests/swarm/cluster.sh`) as a fixture: made with a random
//! name, torn down completely on drop, whatever the test did.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use rand::Rng;

/// A running test cluster and its addresses.
pub struct Cluster {
    name: String,
    vars: HashMap<String, String>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/swarm/cluster.sh")
}

impl Cluster {
    /// Brings the cluster up (a few seconds); fails the test with the script's output when it cannot.
    pub async fn up() -> Self {
        let name = format!("c{:05x}", rand::rng().random_range(0..0xf_ffff));
        let out = tokio::task::spawn_blocking({
            let name = name.clone();
            move || {
                Command::new("bash")
                    .arg(script())
                    .args(["up", &name])
                    .output()
            }
        })
        .await
        .unwrap()
        .expect("run cluster.sh");
        assert!(
            out.status.success(),
            "the test cluster did not come up:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let vars = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self { name, vars }
    }

    fn var(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("cluster.sh printed no {key}"))
    }

    /// The machine's address on the cluster's switch: where node containers reach a hub.
    pub fn host_addr(&self) -> &str {
        self.var("HOST_ADDR")
    }

    /// `IP:PORT` on the machine's switch address, free now: a hub's agents must be told where to dial
    /// before it binds.
    pub fn free_listen_addr(&self) -> String {
        let port = std::net::TcpListener::bind((self.host_addr(), 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        format!("{}:{port}", self.host_addr())
    }

    /// Node `n`'s engine (1 is the manager), as `tcp://IP:2375`.
    pub fn node(&self, n: u8) -> &str {
        self.var(&format!("NODE{n}"))
    }

    /// A bollard client for node `n`'s engine.
    pub async fn docker(&self, n: u8) -> bollard::Docker {
        let addr = self.node(n).trim_start_matches("tcp://").to_string();
        bollard::Docker::connect_with_http(&addr, 120, bollard::API_DEFAULT_VERSION)
            .unwrap()
            .negotiate_version()
            .await
            .unwrap()
    }

    /// Copies an image of the machine's engine onto node `n`'s, as `docker save | docker load`.
    pub async fn copy_image(&self, n: u8, image: &str) {
        let script = format!("docker save {image} | docker -H {} load -q", self.node(n));
        let out = tokio::task::spawn_blocking(move || {
            Command::new("bash")
                .args(["-o", "pipefail", "-c", &script])
                .output()
        })
        .await
        .unwrap()
        .unwrap();
        assert!(
            out.status.success(),
            "copy {image}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Cluster {
    /// Cuts node `n`'s link to the switch (node loss); `heal` restores it.
    pub fn cut(&self, n: u8) {
        self.link(n, "cut");
    }

    pub fn heal(&self, n: u8) {
        self.link(n, "heal");
    }

    fn link(&self, n: u8, how: &str) {
        let status = Command::new("bash")
            .arg(script())
            .args([how, &self.name, &n.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "cluster.sh {how} {n}");
    }

    /// What a hub left on node `n`'s engine: containers with its label, and volumes with its label or
    /// its name prefix (a Swarm makes a service's volumes from the mount, without the hub's label).
    pub async fn leftovers(&self, n: u8, hub_id: &str, prefix: &str) -> Vec<String> {
        let engine = self.docker(n).await;
        let label = HashMap::from([(
            "label".to_string(),
            vec![format!("dev.docker-agent.hub={hub_id}")],
        )]);
        let containers = engine
            .list_containers(Some(bollard::query_parameters::ListContainersOptions {
                all: true,
                filters: Some(label),
                ..Default::default()
            }))
            .await
            .unwrap();
        let volumes = engine
            .list_volumes(None::<bollard::query_parameters::ListVolumesOptions>)
            .await
            .unwrap()
            .volumes
            .unwrap_or_default();
        containers
            .into_iter()
            .flat_map(|c| c.names.unwrap_or_default())
            .chain(
                volumes
                    .into_iter()
                    .filter(|v| {
                        v.labels.get("dev.docker-agent.hub").map(String::as_str) == Some(hub_id)
                            || v.name.starts_with(&format!("docker-agent-{prefix}-"))
                    })
                    .map(|v| v.name),
            )
            .collect()
    }

    /// The Swarm services and secrets on the manager: a hub's (by its label), or all of them.
    pub async fn swarm_leftovers(&self, hub_id: Option<&str>) -> Vec<String> {
        let manager = self.docker(1).await;
        let filters = hub_id.map(|id| {
            HashMap::from([(
                "label".to_string(),
                vec![format!("dev.docker-agent.hub={id}")],
            )])
        });
        let services = manager
            .list_services(Some(bollard::query_parameters::ListServicesOptions {
                filters: filters.clone(),
                ..Default::default()
            }))
            .await
            .unwrap();
        let secrets = manager
            .list_secrets(Some(bollard::query_parameters::ListSecretsOptions {
                filters,
            }))
            .await
            .unwrap();
        services
            .into_iter()
            .filter_map(|s| s.spec?.name)
            .chain(secrets.into_iter().filter_map(|s| s.spec?.name))
            .collect()
    }

    /// The registry's `host:port`.
    pub fn registry(&self) -> &str {
        self.var("REGISTRY")
    }

    /// The node number (1-3) of a Swarm node id.
    pub async fn node_number(&self, node_id: &str) -> u8 {
        let node = self.docker(1).await.inspect_node(node_id).await.unwrap();
        let host = node.description.unwrap().hostname.unwrap();
        host.rsplit('n').next().unwrap().parse().unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let out = Command::new("bash")
            .arg(script())
            .args(["down", &self.name])
            .output();
        if !matches!(&out, Ok(o) if o.status.success()) {
            eprintln!("cluster.sh down {} failed: {out:?}", self.name);
        }
    }
}
