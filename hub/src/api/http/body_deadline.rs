//! A deadline for request bodies. Headers must arrive within the listener's timeout; a body that trickles
//! in a byte at a time (slow-loris) would otherwise hold a connection for as long as the client likes.
//! The body is wrapped, not read here: handlers still check the token before reading anything, and a
//! body nobody reads costs nothing. HTTP/2 bodies without a length are covered the same way.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// The whole body must arrive within this after the headers: 1 MiB takes 15 s only below ~70 KB/s.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(15);

/// What reading a body past its deadline fails with; `is_deadline` finds it in a rejection's sources.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} s", BODY_TIMEOUT.as_secs())]
pub struct BodyDeadline;

pub async fn body_deadline(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let body = Body::new(DeadlineBody {
        inner: body,
        deadline: Instant::now() + BODY_TIMEOUT,
        sleep: None,
    });
    next.run(Request::from_parts(parts, body)).await
}

/// Whether `error` (a body or extractor error) is, at its root, a missed body deadline.
pub fn is_deadline(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<BodyDeadline>() {
            return true;
        }
        current = e.source();
    }
    false
}

struct DeadlineBody {
    inner: Body,
    deadline: Instant,
    /// Made the first time the body has to wait, so a body that is already there costs no timer.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        let deadline = self.deadline;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyDeadline)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_trickling_body_fails_at_the_deadline_and_a_quick_one_passes() {
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        // A body that never ends, with a short deadline: the trickle never stops it from firing.
        let body = DeadlineBody {
            inner: Body::from_stream(rx),
            deadline: Instant::now() + Duration::from_millis(300),
            sleep: None,
        };
        let feeder = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if tx.try_send(Ok(Bytes::from_static(b"x"))).is_err() {
                    break;
                }
            }
        });
        let err = body.collect().await.unwrap_err();
        assert!(is_deadline(&err), "{err}");
        feeder.abort();

        let body = DeadlineBody {
            inner: Body::from("whole"),
            deadline: Instant::now(),
            sleep: None,
        };
        assert_eq!(body.collect().await.unwrap().to_bytes(), "whole");
    }
}
