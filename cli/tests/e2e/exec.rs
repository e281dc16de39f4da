//! exec: live output, exit codes (normal, non-zero, signal), stdin, separate stdout/stderr, env, cwd and timeouts.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::Hub;

#[tokio::test(flavor = "multi_thread")]
async fn exec_output_exit_codes_stdin_and_streams() {
    let hub = Hub::builder().start().await;
    let name = hub.name("exec");
    hub.create(&name).await;

    let out = hub.cli(&["exec", &name, "--", "uname", "-s"]).await;
    assert_eq!(out.ok(), "Linux\n");

    let out = hub.cli(&["exec", &name, "--", "pwd"]).await;
    assert_eq!(out.ok(), "/workspace\n");

    let out = hub.cli(&["exec", &name, "--", "sh", "-c", "exit 3"]).await;
    assert_eq!(out.code(), 3);

    // A process killed by a signal gives 128 + N, as a shell would.
    let out = hub
        .cli(&["exec", &name, "--", "sh", "-c", "kill -9 $$"])
        .await;
    assert_eq!(out.code(), 137, "{}", out.stderr);

    // stdout and stderr stay apart.
    let out = hub
        .cli(&[
            "exec",
            &name,
            "--",
            "sh",
            "-c",
            "echo to-out; echo to-err >&2",
        ])
        .await;
    assert_eq!(out.ok(), "to-out\n");
    assert_eq!(out.stderr, "to-err\n");

    // Piped stdin reaches the command, byte for byte, and EOF ends it.
    let input: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let out = hub
        .cli_stdin(&["exec", &name, "--", "sha256sum"], &input)
        .await;
    let expected = {
        use sha2_hex::hex_sha256;
        hex_sha256(&input)
    };
    assert_eq!(out.ok().split_whitespace().next().unwrap(), expected);

    let out = hub
        .cli_stdin(&["exec", &name, "--", "wc", "-c"], b"hello")
        .await;
    assert_eq!(out.ok().trim(), "5");

    // Environment and working directory.
    let out = hub
        .cli(&[
            "exec",
            "-e",
            "GREETING=hi there",
            "-w",
            "/tmp",
            &name,
            "--",
            "sh",
            "-c",
            "echo \"$GREETING\"; pwd",
        ])
        .await;
    assert_eq!(out.ok(), "hi there\n/tmp\n");

    // A program that does not exist: a clear message and exit code 127.
    let out = hub.cli(&["exec", &name, "--", "no-such-program"]).await;
    assert_eq!(out.code(), 127, "{}", out.stderr);
    assert!(out.stderr.contains("no-such-program"), "{}", out.stderr);

    // One argument with whitespace is a command line for sh -c, as `ssh host "cmd"` runs it; several
    // arguments stay an argv, as `docker exec` takes them.
    let out = hub.cli(&["exec", &name, "echo a b | wc -w"]).await;
    assert_eq!(out.ok().trim(), "2");
    assert_eq!(
        hub.cli(&["exec", &name, "--", "echo", "a  b"]).await.ok(),
        "a  b\n"
    );
    // A command line without whitespace is a program name: the error says how to run it through sh.
    let out = hub.cli(&["exec", &name, "--", "true;false"]).await;
    assert_eq!(out.code(), 127, "{}", out.stderr);
    assert!(
        out.stderr.contains("-- sh -c 'true;false'"),
        "{}",
        out.stderr
    );

    // A timeout kills the command; 124 as timeout(1) does.
    let out = hub
        .cli(&["exec", "--timeout", "1s", &name, "--", "sleep", "30"])
        .await;
    assert_eq!(out.code(), 124, "{}", out.stderr);
    assert!(out.stderr.contains("timed out"), "{}", out.stderr);

    // Large output arrives complete and in order.
    let out = hub
        .cli(&["exec", &name, "--", "sh", "-c", "seq 1 200000"])
        .await;
    let lines: Vec<&str> = out.ok().lines().collect();
    assert_eq!(lines.len(), 200_000);
    assert_eq!(lines[199_999], "200000");
}

/// A tiny SHA-256 for comparing bytes without another dependency in the test crate.
mod sha2_hex {
    pub fn hex_sha256(data: &[u8]) -> String {
        use std::io::Write;
        let mut child = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(data).unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_reaches_the_remote_process_group() {
    let hub = Hub::builder().start().await;
    let name = hub.name("int");
    hub.create(&name).await;
    let script = "trap 'echo got-int; exit 7' INT; echo ready; while :; do sleep 0.1; done";
    let mut child = hub.spawn_cli(&["exec", &name, "--", "sh", "-c", script]);
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let out = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut line = String::new();
        // Wait for the remote shell to have installed its trap.
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n");
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGINT);
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
        (rest, child.wait().unwrap())
    })
    .await
    .unwrap();
    assert_eq!(out.0, "got-int\n");
    assert_eq!(out.1.code(), Some(7));
}

#[tokio::test(flavor = "multi_thread")]
async fn output_far_beyond_the_spool_arrives_whole_on_a_live_link() {
    // A 1 MiB spool and 2 × 12 MiB of incompressible output on stdout and stderr at once: the producers
    // must be paced, never truncated.
    let hub = Hub::builder().arg("--agent-spool").arg("1m").start().await;
    let name = hub.name("big");
    hub.create(&name).await;
    let make = "head -c 12582912 /dev/urandom > /tmp/a; head -c 12582912 /dev/urandom > /tmp/b";
    hub.cli(&["exec", &name, "--", "sh", "-c", make]).await.ok();
    let both = "cat /tmp/a & cat /tmp/b >&2; wait";
    let out = hub.cli(&["exec", &name, "--", "sh", "-c", both]).await;
    assert!(out.status.success(), "exit {}", out.code());
    assert_eq!(out.raw_stdout.len(), 12_582_912);
    assert_eq!(
        out.raw_stderr.len(),
        12_582_912,
        "stderr was cut or carried a warning"
    );
    let sums = hub
        .cli(&["exec", &name, "--", "sha256sum", "/tmp/a", "/tmp/b"])
        .await;
    let sums: Vec<&str> = sums
        .ok()
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(sha2_hex::hex_sha256(&out.raw_stdout), sums[0]);
    assert_eq!(sha2_hex::hex_sha256(&out.raw_stderr), sums[1]);
}
