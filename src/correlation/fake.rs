//! A scripted engine for the unit tests of the follow-up's rules (tokio's paused clock, no
//! HTTP): a [`Ledger`] whose replies a test sets in advance and which records every call with the
//! (paused) time it came, and a scheduler whose engine client is never called.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

use super::calls::Ledger;
use super::{CorrelationPolicy, CorrelationTarget, FollowUp, FollowUpMessage, FollowUps};
use crate::engine::{CorrelateMessageRequest, EngineClient, EngineError, EngineSettings};
use crate::ledger::Marker;
use crate::metrics::Metrics;
use crate::work::{CompletedTask, DynWork};

/// One call the fake engine answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Call {
    /// A message, naming this owed marker.
    Correlate(String),
    /// A read of the marker.
    Read,
    /// A read of the lease.
    ReadLease,
    /// A write of the lease, with the value written.
    WriteLease(String),
}

/// The fake engine: scripted replies (a call past its script gets the default) and the record.
#[derive(Debug)]
pub(crate) struct FakeLedger {
    start: Instant,
    /// Replies to messages, in order; then a mismatch.
    pub(crate) messages: Mutex<VecDeque<Result<(), EngineError>>>,
    /// The marker a read finds (`None`: the instance has ended).
    pub(crate) marker: Mutex<Option<String>>,
    /// The lease a read finds (`None`: none written).
    pub(crate) lease: Mutex<Option<String>>,
    /// Replies to writes, in order; then success (a write that succeeds sets the lease).
    pub(crate) writes: Mutex<VecDeque<Result<(), EngineError>>>,
    calls: Mutex<Vec<(Duration, Call)>>,
}

impl FakeLedger {
    /// An engine whose instance holds `marker`; its clock starts now.
    pub(crate) fn holding(marker: &Marker) -> Self {
        FakeLedger {
            start: Instant::now(),
            messages: Mutex::default(),
            marker: Mutex::new(Some(marker.to_string())),
            lease: Mutex::default(),
            writes: Mutex::default(),
            calls: Mutex::default(),
        }
    }

    /// Scripts the replies to the next messages.
    pub(crate) fn answer_messages(&self, replies: Vec<Result<(), EngineError>>) {
        self.messages.lock().unwrap().extend(replies);
    }

    /// Every call so far, with when it came (from the fake's start).
    pub(crate) fn calls(&self) -> Vec<(Duration, Call)> {
        self.calls.lock().unwrap().clone()
    }

    /// The calls so far, without their times.
    pub(crate) fn kinds(&self) -> Vec<Call> {
        self.calls().into_iter().map(|(_, call)| call).collect()
    }

    fn record(&self, call: Call) {
        let at = self.start.elapsed();
        self.calls.lock().unwrap().push((at, call));
    }
}

impl Ledger for FakeLedger {
    async fn correlate(&self, request: &CorrelateMessageRequest) -> Result<(), EngineError> {
        let named = request
            .correlation_keys
            .values()
            .next()
            .and_then(|v| v.value.as_str().map(str::to_owned))
            .unwrap_or_default();
        self.record(Call::Correlate(named));
        let reply = self.messages.lock().unwrap().pop_front();
        reply.unwrap_or_else(|| Err(no_match()))
    }

    async fn read_marker(&self, _: &str, variable: &str) -> Result<Option<String>, EngineError> {
        if is_lease(variable) {
            self.record(Call::ReadLease);
            return Ok(self.lease.lock().unwrap().clone());
        }
        self.record(Call::Read);
        Ok(self.marker.lock().unwrap().clone())
    }

    async fn write_lease(
        &self,
        _: &str,
        variable: &str,
        lease: &Marker,
    ) -> Result<(), EngineError> {
        assert!(is_lease(variable), "only the lease is written: {variable}");
        self.record(Call::WriteLease(lease.to_string()));
        let reply = self.writes.lock().unwrap().pop_front().unwrap_or(Ok(()));
        if reply.is_ok() {
            *self.lease.lock().unwrap() = Some(lease.to_string());
        }
        reply
    }
}

fn is_lease(variable: &str) -> bool {
    variable == crate::ledger::lease_variable(crate::ledger::DEFAULT_MARKER_VARIABLE)
}

/// The engine's answer to a message no instance waits for.
pub(crate) fn no_match() -> EngineError {
    rejected(
        StatusCode::BAD_REQUEST,
        "MismatchingMessageCorrelationException: Cannot correlate message 'm': No process definition or execution matches the parameters",
    )
}

/// A 503: the engine is overloaded (certain: nothing was done).
pub(crate) fn unavailable() -> EngineError {
    rejected(StatusCode::SERVICE_UNAVAILABLE, "overloaded")
}

/// A call whose reply was lost: the engine may have carried it out.
pub(crate) fn reply_lost() -> EngineError {
    EngineError::Resent(Box::new(unavailable()))
}

fn rejected(status: StatusCode, message: &str) -> EngineError {
    EngineError::Rejected {
        endpoint: "POST /message".to_owned(),
        status,
        kind: "RestException".to_owned(),
        message: message.to_owned(),
        code: None,
    }
}

/// An engine client that the tests never call (nothing listens at its address).
pub(crate) fn client() -> EngineClient {
    let url = Url::parse("http://127.0.0.1:9/engine-rest").expect("a valid URL");
    EngineClient::new(EngineSettings::new(url)).expect("no TLS material")
}

/// The follow-ups of topic `t` (its route sending `message` after `work`) under `policy`, whose
/// engine client is never called (the tests hand their [`FakeLedger`] to the `_via` functions).
pub(crate) fn follow_ups(
    policy: CorrelationPolicy,
    message: FollowUpMessage,
    work: Arc<dyn DynWork>,
) -> FollowUps {
    let follow_ups = FollowUps::new(
        client(),
        Arc::new(Metrics::new()),
        policy,
        TaskTracker::new(),
        CancellationToken::new(),
        CancellationToken::new(),
    );
    follow_ups.add_route("t", message, work);
    follow_ups.for_topic("t")
}

/// The follow-up of task `task` of topic `t`, completed now, in instance `pi` (`None`: known by
/// business key only).
pub(crate) fn follow_up(task: &str, instance: Option<&str>, lease: Duration) -> FollowUp {
    FollowUp {
        target: CorrelationTarget {
            business_key: None,
            process_instance_id: instance.map(str::to_owned),
            tenant_id: None,
        },
        process_instance_id: instance.map(str::to_owned),
        marker: Marker::owed("t", task, lease),
        lease: None,
        task: CompletedTask {
            task_id: task.to_owned(),
            topic: "t".to_owned(),
            business_key: None,
            process_instance_id: instance.map(str::to_owned),
            variables: Default::default(),
            extension_properties: None,
        },
        fetched_at: None,
        completed_at: Instant::now(),
        recovered: false,
        trace_parent: None,
    }
}

/// At most what a follow-up's delivery holds while it waits for a send slot (bytes). Hundreds
/// wait at once when a backlog drains, so the calls' state is boxed and allocated only while a
/// call runs. Measured at 6992c6b: 3,384 bytes per delivery, which made the waiting deliveries
/// the largest part of the heap at peak; 792 since.
pub(super) const WAITING_DELIVERY_BOUND: usize = 1536;
