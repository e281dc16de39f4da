//! Reading a profile file (TOML, or the seed system's JSON shape) into raw fields, with errors that name the file, the field and the line; `validate` checks the fields.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::Profile;

/// The format a profile was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Json,
}

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

/// Parses the text of one profile file. `origin` names it in errors (a path, or `builtin NAME`).
pub fn parse(text: &str, format: Format, origin: &str) -> Result<Profile, super::ProfileError> {
    let invalid = |message: String| super::ProfileError::Invalid {
        origin: origin.to_string(),
        message: shorten_quoted(&message),
    };
    let raw: RawProfile = match format {
        Format::Toml => {
            let de =
                toml::Deserializer::parse(text).map_err(|e| invalid(toml_message(text, &e)))?;
            serde_path_to_error::deserialize(de).map_err(|e| {
                let line = e
                    .inner()
                    .span()
                    .map(|s| format!(" (line {})", line_of(text, s.start)))
                    .unwrap_or_default();
                invalid(field_message(e.path(), e.inner().message(), &line))
            })?
        }
        Format::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(&mut de).map_err(|e| {
                let inner = e.inner();
                let line = format!(" (line {})", inner.line());
                let message = inner.to_string();
                // serde_json appends " at line L column C"; the line is given once, our way.
                let message = message
                    .split(" at line ")
                    .next()
                    .unwrap_or(&message)
                    .to_string();
                invalid(field_message(e.path(), &message, &line))
            })?
        }
    };
    super::validate::validate(raw).map_err(invalid)
}

fn field_message(path: &serde_path_to_error::Path, message: &str, line: &str) -> String {
    let mut path = path.to_string();
    // The path of an unknown key ends with that key, which the message names already.
    if message.starts_with("unknown field") {
        path = match path.rfind(['.', '[']) {
            Some(i) => path[..i].to_string(),
            None => String::new(),
        };
    }
    if path == "." || path.is_empty() {
        format!("{message}{line}")
    } else {
        format!("field `{path}`: {message}{line}")
    }
}

fn toml_message(text: &str, e: &toml::de::Error) -> String {
    let line = e
        .span()
        .map(|s| format!(" (line {})", line_of(text, s.start)))
        .unwrap_or_default();
    format!("not valid TOML: {}{line}", e.message().trim())
}

/// Cuts every quoted value in `message` (our `{:?}`s and the parsers' own quotes) after 64
/// characters, so a file holding a megabyte-long name does not become a megabyte-long error line.
fn shorten_quoted(message: &str) -> String {
    const MAX: usize = 64;
    let mut out = String::with_capacity(message.len().min(1024));
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c != '"' {
            continue;
        }
        let (mut kept, mut cut) = (0usize, 0usize);
        let (mut pending_escape, mut last_kept) = (false, true);
        let mut closed = false;
        for c in chars.by_ref() {
            let escaped = pending_escape;
            pending_escape = c == '\\' && !escaped;
            if c == '"' && !escaped {
                closed = true;
                break;
            }
            // An escape sequence is kept whole or not at all.
            let keep = kept < MAX || (escaped && last_kept);
            last_kept = keep;
            if keep {
                kept += 1;
                out.push(c);
            } else {
                cut += 1;
            }
        }
        if cut > 0 {
            out.push_str(&format!("… ({cut} more characters)"));
        }
        if closed {
            out.push('"');
        }
    }
    out
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// `Duration` as profiles write it.
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
