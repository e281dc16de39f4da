//! The docker-agent hub: spawns agent containers through the Docker API, keeps agents, tasks and output in SQLite, and serves the agent stream and the control API over gRPC/TLS.

// One raw system call (`store/output.rs`, sync_file_range, which nix does not wrap) is allowed
// where it stands; nothing else in the hub may use unsafe code.
#![deny(unsafe_code)]

pub mod agent;
pub mod api;
pub mod config;
pub mod core;
pub mod create;
pub mod credentials;
pub mod datadir;
pub mod driver;
pub mod error;
pub mod exec;
pub mod image;
pub mod lifecycle;
pub mod metrics;
pub mod profile;
mod server;
pub mod store;
pub mod task;
pub mod tls;

pub use config::{AgentListen, DriverKind, HubConfig};
pub use error::{HubError, Result};
pub use server::{RunningHub, browser_addr, start};
