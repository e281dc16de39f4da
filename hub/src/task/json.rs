//! The JSON task forms users type (`{"type":"exec","command":"pwd"}`), turned into a [`TaskSpec`].

use std::collections::HashMap;

use docker_agent_proto::v1::TaskSpec;
use serde::Deserialize;

const TYPES: &str = "exec, script";

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Command {
    Line(String),
    Argv(Vec<String>),
}

/// Every field of every task type; which ones a type accepts is checked after parsing. Also the
/// REST API's documented request body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    /// `exec` (a command) or `script` (a script for an interpreter). Read from the raw value first;
    /// declared so `deny_unknown_fields` accepts it.
    #[serde(rename = "type")]
    _kind: String,
    /// exec: a string runs through `/bin/sh -c` (unless `args` is given); an array runs directly.
    command: Option<Command>,
    args: Option<Vec<String>>,
    /// script: the text, run as `interpreter -c script`.
    script: Option<String>,
    interpreter: Option<String>,
    #[serde(default)]
    env: HashMap<String, String>,
    cwd: Option<String>,
    timeout_secs: Option<f64>,
    kill_grace_secs: Option<f64>,
}

fn millis(what: &str, secs: Option<f64>) -> Result<u64, String> {
    match secs {
        None => Ok(0),
        // At least 1 ms: a positive timeout must never round down to "no timeout".
        Some(s) if s.is_finite() && s > 0.0 => Ok(((s * 1000.0).round() as u64).max(1)),
        Some(s) => Err(format!(
            "{what} must be a positive number of seconds, not {s}"
        )),
    }
}

/// Parses a task. Errors are one line and say what to fix.
pub fn parse(text: &str) -> Result<TaskSpec, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("invalid task JSON: {e}"))?;
    let kind = match value.get("type") {
        Some(serde_json::Value::String(t)) => t.clone(),
        Some(_) => return Err("invalid task: \"type\" must be a string".into()),
        None if value.is_object() => {
            return Err(format!("invalid task: missing \"type\" (one of: {TYPES})"));
        }
        None => return Err("invalid task: expected a JSON object".into()),
    };
    if !matches!(kind.as_str(), "exec" | "script") {
        return Err(format!(
            "invalid task: unknown task type {kind:?} (known: {TYPES})"
        ));
    }
    let t: TaskRequest =
        serde_json::from_value(value).map_err(|e| format!("invalid {kind} task: {e}"))?;
    let only = |field: &str, present: bool, owner: &str| {
        if present {
            Err(format!(
                "invalid {kind} task: \"{field}\" belongs to {owner} tasks"
            ))
        } else {
            Ok(())
        }
    };
    let (argv, shell) = if kind == "exec" {
        only("script", t.script.is_some(), "script")?;
        only("interpreter", t.interpreter.is_some(), "script")?;
        match (t.command, t.args) {
            (None, _) => return Err("invalid exec task: missing field `command`".into()),
            (Some(Command::Line(line)), None) => (Vec::new(), line),
            (Some(Command::Line(program)), Some(args)) => (
                std::iter::once(program).chain(args).collect(),
                String::new(),
            ),
            (Some(Command::Argv(argv)), None) => (argv, String::new()),
            (Some(Command::Argv(_)), Some(_)) => {
                return Err(
                    "invalid exec task: give \"args\" only with a string \"command\"".into(),
                );
            }
        }
    } else {
        only("command", t.command.is_some(), "exec")?;
        only("args", t.args.is_some(), "exec")?;
        let script = t
            .script
            .ok_or("invalid script task: missing field `script`")?;
        let interpreter = t.interpreter.unwrap_or_else(|| "/bin/sh".into());
        (vec![interpreter, "-c".into(), script], String::new())
    };
    if argv.is_empty() && shell.trim().is_empty() {
        return Err(format!("invalid {kind} task: the command is empty"));
    }
    Ok(TaskSpec {
        argv,
        shell,
        env: t.env,
        cwd: t.cwd.unwrap_or_default(),
        stdin: false,
        timeout_ms: millis("timeout_secs", t.timeout_secs)?,
        kind,
        pty: None,
        kill_grace_ms: millis("kill_grace_secs", t.kill_grace_secs)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_forms() {
        let t = parse(r#"{"type":"exec","command":"pwd"}"#).unwrap();
        assert_eq!(t.shell, "pwd");
        assert!(t.argv.is_empty());
        let t = parse(r#"{"type":"exec","command":["ls","-la"],"cwd":"/tmp","env":{"A":"1"},"timeout_secs":1.5}"#).unwrap();
        assert_eq!(t.argv, ["ls", "-la"]);
        assert_eq!(t.cwd, "/tmp");
        assert_eq!(t.env["A"], "1");
        assert_eq!(t.timeout_ms, 1500);
        let t = parse(r#"{"type":"exec","command":"echo","args":["a b"]}"#).unwrap();
        assert_eq!(t.argv, ["echo", "a b"]);
    }

    #[test]
    fn script_form() {
        let t = parse(r#"{"type":"script","script":"echo 1\necho 2","interpreter":"/bin/bash"}"#)
            .unwrap();
        assert_eq!(t.argv, ["/bin/bash", "-c", "echo 1\necho 2"]);
        assert_eq!(t.kind, "script");
    }

    #[test]
    fn errors_are_clear() {
        assert!(
            parse("{nope")
                .unwrap_err()
                .starts_with("invalid task JSON:")
        );
        assert_eq!(
            parse("[1]").unwrap_err(),
            "invalid task: expected a JSON object"
        );
        assert_eq!(
            parse(r#"{"type":"deploy"}"#).unwrap_err(),
            "invalid task: unknown task type \"deploy\" (known: exec, script)"
        );
        assert!(
            parse(r#"{"command":"x"}"#)
                .unwrap_err()
                .contains("missing \"type\"")
        );
        let e = parse(r#"{"type":"exec","command":"x","bogus":1}"#).unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        let e = parse(r#"{"type":"exec"}"#).unwrap_err();
        assert!(e.contains("command"), "{e}");
        let e = parse(r#"{"type":"exec","command":"x","timeout_secs":-1}"#).unwrap_err();
        assert!(e.contains("timeout_secs"), "{e}");
        assert!(parse(r#"{"type":"exec","command":"  "}"#).is_err());
        let e = parse(r#"{"type":"exec","command":"x","script":"y"}"#).unwrap_err();
        assert_eq!(e, "invalid exec task: \"script\" belongs to script tasks");
    }
}
