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
