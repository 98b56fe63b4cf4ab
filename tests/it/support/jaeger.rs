//! A real trace receiver for the tracing tests: Jaeger v2 (built by `scripts/jaeger.sh` from the
//! Go module proxy, pinned in `scripts/tools/jaeger/go.mod`), on loopback ports of its own, storing
//! spans in memory; its query API (`/api/v3/traces`, OTLP JSON) reads them back with their
//! parents, attributes and links. A Jaeger that cannot be built or started fails the test.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::engine::free_port;
use super::eventually;

/// The Jaeger binary: built once per test run (a no-op when `.tools/bin/jaeger` is current).
fn binary() -> &'static PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| super::built_by("scripts/jaeger.sh"))
}

/// One span as Jaeger stored it.
#[derive(Debug, Clone)]
pub struct StoredSpan {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a trace's root.
    pub parent_span_id: String,
    pub name: String,
    pub attributes: HashMap<String, String>,
    /// (trace id, span id) of each link.
    pub links: Vec<(String, String)>,
}

impl StoredSpan {
    /// The attribute `key`, or "" when the span has none.
    pub fn attribute(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }
}

/// A Jaeger process: OTLP/HTTP in, query API out. Ended by its pid when dropped.
pub struct Jaeger {
    child: Child,
    /// Where the worker sends its spans (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub otlp_endpoint: String,
    query: String,
    _dir: tempfile::TempDir,
}

impl Jaeger {
    /// Starts Jaeger and waits until its query API answers.
    pub async fn start() -> Jaeger {
        let dir = tempfile::tempdir().expect("temp dir");
        let (otlp, query, grpc) = (free_port(), free_port(), free_port());
        let config = dir.path().join("jaeger.yaml");
        std::fs::write(&config, config_yaml(otlp, query, grpc)).expect("write jaeger.yaml");
        let log = std::fs::File::create(dir.path().join("jaeger.log")).expect("jaeger.log");
        let child = Command::new(binary())
            .arg("--config")
            .arg(&config)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start jaeger");
        let mut jaeger = Jaeger {
            child,
            otlp_endpoint: format!("http://127.0.0.1:{otlp}"),
            query: format!("http://127.0.0.1:{query}"),
            _dir: dir,
        };
        let services = format!("{}/api/services", jaeger.query);
        for _ in 0..300 {
            if let Ok(Some(status)) = jaeger.child.try_wait() {
                panic!(
                    "jaeger exited ({status}): {}",
                    std::fs::read_to_string(jaeger._dir.path().join("jaeger.log"))
                        .unwrap_or_default()
                );
            }
            if let Ok(reply) = reqwest::get(&services).await {
                if reply.status().is_success() {
                    return jaeger;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("jaeger's query API did not answer within 30 s");
    }

    /// Every span of `service` Jaeger holds now.
    pub async fn spans(&self, service: &str) -> Vec<StoredSpan> {
        let day = Duration::from_secs(86_400);
        let now = SystemTime::now();
        let min = humantime::format_rfc3339(now - day).to_string();
        let max = humantime::format_rfc3339(now + day).to_string();
        let reply = reqwest::Client::new()
            .get(format!("{}/api/v3/traces", self.query))
            .query(&[
                ("query.service_name", service),
                ("query.start_time_min", &min),
                ("query.start_time_max", &max),
                ("query.num_traces", "1000"),
                ("query.search_depth", "1000"),
            ])
            .send()
            .await
            .expect("query jaeger");
        let body: Value = reply.json().await.expect("jaeger's reply is JSON");
        let mut spans = Vec::new();
        let resource_spans = body["result"]["resourceSpans"].as_array();
        for resource in resource_spans.into_iter().flatten() {
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    spans.push(stored(span));
                }
            }
        }
        spans
    }

    /// Waits until `done` holds for the spans of `service`, and returns them.
    pub async fn wait_for(
        &self,
        service: &str,
        what: &str,
        done: impl Fn(&[StoredSpan]) -> bool,
    ) -> Vec<StoredSpan> {
        eventually(Duration::from_secs(60), what, || async {
            let spans = self.spans(service).await;
            done(&spans).then_some(spans)
        })
        .await
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One span of the OTLP JSON reply.
fn stored(span: &Value) -> StoredSpan {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let attributes = span["attributes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let value = a["value"]
                .as_object()
                .and_then(|v| v.values().next())
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .unwrap_or_default();
            (text(&a["key"]), value)
        })
        .collect();
    let links = span["links"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| (text(&l["traceId"]), text(&l["spanId"])))
        .collect();
    StoredSpan {
        trace_id: text(&span["traceId"]),
        span_id: text(&span["spanId"]),
        parent_span_id: text(&span["parentSpanId"]),
        name: text(&span["name"]),
        attributes,
        links,
    }
}

/// Jaeger v2's configuration (`scripts/tools/jaeger/config.yaml`, shared with the benchmark) with
/// these ports.
fn config_yaml(otlp: u16, query: u16, grpc: u16) -> String {
    include_str!("../../../scripts/tools/jaeger/config.yaml")
        .replace("{otlp}", &otlp.to_string())
        .replace("{query}", &query.to_string())
        .replace("{grpc}", &grpc.to_string())
}
