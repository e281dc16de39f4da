//! Tasks on a pseudo-terminal: opening the pair, starting the task on its slave side, window sizes, and the
//! pumps that carry the master's output into the spool (as stdout) and stdin onto the terminal.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use bytes::Bytes;
use docker_agent_proto::v1::PtySize;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::stat::Mode;
use nix::sys::termios::{SpecialCharacterIndices, tcgetattr};
use nix::unistd::Uid;
use rustix::termios::{Winsize, tcsetwinsize};
use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;

use crate::reaper::ExitStatus;
use crate::spawn::{self, ProcessSpec, SpawnError, Streams};
use crate::spool::{READ_CHUNK, StreamId};
use crate::state::Shared;
use crate::tasks::StdinRx;
use crate::users::TaskUser;

/// TERM of a PTY task whose own environment names none: what the CLI's terminal most likely is.
pub const DEFAULT_TERM: &str = "xterm-256color";

/// Ctrl-D: the EOF character when the terminal's settings cannot be read or have it disabled.
const EOF_FALLBACK: u8 = 0x04;

/// The master side of a task's terminal, registered with tokio (non-blocking).
#[derive(Debug)]
pub struct Master {
    fd: AsyncFd<OwnedFd>,
}

impl Master {
    /// Sets the terminal's window size; the kernel sends SIGWINCH to its foreground process group.
    pub fn resize(&self, size: &PtySize) -> io::Result<()> {
        set_size(self.fd.get_ref().as_fd(), size)
    }

    /// Reads what the task wrote. `Ok(0)` once every slave descriptor is closed: Linux reports that as EIO,
    /// but only after everything still buffered has been read, so nothing is lost by treating it as EOF.
    async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), buf).map_err(io::Error::from)) {
                Ok(Err(e)) if e.raw_os_error() == Some(Errno::EIO as i32) => return Ok(0),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(result) => return result,
                Err(_would_block) => {}
            }
        }
    }

    /// Writes all of `data` to the terminal's input, waiting while the task does not read it.
    async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from))
            {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
        Ok(())
    }

    /// The terminal's EOF character as the task has it set (termios calls on a Linux master act on the slave).
    fn eof_char(&self) -> u8 {
        tcgetattr(self.fd.get_ref())
            .ok()
            .map(|t| t.control_chars[SpecialCharacterIndices::VEOF as usize])
            .filter(|&c| c != 0)
            .unwrap_or(EOF_FALLBACK)
    }
}

/// A task started on a terminal. Its exit status arrives from the reaper; the caller must never wait for it.
#[derive(Debug)]
pub struct PtySpawned {
    pub pid: u32,
    pub master: Arc<Master>,
    pub exit: oneshot::Receiver<ExitStatus>,
}

/// The protocol's size as the kernel's; values beyond what a terminal can hold are clamped, not wrapped.
fn winsize(size: &PtySize) -> Winsize {
    let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
    Winsize {
        ws_row: clamp(size.rows),
        ws_col: clamp(size.cols),
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

fn set_size(fd: BorrowedFd<'_>, size: &PtySize) -> io::Result<()> {
    // rustix rather than nix: nix has no safe TIOCSWINSZ.
    tcsetwinsize(fd, winsize(size)).map_err(io::Error::from)
}

/// Opens a terminal pair with the window size already set, so the task sees it from its first instruction.
/// Returns the master (registered with tokio) and the slave.
fn open(size: &PtySize) -> io::Result<(Master, OwnedFd)> {
    // O_CLOEXEC on both ends: a task started at the same moment on another thread must not inherit them; a stray
    // copy of the slave would keep this master from ever reading EOF. O_NOCTTY: never the agent's own terminal.
    let master =
        posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname_r(&master)?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    set_size(master.as_fd(), size)?;
    // SAFETY: the OwnedFd is open and moves into the AsyncFd, which alone owns it (so the descriptor stays the
    // same open file until the AsyncFd is dropped).
    let fd = unsafe { AsyncFd::register(OwnedFd::from(master)) }?;
    let master = Master { fd };
    Ok((master, slave))
}

/// Gives the terminal to the task user, as login(1) does, so programs that reopen it by name (ssh, sudo, less
/// through /dev/tty's path) may. Best effort: without CAP_CHOWN the task still has its open descriptors.
fn give_to(slave: &OwnedFd, user: &TaskUser) {
    if nix::unistd::geteuid().as_raw() == user.uid {
        return;
    }
    if let Err(e) = nix::unistd::fchown(slave, Some(Uid::from_raw(user.uid)), None) {
        tracing::debug!(error = %e, "cannot give the task's terminal to the task user");
    }
}

/// Sets TERM for a task on a terminal, over the agent's own, unless the task names its own.
pub fn set_term(env: &mut Vec<(OsString, OsString)>, task_env: &HashMap<String, String>) {
    if task_env.contains_key("TERM") {
        return;
    }
    match env.iter_mut().find(|(k, _)| k == "TERM") {
        Some(slot) => slot.1 = DEFAULT_TERM.into(),
        None => env.push(("TERM".into(), DEFAULT_TERM.into())),
    }
}

/// Starts `spec` as `user` on a new terminal of `size`: in its own process session (setsid), with the terminal as its stdin,
/// stdout, stderr and controlling terminal. `spec.stdin` is ignored: a terminal always has an input side.
pub fn spawn(
    spec: &ProcessSpec,
    user: &TaskUser,
    oom_score_adj: i32,
    size: &PtySize,
) -> Result<PtySpawned, SpawnError> {
    let program = spec.argv.first().ok_or(SpawnError::EmptyArgv)?;
    let (master, slave) = open(size).map_err(|source| SpawnError::Pty {
        program: program.clone(),
        source,
    })?;
    give_to(&slave, user);
    // The slave moves into the command and is closed here once the child has its copies.
    let (child, exit) = spawn::spawn_with(spec, user, oom_score_adj, Streams::Terminal(slave))?;
    // `child` is dropped without waiting: the reaper owns its exit status.
    Ok(PtySpawned {
        pid: child.id(),
        master: Arc::new(master),
        exit,
    })
}

/// Reads the master to EOF into the spool as the task's stdout (a terminal merges stdout and stderr), with the
/// same pacing as a pipe: while connected the task blocks in write(2) when the hub lags, nothing is dropped.
pub async fn pump_output(shared: &Shared, id: &str, master: Arc<Master>) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match master.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => {
                shared
                    .append_output(id, StreamId::Stdout, Bytes::copy_from_slice(&buf[..n]))
                    .await;
                shared.outbound.notify_one();
            }
            Err(e) => {
                tracing::warn!(task = %id, error = %e, "reading the task's terminal failed");
                return;
            }
        }
    }
}

/// Types stdin messages into the terminal in order. A close is the EOF character, not a close: the terminal
/// stays, and a program at the start of a line reads end-of-file (a shell at an empty prompt exits).
pub async fn pump_stdin(master: Arc<Master>, rx: Option<StdinRx>, mut wrote: impl FnMut(usize)) {
    let Some(mut rx) = rx else {
        return;
    };
    while let Some(msg) = rx.recv().await {
        let eof;
        let data: &[u8] = match &msg {
            Some(data) => data,
            None => {
                eof = [master.eof_char()];
                &eof
            }
        };
        if let Err(e) = master.write_all(data).await {
            // Usually EIO: the task and everything it started closed the terminal. Later data is dropped.
            tracing::debug!(error = %e, "task terminal closed for input");
            return;
        }
        if msg.is_some() {
            wrote(data.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(rows: u32, cols: u32) -> PtySize {
        PtySize { rows, cols }
    }

    fn get_size(fd: BorrowedFd<'_>) -> (u16, u16) {
        let ws = rustix::termios::tcgetwinsize(fd).unwrap();
        (ws.ws_row, ws.ws_col)
    }

    #[test]
    fn sizes_are_clamped_not_wrapped() {
        let ws = winsize(&size(24, 80));
        assert_eq!((ws.ws_row, ws.ws_col), (24, 80));
        let ws = winsize(&size(70_000, u32::MAX));
        assert_eq!((ws.ws_row, ws.ws_col), (u16::MAX, u16::MAX));
    }

    #[test]
    fn term_is_set_unless_the_task_sets_it() {
        let mut env = vec![("TERM".into(), "dumb".into()), ("A".into(), "b".into())];
        set_term(&mut env, &HashMap::new());
        assert!(env.contains(&("TERM".into(), DEFAULT_TERM.into())));
        assert_eq!(env.len(), 2);
        let mut env = Vec::new();
        set_term(&mut env, &HashMap::new());
        assert_eq!(env, [("TERM".into(), DEFAULT_TERM.into())]);
        // The task's own TERM is already in `env` (task_env put it there) and stays.
        let mut env = vec![("TERM".into(), "vt100".into())];
        set_term(&mut env, &HashMap::from([("TERM".into(), "vt100".into())]));
        assert_eq!(env, [("TERM".into(), "vt100".into())]);
    }

    #[tokio::test]
    async fn the_slave_sees_the_initial_size_and_resizes() {
        let (master, slave) = open(&size(24, 80)).unwrap();
        assert_eq!(get_size(slave.as_fd()), (24, 80));
        master.resize(&size(40, 100)).unwrap();
        assert_eq!(get_size(slave.as_fd()), (40, 100));
        assert_eq!(master.eof_char(), EOF_FALLBACK);
    }

    #[tokio::test]
    async fn what_is_left_is_read_before_the_closed_slave_reads_as_eof() {
        let (master, slave) = open(&size(24, 80)).unwrap();
        nix::unistd::write(&slave, b"last words\n").unwrap();
        drop(slave);
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            let n = master.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        // The terminal's output processing turns \n into \r\n.
        assert_eq!(out, b"last words\r\n");
    }

    #[tokio::test]
    async fn stdin_is_typed_into_the_terminal_and_close_is_eof() {
        let (master, slave) = open(&size(24, 80)).unwrap();
        let master = Arc::new(master);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tx.send(Some(b"hi\n".to_vec().into())).unwrap();
        tx.send(None).unwrap();
        drop(tx);
        let mut written = 0;
        pump_stdin(master.clone(), Some(rx), |n| written += n).await;
        assert_eq!(written, 3);
        // Canonical mode: one read per line, then the EOF character makes read return 0.
        let mut buf = [0u8; 16];
        let n = nix::unistd::read(&slave, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi\n");
        assert_eq!(nix::unistd::read(&slave, &mut buf).unwrap(), 0);
    }
}
