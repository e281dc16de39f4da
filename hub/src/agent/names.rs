//! Agent names and the names of the Docker objects derived from them (container, volumes).

use crate::error::{HubError, Result};

/// Words `docker-agent task` takes as subcommands; an agent with such a name could not be given tasks.
const RESERVED_NAMES: &[&str] = &["run", "get", "logs", "list", "cancel"];

/// Agent names become container names and hostnames: lower-case DNS labels.
pub fn validate_name(name: &str) -> Result<()> {
    if RESERVED_NAMES.contains(&name) {
        return Err(HubError::InvalidArgument(format!(
            "invalid agent name {}: it is reserved (a `docker-agent task` subcommand)",
            crate::error::shown(name)
        )));
    }
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(HubError::InvalidArgument(format!(
            "invalid agent name {}: use 1-63 lower-case letters, digits and '-', not starting or ending with '-'",
            crate::error::shown(name)
        )))
    }
}

pub fn container_name(name: &str) -> String {
    format!("docker-agent-{name}")
}

/// The small volume at /etc/docker-agent holding the agent's token, the hub's CA and the setup plan.
/// A volume, not the container's filesystem, so `docker commit` (and snapshots) never capture them.
pub fn secrets_volume_name(name: &str) -> String {
    format!("docker-agent-{name}-secrets")
}

pub fn volume_name(name: &str) -> String {
    format!("docker-agent-{name}-workspace")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["demo", "a", "build-01", "x".repeat(63).as_str()] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Demo",
            "-a",
            "a-",
            "a_b",
            "a.b",
            "a b",
            &"x".repeat(64),
            "../x",
        ] {
            let err = validate_name(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid agent name"), "{bad}: {err}");
        }
    }

    #[test]
    fn docker_object_names() {
        assert_eq!(container_name("demo"), "docker-agent-demo");
        assert_eq!(volume_name("demo"), "docker-agent-demo-workspace");
    }
}
