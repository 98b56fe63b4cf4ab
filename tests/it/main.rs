#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

//! The integration suite: contract tests against a mock engine, CLI tests against the binary (and
//! the sample config against its defaults), and the real-engine suite against the engine built
//! from `engine/`.

mod auth;
mod cli;
mod cluster;
mod complete;
mod config_file;
mod contract;
mod correlation;
mod delivery;
mod diagnosis;
mod handler;
mod hostile;
mod ledger;
mod ledger_faults;
mod nodes;
mod operate;
mod outage;
mod pacing;
mod real_engine;
mod recovery;
mod resilience;
mod restart;
mod routes;
mod secrets;
mod secrets_oauth;
mod shutdown;
mod shutdown_drain;
mod support;
mod trust_store;
mod values;
mod values_files;
mod values_props;
mod work;
mod work_contract;
mod work_interrupted;
mod work_lease;
