//! Finding the engine's nodes in DNS: with `--engine-discovery dns`, the host of the one
//! `--engine-url` is resolved again and again, and every address it has becomes a node with its
//! own long poll. This is how a Kubernetes headless Service presents the pods behind it: one
//! address per ready pod, changing as pods come and go.
//!
//! A failed or empty answer keeps the nodes the worker has: a DNS hiccup must not make it drop
//! every engine at once.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use url::Url;

use crate::engine::{EngineClient, NodeTarget};

/// How often the host is resolved again. Kubernetes updates a headless Service's records within
/// seconds of a pod's readiness changing; a new node is polled within this interval, and a node
/// that left is dropped within it (its last long poll ends by itself).
pub const DISCOVERY_INTERVAL: Duration = Duration::from_secs(15);

/// Resolves a host name to addresses (the system resolver; tests bring their own).
pub trait Resolve: Send + Sync + 'static {
    /// Every address of `host`, with `port`.
    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = std::io::Result<Vec<SocketAddr>>> + Send;
}

/// The system's resolver (`getaddrinfo`, through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemDns;

impl Resolve for SystemDns {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}

/// Keeps the client's nodes in step with the addresses of one host name.
#[derive(Debug)]
pub struct Discovery<R> {
    client: EngineClient,
    seed: Url,
    resolver: R,
    /// Whether the last refresh failed (so a lasting failure is logged once).
    failing: bool,
}

impl<R: Resolve> Discovery<R> {
    /// Discovery of the nodes behind `seed`'s host, feeding `client`.
    pub fn new(client: EngineClient, seed: Url, resolver: R) -> Self {
        Discovery {
            client,
            seed,
            resolver,
            failing: false,
        }
    }

    /// Resolves the host once and updates the nodes; returns how many there are now.
    pub async fn refresh(&mut self) -> usize {
        let host = self.seed.host_str().unwrap_or_default().to_owned();
        let port = self.seed.port_or_known_default().unwrap_or(80);
        let mut addresses = match self.resolver.resolve(&host, port).await {
            Ok(addresses) if !addresses.is_empty() => addresses,
            Ok(_) => return self.keep(&host, "no address"),
            Err(e) => return self.keep(&host, &e.to_string()),
        };
        addresses.sort();
        addresses.dedup();
        let targets: Vec<NodeTarget> = addresses
            .into_iter()
            .map(|address| NodeTarget {
                url: self.seed.clone(),
                address: Some(address),
            })
            .collect();
        if self.failing {
            info!(host = %host, "engine discovery resolves the host again");
            self.failing = false;
        }
        match self.client.set_nodes(&targets) {
            Ok(true) => info!(
                host = %host,
                nodes = %targets.iter().map(NodeTarget::name).collect::<Vec<_>>().join(", "),
                "engine nodes changed"
            ),
            Ok(false) => debug!(host = %host, "engine nodes unchanged"),
            Err(e) => warn!(host = %host, "cannot set up a discovered engine node: {e}"),
        }
        self.client.nodes().len()
    }

    fn keep(&mut self, host: &str, why: &str) -> usize {
        if !self.failing {
            warn!(host = %host, "engine discovery cannot resolve the host ({why}); keeping the nodes known so far");
            self.failing = true;
        }
        self.client.nodes().len()
    }

    /// Refreshes every `interval` until `stop` is cancelled.
    pub async fn run(mut self, interval: Duration, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.cancelled() => return,
            }
            self.refresh().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A resolver whose answers the test sets.
    struct Scripted(Mutex<std::io::Result<Vec<SocketAddr>>>);

    impl Resolve for Scripted {
        async fn resolve(&self, _host: &str, _port: u16) -> std::io::Result<Vec<SocketAddr>> {
            match &*self.0.lock().expect("not poisoned") {
                Ok(addresses) => Ok(addresses.clone()),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            }
        }
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("an address")
    }

    #[tokio::test]
    async fn nodes_follow_the_addresses_and_survive_a_failed_lookup() {
        let seed: Url = "http://engine.example:8080/engine-rest"
            .parse()
            .expect("a URL");
        let client =
            EngineClient::new(crate::engine::EngineSettings::new(seed.clone())).expect("client");
        let resolver = Scripted(Mutex::new(Ok(vec![
            addr("10.0.0.2:8080"),
            addr("10.0.0.1:8080"),
        ])));
        let mut discovery = Discovery::new(client.clone(), seed, resolver);
        assert_eq!(discovery.refresh().await, 2);
        let names: Vec<String> = client.nodes().iter().map(|n| n.name().to_owned()).collect();
        assert_eq!(
            names,
            [
                "http://10.0.0.1:8080/engine-rest",
                "http://10.0.0.2:8080/engine-rest"
            ]
        );
        let kept = std::sync::Arc::clone(&client.nodes()[1]);

        *discovery.resolver.0.lock().expect("not poisoned") =
            Err(std::io::Error::other("SERVFAIL"));
        assert_eq!(
            discovery.refresh().await,
            2,
            "a failed lookup keeps the nodes"
        );

        *discovery.resolver.0.lock().expect("not poisoned") =
            Ok(vec![addr("10.0.0.2:8080"), addr("10.0.0.3:8080")]);
        assert_eq!(discovery.refresh().await, 2);
        let nodes = client.nodes();
        assert_eq!(nodes[0].name(), "http://10.0.0.2:8080/engine-rest");
        assert!(
            std::sync::Arc::ptr_eq(&nodes[0], &kept),
            "a node that stays keeps its connections"
        );
        assert_eq!(nodes[1].name(), "http://10.0.0.3:8080/engine-rest");
    }
}
