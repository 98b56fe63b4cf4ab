//! Credentials from flags, files and URLs, into one [`Credentials`].
//!
//! A URL may carry credentials as userinfo (`http://user:password@host/engine-rest`). They are
//! taken out here, where the URL is parsed, and the URL goes on without them: the engine URL's
//! userinfo is HTTP Basic (its user name stands for `--username`, its password for `--password`),
//! the token URL's is the OAuth client (`client-id:client-secret`, for `--oauth-client-id` and
//! `--oauth-client-secret`). A credential given twice — in the URL and by a flag, or differently
//! in two engine URLs — is a configuration error: the worker does not guess which one is meant.

use std::path::Path;
use std::sync::Arc;

use url::Url;

use super::ConfigError;
use crate::cli::ConnectionArgs;
use crate::engine::auth::{BearerToken, OAuthClient, TokenFile};
use crate::engine::{Credentials, TlsSettings};
use crate::secret::{userinfo, without_userinfo, Secret};

/// The engine URLs without userinfo, and the credentials every call carries.
pub(super) fn connection(
    args: &ConnectionArgs,
    tls: &TlsSettings,
) -> Result<(Vec<Url>, Credentials), ConfigError> {
    let nodes = args.engine_url.iter().map(without_userinfo).collect();
    let (url_user, url_password) = engine_userinfo(&args.engine_url)?;
    if url_user.is_some() && args.username.is_some() {
        return Err(twice(
            "--engine-url names a user (user@) and --username gives one too",
        ));
    }
    if url_password.is_some() && (args.password.is_some() || args.password_file.is_some()) {
        return Err(twice(
            "--engine-url holds a password (user:password@) and --password(-file) gives one too",
        ));
    }
    let password = match url_password {
        Some(password) => Some(password),
        None => password(args)?,
    };
    if let (Some(user), None) = (&url_user, &password) {
        return Err(ConfigError::Invalid(format!(
            "--engine-url names user {user} but no password: add it (user:password@), or --password-file"
        )));
    }
    let username = url_user.or_else(|| args.username.clone());
    let credentials = credentials(args, username, password, tls)?;
    Ok((nodes, credentials))
}

fn twice(what: &str) -> ConfigError {
    ConfigError::Invalid(format!("{what}; give each credential once"))
}

/// The one userinfo of the engine URLs: several URLs (a cluster) may carry it, but the same; it
/// is sent to every node, since the nodes share one engine and its users.
fn engine_userinfo(urls: &[Url]) -> Result<(Option<String>, Option<Secret>), ConfigError> {
    let mut found: Option<(String, Option<Secret>)> = None;
    for url in urls {
        let info = userinfo(url);
        match (&found, info) {
            (_, None) => {}
            (None, Some(info)) => found = Some(info),
            (Some(first), Some(info)) if *first == info => {}
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "--engine-url: the URLs carry different credentials (user:password@); give them once, with --username and --password-file".to_owned(),
                ))
            }
        }
    }
    Ok(match found {
        Some((user, password)) => (Some(user).filter(|u| !u.is_empty()), password),
        None => (None, None),
    })
}

/// `--password` or `--password-file` (clap already refuses both at once).
fn password(args: &ConnectionArgs) -> Result<Option<Secret>, ConfigError> {
    Ok(match (&args.password, &args.password_file) {
        (Some(p), _) => Some(Secret::new(p.clone())),
        (None, Some(file)) => Some(read_secret("--password-file", file)?),
        (None, None) => None,
    })
}

fn credentials(
    args: &ConnectionArgs,
    username: Option<String>,
    password: Option<Secret>,
    tls: &TlsSettings,
) -> Result<Credentials, ConfigError> {
    let basic = username.is_some();
    let bearer = args.bearer_token.is_some() || args.bearer_token_file.is_some();
    let oauth = args.oauth_token_url.is_some();
    if [basic, bearer, oauth].iter().filter(|on| **on).count() > 1 {
        return Err(ConfigError::Invalid(
            "choose one kind of credentials: --username (or user:password@ in --engine-url), --bearer-token(-file) or --oauth-token-url"
                .to_owned(),
        ));
    }
    if let Some(username) = username {
        let Some(password) = password else {
            return Err(ConfigError::Invalid(
                "--username needs --password or --password-file".to_owned(),
            ));
        };
        return Ok(Credentials::Basic { username, password });
    }
    if password.is_some() {
        return Err(ConfigError::Invalid(
            "--password/--password-file need --username".to_owned(),
        ));
    }
    if let Some(token) = &args.bearer_token {
        return Ok(Credentials::Bearer(BearerToken::Fixed(Secret::new(
            token.clone(),
        ))));
    }
    if let Some(file) = &args.bearer_token_file {
        // Read once now so a wrong path fails at start; later reads pick up rotations.
        read_secret("--bearer-token-file", file)?;
        return Ok(Credentials::Bearer(BearerToken::File(Arc::new(
            TokenFile::new(file.clone()),
        ))));
    }
    if let Some(token_url) = &args.oauth_token_url {
        return oauth_client(args, token_url, tls);
    }
    Ok(Credentials::Anonymous)
}

/// The OAuth client: id and secret from the flags or from the token URL's userinfo.
fn oauth_client(
    args: &ConnectionArgs,
    token_url: &Url,
    tls: &TlsSettings,
) -> Result<Credentials, ConfigError> {
    let (url_id, url_secret) = match userinfo(token_url) {
        Some((id, secret)) => (Some(id).filter(|id| !id.is_empty()), secret),
        None => (None, None),
    };
    if url_id.is_some() && args.oauth_client_id.is_some() {
        return Err(twice(
            "--oauth-token-url names a client (client-id@) and --oauth-client-id gives one too",
        ));
    }
    let secret_flag = args.oauth_client_secret.is_some() || args.oauth_client_secret_file.is_some();
    if url_secret.is_some() && secret_flag {
        return Err(twice("--oauth-token-url holds a client secret (client-id:secret@) and --oauth-client-secret(-file) gives one too"));
    }
    let client_id = url_id
        .or_else(|| args.oauth_client_id.clone())
        .ok_or_else(|| {
            ConfigError::Invalid("--oauth-token-url needs --oauth-client-id".to_owned())
        })?;
    let secret = match (
        url_secret,
        &args.oauth_client_secret,
        &args.oauth_client_secret_file,
    ) {
        (Some(secret), _, _) => secret,
        (None, Some(s), _) => Secret::new(s.clone()),
        (None, None, Some(file)) => read_secret("--oauth-client-secret-file", file)?,
        (None, None, None) => {
            return Err(ConfigError::Invalid(
                "--oauth-token-url needs --oauth-client-secret-file or --oauth-client-secret"
                    .to_owned(),
            ))
        }
    };
    Ok(Credentials::OAuth(Arc::new(OAuthClient::new(
        without_userinfo(token_url),
        client_id,
        secret,
        args.oauth_scope.clone(),
        tls.clone(),
    ))))
}

/// A secret from a file (a mounted Kubernetes or compose secret): one trailing newline is not
/// part of it; an unreadable or empty file is an error naming `flag`.
pub(super) fn read_secret(flag: &str, path: &Path) -> Result<Secret, ConfigError> {
    let shown = path.display();
    let bytes = super::files::read_bounded(flag, path)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| ConfigError::Invalid(format!("{flag} {shown}: not UTF-8 text")))?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "{flag} {shown}: the file is empty"
        )));
    }
    Ok(Secret::new(text.to_owned()))
}
