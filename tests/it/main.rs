#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

//! The integration suite, one file per behaviour: contract tests against a mock engine, CLI tests
//! against the binary (and the sample config against its defaults), and the real-engine suite
//! against the engine built from `engine/`.
//!
//! - The engine and the network failing (mock engine, exact replies): `outage` (down, slow,
//!   refusing, garbled), `complete` and `correlation` (the two calls under faults), `handler`.
//! - Exactly one follow-up (real engine, fault proxy): `delivery` (lost replies, closed
//!   connections, capacity), `recovery` (the reconciler), `restart` (restarts under traffic),
//!   `ledger` and `ledger_faults` (the marker ledger), `resilience`, `cluster`, `real_engine`.
//! - Stopping: `shutdown` (what cannot hold it up, DNS lookups included), `shutdown_drain` (what a
//!   shutdown does).
//! - The follow-up's work: `work`, `work_interrupted`, `work_contract`, `work_lease`.
//! - The `complete` route kind (a command deciding a plain external task): `complete_kind`,
//!   `complete_kind_lock`.
//! - Routes, pacing and nodes: `routes`, `subscriptions` (the fetch's filters),
//!   `subscriptions_payload` (what the keys bring with a task), `subscriptions_order` (the fetch's
//!   order), `subscriptions_config` (the fetch body they make, the keys refused), `diagnosis`,
//!   `pacing`, `nodes`, `operate`, `contract`.
//! - Tenants (real engine): `tenancy` (each tenant's message reaches its own instance, in every
//!   `--correlate-by` mode), `tenancy_recovery` (recovery keeps the tenant; a route's tenants
//!   limit its reconciler), `tenancy_cli` (`deploy`/`start --tenant-id`, `status` per tenant).
//! - Security and configuration: `auth`, `secrets`, `secrets_oauth`, `trust_store`, `hostile`,
//!   `cli`, `config_file`, `values`, `values_files`, `values_props`.
//! - `support`: the harnesses (mock engine, real engine, fault proxy, worker process) and the one
//!   metric reader (`support::metrics`).

mod auth;
mod call_slots;
mod chaos;
mod cli;
mod clock_skew;
mod cluster;
mod complete;
mod complete_kind;
mod complete_kind_lock;
mod concurrency;
mod concurrency_faults;
mod config_file;
mod contract;
mod correlation;
mod delivery;
mod diagnosis;
mod handler;
mod hostile;
mod lease_late;
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
mod rolling_update;
mod routes;
mod secrets;
mod secrets_oauth;
mod shutdown;
mod shutdown_drain;
mod subscriptions;
mod subscriptions_config;
mod subscriptions_order;
mod subscriptions_payload;
mod support;
mod tenancy;
mod tenancy_cli;
mod tenancy_recovery;
mod tracing;
mod trust_store;
mod values;
mod values_files;
mod values_props;
mod work;
mod work_contract;
mod work_incident_fold;
mod work_interrupted;
mod work_lease;
mod work_many_incidents;
