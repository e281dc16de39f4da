//! A CLI process on a pseudo-terminal of its own, for `exec -t` and `shell` tests: typed input, window
//! sizes, and a check that the CLI gives the terminal back.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::pty::Winsize;
use nix::sys::signal::{Signal, kill};
use nix::sys::termios::{LocalFlags, tcgetattr};
use nix::unistd::Pid;

use super::{CLI, Hub};

/// A pseudo-terminal pair of the given size.
pub fn openpty(rows: u16, cols: u16) -> (OwnedFd, OwnedFd) {
    let ws = Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(&ws, None).expect("openpty failed");
    (pty.master, pty.slave)
}

pub fn lflag(fd: &OwnedFd) -> LocalFlags {
    tcgetattr(fd).expect("tcgetattr").local_flags
}

/// A CLI process on a pseudo-terminal of its own, and what it printed so far.
pub struct Term {
    pub child: std::process::Child,
    master: OwnedFd,
    slave: Option<OwnedFd>,
    seen: Arc<Mutex<Vec<u8>>>,
    drained: Option<std::thread::JoinHandle<()>>,
}

impl Term {
    pub fn spawn(hub: &Hub, args: &[&str], rows: u16, cols: u16) -> Self {
        let (master, slave) = openpty(rows, cols);
        let child = Command::new(CLI)
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
        Self {
            child,
            master,
            slave: Some(slave),
            seen,
            drained: Some(drained),
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    pub fn read_until(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "never saw {needle:?}: {}",
                self.text()
            );
            std::thread::park_timeout(Duration::from_millis(20));
        }
    }

    /// Resizes the terminal and tells the CLI, as a terminal emulator does (SIGWINCH).
    pub fn resize(&self, rows: u16, cols: u16) {
        let ws = rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // rustix rather than nix: nix has no safe TIOCSWINSZ.
        rustix::termios::tcsetwinsize(&self.master, ws).expect("TIOCSWINSZ");
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGWINCH);
    }

    pub fn prompts(&self) -> usize {
        self.text().matches("$ ").count()
    }

    pub fn type_in(&self, input: &str) {
        let mut writer = std::fs::File::from(self.master.try_clone().unwrap());
        writer.write_all(input.as_bytes()).unwrap();
    }

    /// Waits for the CLI to exit; checks it gave the terminal back; returns its code and output.
    pub fn finish(mut self) -> (i32, String) {
        let status = self.child.wait().unwrap();
        let slave = self.slave.take().unwrap();
        // The CLI put the terminal back as it found it (canonical mode, echo).
        let flags = lflag(&slave);
        assert!(
            flags.contains(LocalFlags::ICANON | LocalFlags::ECHO),
            "terminal left raw"
        );
        // With the last slave descriptor closed, the master reads to the end and then fails (EIO).
        drop(slave);
        self.drained.take().unwrap().join().unwrap();
        (status.code().unwrap_or(-1), self.text())
    }
}

/// Runs the CLI on a terminal of `rows`×`cols`, typing `input` once `ready` appears; returns its exit
/// code and everything it printed.
pub fn run_on_terminal(
    hub: &Hub,
    args: &[&str],
    rows: u16,
    cols: u16,
    ready: &str,
    input: &str,
) -> (i32, String) {
    let term = Term::spawn(hub, args, rows, cols);
    term.read_until(ready);
    term.type_in(input);
    term.finish()
}
