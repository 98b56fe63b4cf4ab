//! A string that must never reach a log line, an error message or `--print-config`, and the one
//! place secrets hide in plain text: the userinfo of a URL (`http://user:password@host/`), which
//! every URL loses before the worker names, logs or calls it.

use std::fmt;

use url::Url;

/// A secret value (password, token, client secret). `Debug` and `Display` print a mask.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"********\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("********")
    }
}

/// `url` without its userinfo: what may be shown, logged, used as a metrics label or requested
/// (the HTTP client puts the request URL into its errors).
pub fn without_userinfo(url: &Url) -> Url {
    let mut url = url.clone();
    // Only URLs that cannot have a host (`mailto:`, `data:`) refuse these, and they have no
    // userinfo either.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url
}

/// The user name and password of `url`'s userinfo, percent-decoded; `None` without userinfo.
/// The password is `None` for `http://user@host/`.
pub fn userinfo(url: &Url) -> Option<(String, Option<Secret>)> {
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8_lossy()
            .into_owned()
    };
    let password = url.password().map(|p| Secret::new(decode(p)));
    if url.username().is_empty() && password.is_none() {
        return None;
    }
    Some((decode(url.username()), password))
}

/// `text` with the password of every `scheme://user:password@` in it masked: for lines built
/// from input that may hold a URL the worker could not parse (so could not strip).
pub fn mask_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match authority.rfind('@') {
            Some(at) => {
                match authority[..at].split_once(':') {
                    Some((user, _password)) => {
                        out.push_str(user);
                        out.push_str(":********");
                    }
                    None => out.push_str(&authority[..at]),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_taken_out_of_urls_and_masked_in_text() {
        let url: Url = "http://al%40ice:p%3Ass@h:8080/engine-rest".parse().unwrap();
        let (user, password) = userinfo(&url).unwrap();
        assert_eq!(user, "al@ice");
        assert_eq!(password.unwrap().expose(), "p:ss");
        assert_eq!(without_userinfo(&url).as_str(), "http://h:8080/engine-rest");
        assert!(userinfo(&without_userinfo(&url)).is_none());
        let only_user: Url = "http://bob@h/".parse().unwrap();
        assert_eq!(userinfo(&only_user).unwrap().0, "bob");
        assert_eq!(
            mask_userinfo("invalid value 'http://u:S3CRET@h:x/r' for --engine-url, http://h/"),
            "invalid value 'http://u:********@h:x/r' for --engine-url, http://h/"
        );
    }

    #[test]
    fn secrets_print_as_a_mask() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s} {s:?}"), "******** \"********\"");
        assert_eq!(s.expose(), "hunter2");
    }
}
