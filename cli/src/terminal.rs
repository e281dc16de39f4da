//! The local terminal for `exec -t`: its window size, and raw mode restored on every way out (return, error, panic, SIGTERM).

use std::io::IsTerminal;

use docker_agent_proto::v1 as pb;

/// The window size of the terminal on stdin (or stdout), if either is one.
pub fn size() -> Option<pb::PtySize> {
    for fd in [libc::STDIN_FILENO, libc::STDOUT_FILENO] {
        // SAFETY: TIOCGWINSZ writes one winsize into the struct we own.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 {
            return Some(pb::PtySize {
                rows: ws.ws_row.into(),
                cols: ws.ws_col.into(),
            });
        }
    }
    None
}

/// Stdin in raw mode: every key goes to the remote terminal as typed (Ctrl-C included); the saved
/// settings come back when this is dropped.
pub struct RawMode {
    saved: libc::termios,
}

impl RawMode {
    pub fn enter() -> anyhow::Result<Self> {
        if !std::io::stdin().is_terminal() {
            anyhow::bail!("-t needs a terminal on stdin (run it from a terminal, or drop -t)");
        }
        // SAFETY: tcgetattr/tcsetattr on fd 0 with termios structs we own.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut saved) != 0 {
                anyhow::bail!(
                    "failed to read the terminal's settings: {}",
                    std::io::Error::last_os_error()
                );
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) != 0 {
                anyhow::bail!(
                    "failed to put the terminal in raw mode: {}",
                    std::io::Error::last_os_error()
                );
            }
            Ok(Self { saved })
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `enter` on the same fd.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved);
        }
    }
}
