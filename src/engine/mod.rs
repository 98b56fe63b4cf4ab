//! The Camunda 7 REST client: every call the worker and its subcommands make, with credentials,
//! timeouts, error mapping and the engine's health in one place. Nothing outside this module
//! builds a REST path.
//!
//! An engine may be one node or a cluster of nodes sharing one database. The client keeps one
//! [`Node`] per engine URL, each with its own connection pool and [`NodeHealth`]. The rooms:
//! - [`api`]: every call, and the [`Endpoint`] enum (label, method and path of each, once);
//! - [`transport`]: sending one call, the stale-connection resend, decoding replies;
//! - [`call_slots`]: how many calls are open against the engine at once;
//! - [`reply`]: reply bodies read against a size bound, and redirects refused;
//! - [`node`]: nodes, their pools, and which node a call goes to;
//! - [`dto`], [`error`], [`health`], [`auth`]: wire types, errors, node health, credentials;
//! - [`tenants`]: the tenants a route's marker queries are limited to;
//! - [`refusal`]: what a refusal is about (a correlation mismatch, a lock), read from the engine's
//!   English text in this one place.
//!
//! Every method returns [`EngineError`], whose predicates (`is_transient`, `outcome_unknown`,
//! `mismatch`, `refusal`, ...) are what the worker's retry policy branches on.

pub mod api;
pub mod auth;
mod call_slots;
pub mod dto;
pub mod endpoint;
pub mod error;
pub mod fetch_filter;
pub mod health;
pub mod instance_api;
pub mod node;
pub mod refusal;
pub(crate) mod reply;
pub mod tenants;
mod token_reply;
mod transport;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

pub use api::TaskFilter;
pub use auth::Credentials;
pub use call_slots::CALL_SLOTS;
pub use dto::*;
pub use endpoint::Endpoint;
pub use error::EngineError;
pub use fetch_filter::FetchFilter;
pub use health::{NodeHealth, Reach};
pub use node::{Node, NodeTarget, POOL_IDLE_TIMEOUT};
pub use refusal::{Mismatch, Refusal};
pub use tenants::TenantScope;

pub(crate) use api::millis;

use crate::metrics::Metrics;
use call_slots::CallSlots;

/// The engine refuses a long poll above 30 minutes.
pub const MAX_LONG_POLL: Duration = Duration::from_secs(30 * 60);

/// Extra time a fetch-and-lock request may take beyond its long poll before the client gives up:
/// a third of the long poll, between 1 s and 10 s. The engine answers a parked request at the
/// latest after the long poll; a request still open this much later sits on a half-open
/// connection and must not hang the worker.
pub fn long_poll_margin(long_poll: Duration) -> Duration {
    (long_poll / 3).clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// TLS settings beyond the system's trusted roots.
#[derive(Clone, Default)]
pub struct TlsSettings {
    /// PEM of an extra trusted root (a private CA).
    pub ca_cert_pem: Option<Vec<u8>>,
    /// PEM of a client certificate followed by its private key, for mutual TLS.
    pub client_identity_pem: Option<Vec<u8>>,
}

/// Says which material is set, never its bytes: the identity holds a private key.
impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("ca_cert_pem", &self.ca_cert_pem.as_ref().map(|_| "(set)"))
            .field(
                "client_identity_pem",
                &self.client_identity_pem.as_ref().map(|_| "********"),
            )
            .finish()
    }
}

/// Everything needed to build an [`EngineClient`].
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// The REST root of every engine node, e.g. `http://localhost:8080/engine-rest`.
    pub nodes: Vec<Url>,
    /// Credentials attached to every call.
    pub credentials: Credentials,
    /// Timeout of every call but fetch-and-lock (which gets its long poll + [`long_poll_margin`]).
    pub request_timeout: Duration,
    /// Extra TLS settings.
    pub tls: TlsSettings,
}

impl EngineSettings {
    /// Settings for one engine node without authentication or special TLS.
    pub fn new(base_url: Url) -> Self {
        EngineSettings {
            nodes: vec![base_url],
            credentials: Credentials::Anonymous,
            request_timeout: Duration::from_secs(30),
            tls: TlsSettings::default(),
        }
    }
}

/// A cheap-to-clone handle to the engine's REST API.
#[derive(Clone, Debug)]
pub struct EngineClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The nodes now; replaced as a whole when discovery finds the cluster changed, which the fetch
    /// loop follows through a subscription.
    nodes: tokio::sync::watch::Sender<Arc<Vec<Arc<Node>>>>,
    /// Round-robin position for calls that may go to any node.
    next: AtomicUsize,
    credentials: Credentials,
    request_timeout: Duration,
    tls: TlsSettings,
    metrics: Option<Arc<Metrics>>,
    /// Woken when the engine answers again after no node did (the reconciler runs at once then).
    back: tokio::sync::Notify,
    /// What every call but a long poll takes first (see [`call_slots`]).
    call_slots: Arc<CallSlots>,
}

impl EngineClient {
    /// Builds the client; fails only on unusable TLS material.
    pub fn new(settings: EngineSettings) -> Result<Self, EngineError> {
        let nodes = settings
            .nodes
            .iter()
            .map(|url| {
                let target = NodeTarget {
                    url: url.clone(),
                    address: None,
                };
                Node::new(&target, &settings.tls).map(Arc::new)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EngineClient {
            inner: Arc::new(Inner {
                nodes: tokio::sync::watch::Sender::new(Arc::new(nodes)),
                next: AtomicUsize::new(0),
                credentials: settings.credentials,
                request_timeout: settings.request_timeout,
                tls: settings.tls,
                metrics: None,
                back: tokio::sync::Notify::new(),
                call_slots: Arc::new(CallSlots::new(CALL_SLOTS)),
            }),
        })
    }

    /// The same client, reporting request latency and engine health to `metrics`.
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> Self {
        let nodes = self.nodes();
        for node in nodes.iter() {
            metrics.add_node(node.name());
        }
        EngineClient {
            inner: Arc::new(Inner {
                nodes: tokio::sync::watch::Sender::new(nodes),
                next: AtomicUsize::new(0),
                credentials: self.inner.credentials.clone(),
                request_timeout: self.inner.request_timeout,
                tls: self.inner.tls.clone(),
                metrics: Some(metrics),
                back: tokio::sync::Notify::new(),
                call_slots: Arc::clone(&self.inner.call_slots),
            }),
        }
    }

    /// The nodes the client knows now.
    pub fn nodes(&self) -> Arc<Vec<Arc<Node>>> {
        Arc::clone(&self.inner.nodes.borrow())
    }

    /// Follows changes of the node list (see [`EngineClient::set_nodes`]).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<Vec<Arc<Node>>>> {
        self.inner.nodes.subscribe()
    }

    /// Replaces the node list: nodes that stay keep their connections and health, new ones start
    /// fresh, and the metrics of nodes that left are removed. Returns whether anything changed.
    pub fn set_nodes(&self, targets: &[NodeTarget]) -> Result<bool, EngineError> {
        let current = self.nodes();
        let mut next = Vec::with_capacity(targets.len());
        for target in targets {
            let name = target.name();
            match current.iter().find(|node| node.name == name) {
                Some(node) => next.push(Arc::clone(node)),
                None => next.push(Arc::new(Node::new(target, &self.inner.tls)?)),
            }
        }
        let unchanged = next.len() == current.len()
            && next
                .iter()
                .all(|n| current.iter().any(|c| Arc::ptr_eq(c, n)));
        if unchanged {
            return Ok(false);
        }
        if let Some(metrics) = &self.inner.metrics {
            for node in &next {
                if !current.iter().any(|c| c.name == node.name) {
                    metrics.add_node(&node.name);
                }
            }
            for node in current.iter() {
                if !next.iter().any(|n| n.name == node.name) {
                    metrics.remove_node(&node.name);
                }
            }
        }
        self.inner.nodes.send_replace(Arc::new(next));
        Ok(true)
    }

    /// The name of the first node (for messages that name "the engine").
    pub fn base_url(&self) -> String {
        self.nodes()
            .first()
            .map(|n| n.name.clone())
            .unwrap_or_default()
    }

    /// Whether at least one node answered its last call and accepted the credentials
    /// (readiness).
    pub fn is_up(&self) -> bool {
        self.nodes().iter().any(|node| node.reach() == Reach::Up)
    }

    /// Resolves the next time the engine answers after no node did.
    pub async fn engine_back(&self) {
        self.inner.back.notified().await;
    }
}
