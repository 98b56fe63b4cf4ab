//! The engine's clock, as the worker reads it from the `Date` header of the engine's replies.
//!
//! Markers carry due times ([`crate::ledger`]): when a reconciler may deliver an owed message,
//! when a running work's lease runs out. Every replica compares them with its "now". Were that
//! each replica's own clock, a replica whose clock ran a minute ahead would find the others'
//! markers overdue at once — run their work again under a live lease, send a message before its
//! delay — and one a minute behind would write markers the others find overdue as soon as they
//! are written. So due times are written and compared in the engine's time, which every replica
//! reads from the same source: each reply's `Date` header.
//!
//! The header counts whole seconds, so one reading says only that the engine's time at the
//! reply's arrival lies between the date and a second (plus the reply's transit) later. The
//! offset is kept while readings agree with it within [`TOLERANCE_MS`] and moved only by one that
//! does not: clocks that agree keep an offset of zero, and a skewed clock's offset settles on the
//! first reply, within a second or so of the truth — small against leases of a minute and
//! reconciler passes of 30 s. A reading beyond [`MAX_OFFSET_MS`] is ignored: a broken header must
//! not move every due time by days.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, DATE};

/// How far a reading may stray from the offset before it moves it: half the header's second,
/// plus a second for the reply's transit and scheduling.
const TOLERANCE_MS: i64 = 1_500;

/// Readings that put the engine further than this from this machine are ignored.
const MAX_OFFSET_MS: i64 = 24 * 3_600 * 1_000;

/// Above this, the offset is worth an operator's look (the machines' time service).
const NOTABLE_OFFSET_MS: i64 = 2_000;

/// The engine's time minus this machine's, in milliseconds.
static OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// Whether the notable offset has been logged (once per process).
static LOGGED: AtomicBool = AtomicBool::new(false);

/// The engine's current time in Unix milliseconds, as far as its replies have told.
pub fn now_ms() -> u64 {
    let engine = local_ms().saturating_add(OFFSET_MS.load(Ordering::Relaxed));
    u64::try_from(engine).unwrap_or_default()
}

/// The engine's time minus this machine's, in milliseconds, as last read.
pub fn offset_ms() -> i64 {
    OFFSET_MS.load(Ordering::Relaxed)
}

/// Reads the `Date` header of a reply that has just arrived; a reply without one, or with one
/// that does not parse, tells nothing.
pub fn observe(headers: &HeaderMap) {
    let Some(date) = headers.get(DATE).and_then(|v| v.to_str().ok()) else {
        return;
    };
    let Ok(date) = httpdate::parse_http_date(date) else {
        return;
    };
    let Some(date_ms) = unix_ms_of(date) else {
        return;
    };
    let current = OFFSET_MS.load(Ordering::Relaxed);
    if let Some(moved) = settle(current, local_ms(), date_ms) {
        OFFSET_MS.store(moved, Ordering::Relaxed);
        if moved.abs() > NOTABLE_OFFSET_MS && !LOGGED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                offset_ms = moved,
                "the engine's clock and this machine's differ by {:.1} s: due times in markers \
                 follow the engine's clock (check the machines' time service)",
                moved as f64 / 1000.0
            );
        }
    }
}

/// The new offset a reading of `date_ms` arriving at local time `local_ms` calls for, or `None`
/// when `current` agrees with it (or the reading is beyond belief).
fn settle(current: i64, local_ms: i64, date_ms: i64) -> Option<i64> {
    // The middle of the second the header names: the best single guess of the engine's time.
    let guess = date_ms + 500;
    let estimate = local_ms + current;
    if (estimate - guess).abs() <= TOLERANCE_MS {
        return None;
    }
    let offset = guess - local_ms;
    (offset.abs() <= MAX_OFFSET_MS).then_some(offset)
}

fn local_ms() -> i64 {
    unix_ms_of(SystemTime::now()).unwrap_or_default()
}

fn unix_ms_of(time: SystemTime) -> Option<i64> {
    let since = time.duration_since(UNIX_EPOCH).ok()?;
    i64::try_from(since.as_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_540_462_345;

    #[test]
    fn clocks_that_agree_keep_an_offset_of_zero_whatever_the_millisecond() {
        // The engine's header truncates to the second; the reply arrives a little later.
        for arrival in [NOW, NOW + 999, NOW + 1_300] {
            let date = NOW - NOW % 1_000;
            assert_eq!(settle(0, arrival, date), None, "arrival {arrival}");
        }
    }

    #[test]
    fn a_clock_a_minute_off_either_way_is_corrected_within_a_second() {
        for skew in [60_000, -60_000] {
            let engine = NOW;
            let local = engine + skew;
            let date = engine - engine % 1_000;
            let offset = settle(0, local, date).expect("a minute off moves the offset");
            let error = (local + offset - engine).abs();
            assert!(error <= 1_000, "skew {skew}: off by {error} ms");
            // The next readings agree with it: no jitter.
            for later in [1_000, 1_400, 2_999] {
                let engine = NOW + later;
                assert_eq!(settle(offset, engine + skew, engine - engine % 1_000), None);
            }
        }
    }

    #[test]
    fn a_date_beyond_belief_is_ignored() {
        let two_days = 2 * 24 * 3_600 * 1_000;
        assert_eq!(settle(0, NOW, NOW + two_days), None);
        assert_eq!(settle(0, NOW, NOW - two_days), None);
    }

    #[test]
    fn a_reply_without_a_readable_date_tells_nothing() {
        let mut headers = HeaderMap::new();
        observe(&headers);
        headers.insert(DATE, "not a date".parse().unwrap());
        observe(&headers);
        assert_eq!(offset_ms(), 0);
    }
}
