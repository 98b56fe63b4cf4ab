//! How the worker proves who it is to the engine: nothing, HTTP Basic, a bearer token (given
//! directly or read from a file that a sidecar rotates), or an OAuth2 client-credentials token
//! that is fetched, cached and refreshed before it expires.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::RequestBuilder;
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::error::{error_chain, excerpt, EngineError};
use crate::secret::Secret;

/// Refresh an OAuth token this long before the engine would start refusing it.
const OAUTH_REFRESH_MARGIN: Duration = Duration::from_secs(30);

/// How long a token endpoint may take to answer: a hung identity provider must not hang every
/// engine call (nor a shutdown) behind it.
const OAUTH_TOKEN_TIMEOUT: Duration = Duration::from_secs(10);

/// The credentials the client attaches to every engine call.
#[derive(Clone, Debug, Default)]
pub enum Credentials {
    /// No `Authorization` header (an engine without authentication).
    #[default]
    Anonymous,
    /// HTTP Basic, as Camunda's `ProcessEngineAuthenticationFilter` expects.
    Basic {
        /// The engine user.
        username: String,
        /// Its password.
        password: Secret,
    },
    /// A bearer token.
    Bearer(BearerToken),
    /// An OAuth2 client-credentials grant.
    OAuth(Arc<OAuthClient>),
}

/// Where a bearer token comes from.
#[derive(Clone, Debug)]
pub enum BearerToken {
    /// Given once, at start.
    Fixed(Secret),
    /// Read from a file, and re-read whenever the file changes (a rotating projected token).
    File(Arc<TokenFile>),
}

/// A token file with the last contents read and the modification time they came from.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    cached: Mutex<Option<(SystemTime, Secret)>>,
}

impl TokenFile {
    /// A token file at `path`; nothing is read until the first request.
    pub fn new(path: PathBuf) -> Self {
        TokenFile {
            path,
            cached: Mutex::new(None),
        }
    }

    async fn token(&self) -> Result<Secret, EngineError> {
        let unreadable = |e: std::io::Error| {
            EngineError::Credentials(format!("token file {}: {e}", self.path.display()))
        };
        let modified = tokio::fs::metadata(&self.path)
            .await
            .and_then(|m| m.modified())
            .map_err(unreadable)?;
        let mut cached = self.cached.lock().await;
        if let Some((seen, token)) = cached.as_ref() {
            if *seen == modified {
                return Ok(token.clone());
            }
        }
        let text = tokio::fs::read_to_string(&self.path)
            .await
            .map_err(unreadable)?;
        let token = Secret::new(text.trim().to_owned());
        *cached = Some((modified, token.clone()));
        Ok(token)
    }
}

/// An OAuth2 client-credentials client with a cached token.
#[derive(Debug)]
pub struct OAuthClient {
    /// The token endpoint.
    pub token_url: url::Url,
    /// The client id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: Secret,
    /// The scope to ask for, if any.
    pub scope: Option<String>,
    cached: Mutex<Option<(Instant, Secret)>>,
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl OAuthClient {
    /// A client for the given token endpoint; no token is fetched until the first request.
    pub fn new(
        token_url: url::Url,
        client_id: String,
        client_secret: Secret,
        scope: Option<String>,
    ) -> Self {
        OAuthClient {
            token_url,
            client_id,
            client_secret,
            scope,
            cached: Mutex::new(None),
        }
    }

    /// Forgets the cached token, so the next request fetches a new one (after a 401).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn token(&self, http: &reqwest::Client) -> Result<Secret, EngineError> {
        let mut cached = self.cached.lock().await;
        if let Some((refresh_at, token)) = cached.as_ref() {
            if Instant::now() < *refresh_at {
                return Ok(token.clone());
            }
        }
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose()),
        ];
        if let Some(scope) = &self.scope {
            form.push(("scope", scope.as_str()));
        }
        let failed = |what: String| {
            EngineError::Credentials(format!("OAuth token endpoint {}: {what}", self.token_url))
        };
        let reply = http
            .post(self.token_url.clone())
            .timeout(OAUTH_TOKEN_TIMEOUT)
            .form(&form)
            .send()
            .await
            .map_err(|e| failed(error_chain(&e)))?;
        let status = reply.status();
        let body = reply.text().await.map_err(|e| failed(error_chain(&e)))?;
        if !status.is_success() {
            return Err(failed(format!("{status}: {}", excerpt(&body))));
        }
        let parsed: TokenReply = serde_json::from_str(&body)
            .map_err(|_| failed(format!("reply is not a token: {}", excerpt(&body))))?;
        let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(300));
        let refresh_at = Instant::now() + lifetime.saturating_sub(OAUTH_REFRESH_MARGIN);
        let token = Secret::new(parsed.access_token);
        *cached = Some((refresh_at, token.clone()));
        Ok(token)
    }
}

impl Credentials {
    /// The user name to mention when the engine refuses the credentials.
    pub fn user(&self) -> Option<String> {
        match self {
            Credentials::Anonymous => None,
            Credentials::Basic { username, .. } => Some(username.clone()),
            Credentials::Bearer(_) => Some("(bearer token)".to_owned()),
            Credentials::OAuth(client) => Some(format!("(OAuth client {})", client.client_id)),
        }
    }

    /// Adds the `Authorization` header to a request.
    pub(crate) async fn apply(
        &self,
        http: &reqwest::Client,
        request: RequestBuilder,
    ) -> Result<RequestBuilder, EngineError> {
        Ok(match self {
            Credentials::Anonymous => request,
            Credentials::Basic { username, password } => {
                request.basic_auth(username, Some(password.expose()))
            }
            Credentials::Bearer(BearerToken::Fixed(token)) => request.bearer_auth(token.expose()),
            Credentials::Bearer(BearerToken::File(file)) => {
                request.bearer_auth(file.token().await?.expose())
            }
            Credentials::OAuth(client) => request.bearer_auth(client.token(http).await?.expose()),
        })
    }

    /// Called after a 401; returns whether the request is worth one more try with fresh credentials.
    pub(crate) async fn refresh_after_rejection(&self) -> bool {
        match self {
            Credentials::OAuth(client) => {
                client.invalidate().await;
                true
            }
            // A token file may have been rotated in between: the next read sees the new one.
            Credentials::Bearer(BearerToken::File(_)) => true,
            _ => false,
        }
    }
}
