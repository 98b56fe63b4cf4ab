//! Engine nodes: where each one is, its connection pools, and which node a call goes to.
//!
//! Fetch-and-lock goes to the node the caller names (a long poll is only woken by its own node);
//! every other call goes to any node that answers, because the nodes share their state: the order
//! is round-robin, nodes known to answer first ([`route`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Certificate, Identity};
use url::Url;

use super::error::{error_chain, EngineError};
use super::health::{NodeHealth, Reach};
use super::reply::Alarms;
use super::TlsSettings;
use crate::secret::without_userinfo;

/// Idle pooled connections are probed this often, so a silently dropped peer is noticed.
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);

/// Pooled connections idle this long are closed by the client. It must stay below the shortest
/// keep-alive timeout common in front of or inside an engine — Apache httpd and Node.js close idle
/// connections after 5 s (nginx after 75 s, Tomcat after 60 s or its `connectionTimeout`, AWS load
/// balancers after 60 s) — so that the client, not the server, ends an idle connection. The race
/// that remains (the server closes it in the instant the client reuses it) is covered by sending
/// the call again at once on a new connection (see [`super::error::is_stale_connection`]).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// After a pooled connection turned out closed by the server, calls to that node use new
/// connections for this long: the pool's other connections have been idle just as long, and the
/// caller's immediate retry must not meet one of them.
const STALE_POOL_WINDOW: Duration = Duration::from_secs(1);

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where one engine node is: its REST root, and (for a node found by DNS discovery) the address
/// its host name stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTarget {
    /// The REST root, e.g. `http://camunda-engine-headless:8080/engine-rest`.
    pub url: Url,
    /// The address to connect to instead of resolving the URL's host.
    pub address: Option<SocketAddr>,
}

impl NodeTarget {
    /// How the node is named in logs and metrics: its URL without userinfo (credentials never
    /// become a label), with the address in place of the host name when it was discovered (each
    /// pod of a headless Service has its own).
    pub fn name(&self) -> String {
        let mut url = without_userinfo(&self.url);
        if let Some(address) = self.address {
            // Setting an IP host and a port on an http(s) URL cannot fail.
            let _ = url.set_ip_host(address.ip());
            let _ = url.set_port(Some(address.port()));
        }
        url.as_str().trim_end_matches('/').to_owned()
    }
}

/// One engine node: its REST root, its connections and what the last call said about it.
#[derive(Debug)]
pub struct Node {
    /// The node's name in logs and metrics (see [`NodeTarget::name`]).
    pub(super) name: String,
    /// The REST root without a trailing slash, as requests address it.
    pub(super) base: String,
    /// The pooled client every call uses.
    pub(super) http: reqwest::Client,
    /// A client that keeps no connection: the one immediate retry after a stale connection must
    /// not pick another pooled connection that the server may have closed just the same.
    pub(super) fresh: reqwest::Client,
    /// Until when calls to this node go over new connections (ms since `created`): set when a
    /// pooled connection turned out closed, because the others in the pool have been idle just as
    /// long. Covers the caller's own immediate retry of a call the client does not repeat itself.
    fresh_until_ms: AtomicU64,
    created: Instant,
    pub(super) health: NodeHealth,
    /// When each reply the client refused from this node (too large, a redirect) was last logged.
    pub(super) alarms: Alarms,
}

/// One of a node's HTTP clients: `pooled` (kept-alive connections) or one that keeps none;
/// `pinned` connects the URL's host (over HTTPS) to a discovered address.
fn http_client(
    pooled: bool,
    pinned: Option<&(SocketAddr, String)>,
    tls: &TlsSettings,
) -> Result<reqwest::Client, EngineError> {
    // Never a redirect: following one re-sends the request — worker id, topics, the variables
    // asked for, credentials — to whatever host the reply names. A 3xx is an error (see
    // `transport.rs`).
    // Trusted roots: the system's store (where an operator mounts corporate CAs; the
    // `rustls-tls-native-roots` feature, read at each build), the bundled Mozilla roots
    // (`rustls-tls`, for an image without a store), and `--ca-cert`.
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("camunda-worker/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_keepalive(TCP_KEEPALIVE);
    builder = if pooled {
        builder.pool_idle_timeout(POOL_IDLE_TIMEOUT)
    } else {
        builder.pool_max_idle_per_host(0)
    };
    if let Some((address, host)) = pinned {
        builder = builder.resolve(host, *address);
    }
    if let Some(pem) = &tls.ca_cert_pem {
        let cert = Certificate::from_pem(pem)
            .map_err(|e| EngineError::Credentials(format!("--ca-cert: {}", error_chain(&e))))?;
        builder = builder.add_root_certificate(cert);
    }
    if let Some(pem) = &tls.client_identity_pem {
        let identity = Identity::from_pem(pem).map_err(|e| {
            EngineError::Credentials(format!("--client-cert/--client-key: {}", error_chain(&e)))
        })?;
        builder = builder.identity(identity);
    }
    builder
        .build()
        .map_err(|e| EngineError::Credentials(format!("HTTP client: {}", error_chain(&e))))
}

impl Node {
    /// Builds one node's HTTP clients. A discovered address over plain HTTP goes into the URL;
    /// over HTTPS the host name stays in the URL (for the certificate check) and is pinned to
    /// the address.
    pub(super) fn new(target: &NodeTarget, tls: &TlsSettings) -> Result<Node, EngineError> {
        let name = target.name();
        let https = target.url.scheme() == "https";
        // Never with userinfo: the HTTP client puts the request URL into its errors.
        let base = if https {
            without_userinfo(&target.url)
                .as_str()
                .trim_end_matches('/')
                .to_owned()
        } else {
            name.clone()
        };
        let pinned = target
            .address
            .filter(|_| https)
            .zip(target.url.host_str().map(str::to_owned));
        Ok(Node {
            health: NodeHealth::new(&name),
            alarms: Alarms::default(),
            name,
            base,
            http: http_client(true, pinned.as_ref(), tls)?,
            fresh: http_client(false, pinned.as_ref(), tls)?,
            fresh_until_ms: AtomicU64::new(0),
            created: Instant::now(),
        })
    }

    /// Whether calls should avoid the pool for now (see `fresh_until_ms`).
    pub(super) fn avoid_pool(&self) -> bool {
        let now = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX);
        now < self.fresh_until_ms.load(Ordering::Relaxed)
    }

    /// Marks the pool as suspect for [`STALE_POOL_WINDOW`].
    pub(super) fn distrust_pool(&self) {
        let until = self.created.elapsed() + STALE_POOL_WINDOW;
        self.fresh_until_ms.store(
            u64::try_from(until.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The node's name in logs and metrics: its REST root (with the discovered address).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the last call to this node said about it.
    pub fn reach(&self) -> Reach {
        self.health.reach()
    }
}

/// The order in which to try `nodes` for a call that may go to any of them: round-robin from
/// `turn`, nodes known to answer first.
pub(super) fn route(nodes: &[Arc<Node>], turn: usize) -> Vec<Arc<Node>> {
    let count = nodes.len();
    if count <= 1 {
        return nodes.to_vec();
    }
    let start = turn % count;
    let mut ordered: Vec<Arc<Node>> = (0..count)
        .map(|i| Arc::clone(&nodes[(start + i) % count]))
        .collect();
    ordered.sort_by_key(|node| node.reach() != Reach::Up);
    ordered
}
