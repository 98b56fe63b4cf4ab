//! What can go wrong in a call to the engine, in the terms callers branch on.
//!
//! The engine reports errors as HTTP status + `{"type","message","code"}`. Callers do not care
//! about Java class names; they need to know: is it worth retrying (engine down, 5xx, a reply we
//! cannot read), is the task gone, were the credentials refused. What a refusal is about (a
//! message sent too early or to an ambiguous key, a lock another worker holds) is read from the
//! engine's English text in `refusal.rs`, and nowhere else.

use std::fmt;

use reqwest::StatusCode;

use super::reply::bytes;

/// A failed call to the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No HTTP answer: connection refused or reset, DNS, TLS, timeout, a body cut short.
    #[error("cannot reach the engine ({endpoint}): {}", error_chain(.source))]
    Unreachable {
        /// The endpoint called, e.g. `POST /external-task/fetchAndLock`.
        endpoint: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The connection closed (or was reset) before the reply: usually a kept-alive connection the
    /// server closed just as this request was written — then the engine never saw the request —
    /// but possibly a reply lost after the engine carried the call out. The caller sends it again
    /// at once, checking the engine's state first where a repeat could do harm; the engine's
    /// health is not judged by it.
    #[error("the connection to the engine closed before the reply ({endpoint}): {}", error_chain(.source))]
    ConnectionClosed {
        /// The endpoint called.
        endpoint: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// 401 or 403: the engine refused the credentials, or the user lacks the permission.
    #[error("{}", unauthorized_text(.status, .user.as_deref(), .endpoint))]
    Unauthorized {
        /// The endpoint called.
        endpoint: String,
        /// 401 or 403.
        status: StatusCode,
        /// The configured user name, if any, to name in the message.
        user: Option<String>,
    },
    /// Any other status with the engine's error body.
    #[error("{endpoint} answered {status}: {kind}: {message}")]
    Rejected {
        /// The endpoint called.
        endpoint: String,
        /// The HTTP status.
        status: StatusCode,
        /// The exception's simple class name (`RestException`, ...), or `unknown`.
        kind: String,
        /// The exception message.
        message: String,
        /// The engine's error code, if it sent one (1 = optimistic locking).
        code: Option<i64>,
    },
    /// A reply that is not what the API promises (not JSON, wrong shape, wrong status).
    #[error("{endpoint} answered {status} with an unexpected body: {excerpt:?}")]
    UnexpectedReply {
        /// The endpoint called.
        endpoint: String,
        /// The HTTP status.
        status: StatusCode,
        /// The first few hundred characters of the body.
        excerpt: String,
    },
    /// A reply larger than its endpoint's bound (see `reply.rs`): announced by `Content-Length`
    /// or found while reading. The body was dropped unread past the bound, so the call's outcome is
    /// unknown (a fetch may have locked tasks the worker never sees; their locks run out).
    #[error("{endpoint} answered {status} with a reply larger than the bound of {}{}; dropped", bytes(*.limit), declared_text(*.declared))]
    TooLarge {
        /// The endpoint called.
        endpoint: String,
        /// The HTTP status.
        status: StatusCode,
        /// The bound, in bytes.
        limit: u64,
        /// The `Content-Length` the reply announced, when that was over the bound.
        declared: Option<u64>,
    },
    /// A 3xx reply. Redirects are never followed: the request (worker id, topics, variables,
    /// credentials) must not go to whatever host a reply names.
    #[error("{endpoint} answered {status} redirecting to {location}; redirects are not followed (is the engine URL the REST root itself?)")]
    Redirected {
        /// The endpoint called.
        endpoint: String,
        /// The 3xx status.
        status: StatusCode,
        /// The `Location` header, escaped and shortened for a log line.
        location: String,
    },
    /// The credentials could not be obtained (token file unreadable, OAuth token endpoint failed).
    #[error("cannot obtain credentials: {0}")]
    Credentials(String),
    /// The engine ended a parked long poll because a newer fetch-and-lock with the same worker id
    /// arrived (an engine with `fetch-and-lock-unique-worker-request=true` answers it with 503).
    #[error(
        "{endpoint}: the engine replaced this long poll with a newer one of the same worker id"
    )]
    Replaced {
        /// The endpoint called.
        endpoint: String,
    },
    /// No engine node is known right now (DNS discovery found no address).
    #[error("no engine node to call: {0}")]
    NoNode(String),
    /// The call was sent again at once because its connection broke, and the second attempt
    /// failed with this error. The first attempt may have reached the engine and taken effect:
    /// a 404 now can mean "already done".
    #[error(
        "{0} (sent again after the connection broke; the first attempt may have gone through)"
    )]
    Resent(Box<EngineError>),
}

impl EngineError {
    /// Whether trying again later can succeed: the engine is down, overloaded or restarting, or it
    /// lost an optimistic-locking race (500 with code 1).
    pub fn is_transient(&self) -> bool {
        match self {
            EngineError::Resent(inner) => inner.is_transient(),
            EngineError::Unreachable { .. }
            | EngineError::ConnectionClosed { .. }
            | EngineError::UnexpectedReply { .. }
            | EngineError::TooLarge { .. }
            | EngineError::Redirected { .. }
            | EngineError::Replaced { .. }
            | EngineError::NoNode(_) => true,
            EngineError::Rejected { status, .. } => status.is_server_error(),
            EngineError::Unauthorized { .. } | EngineError::Credentials(_) => false,
        }
    }

    /// Whether the engine refused the credentials (401/403), or they could not be obtained.
    pub fn is_unauthorized(&self) -> bool {
        match self {
            EngineError::Unauthorized { .. } | EngineError::Credentials(_) => true,
            EngineError::Resent(inner) => inner.is_unauthorized(),
            _ => false,
        }
    }

    /// Whether the engine may have carried out the call although no success reached us: the
    /// request went out, but the reply was lost (a reset or closed connection, a timeout) or was
    /// replaced by a proxy's own 5xx page. A `complete` or a message that failed this way must be
    /// checked against the engine's state before it is sent again or given up. A refused
    /// connection, or an error body from the engine itself (its transaction was rolled back), is
    /// certain: nothing was done.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            // An oversized reply was cut off unread: whatever the call did, it may have done.
            EngineError::Resent(_)
            | EngineError::ConnectionClosed { .. }
            | EngineError::TooLarge { .. } => true,
            EngineError::Unreachable { source, .. } => !source.is_connect(),
            EngineError::UnexpectedReply { status, .. } => status.is_server_error(),
            // Whatever answered with a redirect did not carry the call out.
            EngineError::Rejected { .. }
            | EngineError::Redirected { .. }
            | EngineError::Unauthorized { .. }
            | EngineError::Credentials(_)
            | EngineError::Replaced { .. }
            | EngineError::NoNode(_) => false,
        }
    }

    /// Whether the client refused the reply itself (too large, a redirect) and has logged it at
    /// ERROR already: callers need not log it again.
    pub fn refused_reply(&self) -> bool {
        match self {
            EngineError::TooLarge { .. } | EngineError::Redirected { .. } => true,
            EngineError::Resent(inner) => inner.refused_reply(),
            _ => false,
        }
    }

    /// Whether the reply was over its bound (see [`EngineError::TooLarge`]).
    pub fn is_too_large(&self) -> bool {
        match self {
            EngineError::TooLarge { .. } => true,
            EngineError::Resent(inner) => inner.is_too_large(),
            _ => false,
        }
    }

    /// Whether the call should be sent again at once, without backoff: its connection closed
    /// under it, which says nothing about the engine.
    pub fn retry_at_once(&self) -> bool {
        matches!(self, EngineError::ConnectionClosed { .. })
    }

    /// Whether the engine lost a race between two transactions on the same data (500,
    /// `OptimisticLockingException`, code 1): normal on a cluster, and retrying is the answer.
    pub fn is_optimistic_locking(&self) -> bool {
        match self {
            EngineError::Rejected { kind, code, .. } => {
                *code == Some(1) || kind == "OptimisticLockingException"
            }
            EngineError::Resent(inner) => inner.is_optimistic_locking(),
            _ => false,
        }
    }

    /// Whether the engine ended a parked long poll for a newer one of the same worker id.
    pub fn is_replaced(&self) -> bool {
        match self {
            EngineError::Replaced { .. } => true,
            EngineError::Resent(inner) => inner.is_replaced(),
            _ => false,
        }
    }

    /// Whether this error says the engine is not there (down, restarting, or a proxy in front of
    /// it answering for it), as opposed to the engine answering and refusing one call.
    pub fn engine_gone(&self) -> bool {
        match self {
            // A close on the resend's fresh connection comes back as `Unreachable` (the transport
            // resends only after a reused connection), which is an outage by the rule below.
            EngineError::Resent(inner) => inner.engine_gone(),
            EngineError::Unreachable { .. } | EngineError::NoNode(_) => true,
            // A page that is not the engine's (a proxy's HTML 404 or 502) speaks for an engine
            // that is not there.
            EngineError::UnexpectedReply { status, .. } => !status.is_success(),
            // The engine does not redirect its REST API: a redirect is something else answering
            // in its place (a login page, a moved host), and the engine is not reached.
            EngineError::Redirected { .. } => true,
            EngineError::Rejected { status, .. } => *status == StatusCode::SERVICE_UNAVAILABLE,
            // An oversized reply came from something that answers; the call is what failed.
            EngineError::TooLarge { .. }
            | EngineError::Unauthorized { .. }
            | EngineError::Credentials(_)
            | EngineError::ConnectionClosed { .. }
            | EngineError::Replaced { .. } => false,
        }
    }

    /// Whether the engine itself answered 404 (with its error body): the task or instance no
    /// longer exists. A proxy's own 404 page is an outage, not an answer about the task.
    pub fn is_not_found(&self) -> bool {
        match self {
            EngineError::Resent(inner) => inner.is_not_found(),
            EngineError::Rejected { status, .. } => *status == StatusCode::NOT_FOUND,
            _ => false,
        }
    }

    /// The HTTP status, when the engine answered at all.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            EngineError::Resent(inner) => inner.status(),
            EngineError::Unauthorized { status, .. }
            | EngineError::Rejected { status, .. }
            | EngineError::UnexpectedReply { status, .. }
            | EngineError::TooLarge { status, .. }
            | EngineError::Redirected { status, .. } => Some(*status),
            EngineError::Unreachable { .. }
            | EngineError::ConnectionClosed { .. }
            | EngineError::Credentials(_)
            | EngineError::Replaced { .. }
            | EngineError::NoNode(_) => None,
        }
    }
}

fn unauthorized_text(status: &StatusCode, user: Option<&str>, endpoint: &str) -> String {
    let verdict = if *status == StatusCode::FORBIDDEN {
        "lacks the permission for"
    } else {
        "was refused by"
    };
    match user {
        Some(user) => format!(
            "engine rejected the credentials for user {user}: {status} ({user} {verdict} {endpoint})"
        ),
        None => format!(
            "engine rejected the credentials: {status} on {endpoint} (no user configured; set --username/--password or a token)"
        ),
    }
}

fn declared_text(declared: Option<u64>) -> String {
    declared.map_or_else(String::new, |length| format!(" (Content-Length {length})"))
}

/// Whether a transport error is what a kept-alive connection gives when the server (or a proxy)
/// closed it just as this request was written: hyper's "connection closed before message
/// completed", or a reset / broken pipe on a connection that was already open. Then the request
/// usually never reached the engine, and the right answer is to send it again at once on a new
/// connection — without backoff, and without calling the engine unavailable. (The same errors
/// also come from a reply lost after the engine did the work; calls that must not be repeated
/// blindly leave the repeat to their caller, see [`EngineError::ConnectionClosed`].)
pub(crate) fn is_stale_connection(error: &reqwest::Error) -> bool {
    if error.is_connect() || error.is_timeout() {
        return false;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(hyper_error) = cause.downcast_ref::<hyper::Error>() {
            if hyper_error.is_incomplete_message() {
                return true;
            }
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            ) {
                return true;
            }
        }
        source = cause.source();
    }
    false
}

/// Renders an error with its causes on one line: reqwest hides the useful part (connection
/// refused, timed out) in the source chain.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Shortens a reply body for a log line, on a character boundary.
pub(crate) fn excerpt(body: &str) -> String {
    const LIMIT: usize = 200;
    let trimmed = body.trim();
    match trimmed.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{}…", &trimmed[..cut]),
        None => trimmed.to_owned(),
    }
}

/// Wraps [`error_chain`] for `Display` use sites.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&error_chain(self.0))
    }
}

/// A refusal of `POST /message` as the engine words it, for the unit tests that classify replies.
#[cfg(test)]
pub(crate) fn rejected(status: u16, message: &str, code: Option<i64>) -> EngineError {
    EngineError::Rejected {
        endpoint: "POST /message".into(),
        status: StatusCode::from_u16(status).expect("valid status"),
        kind: "RestException".into(),
        message: message.into(),
        code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_are_transient_client_errors_are_not() {
        assert!(rejected(500, "optimistic locking", Some(1)).is_transient());
        assert!(rejected(503, "", None).is_transient());
        assert!(!rejected(400, "", None).is_transient());
        assert!(!rejected(404, "", None).is_transient());
        assert!(rejected(404, "", None).is_not_found());
    }

    #[test]
    fn unauthorized_names_the_user() {
        let e = EngineError::Unauthorized {
            endpoint: "POST /external-task/fetchAndLock".into(),
            status: StatusCode::UNAUTHORIZED,
            user: Some("alice".into()),
        };
        assert!(e
            .to_string()
            .starts_with("engine rejected the credentials for user alice"));
        assert!(e.is_unauthorized() && !e.is_transient());
    }

    /// A server that closes every connection: the client sends the call again at once (the first
    /// close looks like a stale kept-alive connection), the resend's fresh connection closes too,
    /// and what comes back must read as an outage — the engine is not there.
    #[tokio::test]
    async fn a_call_resent_on_a_fresh_connection_that_closes_as_well_is_an_outage() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind on loopback");
        let address = listener.local_addr().expect("the listener's address");
        tokio::spawn(async move {
            while let Ok((connection, _)) = listener.accept().await {
                drop(connection);
            }
        });
        let url = format!("http://{address}/engine-rest")
            .parse()
            .expect("a URL");
        let client = crate::engine::EngineClient::new(crate::engine::EngineSettings::new(url))
            .expect("a client");

        let error = client
            .instance_variable("pi-1", "camundaWorkerFollowUp")
            .await
            .expect_err("the server closes every connection");

        let EngineError::Resent(inner) = &error else {
            panic!("sent again after the first close: {error:?}");
        };
        assert!(
            matches!(**inner, EngineError::Unreachable { .. }),
            "{inner:?}"
        );
        assert!(error.engine_gone(), "{error:?}");
        assert!(error.is_transient() && error.outcome_unknown());
    }

    #[test]
    fn excerpts_are_short_and_cut_on_a_character_boundary() {
        let long = "é".repeat(500);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), 201);
        assert_eq!(excerpt("  <html>  "), "<html>");
    }
}
