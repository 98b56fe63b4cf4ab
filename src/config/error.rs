//! The one error type of the configuration, and the one line it prints: whatever went wrong (a
//! flag, an environment value, the file, a key), the binary says it in a single line naming the
//! culprit and exits 2 — control characters of a value escaped, so that a newline in a URL cannot
//! split the line or hide the flag's name after it.

use std::io::Write;

use crate::secret::mask_userinfo;

/// A configuration problem: bad flag, environment value, file or key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// clap's own report (unknown flag, bad value, `--help`, `--version`).
    #[error("{0}")]
    Cli(clap::Error),
    /// Anything else, already phrased as one line naming the culprit.
    #[error("{0}")]
    Invalid(String),
}

impl ConfigError {
    /// Prints the error (or the help text) and exits: 0 for `--help`/`--version`, 2 otherwise.
    pub fn exit(self) -> ! {
        if let Some(line) = self.line() {
            // Not `eprintln!`, which panics when stderr is a closed pipe: the exit code says it.
            let _ = writeln!(std::io::stderr(), "{line}");
            std::process::exit(2)
        }
        match self {
            // `--help` or `--version`: clap prints it to stdout and exits 0.
            ConfigError::Cli(e) => e.exit(),
            ConfigError::Invalid(_) => std::process::exit(2),
        }
    }

    /// The one line that reports this error, starting `error: `; `None` for `--help` and
    /// `--version`, which print to stdout. Control characters of a value (a newline in a URL)
    /// are escaped, so that the line stays one line and still names the flag.
    pub fn line(&self) -> Option<String> {
        let text = match self {
            ConfigError::Cli(e) if !e.use_stderr() => return None,
            ConfigError::Cli(e) => first_line(e),
            ConfigError::Invalid(text) => format!("error: {text}"),
        };
        // clap repeats a refused value, which may be a URL with a password in it.
        let escaped: String = text.chars().flat_map(escape_control).collect();
        Some(mask_userinfo(&escaped))
    }
}

impl From<clap::Error> for ConfigError {
    fn from(error: clap::Error) -> Self {
        ConfigError::Cli(escaped(error))
    }
}

/// `error` with control characters in its context (the values and flags it quotes) escaped.
pub(super) fn escaped(mut error: clap::Error) -> clap::Error {
    use clap::error::ContextValue;
    let escape = |text: &String| text.chars().flat_map(escape_control).collect::<String>();
    let context: Vec<_> = error
        .context()
        .map(|(kind, value)| (kind, value.clone()))
        .collect();
    for (kind, value) in context {
        let value = match value {
            ContextValue::String(text) => ContextValue::String(escape(&text)),
            ContextValue::Strings(texts) => {
                ContextValue::Strings(texts.iter().map(escape).collect())
            }
            other => other,
        };
        error.insert(kind, value);
    }
    error
}

/// The first non-empty line of a rendered clap error.
pub(super) fn first_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let first = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("error: invalid command line")
        .to_owned();
    // clap lists a refused choice's alternatives on a later line, which the one line would lose.
    match error.get(clap::error::ContextKind::ValidValue) {
        Some(clap::error::ContextValue::Strings(valid)) if !valid.is_empty() => {
            format!("{first} (possible values: {})", valid.join(", "))
        }
        _ => first,
    }
}

/// A control character as its escape (`\n`), any other as itself.
fn escape_control(c: char) -> Vec<char> {
    if c.is_control() {
        c.escape_default().collect()
    } else {
        vec![c]
    }
}
