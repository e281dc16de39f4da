//! The agents' networks. All agents share one bridge (`--network`) with traffic between containers
//! off, so a compromised sandbox cannot probe the others; each still reaches the hub through the
//! gateway. Agents that should talk join a group (`create --group`, or a profile's `group`): a second
//! network per group, where traffic between its members is on. A group's network goes with its last
//! member.

use std::collections::HashMap;

use crate::core::Core;
use crate::driver::{Driver, DriverError, NetworkInfo, NetworkSpec, labels};
use crate::error::{HubError, Result};

/// The network of agents in `group`, named after the agents' own network.
pub fn group_network(base: &str, group: &str) -> String {
    format!("{base}-group-{group}")
}

/// Makes sure the agents' network exists with traffic between containers off. A network made by an
/// older hub, with it on, is made again when no container is attached; otherwise it is kept, and
/// the hub says loudly that its agents can reach each other until it is recreated.
pub async fn ensure_agents_network(driver: &dyn Driver, name: &str) -> Result<NetworkInfo> {
    let spec = NetworkSpec {
        name: name.to_string(),
        labels: HashMap::from([(labels::MANAGED.to_string(), "true".to_string())]),
        isolated: true,
    };
    let network = driver.ensure_network(&spec).await?;
    if network.isolated {
        return Ok(network);
    }
    if network.containers == 0 {
        tracing::info!(
            network = name,
            "recreating the agents' network with traffic between containers off"
        );
        driver.remove_network(name).await?;
        return Ok(driver.ensure_network(&spec).await?);
    }
    tracing::error!(
        network = name,
        containers = network.containers,
        "the agents' network lets containers reach each other (made before agents were isolated): stop the agents on it, `docker network rm {name}`, and start the hub again to recreate it isolated"
    );
    Ok(network)
}

impl Core {
    /// Joins a created container to its group's network, making the network on first use.
    pub(crate) async fn join_group(&self, container: &str, group: &str) -> Result<()> {
        let name = group_network(&self.settings.network, group);
        let spec = NetworkSpec {
            name: name.clone(),
            labels: HashMap::from([
                (labels::MANAGED.to_string(), "true".to_string()),
                (labels::HUB.to_string(), self.settings.hub_id.clone()),
                (labels::GROUP.to_string(), group.to_string()),
            ]),
            isolated: false,
        };
        let network = self.driver.ensure_network(&spec).await?;
        if network.labels.get(labels::GROUP).map(String::as_str) != Some(group) {
            return Err(HubError::Conflict(format!(
                "network {name} exists but was not made by docker-agent for group {group:?}; remove it or choose another group"
            )));
        }
        self.driver.connect_network(container, &name).await?;
        Ok(())
    }

    /// Removes a group's network once no container is attached (the last member was destroyed). One
    /// still in use stays; one this hub did not make is never touched.
    pub(crate) async fn leave_group(&self, group: &str) {
        let name = group_network(&self.settings.network, group);
        let ours = match self.driver.inspect_network(&name).await {
            Ok(Some(n)) => {
                n.containers == 0
                    && n.labels.get(labels::HUB) == Some(&self.settings.hub_id)
                    && n.labels.get(labels::GROUP).map(String::as_str) == Some(group)
            }
            _ => false,
        };
        if !ours {
            return;
        }
        match self.driver.remove_network(&name).await {
            Ok(()) | Err(DriverError::NotFound(_)) | Err(DriverError::Conflict(_)) => {}
            Err(e) => {
                tracing::warn!(network = %name, error = %e, "failed to remove a group's network")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_networks_are_named_after_the_agents_network() {
        assert_eq!(
            group_network("docker-agent", "web"),
            "docker-agent-group-web"
        );
    }
}
