//! A property test of the parse path the binary uses ([`camunda_worker::config::load`]): random
//! flag vectors and random config files — TOML of known and random keys with values of every
//! type, `[[route]]` tables, and text that is no TOML at all — never panic, and every rejection
//! is one line starting `error: ` (what the binary prints before exit 2) that names the flag clap
//! refused.
//!
//! The values are drawn from a pool of the troublesome (bounds, overflows, empties, control
//! characters, a FIFO, a directory, /dev/zero) mixed with arbitrary strings. The case counts keep
//! the test within seconds.

use std::path::PathBuf;

use camunda_worker::cli::Cli;
use camunda_worker::config::{load, ConfigError};
use camunda_worker::secret::mask_userinfo;
use clap::error::{ContextKind, ContextValue};
use clap::CommandFactory;
use proptest::prelude::*;
use proptest::test_runner::{Config as Cases, TestRunner};

/// Paths that must not hang or crash a reader, made once per test.
struct Paths {
    _dir: tempfile::TempDir,
    fifo: String,
    dir: String,
    config: PathBuf,
}

fn paths() -> Paths {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    Paths {
        fifo: fifo.to_str().unwrap().to_owned(),
        dir: dir.path().to_str().unwrap().to_owned(),
        config: dir.path().join("worker.toml"),
        _dir: dir,
    }
}

/// Every long flag and subcommand name the binary knows.
fn known_words() -> Vec<String> {
    let command = Cli::command();
    let mut words: Vec<String> = command
        .get_arguments()
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    for sub in command.get_subcommands() {
        words.push(sub.get_name().to_owned());
        words.extend(
            sub.get_arguments()
                .filter_map(|a| a.get_long().map(|l| format!("--{l}"))),
        );
    }
    words.retain(|w| w != "--help" && w != "--version");
    words
}

/// Every config key (clap argument id) of the top level.
fn known_keys() -> Vec<String> {
    Cli::command()
        .get_arguments()
        .map(|a| a.get_id().as_str().to_owned())
        .chain(["variables", "message_variables", "route"].map(str::to_owned))
        .collect()
}

fn troublesome(paths: &Paths) -> Vec<String> {
    [
        "0",
        "1",
        "-1",
        "4294967296",
        "18446744073709551615",
        "99999999999999999999999",
        "1e3",
        "",
        " ",
        "\n",
        "a\nb",
        "\u{0}",
        "0s",
        "1ms",
        "5m",
        "30m",
        "31m",
        "1000000000y",
        "584942417355y",
        "http://127.0.0.1:9/engine-rest",
        "http://a\nb",
        "https://user:pass@h/x",
        "ftp://x/",
        "http://",
        "a=1",
        "a=\"x\"",
        "=",
        "a=",
        "true",
        "none",
        "dns",
        "json",
        "both",
        "complete",
        "message",
        "127.0.0.1:0",
        "[::1]:99999",
        "/dev/zero",
        "/dev/null",
        "/no/such/file",
        &paths.fifo,
        &paths.dir,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A word: a known one, a troublesome one, or anything at all.
fn word(known: Vec<String>, pool: Vec<String>) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(known),
        4 => proptest::sample::select(pool),
        2 => any::<String>(),
        1 => "--[a-z-]{0,12}(=.{0,8})?",
    ]
}

/// Checks what `load` made of `args`: no panic (proptest fails the case on one), and a
/// rejection is one line.
fn check(args: Vec<String>) -> Result<(), TestCaseError> {
    let mut argv = vec!["camunda-worker".to_owned()];
    argv.extend(args);
    match load(argv.clone()) {
        Ok((_, _, config)) => {
            config.describe();
        }
        Err(error) => {
            if let Some(line) = error.line() {
                prop_assert!(
                    line.starts_with("error: ") && !line.contains(['\n', '\r']),
                    "{argv:?}: {line:?}"
                );
                // A refused flag or value names the flag (clap's context holds it).
                if let ConfigError::Cli(e) = &error {
                    if let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) {
                        // As the line shows it: a URL's password masked.
                        let flag = mask_userinfo(arg.split([' ', '=']).next().unwrap_or_default());
                        prop_assert!(line.contains(&flag), "{argv:?}: {line:?} lacks {flag:?}");
                    }
                }
            } else {
                prop_assert!(matches!(error, ConfigError::Cli(_)), "{argv:?}");
            }
        }
    }
    Ok(())
}

/// A case the random runs found: a refused argument that is a URL with a password is shown masked,
/// and still recognisable.
#[test]
fn a_refused_url_argument_is_named_with_its_password_masked() {
    check(vec!["start".to_owned(), "https://user:pass@h/x".to_owned()]).unwrap();
    let Err(error) = load(["camunda-worker", "start", "https://user:pass@h/x"]) else {
        panic!("a stray argument must be refused");
    };
    let line = error.line().unwrap_or_default();
    assert!(
        line.contains("https://user:********@h/x") && !line.contains("pass@"),
        "{line}"
    );
}

#[test]
fn random_flag_vectors_never_panic_and_are_refused_in_one_line() {
    let paths = paths();
    let words = word(known_words(), troublesome(&paths));
    let mut runner = TestRunner::new(Cases {
        cases: 2000,
        failure_persistence: None,
        ..Cases::default()
    });
    runner
        .run(&proptest::collection::vec(words, 0..8), check)
        .unwrap();
}

/// A TOML value of any type, nested a little.
fn toml_value(pool: Vec<String>) -> impl Strategy<Value = toml::Value> + Clone {
    let leaf = prop_oneof![
        proptest::sample::select(pool).prop_map(toml::Value::String),
        any::<String>().prop_map(toml::Value::String),
        any::<i64>().prop_map(toml::Value::Integer),
        prop_oneof![
            Just(0i64),
            Just(-1),
            Just(1),
            Just(i64::MAX),
            Just(i64::MIN)
        ]
        .prop_map(toml::Value::Integer),
        any::<f64>().prop_map(toml::Value::Float),
        any::<bool>().prop_map(toml::Value::Boolean),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
            proptest::collection::btree_map("[a-z_]{0,10}", inner, 0..4)
                .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
        ]
    })
}

/// A config file: a table of known and random keys (with `[[route]]` tables of route keys), or
/// random text.
fn config_text(keys: Vec<String>, pool: Vec<String>) -> impl Strategy<Value = String> {
    let key = prop_oneof![
        4 => proptest::sample::select(keys),
        1 => "[a-z_]{0,12}",
    ];
    let route_key = proptest::sample::select(
        [
            "topic",
            "message_name",
            "correlation_delay",
            "lock_duration",
            "variables",
            "message_variables",
            "follow_up_command",
            "fetch_variables",
            "kind",
            "command",
            "retries",
            "retry_timeout",
            "other",
        ]
        .map(str::to_owned)
        .to_vec(),
    );
    let value = toml_value(pool);
    let route = proptest::collection::btree_map(route_key, value.clone(), 0..5)
        .prop_map(|m| toml::Value::Table(m.into_iter().collect()));
    let table = (
        proptest::collection::btree_map(key, value, 0..8),
        proptest::option::of(proptest::collection::vec(route, 0..3)),
    )
        .prop_map(|(keys, routes)| {
            let mut table: toml::Table = keys.into_iter().collect();
            if let Some(routes) = routes {
                table.insert("route".to_owned(), toml::Value::Array(routes));
            }
            toml::to_string(&table).unwrap_or_default()
        });
    prop_oneof![
        6 => table,
        1 => any::<String>(),
        1 => "[a-z_ =\"\\[\\]\n0-9.,{}#]{0,80}",
    ]
}

#[test]
fn random_config_files_never_panic_and_are_refused_in_one_line() {
    let paths = paths();
    let files = config_text(known_keys(), troublesome(&paths));
    let flags = proptest::collection::vec(word(known_words(), troublesome(&paths)), 0..3);
    let mut runner = TestRunner::new(Cases {
        cases: 1000,
        failure_persistence: None,
        ..Cases::default()
    });
    let config = paths.config.clone();
    runner
        .run(&(files, flags), |(text, flags)| {
            std::fs::write(&config, &text).unwrap();
            let mut args = vec!["--config".to_owned(), config.display().to_string()];
            args.extend(flags);
            check(args)
        })
        .unwrap();
}
