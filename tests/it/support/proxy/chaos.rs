//! Faults drawn at random per request, reproducibly from a seed: the chaos mix a soak runs the
//! proxy with (`tests/chaos`). Rules still come first; a request no rule fired on draws here.

use std::time::Duration;

use super::Fault;

/// How often each fault strikes a request of one class, as probabilities (their sum ≤ 1; the
/// rest is forwarded untouched).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    /// The connection closed before the engine sees the request.
    pub close_before: f64,
    /// The reply lost after the engine committed: 504.
    pub lost_504: f64,
    /// The reply lost after the engine committed: a reset.
    pub lost_reset: f64,
    /// The reply cut off mid-body after the engine committed.
    pub cut_body: f64,
    /// The proxy's own 503, the request never forwarded.
    pub status_503: f64,
    /// A slow answer: forwarded after a pause drawn up to `max_delay`.
    pub delay: f64,
    pub max_delay: Duration,
}

impl Mix {
    /// Nothing ever strikes.
    pub const CALM: Mix = Mix {
        close_before: 0.0,
        lost_504: 0.0,
        lost_reset: 0.0,
        cut_body: 0.0,
        status_503: 0.0,
        delay: 0.0,
        max_delay: Duration::ZERO,
    };

    /// Every kind of fault, each on about `each` of the requests.
    pub fn even(each: f64, max_delay: Duration) -> Mix {
        Mix {
            close_before: each,
            lost_504: each,
            lost_reset: each,
            cut_body: each,
            status_503: each,
            delay: each,
            max_delay,
        }
    }

    fn total(&self) -> f64 {
        self.close_before
            + self.lost_504
            + self.lost_reset
            + self.cut_body
            + self.status_503
            + self.delay
    }
}

/// Which requests a [`Mix`] applies to: the long poll, or every other call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `fetchAndLock`: a lost reply here loses locks (the tasks come back after the lock).
    Fetch,
    /// Everything else: complete, message, the marker's writes, the reconciler's queries.
    Other,
}

impl Class {
    fn of(path: &str) -> Class {
        if path.ends_with("/fetchAndLock") {
            Class::Fetch
        } else {
            Class::Other
        }
    }
}

/// The proxy's chaos: a seeded generator and a mix per class.
#[derive(Debug)]
pub struct Chaos {
    rng: fastrand::Rng,
    fetch: Mix,
    other: Mix,
}

impl Chaos {
    /// Faults drawn from `seed`, `fetch` for the long poll and `other` for every other request.
    pub fn new(seed: u64, fetch: Mix, other: Mix) -> Chaos {
        for mix in [fetch, other] {
            assert!(
                mix.total() <= 1.0,
                "a mix's probabilities sum to at most 1: {mix:?}"
            );
        }
        Chaos {
            rng: fastrand::Rng::with_seed(seed),
            fetch,
            other,
        }
    }

    /// The fault for one request to `path`, if it draws one.
    pub(super) fn draw(&mut self, path: &str) -> Option<Fault> {
        let mix = match Class::of(path) {
            Class::Fetch => self.fetch,
            Class::Other => self.other,
        };
        let mut roll = self.rng.f64();
        let max_delay_ms = u64::try_from(mix.max_delay.as_millis()).unwrap_or(u64::MAX);
        let delay = Fault::Delay(Duration::from_millis(self.rng.u64(0..=max_delay_ms)));
        for (chance, fault) in [
            (mix.close_before, Fault::CloseWithoutForwarding),
            (mix.lost_504, Fault::ReplyLost504),
            (mix.lost_reset, Fault::ReplyLostReset),
            (mix.cut_body, Fault::CutBody),
            (mix.status_503, Fault::Status(503)),
            (mix.delay, delay),
        ] {
            if roll < chance {
                return Some(fault);
            }
            roll -= chance;
        }
        None
    }
}
