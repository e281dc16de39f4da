//! Checking every field of a profile and turning the raw file into a `Profile`, with errors that
//! name the field.

use std::collections::BTreeMap;

use super::raw::{RawFile, RawMount, RawProfile, RawResources, RawSetupTask, Scalar, parse_size};
use super::{AGENT_BINARY, FileOwner, MountKind, Profile, ProfileFile, ProfileMount, SetupTask};

/// Paths the hub and the agent own inside every container.
const RESERVED_TARGETS: &[&str] = &[
    "/etc/docker-agent",
    "/var/lib/docker-agent",
    "/workspace",
    // The agent itself: no file may replace it and no mount may hide it.
    AGENT_BINARY,
];

pub(super) fn validate(raw: RawProfile) -> Result<Profile, String> {
    let name = raw
        .name
        .ok_or("field `name` is missing (every profile names itself)")?;
    validate_profile_name(&name).map_err(|e| format!("field `name`: {e}"))?;
    let base = match raw.base {
        Some(b) if b.trim().is_empty() => {
            return Err("field `base`: empty (leave it out for the default base)".into());
        }
        Some(b) if b.contains(char::is_whitespace) => {
            return Err(format!("field `base`: {b:?} is not an image reference"));
        }
        other => other,
    };
    let packages = validate_packages(raw.packages)?;
    let environment = validate_environment(raw.environment)?;
    let user = match raw.user {
        None => super::DEFAULT_USER.to_string(),
        Some(u) if is_user_name(&u) => u,
        Some(u) => {
            return Err(format!(
                "field `user`: {u:?} is not a user name (lower-case letters, digits, '_' and '-', starting with a letter or '_')"
            ));
        }
    };
    let files = validate_files(raw.files, raw.read_only_root)?;
    let setup_tasks = validate_setup_tasks(raw.setup_tasks)?;
    let (cpus, memory_bytes, pids) = validate_limits(&raw.resources)?;
    let network = match raw.network {
        None => None,
        Some(n) if is_docker_object_name(&n) => Some(n),
        Some(n) => return Err(format!("field `network`: {n:?} is not a network name")),
    };
    let group = match raw.group {
        None => None,
        Some(g) => Some(validate_group(&g).map_err(|e| format!("field `group`: {e}"))?),
    };
    let max_output = output_bound("max_output", raw.resources.max_output.as_deref())?;
    let max_agent_output = output_bound(
        "max_agent_output",
        raw.resources.max_agent_output.as_deref(),
    )?;
    let mounts = validate_mounts(raw.mounts)?;
    let placement = validate_placement(raw.placement)?;
    let workspace = raw.workspace.map(validate_workspace).transpose()?;
    Ok(Profile {
        name,
        description: raw.description,
        base,
        packages,
        user,
        environment,
        files,
        setup_tasks,
        cpus,
        memory_bytes,
        pids,
        max_output,
        max_agent_output,
        network,
        group,
        mounts,
        read_only_root: raw.read_only_root,
        placement,
        workspace,
        origin: String::new(),
    })
}

fn validate_workspace(raw: super::raw::RawWorkspace) -> Result<super::WorkspaceVolume, String> {
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/' | b':'))
    };
    if !name_ok(&raw.driver) {
        return Err(format!(
            "field `workspace.driver`: {:?} is not a volume driver name (e.g. local)",
            raw.driver
        ));
    }
    for key in raw.options.keys() {
        if !name_ok(key) {
            return Err(format!(
                "field `workspace.options`: {key:?} is not an option name (e.g. type, o, device)"
            ));
        }
    }
    Ok(super::WorkspaceVolume {
        driver: raw.driver,
        options: raw.options,
    })
}

/// Swarm's constraint grammar: `node.ATTRIBUTE==VALUE` or `!=`, nothing Swarm would take differently.
fn validate_placement(raw: Vec<String>) -> Result<Vec<String>, String> {
    for (i, constraint) in raw.iter().enumerate() {
        let (key, value) = constraint
            .split_once("==")
            .or_else(|| constraint.split_once("!="))
            .ok_or_else(|| {
                format!("field `placement[{i}]`: {constraint:?} must be KEY==VALUE or KEY!=VALUE (e.g. node.labels.gpu==true)")
            })?;
        let (key, value) = (key.trim(), value.trim());
        let key_ok = (key.starts_with("node.") || key.starts_with("engine.labels."))
            && key.len() > "node.".len()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if !key_ok {
            return Err(format!(
                "field `placement[{i}]`: {key:?} is not a Swarm placement attribute (node.id, node.hostname, node.role, node.platform.os, node.labels.NAME, engine.labels.NAME)"
            ));
        }
        if value.is_empty() || value.contains(['=', '!']) {
            return Err(format!(
                "field `placement[{i}]`: {constraint:?} needs one value after the operator"
            ));
        }
    }
    Ok(raw)
}

fn validate_packages(raw: Vec<String>) -> Result<Vec<String>, String> {
    let mut packages = Vec::new();
    for (i, package) in raw.into_iter().enumerate() {
        if !is_package_name(&package) {
            return Err(format!(
                "field `packages[{i}]`: {package:?} is not a Debian package name (lower-case letters, digits, '+', '-', '.'; optionally =VERSION)"
            ));
        }
        if !packages.contains(&package) {
            packages.push(package);
        }
    }
    Ok(packages)
}

fn validate_environment(raw: BTreeMap<String, Scalar>) -> Result<BTreeMap<String, String>, String> {
    let mut environment = BTreeMap::new();
    for (key, value) in raw {
        if !is_env_name(&key) {
            return Err(format!(
                "field `environment`: {key:?} is not a variable name (letters, digits and '_', not starting with a digit)"
            ));
        }
        if key.starts_with("DOCKER_AGENT_") {
            return Err(format!(
                "field `environment`: {key:?} uses the reserved DOCKER_AGENT_ prefix"
            ));
        }
        environment.insert(key, value.text());
    }
    Ok(environment)
}

fn validate_files(raw: Vec<RawFile>, read_only_root: bool) -> Result<Vec<ProfileFile>, String> {
    let mut files: Vec<ProfileFile> = Vec::new();
    for (i, f) in raw.into_iter().enumerate() {
        let field = format!("files[{i}]");
        let path = validate_abs_path(&f.path).map_err(|e| format!("field `{field}.path`: {e}"))?;
        if path == AGENT_BINARY
            || RESERVED_TARGETS[..2]
                .iter()
                .any(|r| path == *r || path.starts_with(&format!("{r}/")))
        {
            return Err(format!(
                "field `{field}.path`: {path:?} is inside a directory docker-agent owns"
            ));
        }
        // Docker writes files into a read-only root only through a volume, and the workspace is the
        // one every agent has.
        if read_only_root && !path.starts_with(&format!("{}/", RESERVED_TARGETS[2])) {
            return Err(format!(
                "field `{field}.path`: {path:?} is outside /workspace, and `read_only_root` makes the rest of the filesystem read-only"
            ));
        }
        if files.iter().any(|other| other.path == path) {
            return Err(format!("field `{field}.path`: {path:?} is listed twice"));
        }
        let mode = match &f.mode {
            None => 0o644,
            Some(m) => parse_mode(m).map_err(|e| format!("field `{field}.mode`: {e}"))?,
        };
        let owner = match f.owner.as_deref() {
            None => None,
            Some("root") => Some(FileOwner::Root),
            Some("user") => Some(FileOwner::User),
            Some(other) => {
                return Err(format!(
                    "field `{field}.owner`: {other:?} is not \"root\" or \"user\""
                ));
            }
        };
        files.push(ProfileFile {
            path,
            content: f.content,
            mode,
            owner,
        });
    }
    Ok(files)
}

fn validate_setup_tasks(raw: Vec<RawSetupTask>) -> Result<Vec<SetupTask>, String> {
    let mut setup_tasks = Vec::new();
    for (i, t) in raw.into_iter().enumerate() {
        let field = format!("setup_tasks[{i}]");
        if let Some(kind) = &t.kind
            && kind != "exec"
        {
            return Err(format!(
                "field `{field}.type`: {kind:?} is not a setup task type (only \"exec\")"
            ));
        }
        if t.command.trim().is_empty() {
            return Err(format!("field `{field}.command`: empty"));
        }
        if let Some(u) = &t.user
            && !is_user_name(u)
        {
            return Err(format!("field `{field}.user`: {u:?} is not a user name"));
        }
        let timeout = match &t.timeout {
            None => None,
            Some(text) => Some(
                humantime::parse_duration(text)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        format!(
                            "field `{field}.timeout`: {text:?} is not a duration (e.g. 90s, 10m)"
                        )
                    })?,
            ),
        };
        setup_tasks.push(SetupTask {
            command: t.command,
            description: t.description.unwrap_or_default(),
            user: t.user,
            timeout,
        });
    }
    Ok(setup_tasks)
}

/// CPUs, memory and pids.
fn validate_limits(raw: &RawResources) -> Result<(f64, u64, i64), String> {
    let cpus = match &raw.cpus {
        None => 0.0,
        Some(c) => {
            let text = c.text();
            text.trim()
                .parse::<f64>()
                .ok()
                .filter(|c| c.is_finite() && *c > 0.0 && *c <= 1024.0)
                .ok_or_else(|| {
                    format!(
                        "field `resources.cpus`: {text:?} is not a CPU count (a number above 0, e.g. 0.5 or 2)"
                    )
                })?
        }
    };
    let memory_bytes = match &raw.memory {
        None => 0,
        Some(Scalar::Int(n)) if *n > 0 => *n as u64,
        Some(Scalar::Text(m)) => {
            parse_size(m).map_err(|e| format!("field `resources.memory`: {e}"))?
        }
        Some(other) => {
            return Err(format!(
                "field `resources.memory`: {:?} is not a size (use e.g. \"512m\" or \"4g\")",
                other.text()
            ));
        }
    };
    if memory_bytes != 0 && memory_bytes < 6 << 20 {
        return Err("field `resources.memory`: Docker needs at least 6m".into());
    }
    let pids = raw.pids.unwrap_or(0);
    if pids < 0 || (pids > 0 && pids < 16) {
        return Err(format!(
            "field `resources.pids`: {pids} is too low (at least 16; leave it out for no limit)"
        ));
    }
    Ok((cpus, memory_bytes, pids))
}

fn validate_mounts(raw: Vec<RawMount>) -> Result<Vec<ProfileMount>, String> {
    let mut mounts: Vec<ProfileMount> = Vec::new();
    for (i, m) in raw.into_iter().enumerate() {
        let field = format!("mounts[{i}]");
        let kind = match m.kind.as_deref() {
            None | Some("bind") => MountKind::Bind,
            Some("volume") => MountKind::Volume,
            Some(other) => {
                return Err(format!(
                    "field `{field}.type`: {other:?} is not \"bind\" or \"volume\""
                ));
            }
        };
        let source = match kind {
            MountKind::Bind => validate_abs_path(&m.source)
                .map_err(|e| format!("field `{field}.source`: {e} (a host path)"))?,
            MountKind::Volume if is_docker_object_name(&m.source) => m.source,
            MountKind::Volume => {
                return Err(format!(
                    "field `{field}.source`: {:?} is not a volume name",
                    m.source
                ));
            }
        };
        let target =
            validate_abs_path(&m.target).map_err(|e| format!("field `{field}.target`: {e}"))?;
        if target == "/"
            || RESERVED_TARGETS.iter().any(|r| {
                target == *r
                    || target.starts_with(&format!("{r}/"))
                    || r.starts_with(&format!("{target}/"))
            })
        {
            return Err(format!(
                "field `{field}.target`: {target:?} would hide a directory docker-agent owns"
            ));
        }
        if mounts.iter().any(|o| o.target == target) {
            return Err(format!(
                "field `{field}.target`: {target:?} is mounted twice"
            ));
        }
        mounts.push(ProfileMount {
            kind,
            source,
            target,
            read_only: m.read_only,
        });
    }
    Ok(mounts)
}

/// `resources.max_output` and `resources.max_agent_output`: a size, at least 1m (0: the hub's bound).
fn output_bound(field: &str, text: Option<&str>) -> Result<u64, String> {
    let Some(text) = text else {
        return Ok(0);
    };
    let bytes = parse_size(text).map_err(|e| format!("field `resources.{field}`: {e}"))?;
    if bytes < 1 << 20 {
        return Err(format!(
            "field `resources.{field}`: {text:?} is too small (at least 1m)"
        ));
    }
    Ok(bytes)
}

/// A group of agents that share a network (`group` in a profile, `create --group`): the names of
/// agents, since it becomes part of a network's name.
pub fn validate_group(group: &str) -> Result<String, String> {
    let ok = !group.is_empty()
        && group.len() <= 40
        && group.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && group
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(group.to_string())
    } else {
        Err(format!(
            "{group:?} is not a group name (1-40 lower-case letters, digits and '-', starting with a letter or digit)"
        ))
    }
}

/// Profile names become image repository names: lower-case, digits, '-', '_' and '.'.
pub fn validate_profile_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a profile name (1-63 lower-case letters, digits, '-' and '_', starting with a letter or digit)"
        ))
    }
}

fn is_package_name(p: &str) -> bool {
    let (name, version) = match p.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (p, None),
    };
    name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
        && version.is_none_or(|v| {
            !v.is_empty()
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".+-:~".contains(&b))
        })
}

fn is_env_name(k: &str) -> bool {
    !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn is_user_name(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 32
        && u.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && u.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn is_docker_object_name(n: &str) -> bool {
    !n.is_empty()
        && n.starts_with(|c: char| c.is_ascii_alphanumeric())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// An absolute, normalised path with no `..`.
pub fn validate_abs_path(p: &str) -> Result<String, String> {
    if !p.starts_with('/') {
        return Err(format!("{p:?} is not an absolute path"));
    }
    let parts: Vec<&str> = p
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    if parts.contains(&"..") || p.contains('\0') {
        return Err(format!("{p:?} must not contain '..'"));
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Modes are octal text (`"0644"`, `"755"`). Integers are refused: `644` would silently mean 0o1204,
/// and once parsed, TOML's `0o644` cannot be told from `420`.
pub(super) fn parse_mode(m: &Scalar) -> Result<u32, String> {
    let mode = match m {
        Scalar::Text(t) => {
            let digits = t.trim().trim_start_matches("0o");
            u32::from_str_radix(digits, 8)
                .map_err(|_| format!("{t:?} is not an octal mode (e.g. \"0644\")"))?
        }
        _ => {
            return Err(format!(
                "{:?}: write the mode as an octal string, e.g. \"0644\"",
                m.text()
            ));
        }
    };
    if mode > 0o7777 {
        return Err(format!("{mode:o} is not a file mode (at most 7777)"));
    }
    Ok(mode)
}
