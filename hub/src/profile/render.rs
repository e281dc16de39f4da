//! Writing a resolved profile back out (TOML for `profiles show`, JSON for `--json` and snapshot labels) in a shape the parser reads again.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{FileOwner, MountKind, Profile};

#[derive(Serialize)]
struct Doc<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    base: Option<&'a str>,
    user: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    network: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    read_only_root: bool,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    placement: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    workspace: Option<Workspace<'a>>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    packages: &'a [String],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    environment: &'a BTreeMap<String, String>,
    resources: Resources,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    files: Vec<File<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    setup_tasks: Vec<Setup<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    mounts: Vec<Mount<'a>>,
}

#[derive(Serialize)]
struct Workspace<'a> {
    driver: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    options: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Resources {
    #[serde(skip_serializing_if = "Option::is_none")]
    cpus: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pids: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_agent_output: Option<String>,
}

#[derive(Serialize)]
struct File<'a> {
    path: &'a str,
    mode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<&'static str>,
    content: &'a str,
}

#[derive(Serialize)]
struct Setup<'a> {
    command: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
}

#[derive(Serialize)]
struct Mount<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    source: &'a str,
    target: &'a str,
    read_only: bool,
}

/// Memory as the largest whole unit, so `4g` comes back as `4g`.
pub fn format_size(bytes: u64) -> String {
    for (unit, shift) in [("t", 40), ("g", 30), ("m", 20), ("k", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

fn doc(p: &Profile) -> Doc<'_> {
    Doc {
        name: &p.name,
        description: &p.description,
        base: p.base.as_deref(),
        user: &p.user,
        network: p.network.as_deref(),
        group: p.group.as_deref(),
        read_only_root: p.read_only_root,
        placement: &p.placement,
        workspace: p.workspace.as_ref().map(|w| Workspace {
            driver: &w.driver,
            options: &w.options,
        }),
        packages: &p.packages,
        environment: &p.environment,
        resources: Resources {
            cpus: (p.cpus > 0.0).then_some(p.cpus),
            memory: (p.memory_bytes > 0).then(|| format_size(p.memory_bytes)),
            pids: (p.pids > 0).then_some(p.pids),
            max_output: (p.max_output > 0).then(|| format_size(p.max_output)),
            max_agent_output: (p.max_agent_output > 0).then(|| format_size(p.max_agent_output)),
        },
        files: p
            .files
            .iter()
            .map(|f| File {
                path: &f.path,
                mode: format!("{:04o}", f.mode),
                owner: f.owner.map(|o| match o {
                    FileOwner::Root => "root",
                    FileOwner::User => "user",
                }),
                content: &f.content,
            })
            .collect(),
        setup_tasks: p
            .setup_tasks
            .iter()
            .map(|t| Setup {
                command: &t.command,
                description: &t.description,
                user: t.user.as_deref(),
                timeout: t.timeout.map(super::parse::format_duration),
            })
            .collect(),
        mounts: p
            .mounts
            .iter()
            .map(|m| Mount {
                kind: match m.kind {
                    MountKind::Bind => "bind",
                    MountKind::Volume => "volume",
                },
                source: &m.source,
                target: &m.target,
                read_only: m.read_only,
            })
            .collect(),
    }
}

impl Profile {
    pub fn to_toml(&self) -> String {
        toml::to_string(&doc(self)).expect("a profile always serialises")
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&doc(self)).expect("a profile always serialises")
    }

    pub fn to_json_value(&self) -> serde_json::Value {
        serde_json::to_value(doc(self)).expect("a profile always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Format, ProfileCatalog, parse};
    use super::*;

    #[test]
    fn every_builtin_profile_round_trips_through_toml_and_json() {
        let catalog = ProfileCatalog::load(None);
        assert!(catalog.errors.is_empty(), "{:?}", catalog.errors);
        for p in catalog.iter() {
            let again = parse(&p.to_toml(), Format::Toml, "rendered").unwrap();
            assert_eq!(&again.with_origin(&p.origin), p, "{}", p.to_toml());
            let again = parse(&p.to_json(), Format::Json, "rendered").unwrap();
            assert_eq!(&again.with_origin(&p.origin), p);
        }
    }

    #[test]
    fn sizes_render_in_their_largest_unit() {
        assert_eq!(format_size(4 << 30), "4g");
        assert_eq!(format_size(1536 << 20), "1536m");
        assert_eq!(format_size(1000), "1000");
    }
}
