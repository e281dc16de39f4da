//! Profiles: what an agent's container gets (environment, resources). Built-in ones ship in `profiles/` and are compiled into the binary.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The profile used when `create` names none.
pub const DEFAULT_PROFILE: &str = "minimal";

const BUILTIN: &[(&str, &str)] = &[("minimal", include_str!("../../profiles/minimal.toml"))];

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("profile {source_name}: {message}")]
    Invalid {
        source_name: String,
        message: String,
    },
    #[error("unknown profile {name:?} (available: {available})")]
    Unknown { name: String, available: String },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    #[serde(default)]
    resources: RawResources,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    cpus: Option<f64>,
    memory: Option<String>,
    pids: Option<i64>,
}

/// A validated profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    pub description: String,
    pub environment: BTreeMap<String, String>,
    pub cpus: f64,
    pub memory_bytes: u64,
    pub pids: i64,
    /// The TOML text, hashed into the image tag.
    pub source_text: String,
    /// "builtin" or a file path.
    pub origin: String,
}

/// Parses `512m`, `4g`, `1.5G`, `1024k` or a plain byte count.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (use e.g. 512m or 4g)"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("{text:?} has an unknown unit (use k, m, g or t)")),
    };
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes < 1.0 {
        return Err(format!("{text:?} is not a positive size"));
    }
    Ok(bytes as u64)
}

fn validate(raw: RawProfile, source_text: &str, origin: &str) -> Result<Profile, ProfileError> {
    let invalid = |message: String| ProfileError::Invalid {
        source_name: origin.to_string(),
        message,
    };
    if raw.name.trim().is_empty() {
        return Err(invalid("field `name` is empty".into()));
    }
    let cpus = raw.resources.cpus.unwrap_or(0.0);
    if !(0.0..=1024.0).contains(&cpus) {
        return Err(invalid(format!(
            "field `resources.cpus`: {cpus} is not a CPU count between 0 and 1024"
        )));
    }
    let memory_bytes = match &raw.resources.memory {
        Some(m) => parse_size(m).map_err(|e| invalid(format!("field `resources.memory`: {e}")))?,
        None => 0,
    };
    if memory_bytes != 0 && memory_bytes < 6 << 20 {
        return Err(invalid(
            "field `resources.memory`: Docker needs at least 6m".into(),
        ));
    }
    let pids = raw.resources.pids.unwrap_or(0);
    if pids < 0 {
        return Err(invalid(format!(
            "field `resources.pids`: {pids} is negative"
        )));
    }
    for key in raw.environment.keys() {
        if key.is_empty() || key.contains('=') || key.starts_with("DOCKER_AGENT_") {
            return Err(invalid(format!(
                "field `environment`: {key:?} is not allowed (empty, contains '=', or reserved DOCKER_AGENT_ prefix)"
            )));
        }
    }
    Ok(Profile {
        name: raw.name,
        description: raw.description,
        environment: raw.environment,
        cpus,
        memory_bytes,
        pids,
        source_text: source_text.to_string(),
        origin: origin.to_string(),
    })
}

/// Parses one profile from TOML text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Profile, ProfileError> {
    let raw: RawProfile = toml::from_str(text).map_err(|e| ProfileError::Invalid {
        source_name: origin.to_string(),
        message: e.message().to_string(),
    })?;
    validate(raw, text, origin)
}

/// The profiles a hub offers.
#[derive(Debug, Clone)]
pub struct ProfileSet {
    profiles: BTreeMap<String, Profile>,
}

impl ProfileSet {
    pub fn builtin() -> Result<Self, ProfileError> {
        let mut profiles = BTreeMap::new();
        for (name, text) in BUILTIN {
            let p = parse(text, &format!("builtin {name}"))?;
            profiles.insert(
                p.name.clone(),
                Profile {
                    origin: "builtin".into(),
                    ..p
                },
            );
        }
        Ok(Self { profiles })
    }

    pub fn get(&self, name: &str) -> Result<&Profile, ProfileError> {
        self.profiles
            .get(name)
            .ok_or_else(|| ProfileError::Unknown {
                name: name.to_string(),
                available: self.profiles.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Profile> {
        self.profiles.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_profiles_parse() {
        let set = ProfileSet::builtin().unwrap();
        let minimal = set.get(DEFAULT_PROFILE).unwrap();
        assert_eq!(minimal.memory_bytes, 1 << 30);
        assert!(minimal.cpus > 0.0);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("4g").unwrap(), 4 << 30);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("4x").unwrap_err().contains("unknown unit"));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn errors_name_the_source_and_field() {
        let err = parse("name = \"x\"\nbogus = 1\n", "p.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("profile p.toml:"), "{err}");
        assert!(err.contains("bogus"), "{err}");
        let err = parse("name = \"x\"\n[resources]\nmemory = \"4q\"\n", "p.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("resources.memory"), "{err}");
        let err = parse("name = \"x\"\n[resources]\ncpus = -1\n", "p.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("resources.cpus"), "{err}");
    }

    #[test]
    fn unknown_profile_lists_the_known_ones() {
        let set = ProfileSet::builtin().unwrap();
        let err = set.get("nope").unwrap_err().to_string();
        assert_eq!(err, "unknown profile \"nope\" (available: minimal)");
    }
}
