//! What the proxy does to which request: a [`Rule`] (method, path, which matches) and its
//! [`Fault`], the record of a fault applied and of each exchange with the engine.

use std::time::{Duration, Instant, SystemTime};

use hyper::{Method, StatusCode};
use regex::Regex;
use serde_json::Value;

/// What the proxy does to a request a [`Rule`] matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward, wait for the engine's full reply, then answer 504 Gateway Timeout (text body)
    /// instead. The engine DID process the request.
    ReplyLost504,
    /// Forward, wait for the reply, then reset the client connection (RST, SO_LINGER 0) without
    /// answering. The engine DID process the request.
    ReplyLostReset,
    /// Forward, wait for the reply, then never answer: the connection stays open until the client
    /// gives up (its own timeout) or the proxy is dropped. The engine DID process the request.
    ReplyLostHang,
    /// Sleep this long, then forward; the reply is passed through (a slow answer).
    Delay(Duration),
    /// Hold the request until [`super::FaultProxy::release_held`], then forward it; the reply
    /// is passed through: a request that reaches the engine as late as a test wants.
    Hold,
    /// Close the client connection (FIN) without forwarding and without answering: the request
    /// never reached the engine.
    CloseWithoutForwarding,
    /// Answer this status with a small text body without forwarding (a proxy's own 502 or 503).
    Status(u16),
    /// Forward, wait for the reply, then answer its status and headers with only the first half
    /// of its body, and close: a reply cut off mid-body. The engine DID process the request.
    CutBody,
}

/// What [`FaultProxy::applied`] records: a rule's [`Fault`], or a stale keep-alive close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// See [`Fault::ReplyLost504`].
    ReplyLost504,
    /// See [`Fault::ReplyLostReset`].
    ReplyLostReset,
    /// See [`Fault::ReplyLostHang`].
    ReplyLostHang,
    /// See [`Fault::Delay`].
    Delay(Duration),
    /// See [`Fault::Hold`].
    Hold,
    /// See [`Fault::CloseWithoutForwarding`].
    CloseWithoutForwarding,
    /// See [`Fault::Status`].
    Status(u16),
    /// See [`Fault::CutBody`].
    CutBody,
    /// A request on an idle keep-alive connection, closed (FIN) without forwarding and without
    /// answering (see [`FaultProxy::close_idle_after`]).
    StaleClose,
}

impl From<Fault> for FaultKind {
    fn from(fault: Fault) -> FaultKind {
        match fault {
            Fault::ReplyLost504 => FaultKind::ReplyLost504,
            Fault::ReplyLostReset => FaultKind::ReplyLostReset,
            Fault::ReplyLostHang => FaultKind::ReplyLostHang,
            Fault::Delay(pause) => FaultKind::Delay(pause),
            Fault::Hold => FaultKind::Hold,
            Fault::CloseWithoutForwarding => FaultKind::CloseWithoutForwarding,
            Fault::Status(code) => FaultKind::Status(code),
            Fault::CutBody => FaultKind::CutBody,
        }
    }
}

/// One fault the proxy applied.
#[derive(Debug, Clone)]
pub struct Applied {
    pub kind: FaultKind,
    pub method: String,
    /// The request path, without the query.
    pub path: String,
    /// The request body as JSON, `Null` when it is empty or not JSON.
    pub body: Value,
    /// When the fault took effect: for the reply-lost faults, once the engine's reply had arrived
    /// (so the engine has processed the request when the record appears); for the others, when the
    /// request arrived.
    pub at: Instant,
}

/// One request the proxy sent to the engine, and the status the engine answered (`None` when it
/// did not answer) — whatever the client was told afterwards.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub method: String,
    /// The request path, without the query.
    pub path: String,
    /// The request body as JSON, `Null` when it is empty or not JSON.
    pub body: Value,
    pub engine_status: Option<u16>,
    /// When the request left for the engine, and when its reply (or the error) was back: whatever
    /// the engine did, it did in between (the chaos checker orders messages and tasks by them).
    pub sent: SystemTime,
    pub answered: SystemTime,
}

/// Which requests get which fault.
///
/// Rules are consulted in insertion order. A rule whose method and path match counts the request
/// as one of its matches; it fires when that count, past the first `skip`, is a multiple of
/// `every`, and at most `times` times. The first rule that fires applies and ends the consultation;
/// a request no rule fires on is forwarded.
#[derive(Debug, Clone)]
pub struct Rule {
    method: Option<Method>,
    path: Regex,
    every: u32,
    skip: u32,
    times: Option<u32>,
    pub(super) fault: Fault,
}

/// A [`Rule`] without its fault yet; [`RuleBuilder::then`] finishes it.
#[derive(Debug, Clone)]
pub struct RuleBuilder {
    method: Option<Method>,
    path: Regex,
    every: u32,
    skip: u32,
    times: Option<u32>,
}

impl Rule {
    /// Requests with this method whose path (without the query) matches `path_regex`, e.g.
    /// `Rule::on("POST", r"/external-task/[^/]+/complete$")`. Fires on each match until refined.
    pub fn on(method: &str, path_regex: &str) -> RuleBuilder {
        let method = Method::from_bytes(method.as_bytes())
            .unwrap_or_else(|e| panic!("rule method {method:?} is invalid: {e}"));
        let mut builder = Rule::any_method(path_regex);
        builder.method = Some(method);
        builder
    }

    /// Requests of any method whose path (without the query) matches `path_regex`.
    pub fn any_method(path_regex: &str) -> RuleBuilder {
        let path = Regex::new(path_regex)
            .unwrap_or_else(|e| panic!("rule path regex {path_regex:?} is invalid: {e}"));
        RuleBuilder {
            method: None,
            path,
            every: 1,
            skip: 0,
            times: None,
        }
    }
}

impl RuleBuilder {
    /// Fires on every `n`th match only (1 = each, 3 = the 3rd, 6th, ...).
    pub fn every(mut self, n: u32) -> RuleBuilder {
        assert!(
            n >= 1,
            "a rule fires on every n-th match with n >= 1, not {n}"
        );
        self.every = n;
        self
    }

    /// Lets the first `n` matches pass; counting for [`RuleBuilder::every`] starts after them.
    pub fn skip(mut self, n: u32) -> RuleBuilder {
        self.skip = n;
        self
    }

    /// Fires at most `n` times, then stops matching.
    pub fn times(mut self, n: u32) -> RuleBuilder {
        self.times = Some(n);
        self
    }

    /// The rule, applying `fault` when it fires.
    pub fn then(self, fault: Fault) -> Rule {
        if let Fault::Status(code) = fault {
            assert!(
                StatusCode::from_u16(code).is_ok(),
                "{code} is not an HTTP status"
            );
        }
        Rule {
            method: self.method,
            path: self.path,
            every: self.every,
            skip: self.skip,
            times: self.times,
            fault,
        }
    }
}

/// A rule with its counts.
pub(super) struct Armed {
    pub(super) rule: Rule,
    pub(super) matched: u32,
    pub(super) fired: u32,
}

impl Armed {
    /// Counts the request if it matches; whether the rule fires on it.
    pub(super) fn fires(&mut self, method: &Method, path: &str) -> bool {
        let rule = &self.rule;
        let exhausted = rule.times.is_some_and(|times| self.fired >= times);
        let other_method = rule.method.as_ref().is_some_and(|m| m != method);
        if exhausted || other_method || !rule.path.is_match(path) {
            return false;
        }
        self.matched += 1;
        let fires = self.matched > rule.skip && (self.matched - rule.skip) % rule.every == 0;
        if fires {
            self.fired += 1;
        }
        fires
    }
}
