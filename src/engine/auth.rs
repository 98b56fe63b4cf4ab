//! How the worker proves who it is to the engine: nothing, HTTP Basic, a bearer token (given
//! directly or read from a file that a sidecar rotates), or an OAuth2 client-credentials token
//! that is fetched, cached and refreshed before it expires.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use reqwest::RequestBuilder;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::error::{error_chain, EngineError};
use super::token_reply::{
    error_fields, parse_token, read_bounded, redirect_text, token_http_client,
};
use super::TlsSettings;
use crate::secret::{without_userinfo, Secret};

/// Refresh an OAuth token this long before the engine would start refusing it.
const OAUTH_REFRESH_MARGIN: Duration = Duration::from_secs(30);

/// How long a token endpoint may take to answer, its reply included: a hung identity provider
/// must not hang every engine call (nor a shutdown) behind it.
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
    /// The token endpoint, without userinfo (see [`crate::secret::without_userinfo`]).
    pub token_url: url::Url,
    /// The client id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: Secret,
    /// The scope to ask for, if any.
    pub scope: Option<String>,
    /// The TLS settings of the engine calls, which the token endpoint's client shares (a private
    /// CA usually signs both).
    tls: TlsSettings,
    /// The token endpoint's own HTTP client, built at the first fetch: unlike the engine's, it
    /// follows no redirect (a redirect would carry the client secret to wherever it points).
    http: OnceLock<reqwest::Client>,
    cached: Mutex<Option<(Instant, Secret)>>,
}

impl OAuthClient {
    /// A client for the given token endpoint; no token is fetched until the first request.
    pub fn new(
        token_url: url::Url,
        client_id: String,
        client_secret: Secret,
        scope: Option<String>,
        tls: TlsSettings,
    ) -> Self {
        OAuthClient {
            token_url: without_userinfo(&token_url),
            client_id,
            client_secret,
            scope,
            tls,
            http: OnceLock::new(),
            cached: Mutex::new(None),
        }
    }

    /// Forgets the cached token, so the next request fetches a new one (after a 401).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    fn http(&self) -> Result<&reqwest::Client, EngineError> {
        if let Some(http) = self.http.get() {
            return Ok(http);
        }
        let http = token_http_client(&self.tls)?;
        Ok(self.http.get_or_init(|| http))
    }

    async fn token(&self) -> Result<Secret, EngineError> {
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
        let reply = self
            .http()?
            .post(self.token_url.clone())
            .timeout(OAUTH_TOKEN_TIMEOUT)
            .form(&form)
            .send()
            .await
            .map_err(|e| failed(error_chain(&e)))?;
        let status = reply.status();
        if status.is_redirection() {
            return Err(failed(redirect_text(&reply)));
        }
        let body = read_bounded(reply).await.map_err(failed)?;
        if !status.is_success() {
            // The reply may echo what was sent, or carry tokens: only the fields RFC 6749 §5.2
            // defines for an error are shown.
            return Err(failed(format!("{status}{}", error_fields(&body))));
        }
        let token = parse_token(&body).map_err(failed)?;
        // At most a day, so the sum cannot overflow (a huge `expires_in` panicked here once).
        let refresh_at = Instant::now() + token.lifetime.saturating_sub(OAUTH_REFRESH_MARGIN);
        *cached = Some((refresh_at, token.access_token.clone()));
        Ok(token.access_token)
    }
}

impl Credentials {
    /// The secrets these credentials hold, to find where else they appear (the follow-up
    /// command's environment withholds variables that hold one); never for output.
    pub fn secrets(&self) -> Vec<&Secret> {
        match self {
            Credentials::Basic { password, .. } => vec![password],
            Credentials::Bearer(BearerToken::Fixed(token)) => vec![token],
            Credentials::OAuth(client) => vec![&client.client_secret],
            Credentials::Anonymous | Credentials::Bearer(BearerToken::File(_)) => Vec::new(),
        }
    }

    /// The user name to mention when the engine refuses the credentials.
    pub fn user(&self) -> Option<String> {
        match self {
            Credentials::Anonymous => None,
            Credentials::Basic { username, .. } => Some(username.clone()),
            Credentials::Bearer(_) => Some("(bearer token)".to_owned()),
            Credentials::OAuth(client) => Some(format!("(OAuth client {})", client.client_id)),
        }
    }

    /// Adds the `Authorization` header to a request. `_engine_http` is the node's client the
    /// request was built with; an OAuth token is fetched with the token endpoint's own client,
    /// which follows no redirect.
    pub(crate) async fn apply(
        &self,
        _engine_http: &reqwest::Client,
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
            Credentials::OAuth(client) => request.bearer_auth(client.token().await?.expose()),
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
