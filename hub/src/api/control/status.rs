//! Hub errors as gRPC statuses: the classification and sanitising are `HubError::public`'s; this only picks the code.

use tonic::{Code, Status};

use crate::error::{ErrorKind, HubError};

impl From<HubError> for Status {
    fn from(err: HubError) -> Self {
        let (kind, message) = err.public();
        let code = match kind {
            ErrorKind::InvalidArgument => Code::InvalidArgument,
            ErrorKind::NotFound => Code::NotFound,
            ErrorKind::AlreadyExists => Code::AlreadyExists,
            ErrorKind::FailedPrecondition => Code::FailedPrecondition,
            ErrorKind::Timeout => Code::DeadlineExceeded,
            ErrorKind::Unavailable => Code::Unavailable,
            ErrorKind::Internal => Code::Internal,
        };
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
