//! Handles on a running task's process: its process group, its stop request and, for a PTY task, its terminal.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::pty::Master;

/// Handles on a running task's process.
#[derive(Debug)]
pub struct Control {
    /// Process group (= pid, the task leads its own session).
    pub pgid: i32,
    /// Asks the task's supervisor to stop it: TERM, then KILL after `kill_grace`.
    pub stop: Arc<Notify>,
    /// The terminal's master side when the task runs on a PTY, for ResizePty.
    pub pty: Option<Arc<Master>>,
}
