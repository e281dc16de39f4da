//! Setup step output into the agent's own stdout and stderr (the container log), byte for byte but whole lines at a time, so the agent's log lines fall between a step's lines rather than inside them.
//!
//! The agent's tracing writes each event with one `write_all` on stderr, under std's stderr lock; so
//! do these writes. A step's partial line is held back until its newline arrives, the step goes quiet
//! for `HOLD`, or `MAX_PENDING` bytes pile up (a progress bar redrawn with `\r`): only then can an
//! agent log line land mid-line.

use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

use crate::spool::READ_CHUNK;

/// How long a partial line waits for the rest of it.
pub const HOLD: Duration = Duration::from_millis(250);
/// A partial line longer than this is written as it is.
pub const MAX_PENDING: usize = 16 * 1024;

/// One of the agent's own output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    Stdout,
    Stderr,
}

impl Console {
    /// Writes `bytes` in one go under the stream's lock. A closed or broken log is not the step's
    /// problem: the error is logged and the step goes on.
    pub fn write(self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let result = match self {
            Console::Stdout => {
                let mut out = io::stdout().lock();
                // std's stdout is line-buffered: flush so a held-back partial line is not held twice.
                out.write_all(bytes).and_then(|()| out.flush())
            }
            Console::Stderr => io::stderr().lock().write_all(bytes),
        };
        if let Err(e) = result {
            tracing::debug!(stream = ?self, error = %e, "cannot write setup output to the container log");
        }
    }
}

/// Prints one line of the agent's own (a setup banner) on stdout.
pub fn line(text: &str) {
    let mut bytes = Vec::with_capacity(text.len() + 1);
    bytes.extend_from_slice(text.as_bytes());
    bytes.push(b'\n');
    Console::Stdout.write(&bytes);
}

/// Splits a byte stream so that only complete lines come out, except when told to let go.
#[derive(Debug)]
pub struct LineSplitter {
    pending: Vec<u8>,
    max: usize,
}

impl LineSplitter {
    pub fn new(max: usize) -> Self {
        Self {
            pending: Vec::new(),
            max,
        }
    }

    /// Adds `data`; returns what can be written now: everything up to the last newline, or all of it
    /// once the partial line reaches `max`.
    pub fn push(&mut self, data: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(data);
        match self.pending.iter().rposition(|b| *b == b'\n') {
            Some(end) if end + 1 == self.pending.len() => std::mem::take(&mut self.pending),
            Some(end) => {
                let rest = self.pending.split_off(end + 1);
                std::mem::replace(&mut self.pending, rest)
            }
            None if self.pending.len() >= self.max => std::mem::take(&mut self.pending),
            None => Vec::new(),
        }
    }

    /// The partial line held back, if any.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Copies a step's pipe to `to` until EOF.
pub async fn forward(fd: OwnedFd, to: Console) {
    let mut rx = match pipe::Receiver::from_owned_fd(fd) {
        Ok(rx) => rx,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read setup step output");
            return;
        }
    };
    let mut lines = LineSplitter::new(MAX_PENDING);
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let read = if lines.is_empty() {
            rx.read(&mut buf).await
        } else {
            // `read` is cancel-safe: a timeout loses no bytes.
            match tokio::time::timeout(HOLD, rx.read(&mut buf)).await {
                Ok(r) => r,
                Err(_) => {
                    to.write(&lines.take());
                    continue;
                }
            }
        };
        match read {
            Ok(0) => break,
            Ok(n) => to.write(&lines.push(&buf[..n])),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(error = %e, "reading setup step output failed");
                break;
            }
        }
    }
    to.write(&lines.take());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_lines_come_out() {
        let mut s = LineSplitter::new(100);
        assert_eq!(s.push(b"abc"), b"");
        assert_eq!(s.push(b"def\ngh"), b"abcdef\n");
        assert_eq!(s.push(b"i\nj\n"), b"ghi\nj\n");
        assert!(s.is_empty());
        assert_eq!(s.push(b"\n"), b"\n");
        assert_eq!(s.push(b"tail"), b"");
        assert_eq!(s.take(), b"tail");
        assert!(s.is_empty());
        assert_eq!(s.take(), b"");
    }

    #[test]
    fn a_long_partial_line_is_let_go() {
        let mut s = LineSplitter::new(8);
        assert_eq!(s.push(b"\r10%"), b"");
        assert_eq!(s.push(b"\r20%"), b"\r10%\r20%");
        assert!(s.is_empty());
    }

    #[test]
    fn bytes_pass_unchanged() {
        let input: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let mut s = LineSplitter::new(64);
        let mut out = Vec::new();
        for chunk in input.chunks(37) {
            out.extend(s.push(chunk));
        }
        out.extend(s.take());
        assert_eq!(out, input);
    }
}
