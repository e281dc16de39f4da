//! What a task may ask for: the checks every task passes before it is stored, and the shell form
//! turned into argv so an agent only ever sees argv.

use docker_agent_proto::v1::TaskSpec;

use crate::error::{HubError, Result};

/// The longest timeout a task may ask for: a year. Zero means none.
const MAX_TIMEOUT_MS: u64 = 365 * 24 * 3600 * 1000;
/// The longest a task may ask to get between TERM and KILL: an hour. Unbounded, a huge grace would
/// mean KILL never comes (found by the fuzz target's reviewer).
const MAX_KILL_GRACE_MS: u64 = 3600 * 1000;
/// Linux refuses to exec an argument or variable longer than this (MAX_ARG_STRLEN).
const MAX_ARG_BYTES: usize = 128 << 10;
/// A task's command, environment and cwd together: below Linux's total for exec (2 MiB with the usual
/// stack limit) and far below the gRPC message limit, so every accepted task reaches its agent.
pub const MAX_SPEC_BYTES: usize = 1 << 20;

/// Checks a task and turns the shell form into argv, so the agent only ever sees argv.
pub fn normalise_spec(mut spec: TaskSpec) -> Result<TaskSpec> {
    let invalid = |m: &str| Err(HubError::InvalidArgument(m.to_string()));
    match (spec.argv.is_empty(), spec.shell.trim().is_empty()) {
        (true, true) => return invalid("the task has no command"),
        (false, false) => {
            return invalid("give either a command (argv) or a shell script, not both");
        }
        (true, false) => {
            spec.argv = vec!["/bin/sh".into(), "-c".into(), spec.shell.clone()];
        }
        (false, true) => {}
    }
    if spec.argv[0].is_empty() {
        return invalid("the command is empty");
    }
    if !spec.cwd.is_empty() && !spec.cwd.starts_with('/') {
        return invalid("cwd must be an absolute path");
    }
    for key in spec.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(HubError::InvalidArgument(format!(
                "invalid environment variable name {key:?}"
            )));
        }
    }
    if spec.timeout_ms > MAX_TIMEOUT_MS {
        return invalid("timeout is longer than a year");
    }
    if spec.kill_grace_ms > MAX_KILL_GRACE_MS {
        return invalid("kill grace is longer than an hour");
    }
    check_size(&spec)?;
    if spec.kind.is_empty() {
        spec.kind = "exec".into();
    }
    if spec.kind.len() > 32 {
        return invalid("the task type is longer than 32 characters");
    }
    Ok(spec)
}

/// Refuses what exec would refuse anyway (an argument or variable over 128 KiB), and tasks too big to
/// pass on, with the way around it.
fn check_size(spec: &TaskSpec) -> Result<()> {
    let long_arg = spec.argv.iter().position(|a| a.len() >= MAX_ARG_BYTES);
    if let Some(i) = long_arg {
        let what = if spec.argv.len() == 3 && i == 2 && spec.argv[1] == "-c" {
            "the shell script".to_string()
        } else {
            format!("argument {i} of the command")
        };
        return Err(HubError::InvalidArgument(format!(
            "{what} is {} bytes; Linux runs no command with an argument of 128 KiB or more (send long scripts on stdin, or as a file)",
            spec.argv[i].len()
        )));
    }
    if let Some((key, _)) = spec
        .env
        .iter()
        .find(|(k, v)| k.len() + v.len() + 1 >= MAX_ARG_BYTES)
    {
        return Err(HubError::InvalidArgument(format!(
            "environment variable {} is 128 KiB or more; Linux runs no command with it",
            crate::error::shown(key)
        )));
    }
    let total = spec.argv.iter().map(|a| a.len() + 1).sum::<usize>()
        + spec
            .env
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum::<usize>()
        + spec.cwd.len();
    if total > MAX_SPEC_BYTES {
        return Err(HubError::InvalidArgument(format!(
            "the command and environment are {total} bytes together; the limit is {MAX_SPEC_BYTES} (send data on stdin, or as a file)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(argv: &[&str], shell: &str) -> TaskSpec {
        TaskSpec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            shell: shell.into(),
            ..Default::default()
        }
    }

    #[test]
    fn shell_form_becomes_argv() {
        let s = normalise_spec(spec(&[], "echo hi")).unwrap();
        assert_eq!(s.argv, ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(s.kind, "exec");
    }

    #[test]
    fn bad_specs_are_refused() {
        assert!(normalise_spec(spec(&[], "")).is_err());
        assert!(normalise_spec(spec(&["ls"], "ls")).is_err());
        assert!(normalise_spec(spec(&[""], "")).is_err());
        let mut s = spec(&["ls"], "");
        s.cwd = "relative".into();
        assert_eq!(
            normalise_spec(s).unwrap_err().to_string(),
            "cwd must be an absolute path"
        );
        let mut s = spec(&["ls"], "");
        s.env.insert("A=B".into(), "x".into());
        assert!(normalise_spec(s).is_err());
        let mut s = spec(&["ls"], "");
        s.kill_grace_ms = u64::MAX;
        assert_eq!(
            normalise_spec(s).unwrap_err().to_string(),
            "kill grace is longer than an hour"
        );
    }

    #[test]
    fn tasks_exec_could_not_run_are_refused_by_size() {
        let script = "x".repeat(MAX_ARG_BYTES);
        let err = normalise_spec(spec(&[], &script)).unwrap_err().to_string();
        assert!(err.starts_with("the shell script is 131072 bytes"), "{err}");
        let err = normalise_spec(spec(&["echo", "ok", &script], ""))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("argument 2 of the command"), "{err}");
        let mut s = spec(&["env"], "");
        s.env.insert("BIG".into(), script.clone());
        assert!(
            normalise_spec(s)
                .unwrap_err()
                .to_string()
                .contains("\"BIG\"")
        );
        // Many arguments just under the per-argument limit add up past the total.
        let piece = "y".repeat(MAX_ARG_BYTES - 1);
        let many: Vec<&str> = std::iter::once("echo").chain([piece.as_str(); 9]).collect();
        let err = normalise_spec(spec(&many, "")).unwrap_err().to_string();
        assert!(err.contains("the limit is 1048576"), "{err}");
        // Just under every limit is fine.
        let fits: Vec<&str> = std::iter::once("echo").chain([piece.as_str(); 7]).collect();
        normalise_spec(spec(&fits, "")).unwrap();
    }
}
