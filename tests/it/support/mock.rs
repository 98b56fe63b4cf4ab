//! A scripted mock engine on wiremock: fetch-and-lock hands out queued batches, then parks like a
//! real long poll; every request is recorded with the time it arrived. Like any engine it answers
//! the worker's ping (`GET /engine`) and its shutdown sweep (`GET /external-task`: nothing
//! locked); every other endpoint is the test's to mount.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wiremock::matchers::{body_partial_json, method, path, path_regex, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use super::WorkerProcess;

/// The follow-up marker variable (`--marker-variable`'s default).
pub const MARKER: &str = "camundaWorkerFollowUp";

/// In a marker read (see [`MockEngine::marker`]): the owed value the worker's `complete` of the
/// instance's task set, whatever its due time.
pub const OWED: &str = "<the owed value complete set>";

/// A request as the mock saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// The query parameters, in order.
    pub query: Vec<(String, String)>,
    pub body: Value,
    pub at: Instant,
}

impl Seen {
    /// The value of query parameter `name`, if the request had it.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// The mock engine and what it recorded.
pub struct MockEngine {
    pub server: MockServer,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    batches: Arc<Mutex<VecDeque<Value>>>,
}

/// How long an empty fetch is parked, standing in for the long poll.
pub const EMPTY_POLL: Duration = Duration::from_millis(200);

struct FetchResponder {
    batches: Arc<Mutex<VecDeque<Value>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Respond for FetchResponder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        record(&self.seen, request);
        match self.batches.lock().unwrap().pop_front() {
            Some(batch) => ResponseTemplate::new(200).set_body_json(batch),
            None => ResponseTemplate::new(200)
                .set_body_json(json!([]))
                .set_delay(EMPTY_POLL),
        }
    }
}

/// Hands out queued tasks like the engine does: at most `maxTasks` per fetch; with none left, the
/// poll is parked for [`EMPTY_POLL`].
struct TaskQueue {
    tasks: Arc<Mutex<VecDeque<Value>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Respond for TaskQueue {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        record(&self.seen, request);
        let asked: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let max = asked["maxTasks"].as_u64().unwrap_or(0) as usize;
        let mut tasks = self.tasks.lock().unwrap();
        let take = max.min(tasks.len());
        if take == 0 {
            return ResponseTemplate::new(200)
                .set_body_json(json!([]))
                .set_delay(EMPTY_POLL);
        }
        let batch: Vec<Value> = tasks.drain(..take).collect();
        ResponseTemplate::new(200).set_body_json(batch)
    }
}

/// Like the default fetch responder, but an empty poll is parked for `delay`.
struct ParkedPoll {
    batches: Arc<Mutex<VecDeque<Value>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    delay: Duration,
}

impl Respond for ParkedPoll {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        record(&self.seen, request);
        match self.batches.lock().unwrap().pop_front() {
            Some(batch) => ResponseTemplate::new(200).set_body_json(batch),
            None => ResponseTemplate::new(200)
                .set_body_json(json!([]))
                .set_delay(self.delay),
        }
    }
}

/// Records the request, then answers with a fixed template.
pub struct Recording {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub reply: ResponseTemplate,
}

impl Respond for Recording {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        record(&self.seen, request);
        self.reply.clone()
    }
}

/// Records the request, then answers with the next template of a list (the last one repeats).
pub struct Sequence {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub replies: Mutex<VecDeque<ResponseTemplate>>,
}

impl Respond for Sequence {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        record(&self.seen, request);
        let mut replies = self.replies.lock().unwrap();
        if replies.len() > 1 {
            replies.pop_front().unwrap()
        } else {
            replies
                .front()
                .cloned()
                .unwrap_or_else(|| ResponseTemplate::new(204))
        }
    }
}

/// Records the request, then answers a marker read with the next value of a list (the last one
/// repeats): `None` is no variable (`[]`), [`OWED`] the value the task's `complete` set.
struct MarkerReads {
    seen: Arc<Mutex<Vec<Seen>>>,
    instance: String,
    reads: Mutex<VecDeque<Option<String>>>,
}

impl Respond for MarkerReads {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        record(&self.seen, request);
        let read = {
            let mut reads = self.reads.lock().unwrap();
            if reads.len() > 1 {
                reads.pop_front().unwrap()
            } else {
                reads.front().cloned().unwrap_or(None)
            }
        };
        let Some(mut value) = read else {
            return ResponseTemplate::new(200).set_body_json(json!([]));
        };
        if value == OWED {
            // Left as the placeholder (which matches nothing) when no complete set a marker.
            if let Some(owed) = self.owed() {
                value = owed;
            }
        }
        ResponseTemplate::new(200).set_body_json(json!([{
            "name": MARKER,
            "type": "String",
            "value": value,
            "processInstanceId": self.instance,
            "valueInfo": {}
        }]))
    }
}

impl MarkerReads {
    /// The marker the last `complete` of the instance's task (`pi-<task>`, see [`task`]) set.
    fn owed(&self) -> Option<String> {
        let task_id = self.instance.strip_prefix("pi-")?;
        let complete = format!("/external-task/{task_id}/complete");
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .rev()
            .filter(|s| s.path.ends_with(&complete))
            .find_map(|s| {
                s.body["variables"][MARKER]["value"]
                    .as_str()
                    .map(str::to_owned)
            })
    }
}

fn record(seen: &Mutex<Vec<Seen>>, request: &Request) {
    seen.lock().unwrap().push(Seen {
        method: request.method.to_string(),
        path: request.url.path().to_owned(),
        query: request
            .url
            .query_pairs()
            .map(|(key, value)| (key.into_owned(), value.into_owned()))
            .collect(),
        body: serde_json::from_slice(&request.body).unwrap_or(Value::Null),
        at: Instant::now(),
    });
}

/// The owed marker a `complete` body sets for `task_id` (`owed:messageSending:<13-digit due
/// time>:<task id>`, a String), checked for its shape; its value.
pub fn owed_marker(complete: &Value, task_id: &str) -> String {
    let marker = &complete["variables"][MARKER];
    assert_eq!(marker["type"], json!("String"), "{complete}");
    assert_eq!(marker["valueInfo"], json!({}), "{complete}");
    let value = marker["value"].as_str().unwrap_or_default();
    let shape = regex::Regex::new(&format!(
        "^owed:messageSending:[0-9]{{13}}:{}$",
        regex::escape(task_id)
    ))
    .unwrap();
    assert!(
        shape.is_match(value),
        "not an owed marker for {task_id}: {complete}"
    );
    value.to_owned()
}

/// The body of the follow-up message that delivers `owed` (the marker of task `task_id`): it
/// matches only while the marker is owed, and flips it to delivered. The mock's tasks have no
/// tenant: a message by business key alone is kept to instances without one.
pub fn follow_up_message(
    owed: &str,
    task_id: &str,
    business_key: Option<&str>,
    instance: Option<&str>,
) -> Value {
    let mut body = json!({
        "messageName": "sample_response",
        "correlationKeys": {MARKER: {"type": "String", "value": owed, "valueInfo": {}}},
        "processVariables": {
            MARKER: {"type": "String", "value": format!("delivered:{task_id}"), "valueInfo": {}}
        },
    });
    if let Some(key) = business_key {
        body["businessKey"] = json!(key);
    }
    match instance {
        Some(instance) => body["processInstanceId"] = json!(instance),
        None => body["withoutTenantId"] = json!(true),
    }
    body
}

/// Answers what every engine answers and no test is about: the ping each node's poll starts with
/// (`GET /engine`) and the shutdown sweep of tasks still locked for the worker
/// (`GET /external-task`: none). A test's own mount of either takes precedence.
async fn answer_like_an_engine(server: &MockServer, seen: &Arc<Mutex<Vec<Seen>>>) {
    for (endpoint, reply) in [
        ("/engine-rest/engine", json!([{"name": "default"}])),
        ("/engine-rest/external-task", json!([])),
    ] {
        Mock::given(method("GET"))
            .and(path(endpoint))
            .respond_with(Recording {
                seen: Arc::clone(seen),
                reply: ResponseTemplate::new(200).set_body_json(reply),
            })
            .with_priority(10)
            .mount(server)
            .await;
    }
}

/// A task as fetchAndLock returns it.
pub fn task(id: &str, business_key: Option<&str>) -> Value {
    json!({
        "id": id,
        "topicName": "messageSending",
        "workerId": "test-worker",
        "businessKey": business_key,
        "processInstanceId": format!("pi-{id}"),
        "processDefinitionKey": "message_correlation",
        "activityId": "send_message_task",
        "executionId": format!("ex-{id}"),
        "retries": null,
        "priority": 0,
        "lockExpirationTime": "2026-11-22T10:00:00.000+0000",
        "variables": {},
        "extensionProperties": {}
    })
}

/// An engine error body.
pub fn error_body(kind: &str, message: &str, code: Option<i64>) -> Value {
    json!({"type": kind, "message": message, "code": code})
}

impl MockEngine {
    /// A mock whose fetchAndLock hands out `batches` in order, then parks empty polls. Other
    /// endpoints must be mounted by the test (see [`MockEngine::on`]).
    pub async fn start(batches: Vec<Value>) -> MockEngine {
        let server = MockServer::start().await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let batches = Arc::new(Mutex::new(VecDeque::from(batches)));
        Mock::given(method("POST"))
            .and(path("/engine-rest/external-task/fetchAndLock"))
            .respond_with(FetchResponder {
                batches: Arc::clone(&batches),
                seen: Arc::clone(&seen),
            })
            .mount(&server)
            .await;
        answer_like_an_engine(&server, &seen).await;
        MockEngine {
            server,
            seen,
            batches,
        }
    }

    /// A mock whose fetchAndLock hands out `tasks` as a real engine would: never more than the
    /// request's `maxTasks`.
    pub async fn with_tasks(tasks: Vec<Value>) -> MockEngine {
        let server = MockServer::start().await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        Mock::given(method("POST"))
            .and(path("/engine-rest/external-task/fetchAndLock"))
            .respond_with(TaskQueue {
                tasks: Arc::new(Mutex::new(VecDeque::from(tasks))),
                seen: Arc::clone(&seen),
            })
            .mount(&server)
            .await;
        answer_like_an_engine(&server, &seen).await;
        MockEngine {
            server,
            seen,
            batches: Arc::default(),
        }
    }

    /// The worker binary against this mock with `flags`, reconciler off: the mock answers no range
    /// query, and nothing but the handling under test may deliver a follow-up.
    pub fn worker(&self, flags: &[&str]) -> WorkerProcess {
        let mut all = vec!["--reconcile-interval", "0"];
        all.extend(flags);
        WorkerProcess::spawn("worker", &self.url(), &all)
    }

    /// [`MockEngine::worker`] sending each follow-up as soon as its task is completed.
    pub fn quick_worker(&self, flags: &[&str]) -> WorkerProcess {
        let mut all = vec!["--correlation-delay", "0s"];
        all.extend(flags);
        self.worker(&all)
    }

    /// Runs `worker` until this mock has seen a request to a path ending with `suffix` (within
    /// `limit`), stops it (exit code 0 required), and returns the first such request.
    pub async fn first_request(
        &self,
        worker: WorkerProcess,
        suffix: &str,
        limit: Duration,
    ) -> Seen {
        let what = format!("a request to {suffix}");
        worker
            .stop_once(limit, &what, |_| !self.requests_to(suffix).is_empty())
            .await;
        self.requests_to(suffix).remove(0)
    }

    /// A mock that hands out task t1 (business key `key`, instance pi-t1) and completes it.
    pub async fn one_task(key: &str) -> MockEngine {
        let engine = MockEngine::start(vec![json!([task("t1", Some(key))])]).await;
        engine
            .on("external-task/t1/complete", ResponseTemplate::new(204))
            .await;
        engine
    }

    /// The REST root of the mock.
    pub fn url(&self) -> String {
        format!("{}/engine-rest", self.server.uri())
    }

    /// Queues another batch for fetchAndLock.
    pub fn queue(&self, batch: Value) {
        self.batches.lock().unwrap().push_back(batch);
    }

    /// Answers `verb` requests to paths matching `regex` (below /engine-rest) with `responder`.
    async fn mount(&self, verb: &str, regex: &str, responder: impl Respond + 'static) {
        Mock::given(method(verb))
            .and(path_regex(format!("^/engine-rest/{regex}$")))
            .respond_with(responder)
            .mount(&self.server)
            .await;
    }

    /// A responder that records the request, then answers `reply`.
    fn recording(&self, reply: ResponseTemplate) -> Recording {
        Recording {
            seen: Arc::clone(&self.seen),
            reply,
        }
    }

    /// Answers POSTs to paths matching `regex` (below /engine-rest) with `reply`, recording them.
    pub async fn on(&self, regex: &str, reply: ResponseTemplate) {
        self.mount("POST", regex, self.recording(reply)).await;
    }

    /// Answers POSTs to paths matching `regex` with `replies` in order (the last repeats).
    pub async fn on_sequence(&self, regex: &str, replies: Vec<ResponseTemplate>) {
        let responder = Sequence {
            seen: Arc::clone(&self.seen),
            replies: Mutex::new(VecDeque::from(replies)),
        };
        self.mount("POST", regex, responder).await;
    }

    /// Answers POSTs to the message endpoint whose body contains `partial` with `reply`, ahead of
    /// [`MockEngine::on`]'s answer to every other message.
    pub async fn on_message_with(&self, partial: Value, reply: ResponseTemplate) {
        Mock::given(method("POST"))
            .and(path("/engine-rest/message"))
            .and(body_partial_json(partial))
            .respond_with(self.recording(reply))
            .with_priority(1)
            .mount(&self.server)
            .await;
    }

    /// Answers the first `times` fetchAndLock requests with `reply`, ahead of the script.
    pub async fn fetch_first(&self, times: u64, reply: ResponseTemplate) {
        Mock::given(method("POST"))
            .and(path("/engine-rest/external-task/fetchAndLock"))
            .respond_with(self.recording(reply))
            .up_to_n_times(times)
            .with_priority(1)
            .mount(&self.server)
            .await;
    }

    /// After the queued batches, parks every further fetchAndLock for `delay` before answering
    /// `[]` (a long poll that holds its connection), instead of the short default.
    pub async fn park_polls(&self, delay: Duration) {
        Mock::given(method("POST"))
            .and(path("/engine-rest/external-task/fetchAndLock"))
            .respond_with(ParkedPoll {
                batches: Arc::clone(&self.batches),
                seen: Arc::clone(&self.seen),
                delay,
            })
            .with_priority(2)
            .mount(&self.server)
            .await;
    }

    /// Answers GETs to paths matching `regex` with `replies` in order (the last repeats), ahead of
    /// the mounts of [`MockEngine::on_get`] and the helpers built on it.
    pub async fn on_get_sequence(&self, regex: &str, replies: Vec<ResponseTemplate>) {
        let responder = Sequence {
            seen: Arc::clone(&self.seen),
            replies: Mutex::new(VecDeque::from(replies)),
        };
        Mock::given(method("GET"))
            .and(path_regex(format!("^/engine-rest/{regex}$")))
            .respond_with(responder)
            .with_priority(1)
            .mount(&self.server)
            .await;
    }

    /// Answers DELETEs to paths matching `regex` with `reply`, recording them.
    pub async fn on_delete(&self, regex: &str, reply: ResponseTemplate) {
        self.mount("DELETE", regex, self.recording(reply)).await;
    }

    /// Answers GETs to paths matching `regex` with `reply`, recording them.
    pub async fn on_get(&self, regex: &str, reply: ResponseTemplate) {
        self.mount("GET", regex, self.recording(reply)).await;
    }

    /// The follow-up marker of `instance`, read after read (`GET /variable-instance` for that
    /// instance and variable; the last entry repeats): `Some(value)`, where [`OWED`] stands for
    /// the value the `complete` of the instance's task set, or `None` for no such variable (the
    /// instance has ended).
    pub async fn marker(&self, instance: &str, reads: Vec<Option<&str>>) {
        Mock::given(method("GET"))
            .and(path("/engine-rest/variable-instance"))
            .and(query_param("processInstanceIdIn", instance))
            .and(query_param("variableName", MARKER))
            .respond_with(MarkerReads {
                seen: Arc::clone(&self.seen),
                instance: instance.to_owned(),
                reads: Mutex::new(reads.into_iter().map(|r| r.map(str::to_owned)).collect()),
            })
            .mount(&self.server)
            .await;
    }

    /// Where `instance` waits for messages (`GET /event-subscription?processInstanceId=..`, any
    /// message name): one subscription per `(message name, execution id)`.
    pub async fn message_waits(&self, instance: &str, waits: &[(&str, &str)]) {
        let subscriptions: Vec<Value> = waits
            .iter()
            .enumerate()
            .map(|(i, (name, execution))| {
                json!({
                    "id": format!("sub-{instance}-{i}"),
                    "eventType": "message",
                    "eventName": name,
                    "executionId": execution,
                    "processInstanceId": instance,
                    "activityId": "wait_for_response",
                    "createdDate": "2026-11-22T10:00:00.000+0000"
                })
            })
            .collect();
        Mock::given(method("GET"))
            .and(path("/engine-rest/event-subscription"))
            .and(query_param("processInstanceId", instance))
            .respond_with(self.recording(ResponseTemplate::new(200).set_body_json(subscriptions)))
            .mount(&self.server)
            .await;
    }

    /// Takes the incidents of follow-ups given up: none is open yet (`GET /incident`), and
    /// `POST /execution/{id}/create-incident` creates one.
    pub async fn takes_incidents(&self) {
        self.on_get(
            "incident",
            ResponseTemplate::new(200).set_body_json(json!([])),
        )
        .await;
        self.on(
            "execution/[^/]+/create-incident",
            ResponseTemplate::new(200).set_body_json(json!({
                "id": "incident-1",
                "incidentType": "camundaWorkerFollowUp"
            })),
        )
        .await;
    }

    /// The history's record that `worker` completed task `task_id`.
    pub async fn completed_by(&self, task_id: &str, worker: &str) {
        Mock::given(method("GET"))
            .and(path("/engine-rest/history/external-task-log"))
            .and(query_param("externalTaskId", task_id))
            .respond_with(
                self.recording(ResponseTemplate::new(200).set_body_json(json!([{
                    "id": format!("log-{task_id}"),
                    "timestamp": "2026-11-22T10:00:00.000+0000",
                    "externalTaskId": task_id,
                    "topicName": "messageSending",
                    "workerId": worker,
                    "processInstanceId": format!("pi-{task_id}"),
                    "successLog": true
                }]))),
            )
            .mount(&self.server)
            .await;
    }

    /// The recorded requests whose path ends with `suffix`.
    pub fn requests_to(&self, suffix: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path.ends_with(suffix))
            .cloned()
            .collect()
    }
}
