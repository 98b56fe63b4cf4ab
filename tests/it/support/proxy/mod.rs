//! A fault-injecting HTTP/1.1 proxy to sit between the worker and a real engine.
//!
//! Every request is forwarded unchanged unless a [`Rule`] matches it; a matching rule provokes,
//! deterministically, one of the network failures the worker must survive: a reply lost after the
//! engine processed the request (504, reset, hang), a slow reply, a request that never reached the
//! engine, or a proxy's own error status. [`FaultProxy::close_idle_after`] adds the keep-alive race:
//! a server closing an idle connection in the instant the client reuses it.
//!
//! Client side: hyper's HTTP/1.1 server, one task per keep-alive connection, no timeouts — the
//! engine may park a fetchAndLock long poll for as long as it likes. Upstream side: one reqwest
//! pool with no timeouts and no redirects; it is not what is being tested.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use hyper::header::{self, HeaderMap};
use hyper::StatusCode;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod chaos;
mod rule;
mod serve;
#[cfg(test)]
mod tests;

pub use chaos::{Chaos, Mix};
use rule::Armed;
pub use rule::{Applied, Exchange, Fault, FaultKind, Rule};
use serve::accept_loop;

/// How long an upstream connection may idle in the pool. Shorter than any engine's keep-alive
/// timeout, so the proxy never itself reuses a connection the engine is closing — the very race it
/// simulates on the client side must not happen unasked on the upstream side.
const UPSTREAM_IDLE: Duration = Duration::from_secs(2);

/// State shared by the accept loop and every connection.
struct Shared {
    /// Scheme and authority of the engine, without a trailing slash.
    upstream: String,
    client: reqwest::Client,
    rules: Mutex<Vec<Armed>>,
    /// Faults drawn per request where no rule fires (see [`FaultProxy::set_chaos`]).
    chaos: Mutex<Option<Chaos>>,
    close_idle_after: Mutex<Option<Duration>>,
    applied: Mutex<Vec<Applied>>,
    exchanges: Arc<Mutex<Vec<Exchange>>>,
    /// While set, the engine is "gone": every connection is closed at once (see [`FaultProxy::set_down`]).
    down: std::sync::atomic::AtomicBool,
    /// The close tokens of the open connections, for an outage to end them all.
    open: Mutex<Vec<CancellationToken>>,
    /// Cancelled by [`FaultProxy::release_held`]: held requests go on.
    release: CancellationToken,
    forwarded: AtomicUsize,
    /// Requests other than fetch-and-lock open now, and the most open at once (see
    /// [`FaultProxy::most_calls_open`]).
    calls_open: AtomicUsize,
    calls_peak: AtomicUsize,
    connections: AtomicUsize,
    upstream_errors: AtomicUsize,
}

/// The proxy; its listener and connections stop when it is dropped.
pub struct FaultProxy {
    shared: Arc<Shared>,
    port: u16,
    stop: CancellationToken,
}

impl FaultProxy {
    /// Starts a proxy on an ephemeral 127.0.0.1 port in front of `upstream`, the engine's scheme
    /// and authority (`http://127.0.0.1:PORT`); paths are forwarded unchanged.
    pub async fn start(upstream: &str) -> FaultProxy {
        let parsed = url::Url::parse(upstream)
            .unwrap_or_else(|e| panic!("upstream {upstream:?} is not a URL: {e}"));
        assert!(
            parsed.scheme() == "http" && parsed.path() == "/" && parsed.query().is_none(),
            "upstream {upstream:?} must be http://host:port only; paths are forwarded unchanged"
        );
        let client = reqwest::Client::builder()
            .no_proxy()
            .http1_only()
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(UPSTREAM_IDLE)
            .build()
            .expect("build the proxy's upstream client");
        let shared = Arc::new(Shared {
            upstream: parsed.origin().ascii_serialization(),
            client,
            rules: Mutex::new(Vec::new()),
            chaos: Mutex::new(None),
            close_idle_after: Mutex::new(None),
            applied: Mutex::new(Vec::new()),
            exchanges: Arc::default(),
            down: std::sync::atomic::AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
            release: CancellationToken::new(),
            forwarded: AtomicUsize::new(0),
            calls_open: AtomicUsize::new(0),
            calls_peak: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            upstream_errors: AtomicUsize::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy on 127.0.0.1");
        let port = listener.local_addr().expect("the proxy's address").port();
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, Arc::clone(&shared), stop.clone()));
        FaultProxy { shared, port, stop }
    }

    /// `http://127.0.0.1:<port>`; the worker's engine URL is `format!("{}/engine-rest", url)`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Adds a rule after the existing ones.
    pub fn add_rule(&self, rule: Rule) {
        self.shared.rules.lock().unwrap().push(Armed {
            rule,
            matched: 0,
            fired: 0,
        });
    }

    /// Forwards the requests held by [`Fault::Hold`], and from now on any it holds at once.
    pub fn release_held(&self) {
        self.shared.release.cancel();
    }

    /// Removes every rule: from now on everything is forwarded (stale closes aside).
    pub fn clear_rules(&self) {
        self.shared.rules.lock().unwrap().clear();
    }

    /// With `Some(chaos)`, every request no rule fires on draws a fault from it; `None` ends the
    /// chaos (faults already under way finish).
    pub fn set_chaos(&self, chaos: Option<Chaos>) {
        *self.shared.chaos.lock().unwrap() = chaos;
    }

    /// With `Some(idle)`, a request arriving on a connection that carried an earlier request and
    /// has been idle (nothing in flight) for at least `idle` is met by closing the connection (FIN)
    /// at once, without forwarding or answering — what a client sees when a server closes an idle
    /// keep-alive connection in the instant the client reuses it. Recorded as
    /// [`FaultKind::StaleClose`]. Fresh connections and shorter idles are served normally.
    pub fn close_idle_after(&self, idle: Option<Duration>) {
        *self.shared.close_idle_after.lock().unwrap() = idle;
    }

    /// With `true`, the engine goes away as far as the client can tell: every open connection is
    /// closed at once (requests in flight lose their replies, or never reach the engine) and every
    /// new connection is closed as soon as it is accepted, until `set_down(false)`. No request can
    /// succeed in between, so the outage has one clear beginning and one clear end.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
        if down {
            for close in self.shared.open.lock().unwrap().drain(..) {
                close.cancel();
            }
        }
    }

    /// Every fault applied so far, in order.
    pub fn applied(&self) -> Vec<Applied> {
        self.shared.applied.lock().unwrap().clone()
    }

    /// How many of the applied faults were of `kind`.
    pub fn applied_count(&self, kind: FaultKind) -> usize {
        let applied = self.shared.applied.lock().unwrap();
        applied.iter().filter(|a| a.kind == kind).count()
    }

    /// Every request sent to the engine so far with the engine's answer, in order: what the
    /// engine really saw, whatever faults did to the replies.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.shared.exchanges.lock().unwrap().clone()
    }

    /// Requests sent to the engine so far (including ones whose reply a fault then lost).
    pub fn forwarded(&self) -> usize {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// The most requests other than fetch-and-lock that were open at the proxy at once: from the
    /// request's body read to its reply, a fault's delay included. Never more than the client had
    /// open at once (its request was sent before, its reply arrives after).
    pub fn most_calls_open(&self) -> usize {
        self.shared.calls_peak.load(Ordering::SeqCst)
    }

    /// Client connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Forwarded requests the engine did not answer (connection refused, reset, ...); each was
    /// answered 502 by the proxy. Not a fault of a rule: a test expecting none can assert 0.
    pub fn upstream_errors(&self) -> usize {
        self.shared.upstream_errors.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
