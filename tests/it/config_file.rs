//! `config/worker.toml`, the sample configuration the README points to and the Kubernetes
//! ConfigMap holds, against the defaults of the binary itself (`--print-config` without a config
//! file): the sample cannot drift from the code.

use std::path::PathBuf;

use toml::Table;

use crate::support::binary;

/// The options without a default: in the sample, commented out, with an example value.
const COMMENTED: [&str; 18] = [
    "worker_id",
    "username",
    "password",
    "password_file",
    "bearer_token",
    "bearer_token_file",
    "oauth_token_url",
    "oauth_client_id",
    "oauth_client_secret",
    "oauth_client_secret_file",
    "oauth_scope",
    "ca_cert",
    "client_cert",
    "client_key",
    "follow_up_command",
    "follow_up_args",
    "fetch_variables",
    "pass_env",
];

fn sample_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/worker.toml")
}

fn sample_text() -> String {
    std::fs::read_to_string(sample_path()).unwrap()
}

/// What `--print-config` prints with `args`, as TOML: its lines are `key = value  # source`, and
/// a value the binary generated (the worker id) has no fixed default, so it is left out.
fn printed_config(args: &[&str]) -> Table {
    let output = binary().args(args).arg("--print-config").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "--print-config {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut toml = String::new();
    for line in stdout.lines() {
        let (body, source) = line.split_once("  # ").unwrap_or((line, ""));
        if source != "generated" {
            toml.push_str(body);
            toml.push('\n');
        }
    }
    toml.parse()
        .unwrap_or_else(|e| panic!("--print-config is not TOML: {e}\n{stdout}"))
}

/// A line that sets a key, commented out or not: (commented, key, value).
fn key_line(line: &str) -> Option<(bool, String, String)> {
    let pattern = regex::Regex::new(r"^(#\s*)?([a-z_][a-z0-9_]*)\s*=\s*(.+)$").unwrap();
    let found = pattern.captures(line)?;
    Some((
        found.get(1).is_some(),
        found[2].to_owned(),
        found[3].to_owned(),
    ))
}

#[test]
fn the_sample_config_sets_every_default_to_the_binary_s_value_and_nothing_else() {
    let sample: Table = sample_text()
        .parse()
        .unwrap_or_else(|e| panic!("config/worker.toml is not valid TOML: {e}"));
    let defaults = printed_config(&[]);
    let mut problems = Vec::new();
    for (key, default) in &defaults {
        // toml's values compare their type too: 3 is not 3.0, "3" is not 3.
        match sample.get(key) {
            None => problems.push(format!("{key}: missing (default {default})")),
            Some(value) if value != default => {
                problems.push(format!("{key}: {value} differs from the default {default}"))
            }
            Some(_) => {}
        }
    }
    for key in sample.keys() {
        if !defaults.contains_key(key) {
            problems.push(format!(
                "{key}: not a known option, or one without a default that should be commented out"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(defaults.contains_key("variables"), "{defaults}");
}

#[test]
fn the_binary_reads_the_sample_config_as_its_own_defaults() {
    let sample = sample_path();
    let from_file = printed_config(&["--config", sample.to_str().unwrap()]);
    assert_eq!(from_file, printed_config(&[]));
}

#[test]
fn the_options_without_a_default_are_in_the_sample_commented_out_and_valid_once_uncommented() {
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    for (i, line) in sample_text().lines().enumerate() {
        let Some((true, key, value)) = key_line(line) else {
            continue;
        };
        if !COMMENTED.contains(&key.as_str()) {
            problems.push(format!(
                "line {}: commented key {key:?} is not an option without a default",
                i + 1
            ));
            continue;
        }
        if let Err(e) = format!("{key} = {value}").parse::<Table>() {
            problems.push(format!(
                "line {}: commented {key:?} is not valid TOML once uncommented: {e}",
                i + 1
            ));
        }
        seen.push(key);
    }
    for key in COMMENTED {
        if !seen.iter().any(|s| s == key) {
            problems.push(format!("{key}: missing (should be present, commented out)"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_option_of_the_sample_has_a_comment_line_of_its_own() {
    let text = sample_text();
    let lines: Vec<&str> = text.lines().collect();
    let variables = lines
        .iter()
        .position(|l| l.trim() == "[variables]")
        .expect("the sample has a [variables] table");
    let mut problems = Vec::new();
    // The variables are free names of the user's, each documented by the table's comment.
    for (i, line) in lines.iter().enumerate().take(variables) {
        let Some((_, key, _)) = key_line(line) else {
            continue;
        };
        let above = if i == 0 { "" } else { lines[i - 1] };
        if !above.starts_with('#') || key_line(above).is_some() {
            problems.push(format!(
                "line {}: {key:?} has no comment line of its own above it",
                i + 1
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
