//! The value parsers with a range: every number and duration the worker takes has a documented
//! lower and upper bound, every name must be a name, every URL an http(s) URL.
//!
//! Why bounds above too: a value past what the worker can represent (a capacity of
//! 18446744073709551615, a duration of a thousand years) does not fail where it is typed but
//! where it is used — a semaphore that panics, an instant that overflows — long after start and
//! without naming the flag. Within these bounds every value works; outside them, clap reports the
//! flag (and the config file its key) at start, exit 2. The README's configuration table lists
//! the same ranges.

use std::num::NonZeroU32;
use std::time::Duration;

use url::Url;

use crate::engine::MAX_LONG_POLL;

/// A closed range of durations, with the text the README and the error show.
#[derive(Debug, Clone, Copy)]
pub struct DurationRange {
    /// The shortest value accepted.
    pub min: Duration,
    /// The longest value accepted.
    pub max: Duration,
    /// How the range reads, e.g. `1s to 24h`.
    pub text: &'static str,
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

/// `--request-timeout`.
pub const REQUEST_TIMEOUT: DurationRange = DurationRange {
    min: Duration::from_millis(100),
    max: secs(HOUR),
    text: "100ms to 1h",
};
/// `--correlation-delay` (also a route's `correlation_delay`).
pub const CORRELATION_DELAY: DurationRange = DurationRange {
    min: Duration::ZERO,
    max: secs(DAY),
    text: "0s to 24h",
};
/// `--lock-duration` (also a route's `lock_duration`): below a second a lock runs out before a
/// complete can reach the engine.
pub const LOCK_DURATION: DurationRange = DurationRange {
    min: secs(1),
    max: secs(DAY),
    text: "1s to 24h",
};
/// `--long-poll`: the engine's own maximum.
pub const LONG_POLL: DurationRange = DurationRange {
    min: Duration::ZERO,
    max: MAX_LONG_POLL,
    text: "0s to 30m",
};
/// `--min-poll-interval`: `0s` turns the pacing off.
pub const MIN_POLL_INTERVAL: DurationRange = DurationRange {
    min: Duration::ZERO,
    max: secs(5 * 60),
    text: "0s to 5m",
};
/// `--correlation-timeout`.
pub const CORRELATION_TIMEOUT: DurationRange = DurationRange {
    min: Duration::ZERO,
    max: secs(7 * DAY),
    text: "0s to 7d",
};
/// `--follow-up-timeout`.
pub const FOLLOW_UP_TIMEOUT: DurationRange = DurationRange {
    min: secs(1),
    max: secs(DAY),
    text: "1s to 24h",
};
/// `--follow-up-lease`: renewed every quarter of it; below 3 s that is more than a write a second.
pub const FOLLOW_UP_LEASE: DurationRange = DurationRange {
    min: secs(3),
    max: secs(HOUR),
    text: "3s to 1h",
};
/// `--retry-timeout`.
pub const RETRY_TIMEOUT: DurationRange = DurationRange {
    min: Duration::ZERO,
    max: secs(7 * DAY),
    text: "0s to 7d",
};
/// `--max-backoff`.
pub const MAX_BACKOFF: DurationRange = DurationRange {
    min: Duration::from_millis(100),
    max: secs(HOUR),
    text: "100ms to 1h",
};
/// `--shutdown-grace`.
pub const SHUTDOWN_GRACE: DurationRange = DurationRange {
    min: Duration::ZERO,
    max: secs(HOUR),
    text: "0s to 1h",
};
/// `--reconcile-interval`, when not `0s` (which disables the reconciler).
pub const RECONCILE_INTERVAL: DurationRange = DurationRange {
    min: secs(1),
    max: secs(DAY),
    text: "0s (off) or 1s to 24h",
};

/// A closed range of whole numbers.
#[derive(Debug, Clone, Copy)]
pub struct NumberRange {
    /// The smallest value accepted.
    pub min: u64,
    /// The largest value accepted.
    pub max: u64,
}

/// `--max-tasks`.
pub const MAX_TASKS: NumberRange = NumberRange {
    min: 1,
    max: 10_000,
};
/// `--max-pending-follow-ups`.
pub const MAX_PENDING_FOLLOW_UPS: NumberRange = NumberRange {
    min: 1,
    max: 1_000_000,
};
/// `--retry-budget`.
pub const RETRY_BUDGET: NumberRange = NumberRange {
    min: 1,
    max: 10_000,
};
/// `--follow-up-retries`.
pub const FOLLOW_UP_RETRIES: NumberRange = NumberRange { min: 0, max: 100 };
/// `--follow-up-concurrency`.
pub const FOLLOW_UP_CONCURRENCY: NumberRange = NumberRange { min: 1, max: 1024 };
/// `--retries`.
pub const RETRIES: NumberRange = NumberRange { min: 0, max: 1000 };
/// `start --count`.
pub const START_COUNT: NumberRange = NumberRange {
    min: 1,
    max: 1_000_000,
};
/// `start --concurrency`.
pub const START_CONCURRENCY: NumberRange = NumberRange { min: 1, max: 1024 };

/// Per-flag parsers, for clap's `value_parser` and the `[[route]]` keys.
macro_rules! duration_parsers {
    ($($name:ident => $range:ident),* $(,)?) => {$(
        #[doc = concat!("A duration within [`", stringify!($range), "`].")]
        pub fn $name(text: &str) -> Result<Duration, String> {
            duration_in(text, $range)
        }
    )*};
}

duration_parsers! {
    request_timeout => REQUEST_TIMEOUT,
    correlation_delay => CORRELATION_DELAY,
    lock_duration => LOCK_DURATION,
    long_poll => LONG_POLL,
    min_poll_interval => MIN_POLL_INTERVAL,
    correlation_timeout => CORRELATION_TIMEOUT,
    follow_up_timeout => FOLLOW_UP_TIMEOUT,
    follow_up_lease => FOLLOW_UP_LEASE,
    retry_timeout => RETRY_TIMEOUT,
    max_backoff => MAX_BACKOFF,
    shutdown_grace => SHUTDOWN_GRACE,
}

/// `--reconcile-interval`: `0s` (off) or within [`RECONCILE_INTERVAL`].
pub fn reconcile_interval(text: &str) -> Result<Duration, String> {
    match duration_in(text, CORRELATION_DELAY) {
        Ok(Duration::ZERO) => Ok(Duration::ZERO),
        _ => duration_in(text, RECONCILE_INTERVAL),
    }
}

macro_rules! number_parsers {
    ($($name:ident: $type:ty => $range:ident),* $(,)?) => {$(
        #[doc = concat!("A whole number within [`", stringify!($range), "`].")]
        pub fn $name(text: &str) -> Result<$type, String> {
            number_in(text, $range)
        }
    )*};
}

number_parsers! {
    max_pending_follow_ups: usize => MAX_PENDING_FOLLOW_UPS,
    retry_budget: u32 => RETRY_BUDGET,
    follow_up_retries: u32 => FOLLOW_UP_RETRIES,
    follow_up_concurrency: usize => FOLLOW_UP_CONCURRENCY,
    retries: i32 => RETRIES,
}

/// `--max-tasks`.
pub fn max_tasks(text: &str) -> Result<NonZeroU32, String> {
    non_zero(text, MAX_TASKS)
}

/// `start --count`.
pub fn start_count(text: &str) -> Result<NonZeroU32, String> {
    non_zero(text, START_COUNT)
}

/// `start --concurrency`.
pub fn start_concurrency(text: &str) -> Result<NonZeroU32, String> {
    non_zero(text, START_CONCURRENCY)
}

fn non_zero(text: &str, range: NumberRange) -> Result<NonZeroU32, String> {
    let n: u32 = number_in(text, range)?;
    NonZeroU32::new(n).ok_or_else(|| format!("`{text}` must be at least 1"))
}

/// A duration within `range`.
pub fn duration_in(text: &str, range: DurationRange) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration like 500ms, 2s or 5m ({e})"))?;
    if duration < range.min || duration > range.max {
        return Err(format!("must be from {}", range.text));
    }
    Ok(duration)
}

/// A whole number within `range`, as any integer type it fits.
pub fn number_in<T: TryFrom<u64>>(text: &str, range: NumberRange) -> Result<T, String> {
    let out_of_range = || {
        format!(
            "`{text}` is not a whole number from {} to {}",
            range.min, range.max
        )
    };
    let n: u64 = text.trim().parse().map_err(|_| out_of_range())?;
    if n < range.min || n > range.max {
        return Err(out_of_range());
    }
    T::try_from(n).map_err(|_| out_of_range())
}

/// A tenant id (`--tenant-id`): a [`name`] of letters, digits, `-`, `_` and `.`, since it becomes
/// a segment of a REST path.
pub fn tenant_id(text: &str) -> Result<String, String> {
    let text = name(text)?;
    match text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        // It becomes a segment of the start call's path (`.../tenant-id/{id}/start`).
        Some(c) => Err(format!(
            "`{text}` holds `{c}`: a tenant id is letters, digits, `-`, `_` and `.`"
        )),
        None => Ok(text),
    }
}

/// A name the engine matches exactly (topic, message name, worker id, process key): not empty,
/// no spaces at either end (a typo that would silently serve a topic nobody uses), no control
/// characters (a newline from `$(cat file)`).
pub fn name(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    if text.chars().any(char::is_control) {
        return Err(format!(
            "`{}` holds a control character",
            text.escape_debug()
        ));
    }
    if text.trim() != text {
        return Err(format!("`{text}` has spaces at its start or end"));
    }
    Ok(text.to_owned())
}

/// The name of a variable a task or message carries (`--var`, `[variables]`): not empty, no
/// control characters. Spaces are the engine's business; it takes them.
pub fn assigned_variable_name(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("a variable name must not be empty".to_owned());
    }
    if text.chars().any(char::is_control) {
        return Err(format!(
            "variable name `{}` holds a control character",
            text.escape_debug()
        ));
    }
    Ok(())
}

/// An http:// or https:// URL with a host. Spaces around it are dropped (a comma-separated list
/// reads `a, b`); whitespace or a control character inside it is refused, before parsing, since
/// the URL parser would silently drop a tab or a newline.
pub fn http_url(text: &str) -> Result<Url, String> {
    let trimmed = text.trim_matches(' ');
    if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`{}` holds whitespace or a control character",
            text.escape_debug()
        ));
    }
    let url = Url::parse(trimmed).map_err(|e| format!("`{text}` is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("`{text}` is not an http:// or https:// URL"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_outside_their_range_are_refused_with_the_range() {
        assert_eq!(duration_in("1s", LOCK_DURATION), Ok(secs(1)));
        assert_eq!(duration_in("24h", LOCK_DURATION), Ok(secs(DAY)));
        assert!(duration_in("999ms", LOCK_DURATION)
            .unwrap_err()
            .contains("1s to 24h"));
        assert!(duration_in("25h", LOCK_DURATION).is_err());
        assert!(duration_in("1000000000y", LOCK_DURATION).is_err());
        assert!(duration_in("31m", LONG_POLL).unwrap_err().contains("30m"));
    }

    #[test]
    fn numbers_outside_their_range_are_refused_with_the_range() {
        assert_eq!(
            number_in::<usize>(" 4096 ", MAX_PENDING_FOLLOW_UPS),
            Ok(4096)
        );
        for text in [
            "0",
            "-1",
            "1000001",
            "18446744073709551615",
            "99999999999999999999",
            "x",
        ] {
            let why = number_in::<usize>(text, MAX_PENDING_FOLLOW_UPS).unwrap_err();
            assert!(why.contains("1 to 1000000"), "{why}");
        }
        assert_eq!(number_in::<i32>("1000", RETRIES), Ok(1000));
        assert!(number_in::<i32>("1001", RETRIES).is_err());
    }

    #[test]
    fn names_and_urls_refuse_empties_whitespace_and_control_characters() {
        assert_eq!(name("messageSending"), Ok("messageSending".to_owned()));
        for bad in ["", "  ", "a\nb", "topic ", "\u{7}bell"] {
            assert!(name(bad).is_err(), "{bad:?}");
        }
        assert!(http_url(" http://engine:8080/engine-rest").is_ok());
        for bad in [
            "http://engine:8080/engine-rest\n",
            "http://engine:8080/en\tgine-rest",
            "http://engine:8080/engine rest",
            "ftp://engine/engine-rest",
            "file:///etc/passwd",
            "localhost:8080",
        ] {
            assert!(http_url(bad).is_err(), "{bad:?}");
        }
    }
}
