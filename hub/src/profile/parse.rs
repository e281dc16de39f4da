//! Reading a profile file (TOML, or the seed system's JSON shape) into raw fields, with errors that name the file, the field and the line; `validate` checks the fields.

use std::time::Duration;

use super::Profile;
use super::raw::RawProfile;

/// The format a profile was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Json,
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
