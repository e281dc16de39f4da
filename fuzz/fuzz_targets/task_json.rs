//! Fuzz target: the task JSON parser (`task::json::parse`) and the hub's checks after it never panic, and what they accept is a runnable command.
#![no_main]

use docker_agent_hub::task::json;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The parser takes text; the HTTP layer has already refused anything that is not UTF-8.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = json::parse(text) else {
        return;
    };
    // Exactly one of the two command forms, never an empty one: the agent is never handed nothing to run.
    assert!(
        spec.argv.is_empty() != spec.shell.is_empty(),
        "both or neither command form: {spec:?}"
    );
    assert!(
        !spec.argv.is_empty() || !spec.shell.trim().is_empty(),
        "an empty command was accepted: {spec:?}"
    );
    match spec.kind.as_str() {
        "exec" => {}
        // A script always runs as `interpreter -c script`.
        "script" => assert!(
            spec.argv.len() == 3 && spec.argv[1] == "-c",
            "script task without `interpreter -c script`: {spec:?}"
        ),
        other => panic!("unknown task kind {other:?} accepted"),
    }
    // Only the terminal endpoints ask for stdin or a pty; JSON tasks never do.
    assert!(!spec.stdin && spec.pty.is_none(), "{spec:?}");
    // The hub's own checks before storing (sizes, cwd, timeouts) never panic, and what they pass
    // is argv the agent can exec.
    if let Ok(task) = docker_agent_hub::task::normalise_spec(spec) {
        assert!(
            !task.argv.is_empty() && !task.argv[0].is_empty(),
            "{task:?}"
        );
    }
});
