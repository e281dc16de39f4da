//! The CLI's gRPC control API on the operator listener: agents, tasks and exec (`service`), profiles,
//! snapshots and container logs (`catalog`), `cp` (`copy`), records into messages (`convert`), and
//! the one place errors become statuses (`status`).

mod catalog;
pub mod convert;
mod copy;
pub mod service;
mod status;

pub use service::ControlSvc;
