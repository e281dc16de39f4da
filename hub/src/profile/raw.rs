//! A profile file's fields as written, before any check (`parse` reads them, `validate` checks
//! them), and sizes as people write them.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProfile {
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) description: String,
    pub(super) base: Option<String>,
    #[serde(default)]
    pub(super) packages: Vec<String>,
    #[serde(default)]
    pub(super) environment: BTreeMap<String, Scalar>,
    #[serde(default)]
    pub(super) files: Vec<RawFile>,
    #[serde(default)]
    pub(super) setup_tasks: Vec<RawSetupTask>,
    #[serde(default)]
    pub(super) resources: RawResources,
    pub(super) network: Option<String>,
    pub(super) group: Option<String>,
    #[serde(default)]
    pub(super) mounts: Vec<RawMount>,
    pub(super) user: Option<String>,
    #[serde(default)]
    pub(super) read_only_root: bool,
    #[serde(default)]
    pub(super) placement: Vec<String>,
    pub(super) workspace: Option<RawWorkspace>,
}

/// `[workspace]`: the volume driver /workspace is made with, and its options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorkspace {
    pub(super) driver: String,
    #[serde(default)]
    pub(super) options: BTreeMap<String, String>,
}

/// Environment values and the seed's `"cpus": "2"`: people write numbers and booleans as either.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, expecting = "a string, a number or a boolean")]
pub(super) enum Scalar {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    pub(super) fn text(&self) -> String {
        match self {
            Scalar::Text(s) => s.clone(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub(super) path: String,
    pub(super) content: String,
    pub(super) mode: Option<Scalar>,
    pub(super) owner: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSetupTask {
    /// The seed writes `"type": "exec"` on every setup task; it is the only kind.
    #[serde(rename = "type")]
    pub(super) kind: Option<String>,
    pub(super) command: String,
    pub(super) description: Option<String>,
    pub(super) user: Option<String>,
    pub(super) timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResources {
    pub(super) cpus: Option<Scalar>,
    pub(super) memory: Option<Scalar>,
    pub(super) pids: Option<i64>,
    pub(super) max_output: Option<String>,
    pub(super) max_agent_output: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMount {
    #[serde(rename = "type")]
    pub(super) kind: Option<String>,
    pub(super) source: String,
    pub(super) target: String,
    #[serde(default)]
    pub(super) read_only: bool,
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
    // Whole numbers are counted exactly: through the f64, a count past 2^53 would not read back as
    // written (found with the `profile` fuzz target).
    let exact = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier));
    let bytes = exact.unwrap_or(bytes as u64);
    // The store and Docker take sizes as i64, where a larger one would wrap negative and mean "no limit".
    if bytes > i64::MAX as u64 {
        return Err(format!("{text:?} is too large"));
    }
    Ok(bytes)
}
