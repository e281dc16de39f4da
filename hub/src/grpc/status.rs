//! The one place hub errors become gRPC statuses: logged in full here, returned sanitised.

use tonic::{Code, Status};

use crate::driver::DriverError;
use crate::error::HubError;
use crate::image::ImageError;
use crate::profile::ProfileError;

impl From<HubError> for Status {
    fn from(err: HubError) -> Self {
        let (code, message) = match &err {
            HubError::InvalidArgument(_) | HubError::Config(_) => {
                (Code::InvalidArgument, err.to_string())
            }
            HubError::Profile(ProfileError::Unknown { .. }) => (Code::NotFound, err.to_string()),
            HubError::Profile(ProfileError::Invalid { .. } | ProfileError::Directory { .. }) => {
                (Code::InvalidArgument, err.to_string())
            }
            HubError::AgentNotFound(_) | HubError::TaskNotFound(_) => {
                (Code::NotFound, err.to_string())
            }
            HubError::AgentExists(_) | HubError::Conflict(_) => {
                (Code::AlreadyExists, err.to_string())
            }
            HubError::FailedPrecondition(_)
            | HubError::SetupFailed(_)
            | HubError::Transition(_) => (Code::FailedPrecondition, err.to_string()),
            HubError::Timeout(_) => (Code::DeadlineExceeded, err.to_string()),
            HubError::Driver(DriverError::Unreachable(_))
            | HubError::Image(ImageError::Driver(DriverError::Unreachable(_))) => (
                Code::Unavailable,
                "the Docker engine is not reachable from the hub".to_string(),
            ),
            HubError::Driver(DriverError::Conflict(_)) => {
                (Code::FailedPrecondition, err.to_string())
            }
            HubError::Driver(e) => (Code::Internal, format!("docker: {e}")),
            // Image errors carry actionable text (missing debootstrap, missing agent binary, build output).
            HubError::Image(e) => (Code::FailedPrecondition, e.to_string()),
            HubError::Store(_)
            | HubError::DataDir(_)
            | HubError::Tls(_)
            | HubError::Bind { .. }
            | HubError::Internal(_) => (
                Code::Internal,
                "internal hub error; see the hub's log".to_string(),
            ),
        };
        match code {
            Code::Internal | Code::Unavailable => tracing::error!(error = %err, "request failed"),
            _ => tracing::debug!(error = %err, "request refused"),
        }
        Status::new(code, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    #[test]
    fn internals_are_not_leaked() {
        let err = HubError::Store(StoreError::Corrupt("/secret/path/hub.db broke".into()));
        let status = Status::from(err);
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("/secret"));
    }

    #[test]
    fn user_errors_keep_their_message() {
        let status = Status::from(HubError::AgentNotFound("demo".into()));
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "agent \"demo\" not found");
    }
}
