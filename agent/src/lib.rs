//! The in-container agent: dials the hub, runs tasks as the task user, streams their output, reports health, reconnects forever.
//!
//! Flow: `args` → `config` (validated before any dial) → `agent` (reconnect loop, shutdown) →
//! `link` (the stream to the hub: Hello/Welcome, reader and writer) → `runner` (one supervisor per task, on top of
//! `spawn` (or `pty` for a terminal) and `reaper`, waited for by `supervise`) → `tasks`/`spool` (what the hub has and has not seen
//! yet). Beside them, `setup` runs the profile's setup steps once (`progress` remembers how far it
//! got, `console` puts their output in the container log) while new tasks are held back. Before
//! any of it, `link_local` makes cloud metadata addresses unreachable when the hub asks. `archive`
//! is the same binary run as a task: the container's side of `cp` over the agent's link. `load` runs
//! thousands of simulated agents in one process for the benchmarks.

// Unlike the other crates this one cannot forbid unsafe code: starting a task needs `pre_exec` (it
// runs between fork and exec), and glibc's malloc_trim has no safe wrapper. Every unsafe block says
// why it is sound.

pub mod agent;
pub mod archive;
pub mod args;
pub mod backoff;
pub mod config;
pub mod console;
pub mod dial;
pub mod health;
pub mod hosts;
pub mod link;
pub mod link_local;
pub mod load;
pub mod progress;
pub mod pty;
pub mod reaper;
pub mod runner;
pub mod setup;
pub mod spawn;
pub mod spool;
pub mod state;
pub mod supervise;
pub mod system;
pub mod tasks;
pub mod users;

/// Exit code for a bad configuration (sysexits EX_USAGE).
pub const EX_USAGE: u8 = 64;
