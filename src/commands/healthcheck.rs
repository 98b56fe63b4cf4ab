//! `camunda-worker healthcheck`: probe the worker's own `/healthz`, for container images without
//! curl. Exit 0 when healthy, 1 otherwise.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::cli::HealthcheckArgs;

/// Probes `/healthz` and returns whether it answered 200.
pub async fn run(metrics_addr: Option<SocketAddr>, args: &HealthcheckArgs) -> anyhow::Result<bool> {
    let url = match (&args.url, metrics_addr) {
        (Some(url), _) => url.to_string(),
        (None, Some(addr)) => format!("http://{}/healthz", probe_address(addr)),
        (None, None) => anyhow::bail!(
            "--metrics-addr is off: the worker serves no /healthz to probe (give --url)"
        ),
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    match client.get(&url).send().await {
        Ok(reply) if reply.status().is_success() => {
            println!("healthy: {url}");
            Ok(true)
        }
        Ok(reply) => {
            let status = reply.status();
            let body = reply.text().await.unwrap_or_default();
            println!("unhealthy: {url} answered {status}: {}", body.trim());
            Ok(false)
        }
        Err(e) => {
            println!("unhealthy: {url}: {}", crate::engine::error::Chain(&e));
            Ok(false)
        }
    }
}

/// A wildcard listen address is probed on loopback.
fn probe_address(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}
