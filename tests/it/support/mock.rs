//! A scripted mock engine on wiremock: fetch-and-lock hands out queued batches, then parks like a
//! real long poll; every request is recorded with the time it arrived.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wiremock::matchers::{method, path, path_regex, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// A request as the mock saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub body: Value,
    pub at: Instant,
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

fn record(seen: &Mutex<Vec<Seen>>, request: &Request) {
    seen.lock().unwrap().push(Seen {
        path: request.url.path().to_owned(),
        body: serde_json::from_slice(&request.body).unwrap_or(Value::Null),
        at: Instant::now(),
    });
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
        MockEngine {
            server,
            seen,
            batches: Arc::default(),
        }
    }

    /// The REST root of the mock.
    pub fn url(&self) -> String {
        format!("{}/engine-rest", self.server.uri())
    }

    /// Queues another batch for fetchAndLock.
    pub fn queue(&self, batch: Value) {
        self.batches.lock().unwrap().push_back(batch);
    }

    /// Answers POSTs to paths matching `regex` (below /engine-rest) with `reply`, recording them.
    pub async fn on(&self, regex: &str, reply: ResponseTemplate) {
        Mock::given(method("POST"))
            .and(path_regex(format!("^/engine-rest/{regex}$")))
            .respond_with(Recording {
                seen: Arc::clone(&self.seen),
                reply,
            })
            .mount(&self.server)
            .await;
    }

    /// Answers POSTs to paths matching `regex` with `replies` in order (the last repeats).
    pub async fn on_sequence(&self, regex: &str, replies: Vec<ResponseTemplate>) {
        Mock::given(method("POST"))
            .and(path_regex(format!("^/engine-rest/{regex}$")))
            .respond_with(Sequence {
                seen: Arc::clone(&self.seen),
                replies: Mutex::new(VecDeque::from(replies)),
            })
            .mount(&self.server)
            .await;
    }

    /// Answers the first `times` fetchAndLock requests with `reply`, ahead of the script.
    pub async fn fetch_first(&self, times: u64, reply: ResponseTemplate) {
        Mock::given(method("POST"))
            .and(path("/engine-rest/external-task/fetchAndLock"))
            .respond_with(Recording {
                seen: Arc::clone(&self.seen),
                reply,
            })
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

    /// Answers GETs to paths matching `regex` with `reply`, recording them.
    pub async fn on_get(&self, regex: &str, reply: ResponseTemplate) {
        Mock::given(method("GET"))
            .and(path_regex(format!("^/engine-rest/{regex}$")))
            .respond_with(Recording {
                seen: Arc::clone(&self.seen),
                reply,
            })
            .mount(&self.server)
            .await;
    }

    /// Answers GETs to paths matching `regex` with `replies` in order (the last repeats).
    pub async fn on_get_sequence(&self, regex: &str, replies: Vec<ResponseTemplate>) {
        Mock::given(method("GET"))
            .and(path_regex(format!("^/engine-rest/{regex}$")))
            .respond_with(Sequence {
                seen: Arc::clone(&self.seen),
                replies: Mutex::new(VecDeque::from(replies)),
            })
            .mount(&self.server)
            .await;
    }

    /// Where `instance` waits for the message, lookup after lookup: each entry is the list of
    /// subscription ids one lookup finds (the last entry repeats). An instance that waits nowhere
    /// still exists (`GET /process-instance/{id}` answers 200).
    pub async fn waits(&self, instance: &str, lookups: Vec<Vec<&str>>) {
        let replies = lookups
            .into_iter()
            .map(|ids| {
                let subscriptions: Vec<Value> = ids
                    .into_iter()
                    .map(|id| {
                        json!({
                            "id": id,
                            "eventType": "message",
                            "eventName": "sample_response",
                            "processInstanceId": instance,
                            "activityId": "wait_for_response",
                            "createdDate": "2026-11-22T10:00:00.000+0000"
                        })
                    })
                    .collect();
                ResponseTemplate::new(200).set_body_json(subscriptions)
            })
            .collect::<Vec<_>>();
        Mock::given(method("GET"))
            .and(path("/engine-rest/event-subscription"))
            .and(query_param("processInstanceId", instance))
            .respond_with(Sequence {
                seen: Arc::clone(&self.seen),
                replies: Mutex::new(VecDeque::from(replies)),
            })
            .mount(&self.server)
            .await;
        self.on_get(
            &format!("process-instance/{instance}"),
            ResponseTemplate::new(200).set_body_json(json!({"id": instance, "ended": false})),
        )
        .await;
    }

    /// The history's record that `worker` completed task `task_id`.
    pub async fn completed_by(&self, task_id: &str, worker: &str) {
        Mock::given(method("GET"))
            .and(path("/engine-rest/history/external-task-log"))
            .and(query_param("externalTaskId", task_id))
            .respond_with(Recording {
                seen: Arc::clone(&self.seen),
                reply: ResponseTemplate::new(200).set_body_json(json!([{
                    "id": format!("log-{task_id}"),
                    "timestamp": "2026-11-22T10:00:00.000+0000",
                    "externalTaskId": task_id,
                    "topicName": "messageSending",
                    "workerId": worker,
                    "processInstanceId": format!("pi-{task_id}"),
                    "successLog": true
                }])),
            })
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
