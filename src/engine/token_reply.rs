//! Talking to an OAuth2 token endpoint the worker does not control: its own HTTP client (no
//! redirects), a bound on the reply, and reading a reply without ever repeating it. A token reply
//! holds secrets (the access token, maybe a refresh token), and an error reply may echo what was
//! sent: nothing of a body reaches a log line but the RFC 6749 `error` / `error_description`
//! fields, cut short.

use std::time::Duration;

use reqwest::header::LOCATION;
use reqwest::{Certificate, Identity, Response};
use serde_json::Value;

use super::error::{error_chain, EngineError};
use super::TlsSettings;
use crate::secret::{mask_userinfo, Secret};

/// The most a token reply may hold: a token with its claims is a few KiB; an endless or huge
/// reply must not take the worker's memory.
pub const MAX_TOKEN_REPLY_BYTES: usize = 64 * 1024;

/// The longest lifetime believed: a bigger `expires_in` (or one that would overflow a clock) is
/// cut to a day, after which the token is fetched again.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// The lifetime assumed when the reply names none (or one that is not a number of seconds).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// The most characters of `error` / `error_description` shown.
const MAX_FIELD_CHARS: usize = 200;

/// How long a connection attempt to the token endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A token from a reply.
pub(super) struct Token {
    pub access_token: Secret,
    /// How long it may be used: `expires_in` capped at [`MAX_TOKEN_LIFETIME`].
    pub lifetime: Duration,
}

/// The token endpoint's HTTP client: the engine's TLS settings, and no redirects — a 3xx is
/// reported, never followed, so the client secret goes nowhere but the configured endpoint.
pub(super) fn token_http_client(tls: &TlsSettings) -> Result<reqwest::Client, EngineError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("camunda-worker/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(pem) = &tls.ca_cert_pem {
        let cert = Certificate::from_pem(pem)
            .map_err(|e| EngineError::Credentials(format!("--ca-cert: {}", error_chain(&e))))?;
        builder = builder.add_root_certificate(cert);
    }
    if let Some(pem) = &tls.client_identity_pem {
        let identity = Identity::from_pem(pem).map_err(|e| {
            EngineError::Credentials(format!("--client-cert/--client-key: {}", error_chain(&e)))
        })?;
        builder = builder.identity(identity);
    }
    builder
        .build()
        .map_err(|e| EngineError::Credentials(format!("OAuth HTTP client: {}", error_chain(&e))))
}

/// What a redirect reply is reported as: its status and where it points (userinfo masked).
pub(super) fn redirect_text(reply: &Response) -> String {
    let location = reply
        .headers()
        .get(LOCATION)
        .map(|l| mask_userinfo(&shorten(&String::from_utf8_lossy(l.as_bytes()))))
        .unwrap_or_else(|| "(none)".to_owned());
    format!(
        "answered {} with Location {location}; redirects are not followed (configure the final URL)",
        reply.status()
    )
}

/// Reads a reply body of at most [`MAX_TOKEN_REPLY_BYTES`].
pub(super) async fn read_bounded(mut reply: Response) -> Result<Vec<u8>, String> {
    let too_big = || format!("the reply is larger than the bound of {MAX_TOKEN_REPLY_BYTES} bytes");
    if reply
        .content_length()
        .is_some_and(|length| length > MAX_TOKEN_REPLY_BYTES as u64)
    {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = reply
        .chunk()
        .await
        .map_err(|e| format!("reading the reply: {}", error_chain(&e)))?
    {
        if body.len() + chunk.len() > MAX_TOKEN_REPLY_BYTES {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `": error invalid_client (description)"` from an error reply, or nothing when it has neither.
pub(super) fn error_fields(body: &[u8]) -> String {
    let Ok(Value::Object(reply)) = serde_json::from_slice::<Value>(body) else {
        return String::new();
    };
    let field = |name: &str| reply.get(name).and_then(Value::as_str).map(shorten);
    match (field("error"), field("error_description")) {
        (Some(error), Some(description)) => format!(": error {error} ({description})"),
        (Some(error), None) => format!(": error {error}"),
        (None, Some(description)) => format!(": {description}"),
        (None, None) => String::new(),
    }
}

/// The token and its lifetime from a success reply; the error names what is missing, never
/// what is there.
pub(super) fn parse_token(body: &[u8]) -> Result<Token, String> {
    let Ok(Value::Object(reply)) = serde_json::from_slice::<Value>(body) else {
        return Err("the reply is not a JSON object".to_owned());
    };
    let Some(access_token) = reply.get("access_token").and_then(Value::as_str) else {
        return Err("the reply has no access_token string".to_owned());
    };
    Ok(Token {
        access_token: Secret::new(access_token.to_owned()),
        lifetime: lifetime(reply.get("expires_in")),
    })
}

/// `expires_in` as a number or a numeric string (some identity providers send `"300"`), capped
/// at [`MAX_TOKEN_LIFETIME`]. Absent, negative or not a number: [`DEFAULT_TOKEN_LIFETIME`] (a
/// token refused before then is fetched again after the engine's 401).
fn lifetime(expires_in: Option<&Value>) -> Duration {
    let seconds = match expires_in {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match seconds {
        Some(s) if s.is_finite() && s >= 0.0 => {
            Duration::from_secs_f64(s.min(MAX_TOKEN_LIFETIME.as_secs_f64()))
        }
        _ => DEFAULT_TOKEN_LIFETIME,
    }
}

/// `text` cut to [`MAX_FIELD_CHARS`], control characters replaced: a log line stays one line.
fn shorten(text: &str) -> String {
    let mut short: String = text
        .chars()
        .take(MAX_FIELD_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > MAX_FIELD_CHARS {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_in_is_a_number_or_a_numeric_string_and_capped_at_a_day() {
        let of = |json: &str| parse_token(json.as_bytes()).unwrap().lifetime;
        assert_eq!(
            of(r#"{"access_token":"t","expires_in":60}"#),
            Duration::from_secs(60)
        );
        assert_eq!(
            of(r#"{"access_token":"t","expires_in":"300"}"#),
            Duration::from_secs(300)
        );
        assert_eq!(
            of(r#"{"access_token":"t","expires_in":" 90 "}"#),
            Duration::from_secs(90)
        );
        assert_eq!(
            of(r#"{"access_token":"t","expires_in":18446744073709551615}"#),
            MAX_TOKEN_LIFETIME
        );
        assert_eq!(
            of(r#"{"access_token":"t","expires_in":"1e300"}"#),
            MAX_TOKEN_LIFETIME
        );
        assert_eq!(
            of(r#"{"access_token":"t","expires_in":-5}"#),
            DEFAULT_TOKEN_LIFETIME
        );
        assert_eq!(
            of(r#"{"access_token":"t","expires_in":"soon"}"#),
            DEFAULT_TOKEN_LIFETIME
        );
        assert_eq!(of(r#"{"access_token":"t"}"#), DEFAULT_TOKEN_LIFETIME);
    }

    #[test]
    fn nothing_of_a_reply_but_its_error_fields_is_repeated() {
        let reply = br#"{"error":"invalid_client","error_description":"bad\nsecret","access_token":"AT-1","refresh_token":"RT-1"}"#;
        let shown = error_fields(reply);
        assert_eq!(shown, ": error invalid_client (bad secret)");
        assert_eq!(error_fields(b"<html>AT-1</html>"), "");
        let long = format!(r#"{{"error":"{}"}}"#, "x".repeat(1000));
        assert!(error_fields(long.as_bytes()).chars().count() < MAX_FIELD_CHARS + 20);
        let missing = parse_token(br#"{"token":"AT-1"}"#).err().unwrap();
        assert!(!missing.contains("AT-1"), "{missing}");
        assert!(parse_token(b"AT-1")
            .err()
            .unwrap()
            .contains("not a JSON object"));
    }
}
