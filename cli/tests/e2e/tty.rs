//! `exec -t` driven through a real pseudo-terminal: the remote command gets a terminal of the local size, typed input reaches it, its exit code comes back, and the local terminal leaves raw mode.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{CLI, Hub};

/// A pseudo-terminal pair of the given size.
fn openpty(rows: u16, cols: u16) -> (OwnedFd, OwnedFd) {
    let mut master = -1;
    let mut slave = -1;
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty fills two descriptors we then own.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    assert_eq!(rc, 0, "openpty failed");
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

fn lflag(fd: &OwnedFd) -> libc::tcflag_t {
    use std::os::fd::AsRawFd;
    // SAFETY: tcgetattr into a struct we own.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(fd.as_raw_fd(), &mut t), 0);
        t.c_lflag
    }
}

/// Runs `docker-agent exec -t ...` on a terminal of `rows`×`cols`, typing `input` once `ready`
/// appears in its output; returns (exit code, everything it printed).
fn run_on_terminal(
    hub: &Hub,
    args: &[&str],
    rows: u16,
    cols: u16,
    ready: &str,
    input: &str,
) -> (i32, String) {
    let (master, slave) = openpty(rows, cols);
    let mut child = Command::new(CLI)
        .arg("--home")
        .arg(hub.home())
        .args(args)
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave.try_clone().unwrap()))
        .spawn()
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut reader = std::fs::File::from(master.try_clone().unwrap());
    let sink = seen.clone();
    let drained = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = || String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    while !text().contains(ready) {
        assert!(Instant::now() < deadline, "never saw {ready:?}: {}", text());
        std::thread::park_timeout(Duration::from_millis(20));
    }
    let mut writer = std::fs::File::from(master.try_clone().unwrap());
    writer.write_all(input.as_bytes()).unwrap();
    let status = child.wait().unwrap();
    // The CLI put the terminal back as it found it (canonical mode, echo).
    let flags = lflag(&slave);
    assert!(
        flags & libc::ICANON != 0 && flags & libc::ECHO != 0,
        "terminal left raw"
    );
    // With the last slave descriptor closed, the master reads to the end and then fails (EIO).
    drop(slave);
    drained.join().unwrap();
    (status.code().unwrap_or(-1), text())
}

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
