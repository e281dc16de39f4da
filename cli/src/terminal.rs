//! The local terminal for `exec -t`: its window size, and raw mode restored on every way out (return,
//! error, panic, SIGTERM). Through rustix's termios calls, which need no unsafe code.

use std::io::IsTerminal;

use docker_agent_proto::v1 as pb;
use rustix::termios::{OptionalActions, Termios, tcgetattr, tcgetwinsize, tcsetattr};

/// The window size of the terminal on stdin (or stdout), if either is one.
pub fn size() -> Option<pb::PtySize> {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    [tcgetwinsize(&stdin), tcgetwinsize(&stdout)]
        .into_iter()
        .flatten()
        .find(|ws| ws.ws_row > 0)
        .map(|ws| pb::PtySize {
            rows: ws.ws_row.into(),
            cols: ws.ws_col.into(),
        })
}

/// Stdin in raw mode: every key goes to the remote terminal as typed (Ctrl-C included); the saved
/// settings come back when this is dropped.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    pub fn enter() -> anyhow::Result<Self> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            anyhow::bail!("-t needs a terminal on stdin (run it from a terminal, or drop -t)");
        }
        let saved = tcgetattr(&stdin)
            .map_err(|e| anyhow::anyhow!("failed to read the terminal's settings: {e}"))?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(&stdin, OptionalActions::Now, &raw)
            .map_err(|e| anyhow::anyhow!("failed to put the terminal in raw mode: {e}"))?;
        Ok(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(std::io::stdin(), OptionalActions::Now, &self.saved);
    }
}
