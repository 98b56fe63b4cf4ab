//! The OTLP exporter's HTTP client: the worker's own rules for a collector it does not trust.
//!
//! A collector is one more server around the worker that can be down, slow or hostile. The
//! exporter's requests go through this client, which never follows a redirect (the request carries
//! the `OTEL_EXPORTER_OTLP_HEADERS`, often a collector's credentials), reads at most
//! [`REPLY_LIMIT`] bytes of a reply (an OTLP answer is a few bytes), and gives each request a
//! deadline. The SDK's batch processor exports from a thread of its own; the request runs on the
//! worker's runtime, and that thread waits for it, so the worker's tasks never wait for a
//! collector.

use std::time::Duration;

use async_trait::async_trait;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use tokio::runtime::Handle;

use crate::engine::reply::{bytes, read_bounded, BodyError};

/// The most of a collector's reply that is read: an OTLP export answer is empty or names a count
/// of rejected spans and a message.
pub const REPLY_LIMIT: u64 = 64 * 1024;

/// Sends the exporter's requests on the worker's runtime (see the module's doc).
#[derive(Debug)]
pub struct CollectorClient {
    client: reqwest::Client,
    runtime: Handle,
}

impl CollectorClient {
    /// A client whose requests run on `runtime` and end after `timeout` (connect, send and read).
    pub fn new(runtime: Handle, timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()?;
        Ok(CollectorClient { client, runtime })
    }
}

#[async_trait]
impl HttpClient for CollectorClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let request = self
            .client
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body);
        let sent = self.runtime.spawn(async move {
            let response = request.send().await?;
            let headers = response.headers().clone();
            let reply = read_bounded(response, REPLY_LIMIT)
                .await
                .map_err(|error| match error {
                    BodyError::Transport(error) => HttpError::from(error),
                    BodyError::TooLarge { .. } => HttpError::from(format!(
                        "the collector's reply is over {}",
                        bytes(REPLY_LIMIT)
                    )),
                })?;
            let mut answer = Response::new(Bytes::from(reply.body));
            *answer.status_mut() = reply.status;
            *answer.headers_mut() = headers;
            Ok::<_, HttpError>(answer)
        });
        // A runtime that is shutting down cancels the request: the batch is dropped and counted.
        sent.await
            .map_err(|_| HttpError::from("the worker's runtime ended the export"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn export_to(uri: &str) -> Request<Bytes> {
        Request::post(format!("{uri}/v1/traces"))
            .header("authorization", "Bearer collector-secret")
            .body(Bytes::from_static(b"spans"))
            .unwrap()
    }

    /// A redirect is answered, never followed: the request's headers (a collector's
    /// credentials) do not travel to where the collector points.
    #[tokio::test]
    async fn a_redirect_is_not_followed() {
        let elsewhere = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200))
            .expect(0)
            .mount(&elsewhere)
            .await;
        let collector = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(307)
                    .insert_header("location", format!("{}/v1/traces", elsewhere.uri())),
            )
            .mount(&collector)
            .await;
        let client = CollectorClient::new(Handle::current(), Duration::from_secs(5)).unwrap();
        let reply = client
            .send_bytes(export_to(&collector.uri()))
            .await
            .unwrap();
        assert_eq!(reply.status(), 307);
        elsewhere.verify().await;
    }

    /// A reply larger than the bound is an error, not a buffer that grows with it.
    #[tokio::test]
    async fn a_reply_over_the_bound_is_refused() {
        let collector = MockServer::start().await;
        let huge = vec![b'x'; REPLY_LIMIT as usize + 1];
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_bytes(huge))
            .mount(&collector)
            .await;
        let client = CollectorClient::new(Handle::current(), Duration::from_secs(5)).unwrap();
        let error = client
            .send_bytes(export_to(&collector.uri()))
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), "the collector's reply is over 64 KiB");
    }

    /// A collector that never answers costs the timeout, then an error.
    #[tokio::test]
    async fn a_collector_that_never_answers_ends_at_the_timeout() {
        let collector = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
            .mount(&collector)
            .await;
        let client = CollectorClient::new(Handle::current(), Duration::from_millis(200)).unwrap();
        let sent = tokio::time::timeout(
            Duration::from_secs(10),
            client.send_bytes(export_to(&collector.uri())),
        )
        .await
        .expect("the client's own timeout ends it");
        assert!(sent.is_err());
    }
}
