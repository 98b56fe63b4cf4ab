#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

//! The integration suite: contract tests against a mock engine, CLI tests against the binary (and
//! the sample config against its defaults), and the real-engine suite against the engine built
//! from `engine/`.

mod auth;
mod cli;
mod cluster;
mod config_file;
mod contract;
mod delivery;
mod diagnosis;
mod faults;
mod hostile;
mod ledger;
mod ledger_faults;
mod nodes;
mod operate;
mod pacing;
mod real_engine;
mod resilience;
mod routes;
mod secrets;
mod secrets_oauth;
mod shutdown;
mod support;
mod trust_store;
mod values;
mod values_files;
mod values_props;
mod work;
mod work_contract;
mod work_lease;
