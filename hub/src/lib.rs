//! The docker-agent hub: spawns agent containers through the Docker API, keeps agents, tasks and output in SQLite, and serves the agent stream and the control API over gRPC/TLS.

pub mod agents;
pub mod bus;
pub mod config;
pub mod conn_limit;
pub mod core;
pub mod create;
pub mod credentials;
pub mod datadir;
pub mod driver;
pub mod error;
pub mod grpc;
pub mod health_history;
pub mod http;
pub mod image;
pub mod lifecycle;
pub mod metrics;
pub mod networks;
pub mod profile;
pub mod prune;
pub mod registry;
mod server;
pub mod session;
pub mod sessions;
pub mod setup;
pub mod snapshot;
pub mod store;
pub mod task_json;
pub mod tasks;
pub mod tls;
mod watch;

pub use config::{AgentListen, HubConfig};
pub use error::{HubError, Result};
pub use server::{RunningHub, browser_addr, start};
