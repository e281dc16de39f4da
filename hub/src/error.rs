//! The hub's error type, and the one place it is classified for clients ([`HubError::public`]): gRPC (`grpc::status`) and HTTP (`http::error`) only encode that.

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
    #[error("agent {} not found", shown(.0))]
    AgentNotFound(String),
    #[error("agent {} already exists", shown(.0))]
    AgentExists(String),
    #[error("task {} not found", shown(.0))]
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

/// A user-supplied value as an error message shows it: quoted with escapes, and cut after 64
/// characters so a 10 KB name does not become a 10 KB error line.
pub fn shown(value: &str) -> String {
    const MAX: usize = 64;
    match value.char_indices().nth(MAX) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &value[..cut], value.len()),
    }
}

/// What kind of failure a client sees; gRPC codes and HTTP statuses are made from this alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    Timeout,
    Unavailable,
    Internal,
}

impl ErrorKind {
    /// The stable name used in JSON errors.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::FailedPrecondition => "failed_precondition",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }
}

impl HubError {
    /// The kind and the message a client may see. Internal details (paths, SQL, engine replies) are
    /// logged here in full and replaced by a pointer to the log.
    pub fn public(&self) -> (ErrorKind, String) {
        use ErrorKind as K;
        let (kind, message) = match self {
            HubError::InvalidArgument(_) | HubError::Config(_) => {
                (K::InvalidArgument, self.to_string())
            }
            HubError::Profile(ProfileError::Unknown { .. }) => (K::NotFound, self.to_string()),
            HubError::Profile(ProfileError::Invalid { .. } | ProfileError::Directory { .. }) => {
                (K::InvalidArgument, self.to_string())
            }
            HubError::AgentNotFound(_) | HubError::TaskNotFound(_) => {
                (K::NotFound, self.to_string())
            }
            HubError::AgentExists(_) | HubError::Conflict(_) => {
                (K::AlreadyExists, self.to_string())
            }
            HubError::FailedPrecondition(_)
            | HubError::SetupFailed(_)
            | HubError::Transition(_) => (K::FailedPrecondition, self.to_string()),
            HubError::Timeout(_) => (K::Timeout, self.to_string()),
            HubError::Driver(DriverError::Unreachable(_))
            | HubError::Image(ImageError::Driver(DriverError::Unreachable(_))) => (
                K::Unavailable,
                "the Docker engine is not reachable from the hub".to_string(),
            ),
            HubError::Driver(DriverError::Conflict(_)) => (K::FailedPrecondition, self.to_string()),
            HubError::Driver(e) => (K::Internal, format!("docker: {e}")),
            // Image errors carry actionable text (missing debootstrap, missing agent binary, build output).
            HubError::Image(e) => (K::FailedPrecondition, e.to_string()),
            HubError::Store(_)
            | HubError::DataDir(_)
            | HubError::Tls(_)
            | HubError::Bind { .. }
            | HubError::Internal(_) => (
                K::Internal,
                "internal hub error; see the hub's log".to_string(),
            ),
        };
        match kind {
            K::Internal | K::Unavailable => tracing::error!(error = %self, "request failed"),
            _ => tracing::debug!(error = %self, "request refused"),
        }
        (kind, message)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_values_are_cut_and_control_characters_escaped() {
        assert_eq!(super::shown("demo"), "\"demo\"");
        assert_eq!(super::shown("a\u{1}b"), "\"a\\u{1}b\"");
        let long = super::shown(&"x".repeat(10_000));
        assert!(
            long.len() < 100 && long.ends_with("(10000 bytes)"),
            "{long}"
        );
    }
}
