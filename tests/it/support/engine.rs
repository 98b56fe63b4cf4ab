//! The real engine, built from `engine/` and started by `engine/engine.sh` on a free loopback
//! port. A test that needs it and cannot start it fails with the script's output — never skips.
//!
//! Every engine is told this test process's pid: it exits by itself when the tests end, even if a
//! test panicked before it could stop it. `ENGINE_FLAVOR` picks the engine of the matrix.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;

/// The Spring property of the engine's root log level, which the harness sets to WARN unless
/// the caller's arguments name it.
const ROOT_LOG_LEVEL: &str = "--logging.level.root";

/// Options of an engine start.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// HTTP Basic on /engine-rest (user demo/demo).
    pub basic_auth: bool,
    /// File-backed H2, so state survives a restart.
    pub h2_file: Option<PathBuf>,
    /// More Spring Boot arguments (`--camunda.bpm.history-level=none`, ...).
    pub args: Vec<String>,
}

/// A running engine, stopped (by pid, through the script) when dropped.
pub struct RealEngine {
    pub port: u16,
    pub url: String,
    options: EngineOptions,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `engine/engine.sh`, which builds and starts the engine and the cluster.
pub fn script() -> PathBuf {
    repo_root().join("engine/engine.sh")
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

impl RealEngine {
    /// Starts an engine (building it first if needed); panics with the script's output on failure.
    pub fn start(options: EngineOptions) -> RealEngine {
        Self::start_on(free_port(), options)
    }

    /// Starts an engine on a given port.
    pub fn start_on(port: u16, options: EngineOptions) -> RealEngine {
        let mut command = Command::new("bash");
        command.arg(script()).arg("start");
        // Quiet by default; Spring refuses a property given twice ("WARN,WARN" is no level), so
        // a caller's own root level replaces this one.
        if !options
            .args
            .iter()
            .any(|arg| arg.starts_with(ROOT_LOG_LEVEL))
        {
            command.arg(format!("{ROOT_LOG_LEVEL}=WARN"));
        }
        command
            .args(&options.args)
            .env("ENGINE_PORT", port.to_string())
            .env("ENGINE_PARENT_PID", std::process::id().to_string())
            .env(
                "ENGINE_BASIC_AUTH",
                if options.basic_auth { "1" } else { "0" },
            );
        if let Some(file) = &options.h2_file {
            command.env("ENGINE_H2_FILE", file);
        }
        let output = command
            .output()
            .expect("run engine/engine.sh (bash must be installed)");
        if !output.status.success() {
            panic!(
                "the real engine could not start (engine/engine.sh start exited {}):\n{}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        RealEngine {
            port,
            url: format!("http://127.0.0.1:{port}/engine-rest"),
            options,
        }
    }

    /// Stops the engine by its pid (TERM, then KILL after 20 s).
    pub fn stop(&self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .env("ENGINE_PORT", self.port.to_string())
            .output();
    }

    /// Starts the engine again on the same port with the same options (and so the same H2 file).
    pub fn restart(&self) -> RealEngine {
        RealEngine::start_on(self.port, self.options.clone())
    }
}

impl Drop for RealEngine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The engine most tests share: started once per test process, stopped by its watchdog when the
/// process ends. Tests on it isolate themselves by deploying their own process key and topic.
pub fn shared_engine() -> &'static RealEngine {
    static SHARED: OnceLock<RealEngine> = OnceLock::new();
    SHARED.get_or_init(|| RealEngine::start(EngineOptions::default()))
}

/// An engine started with these Spring Boot arguments, once per test process for each set of
/// them, stopped by its watchdog when the process ends: for the tests that need what the shared
/// engine is not (another history level, no unique worker requests). Like the shared engine, it is
/// shared, and tests on it isolate themselves by deploying their own process key and topic.
pub fn engine_with(args: &[&str]) -> &'static RealEngine {
    static ENGINES: OnceLock<Mutex<HashMap<Vec<String>, &'static RealEngine>>> = OnceLock::new();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let mut engines = ENGINES
        .get_or_init(Mutex::default)
        .lock()
        // A test that panicked while holding the lock left the map as it was.
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    engines.entry(args.clone()).or_insert_with(|| {
        Box::leak(Box::new(RealEngine::start(EngineOptions {
            args,
            ..Default::default()
        })))
    })
}

/// A thin REST helper for assertions against the real engine (deliberately independent of the
/// crate's client, so the tests do not trust the code they test).
#[derive(Clone)]
pub struct Rest {
    pub url: String,
    http: reqwest::Client,
    auth: Option<(String, String)>,
}

impl Rest {
    pub fn new(url: &str) -> Rest {
        Rest {
            url: url.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                // Below every server's keep-alive timeout (HAProxy's is 60 s): never reuse a
                // connection the server may be closing.
                .pool_idle_timeout(Duration::from_secs(2))
                .build()
                .unwrap(),
            auth: None,
        }
    }

    pub fn with_basic(mut self, user: &str, password: &str) -> Rest {
        self.auth = Some((user.to_owned(), password.to_owned()));
        self
    }

    fn authed(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }

    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let reply = self
            .authed(self.http.get(format!("{}/{path}", self.url)).query(query))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e:?}"));
        let status = reply.status();
        let text = reply.text().await.unwrap();
        assert!(status.is_success(), "GET {path} answered {status}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    pub async fn count(&self, path: &str, query: &[(&str, &str)]) -> u64 {
        self.get(path, query).await["count"].as_u64().unwrap()
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, String) {
        let reply = self
            .authed(self.http.post(format!("{}/{path}", self.url)).json(&body))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e:?}"));
        (reply.status().as_u16(), reply.text().await.unwrap())
    }

    /// Deploys the bundled BPMN with its process key, topic and message renamed by `suffix`, so
    /// that a test has a process of its own on a shared engine. Returns (key, topic, message).
    pub async fn deploy_variant(&self, suffix: &str) -> (String, String, String) {
        self.deploy_variant_with(suffix, |bpmn| bpmn).await
    }

    /// [`Rest::deploy_variant`] with the BPMN changed by `edit` first.
    pub async fn deploy_variant_with(
        &self,
        suffix: &str,
        edit: impl Fn(String) -> String,
    ) -> (String, String, String) {
        let key = format!("message_correlation_{suffix}");
        let topic = format!("messageSending_{suffix}");
        let message = format!("sample_response_{suffix}");
        let bpmn = camunda_worker::commands::BUNDLED_BPMN
            .replace("\"message_correlation\"", &format!("\"{key}\""))
            .replace("\"messageSending\"", &format!("\"{topic}\""))
            .replace("\"sample_response\"", &format!("\"{message}\""));
        let bpmn = edit(bpmn);
        assert!(bpmn.contains(&topic) && bpmn.contains(&message) && bpmn.contains(&key));
        self.deploy_bpmn(&key, bpmn).await;
        (key, topic, message)
    }

    /// Deploys one BPMN document as `{name}.bpmn`.
    pub async fn deploy_bpmn(&self, name: &str, bpmn: String) {
        let form = reqwest::multipart::Form::new()
            .text("deployment-name", format!("test-{name}"))
            .part(
                "process.bpmn",
                reqwest::multipart::Part::bytes(bpmn.into_bytes())
                    .file_name(format!("{name}.bpmn")),
            );
        let reply = self
            .authed(
                self.http
                    .post(format!("{}/deployment/create", self.url))
                    .multipart(form),
            )
            .send()
            .await
            .unwrap();
        let status = reply.status();
        let text = reply.text().await.unwrap();
        assert!(status.is_success(), "deploy answered {status}: {text}");
    }

    /// Starts `n` instances of `key` with business keys `{prefix}-{i}`; returns their ids.
    pub async fn start_instances(&self, key: &str, prefix: &str, n: usize) -> Vec<String> {
        let mut ids = Vec::with_capacity(n);
        let mut pending = tokio::task::JoinSet::new();
        for i in 0..n {
            let rest = self.clone();
            let key = key.to_owned();
            let business_key = format!("{prefix}-{i}");
            pending.spawn(async move {
                let (status, body) = rest
                    .post(
                        &format!("process-definition/key/{key}/start"),
                        serde_json::json!({"businessKey": business_key}),
                    )
                    .await;
                assert_eq!(status, 200, "start answered {status}: {body}");
                let v: Value = serde_json::from_str(&body).unwrap();
                v["id"].as_str().unwrap().to_owned()
            });
            if pending.len() >= 16 {
                ids.push(pending.join_next().await.unwrap().unwrap());
            }
        }
        while let Some(id) = pending.join_next().await {
            ids.push(id.unwrap());
        }
        ids
    }

    /// How many instances of `key` are COMPLETED according to history.
    pub async fn completed(&self, key: &str) -> u64 {
        self.count(
            "history/process-instance/count",
            &[("processDefinitionKey", key), ("completed", "true")],
        )
        .await
    }

    /// Waits until `n` instances of `key` are completed, failing after `limit`.
    pub async fn wait_completed(&self, key: &str, n: u64, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let done = self.completed(key).await;
            if done >= n {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("only {done} of {n} instances of {key} completed within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until every instance in `ids` is COMPLETED, failing after `limit`.
    pub async fn wait_instances_completed(&self, ids: &[String], limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let mut done = 0;
            for chunk in ids.chunks(200) {
                let (status, body) = self
                    .post(
                        "history/process-instance/count",
                        serde_json::json!({"processInstanceIds": chunk, "completed": true}),
                    )
                    .await;
                assert_eq!(status, 200, "history count answered {status}: {body}");
                let v: Value = serde_json::from_str(&body).unwrap();
                done += v["count"].as_u64().unwrap();
            }
            if done >= ids.len() as u64 {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "only {done} of {} instances completed within {limit:?}",
                    ids.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until none of the instances in `ids` runs any more, from the runtime (so it works
    /// with history level `none` too), failing after `limit`.
    pub async fn wait_instances_ended(&self, ids: &[String], limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let mut running = 0;
            for chunk in ids.chunks(200) {
                let (status, body) = self
                    .post(
                        "process-instance/count",
                        serde_json::json!({"processInstanceIds": chunk}),
                    )
                    .await;
                assert_eq!(
                    status, 200,
                    "process-instance count answered {status}: {body}"
                );
                let v: Value = serde_json::from_str(&body).unwrap();
                running += v["count"].as_u64().unwrap();
            }
            if running == 0 {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{running} of {} instances still run after {limit:?}",
                    ids.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Open incidents of instances of `key`.
    pub async fn incidents(&self, key: &str) -> u64 {
        self.count("history/incident/count", &[("processDefinitionKey", key)])
            .await
    }
}
