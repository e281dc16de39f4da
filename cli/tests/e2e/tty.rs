//! `exec -t` driven through a real pseudo-terminal: the remote command gets a terminal of the local size, typed input reaches it, its exit code comes back, and the local terminal leaves raw mode.

use std::time::{Duration, Instant};

use crate::support::Hub;
use crate::support::term::{Term, run_on_terminal};

#[tokio::test(flavor = "multi_thread")]
async fn exec_t_gives_a_terminal_of_the_local_size_and_returns_its_exit_code() {
    let hub = Hub::builder().start().await;
    let name = hub.name("tty");
    hub.create(&name).await;
    let args = ["exec", "-t", name.as_str(), "--", "sh"];
    let (code, out) = tokio::task::block_in_place(|| {
        run_on_terminal(
            &hub,
            &args,
            33,
            101,
            "$ ",
            "tty; stty size; echo typed-$((40+2))\nexit 5\n",
        )
    });
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("/dev/pts/"), "{out}");
    assert!(out.contains("33 101"), "{out}");
    assert!(out.contains("typed-42"), "{out}");

    // `shell` is a login shell on a terminal: bash, in /workspace, as the task user.
    let args = ["shell", name.as_str()];
    let (code, out) = tokio::task::block_in_place(|| {
        run_on_terminal(
            &hub,
            &args,
            24,
            80,
            "$ ",
            "echo $0 $(pwd) $(id -un) $(stty size)\nexit 3\n",
        )
    });
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("bash /workspace agent 24 80"), "{out}");

    // Without a terminal on stdin, -t is refused before anything runs.
    let refused = hub.cli(&["exec", "-t", &name, "--", "true"]).await;
    refused.fails_with("-t needs a terminal");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shell_session_outlives_its_terminal_and_re_attaches_with_its_scrollback() {
    let hub = Hub::builder().start().await;
    let name = hub.name("sess");
    hub.create(&name).await;
    let shell = ["shell", name.as_str()];
    let mut first = tokio::task::block_in_place(|| {
        let term = Term::spawn(&hub, &shell, 24, 80);
        term.read_until("$ ");
        term.type_in("echo marker-$((6*7))\n");
        term.read_until("marker-42");
        // A resize reaches the remote terminal. The resize and the typed command travel on
        // different paths, so ask again (each answer ends with a new prompt) until it shows.
        term.resize(40, 120);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !term.text().contains("40 120") {
            assert!(
                Instant::now() < deadline,
                "resize never seen: {}",
                term.text()
            );
            let prompts = term.prompts();
            term.type_in("stty size\n");
            while term.prompts() == prompts {
                assert!(Instant::now() < deadline, "no prompt: {}", term.text());
                std::thread::park_timeout(Duration::from_millis(20));
            }
        }
        term
    });
    // The terminal dies without a word (an ssh link dropping).
    first.child.kill().unwrap();
    first.child.wait().unwrap();

    let sessions = hub.cli(&["sessions", &name, "--json"]).await.json();
    let sessions = sessions.as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let id = sessions[0]["id"].as_str().unwrap().to_string();

    let attach = ["shell", name.as_str(), "--attach", id.as_str()];
    let (code, out) = tokio::task::block_in_place(|| {
        let term = Term::spawn(&hub, &attach, 30, 90);
        // The earlier output comes first, then the session is live: it also took the new size.
        term.read_until("marker-42");
        term.type_in("stty size; exit 4\n");
        term.finish()
    });
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("30 90"), "{out}");
    assert!(
        hub.cli(&["sessions", &name, "--json"])
            .await
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );
    let (code, out) = tokio::task::block_in_place(|| Term::spawn(&hub, &attach, 24, 80).finish());
    assert_eq!(code, 1);
    assert!(out.contains("has ended"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_nobody_attaches_to_is_ended_after_the_session_timeout() {
    let hub = Hub::builder()
        .arg("--session-timeout")
        .arg("2s")
        .start()
        .await;
    let name = hub.name("idle");
    hub.create(&name).await;
    let shell = ["shell", name.as_str()];
    let mut term = tokio::task::block_in_place(|| {
        let term = Term::spawn(&hub, &shell, 24, 80);
        term.read_until("$ ");
        term
    });
    term.child.kill().unwrap();
    term.child.wait().unwrap();
    let sessions = hub.cli(&["sessions", &name, "--json"]).await.json();
    let id = sessions[0]["id"].as_str().unwrap().to_string();
    // Following its output returns once the session has ended.
    hub.cli(&["task", "logs", &id, "--follow"]).await.ok();
    let got = hub.cli(&["task", "get", &id, "--json"]).await.json();
    assert!(got["signal"].as_i64().is_some(), "ended by a signal: {got}");
    assert!(
        hub.cli(&["sessions", &name, "--json"])
            .await
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );
}
