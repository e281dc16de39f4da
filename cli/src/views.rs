//! What the CLI shows of tasks and agents: the `--json` shapes (the REST API's, from the hub), the
//! exit code a finished task ends a command with, and the note that explains a task that did not
//! simply exit.

use docker_agent_proto::v1 as pb;

// The JSON shapes are the REST API's, defined once in the hub (`api::json`).
pub use docker_agent_hub::api::json::{
    Agent as AgentView, Profile as ProfileView, Task as TaskView, connection, lifecycle, task_state,
};

/// The exit code a CLI should end with for a finished task: the remote code, 128+N for a signal,
/// 124 for a timeout (as `timeout(1)`), 127 when the program could not start, 255 when lost.
pub fn exit_code(task: &pb::Task) -> u8 {
    use pb::task_result::Outcome;
    let Some(result) = &task.result else {
        return 255;
    };
    if result.timed_out {
        return 124;
    }
    match result.outcome {
        Some(Outcome::ExitCode(c)) => c.clamp(0, 255) as u8,
        Some(Outcome::Signal(s)) => (128 + s).clamp(0, 255) as u8,
        Some(Outcome::Error(_)) => 127,
        None => 255,
    }
}

/// One line explaining why a task did not simply exit, or None.
pub fn failure_note(task: &pb::Task) -> Option<String> {
    use pb::task_result::Outcome;
    match &task.result {
        None => Some(if task.error.is_empty() {
            format!(
                "task {} ended without a result ({})",
                task.id,
                task_state(task.state)
            )
        } else {
            format!(
                "task {} {}: {}",
                task.id,
                task_state(task.state),
                task.error
            )
        }),
        Some(r) if r.timed_out => Some(format!(
            "task {} timed out after {}",
            task.id,
            humantime::format_duration(std::time::Duration::from_millis(
                task.spec.as_ref().map(|s| s.timeout_ms).unwrap_or(0)
            ))
        )),
        Some(r) if r.oom_killed => Some(format!(
            "task {} was killed: out of memory (the agent's memory limit; see its profile's resources.memory)",
            task.id
        )),
        Some(r) => match &r.outcome {
            Some(Outcome::Error(e)) => Some(match shell_hint(task) {
                Some(hint) => format!("{e}; {hint}"),
                None => e.clone(),
            }),
            _ if !task.output_dropped.is_empty() => Some(format!(
                "warning: the hub stored only the first {} of task {}'s output: {}",
                crate::output::bytes(task.stdout_len + task.stderr_len),
                task.id,
                match task.output_dropped.as_str() {
                    "task" =>
                        "it reached its bound (the profile's resources.max_output, or hub --max-task-output)",
                    "agent" =>
                        "its agent reached its bound (the profile's resources.max_agent_output, or hub --max-agent-output)",
                    _ => "the hub's disk fell below its free-space floor (hub --min-free-disk)",
                }
            )),
            _ if r.output_truncated => Some(format!(
                "warning: task {} lost output while the hub was unreachable (the agent's spool overflowed)",
                task.id
            )),
            _ => None,
        },
    }
}

/// For a program that could not start because its name was a command line (`"ls; pwd"`, or several
/// words passed with other arguments): how to have a shell run it.
fn shell_hint(task: &pb::Task) -> Option<String> {
    let argv = &task.spec.as_ref()?.argv;
    let program = argv.first()?;
    let shell_like = program
        .chars()
        .any(|c| c.is_whitespace() || ";|&$<>*?`'\"(){}~".contains(c));
    shell_like.then(|| {
        format!(
            "to run it as a command line, use: -- sh -c {}",
            // Single quotes keep everything literal; a quote inside is closed, escaped, reopened.
            format_args!("'{}'", program.replace('\'', r"'\''"))
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::task_result::Outcome;

    fn finished(outcome: Outcome, timed_out: bool) -> pb::Task {
        pb::Task {
            result: Some(pb::TaskResult {
                outcome: Some(outcome),
                timed_out,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(&finished(Outcome::ExitCode(3), false)), 3);
        assert_eq!(exit_code(&finished(Outcome::Signal(9), false)), 137);
        assert_eq!(exit_code(&finished(Outcome::Signal(15), true)), 124);
        assert_eq!(exit_code(&finished(Outcome::Error("x".into()), false)), 127);
        assert_eq!(exit_code(&pb::Task::default()), 255);
    }

    #[test]
    fn a_program_named_like_a_command_line_gets_the_sh_c_hint() {
        let mut task = finished(Outcome::Error("cannot start \"ls;pwd\"".into()), false);
        task.spec = Some(pb::TaskSpec {
            argv: vec!["ls;pwd".into()],
            ..Default::default()
        });
        assert_eq!(
            failure_note(&task).unwrap(),
            "cannot start \"ls;pwd\"; to run it as a command line, use: -- sh -c 'ls;pwd'"
        );
        task.spec.as_mut().unwrap().argv = vec!["it's here".into(), "x".into()];
        assert!(
            failure_note(&task)
                .unwrap()
                .ends_with(r"sh -c 'it'\''s here'")
        );
        task.spec.as_mut().unwrap().argv = vec!["nosuch".into()];
        assert_eq!(failure_note(&task).unwrap(), "cannot start \"ls;pwd\"");
    }

    #[test]
    fn enum_names() {
        assert_eq!(lifecycle(pb::Lifecycle::StartError as i32), "start_error");
        assert_eq!(connection(pb::Connection::Connected as i32), "connected");
        assert_eq!(task_state(pb::TaskState::Finished as i32), "finished");
    }
}
