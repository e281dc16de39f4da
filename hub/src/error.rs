//! The hub's error type. gRPC statuses are made from it in one place (`grpc::status`).

use crate::datadir::DataDirError;
use crate::driver::DriverError;
use crate::image::ImageError;
use crate::lifecycle::InvalidTransition;
use crate::profile::ProfileError;
use crate::store::StoreError;
use crate::tls::TlsError;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("agent {0:?} not found")]
    AgentNotFound(String),
    #[error("agent {0:?} already exists")]
    AgentExists(String),
    #[error("task {0:?} not found")]
    TaskNotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Timeout(String),
    /// A profile setup step failed; the agent stays in start_error.
    #[error("{0}")]
    SetupFailed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Transition(#[from] InvalidTransition),
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("failed to bind {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, HubError>;
