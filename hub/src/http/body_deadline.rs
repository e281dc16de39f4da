//! A deadline for request bodies. Headers must arrive within the listener's timeout; a body that trickles
//! in a byte at a time (slow-loris) would otherwise hold a connection for as long as the client likes.
//! Bodies here are small (forms and JSON, at most `BODY_LIMIT`), so the whole body is read up front.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::api::extract::BODY_LIMIT;
use super::error::ApiError;

/// The whole body must arrive within this after the headers: 1 MiB takes 15 s only below ~70 KB/s.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(15);

pub async fn body_deadline(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|len| len.as_bytes() != b"0");
    if !has_body {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    // One byte over the limit tells "too large" from "exactly the limit"; the handler's own limit
    // answers 413 for what arrives in time.
    match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, BODY_LIMIT + 1)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(_)) => {
            let mut response = ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_argument",
                format!("the request body is larger than {BODY_LIMIT} bytes"),
            )
            .into_response();
            close(&mut response);
            response
        }
        Err(_) => {
            let mut response = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!(
                    "the request body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            )
            .into_response();
            close(&mut response);
            response
        }
    }
}

/// The rest of the body is never read, so the connection cannot carry another request.
fn close(response: &mut Response) {
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
}
