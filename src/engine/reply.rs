//! What the client takes from a reply: a body no larger than its bound, and never a redirect —
//! the engine, and whatever stands in front of it, is a peer the worker does not control.
//!
//! A body is read chunk by chunk against a size bound, so an endless or oversized reply costs at
//! most the bound in memory (an endless fetch reply took an unbounded worker to 4.4 GiB in 15 s).
//! The deadline is the call's own timeout: reqwest runs the request timeout until the body's last
//! byte, so a reply that trickles is cut off like one that never comes.
//!
//! The bounds ([`reply_limit`], [`fetch_reply_limit`]) are generous for what the engine sends:
//! fetchAndLock carries a batch of tasks with their variables, the queries a page of rows, every
//! other call a small object or nothing.
//!
//! Each refused reply is one ERROR, at most once a minute per node, endpoint and cause
//! ([`Alarms`]): a peer that misbehaves on every call must not flood the log.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::{Response, StatusCode};
use tokio::time::Instant;

/// One MiB.
const MIB: u64 = 1 << 20;

/// The bound of a fetchAndLock reply, whatever the number of tasks it may hold: a full default
/// batch (64 tasks) with 256 KiB of variables each.
pub const FETCH_REPLY_LIMIT: u64 = 16 * MIB;

/// Above 64 tasks per fetch, the fetch bound grows by this much per task asked for.
pub const FETCH_REPLY_PER_TASK: u64 = 256 * 1024;

/// The bound of a query's reply (a page of tasks, markers, subscriptions, log entries, incidents:
/// at most 1,000 rows of well under a KiB each).
pub const QUERY_REPLY_LIMIT: u64 = 4 * MIB;

/// The bound of every other reply: a count, a deployment, a started instance, an error body, or
/// the empty body of a 204.
pub const SMALL_REPLY_LIMIT: u64 = MIB;

/// How often the same refusal (node, endpoint, cause) is logged at ERROR; in between at DEBUG.
const ALARM_INTERVAL: Duration = Duration::from_secs(60);

/// The bound of a fetchAndLock reply that asks for up to `max_tasks` tasks.
pub fn fetch_reply_limit(max_tasks: u32) -> u64 {
    FETCH_REPLY_LIMIT.max(u64::from(max_tasks).saturating_mul(FETCH_REPLY_PER_TASK))
}

/// What kind of reply an endpoint gets, for its size bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplySize {
    /// A batch of tasks with their variables (fetchAndLock), or one instance's variables.
    Batch,
    /// A page of query rows.
    Query,
    /// A count, an object, an error body, nothing.
    Small,
}

/// The size bound of a reply of `size`.
pub fn reply_limit(size: ReplySize) -> u64 {
    match size {
        ReplySize::Batch => FETCH_REPLY_LIMIT,
        ReplySize::Query => QUERY_REPLY_LIMIT,
        ReplySize::Small => SMALL_REPLY_LIMIT,
    }
}

/// A reply read whole: its status and body.
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body, at most the call's bound.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as text (invalid UTF-8 replaced), for error bodies and log excerpts.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }
}

/// Why a body was not read whole.
#[derive(Debug)]
pub enum BodyError {
    /// The transport failed while the body came in (reset, timeout).
    Transport(reqwest::Error),
    /// The body is larger than the bound: `Content-Length` said so (`declared`), or more than the
    /// bound arrived (`declared` is `None`).
    TooLarge {
        /// The `Content-Length` the reply announced, if that was over the bound.
        declared: Option<u64>,
    },
}

/// Reads `response`'s body, at most `limit` bytes. A `Content-Length` above the bound is refused
/// before a byte of the body is read; otherwise the body is counted as it arrives and dropped the
/// moment it passes the bound, closing the connection.
pub async fn read_bounded(mut response: Response, limit: u64) -> Result<Reply, BodyError> {
    let status = response.status();
    let declared = response.content_length();
    if let Some(declared) = declared.filter(|&length| length > limit) {
        return Err(BodyError::TooLarge {
            declared: Some(declared),
        });
    }
    let capacity = usize::try_from(declared.unwrap_or(0)).unwrap_or(0);
    let mut body = Vec::with_capacity(capacity);
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        let total = u64::try_from(body.len() + chunk.len()).unwrap_or(u64::MAX);
        if total > limit {
            return Err(BodyError::TooLarge { declared: None });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Reply { status, body })
}

/// The `Location` of a redirect, as it can be shown in one log line: control characters escaped,
/// at most 200 characters; `(none)` without the header.
pub fn location(response: &Response) -> String {
    const LIMIT: usize = 200;
    let Some(value) = response.headers().get(reqwest::header::LOCATION) else {
        return "(none)".to_owned();
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    let escaped: String = text.chars().flat_map(char::escape_default).collect();
    match escaped.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{}…", &escaped[..cut]),
        None => escaped,
    }
}

/// Renders a byte count the way the bounds are written: `16 MiB`, `1536 KiB`, `100 bytes`.
pub fn bytes(count: u64) -> String {
    if count >= MIB && count % MIB == 0 {
        format!("{} MiB", count / MIB)
    } else if count >= 1024 && count % 1024 == 0 {
        format!("{} KiB", count / 1024)
    } else {
        format!("{count} bytes")
    }
}

/// When each refusal was last logged at ERROR, per endpoint and cause (one per node).
#[derive(Debug, Default)]
pub struct Alarms {
    last: Mutex<HashMap<(&'static str, &'static str), Instant>>,
}

impl Alarms {
    /// Whether a refusal of `endpoint` for `cause` is due to be logged at ERROR now (first time,
    /// or [`ALARM_INTERVAL`] after the last); records it if so.
    pub fn due(&self, endpoint: &'static str, cause: &'static str) -> bool {
        let now = Instant::now();
        // Every update writes one whole entry: a poisoned lock still holds a consistent map.
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match last.get(&(endpoint, cause)) {
            Some(at) if now.duration_since(*at) < ALARM_INTERVAL => false,
            _ => {
                last.insert((endpoint, cause), now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fetch_bound_covers_a_default_batch_and_grows_with_larger_ones() {
        assert_eq!(fetch_reply_limit(1), FETCH_REPLY_LIMIT);
        assert_eq!(fetch_reply_limit(64), FETCH_REPLY_LIMIT);
        assert_eq!(fetch_reply_limit(128), 32 * MIB);
        assert_eq!(
            fetch_reply_limit(u32::MAX),
            u64::from(u32::MAX) * 256 * 1024
        );
    }

    #[test]
    fn byte_counts_read_like_the_bounds() {
        assert_eq!(bytes(16 * MIB), "16 MiB");
        assert_eq!(bytes(1536 * 1024), "1536 KiB");
        assert_eq!(bytes(100), "100 bytes");
    }

    #[test]
    fn a_refusal_is_logged_once_per_interval_per_endpoint_and_cause() {
        let alarms = Alarms::default();
        assert!(alarms.due("fetchAndLock", "too large"));
        assert!(!alarms.due("fetchAndLock", "too large"));
        assert!(alarms.due("fetchAndLock", "redirect"));
        assert!(alarms.due("message", "too large"));
    }

    /// A loopback server that answers every request with `head` and then, if `endless`, chunks
    /// for as long as the client reads; the REST root to call it by.
    async fn hostile_server(head: &'static str, endless: bool) -> url::Url {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind on loopback");
        let address = listener.local_addr().expect("the listener's address");
        tokio::spawn(async move {
            while let Ok((mut connection, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = [0_u8; 4096];
                    let _ = connection.read(&mut request).await;
                    if connection.write_all(head.as_bytes()).await.is_err() || !endless {
                        let _ = connection.read(&mut request).await;
                        return;
                    }
                    let chunk = format!("4000\r\n{}\r\n", " ".repeat(0x4000));
                    while connection.write_all(chunk.as_bytes()).await.is_ok() {}
                });
            }
        });
        format!("http://{address}/engine-rest")
            .parse()
            .expect("a URL")
    }

    fn client(url: url::Url) -> crate::engine::EngineClient {
        crate::engine::EngineClient::new(crate::engine::EngineSettings::new(url)).expect("a client")
    }

    #[tokio::test]
    async fn a_small_reply_is_cut_at_its_bound_whatever_the_server_sends() {
        use crate::engine::EngineError;
        let endless = hostile_server(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
            true,
        )
        .await;
        let error = client(endless)
            .count_incidents()
            .await
            .expect_err("an endless count");
        assert!(
            matches!(
                error,
                EngineError::TooLarge {
                    limit: SMALL_REPLY_LIMIT,
                    declared: None,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("GET /incident/count"), "{error}");
        assert!(error.to_string().contains("bound of 1 MiB"), "{error}");
        assert!(error.is_transient() && error.outcome_unknown() && !error.engine_gone());

        let announced = hostile_server(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2097152\r\n\r\n[",
            false,
        )
        .await;
        let error = client(announced)
            .engine_names()
            .await
            .expect_err("a Content-Length over the bound");
        assert!(
            matches!(
                error,
                EngineError::TooLarge {
                    declared: Some(2_097_152),
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_redirect_is_an_error_naming_its_location_and_is_not_followed() {
        use crate::engine::EngineError;
        let redirecting = hostile_server(
            "HTTP/1.1 308 Permanent Redirect\r\nlocation: http://127.0.0.1:9/elsewhere\r\ncontent-length: 0\r\n\r\n",
            false,
        )
        .await;
        let error = client(redirecting)
            .count_incidents()
            .await
            .expect_err("a redirect");
        assert!(
            matches!(&error, EngineError::Redirected { location, .. } if location == "http://127.0.0.1:9/elsewhere"),
            "{error:?}"
        );
        assert!(error.is_transient() && !error.outcome_unknown() && error.engine_gone());
    }
}
