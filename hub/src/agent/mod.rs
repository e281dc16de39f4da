//! Agents after create: the hub's half of the agent link (hello and welcome, then heartbeats, output
//! and results), setup progress, readiness, the operations (start, stop, restart, destroy), snapshots,
//! the agents' networks, their names, orphans, and the watch on Docker that keeps state true.

pub mod conduct;
pub mod files;
pub mod fleet;
pub mod link;
pub mod names;
pub mod networks;
pub mod ops;
pub mod orphans;
pub mod readiness;
pub mod setup;
pub mod snapshot;
pub mod watch;
