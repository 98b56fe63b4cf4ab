#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

//! The integration suite: contract tests against a mock engine, CLI tests against the binary,
//! and the real-engine suite against the engine built from `engine/`.

mod auth;
mod cli;
mod cluster;
mod contract;
mod delivery;
mod faults;
mod ledger;
mod nodes;
mod operate;
mod real_engine;
mod resilience;
mod support;
mod work;
