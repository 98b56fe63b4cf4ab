//! A `[[route]]` table's `kind`, and the keys that only make sense for one kind.
//!
//! A route of the message kind (the default) keeps every key it had; it may name its program
//! with `command` or with the older `follow_up_command`, not both. A route of the complete kind
//! must name its program with `command`, since the program is the route's whole work; it may set
//! `retries` and `retry_timeout` (by default `--retries` and `--retry-timeout`). It sends no
//! message and its task's variables are the command's output, so the message's keys and
//! `variables` are refused there rather than silently ignored, and it inherits no top-level
//! `follow_up_command`, `fetch_variables` nor `pass_env`: those belong to the follow-ups.

use std::time::Duration;

use crate::cli::values;
use crate::route::RouteKind;
use crate::work::{CommandHandler, CommandWork};

/// The kinds a route may be, as the file names them.
pub(super) const KINDS: [&str; 2] = ["message", "complete"];

/// Keys a complete route refuses: it sends no message, and completes with its command's output.
const MESSAGE_ONLY_KEYS: [&str; 5] = [
    "message_name",
    "correlation_delay",
    "message_variables",
    "variables",
    "follow_up_command",
];

/// Keys only a complete route takes.
const COMPLETE_ONLY_KEYS: [&str; 2] = ["retries", "retry_timeout"];

/// What a complete route falls back on: the top-level `--retries` and `--retry-timeout`.
#[derive(Debug, Clone, Copy)]
pub(super) struct FailureDefaults {
    /// `--retries`.
    pub retries: i32,
    /// `--retry-timeout`.
    pub retry_timeout: Duration,
}

/// The table's `kind`: whether it names one of [`KINDS`] (no `kind`: message).
pub(super) fn is_complete(table: &toml::Table) -> Result<bool, String> {
    match table.get("kind") {
        None => Ok(false),
        Some(toml::Value::String(kind)) if kind == "message" => Ok(false),
        Some(toml::Value::String(kind)) if kind == "complete" => Ok(true),
        Some(other) => Err(format!(
            "unknown kind {other} (a route's `kind` is {})",
            KINDS.map(|k| format!("{k:?}")).join(" or ")
        )),
    }
}

/// Refuses the keys the route's kind does not take, naming the first one.
pub(super) fn check_keys(table: &toml::Table, complete: bool) -> Result<(), String> {
    if table.contains_key("command") && table.contains_key("follow_up_command") {
        return Err(
            "keys `command` and `follow_up_command` both name the program (follow_up_command is the older spelling); set `command` alone"
                .to_owned(),
        );
    }
    let (refused, why) = if complete {
        (
            &MESSAGE_ONLY_KEYS[..],
            "a route of kind \"complete\" sends no message and completes its task with its command's output (name the program with `command`)",
        )
    } else {
        (
            &COMPLETE_ONLY_KEYS[..],
            "is for a route of kind \"complete\"; a message route's failures follow --retries and --retry-timeout",
        )
    };
    match refused.iter().find(|key| table.contains_key(**key)) {
        Some(key) if complete => Err(format!("key `{key}` is not for this route: {why}")),
        Some(key) => Err(format!("key `{key}` {why}")),
        None => Ok(()),
    }
}

/// A complete route's kind: its own `command` (required), and its own or the top level's retries.
pub(super) fn complete_kind(
    table: &toml::Table,
    command: Option<CommandWork>,
    failure: FailureDefaults,
) -> Result<RouteKind, String> {
    let command = command.ok_or(
        "a route of kind \"complete\" needs `command`: the program that does its work, e.g. command = [\"python3\", \"work.py\"]",
    )?;
    let retries = match table.get("retries") {
        None => failure.retries,
        Some(toml::Value::Integer(n)) => {
            let text = n.to_string();
            values::retries(&text).map_err(|why| format!("key `retries`: {why}"))?
        }
        Some(_) => return Err("key `retries` must be a whole number".to_owned()),
    };
    let retry_timeout = match table.get("retry_timeout") {
        None => failure.retry_timeout,
        Some(toml::Value::String(text)) => {
            values::retry_timeout(text).map_err(|why| format!("key `retry_timeout`: {why}"))?
        }
        Some(_) => {
            return Err("key `retry_timeout` must be a duration like \"30s\"".to_owned());
        }
    };
    Ok(RouteKind::Complete(CommandHandler {
        command,
        retries,
        retry_timeout,
    }))
}
