//! The `--config` TOML file: each key it sets becomes the default of the flag of the same name
//! (after passing the same parser), so that flags and environment still win; the variable tables
//! are read here too.

use std::collections::BTreeMap;
use std::path::Path;

use clap::CommandFactory;

use super::route_filter::FILTER_KEYS;
use super::{ConfigError, ConfigFile, NOT_IN_FILE};
use crate::cli::values::assigned_variable_name;
use crate::cli::Cli;
use crate::variables::TypedValue;

/// Reads the file at `path` into its keys and the command whose defaults they became.
pub(super) fn read_config_file(path: &Path) -> Result<(ConfigFile, clap::Command), ConfigError> {
    let shown = path.display().to_string();
    let table = parse_toml(path, &shown)?;
    let mut command = Cli::command();
    let mut keys = BTreeMap::new();
    let mut variables = None;
    let mut message_variables = None;
    let mut routes = None;
    for (key, value) in table {
        // `[[route]]`: read as they are; `super::routes` checks them against the defaults.
        if key == "route" {
            routes = Some(route_tables(value, &shown)?);
            continue;
        }
        if key == "variables" || key == "message_variables" {
            let table = Some(variable_table(&key, value, &shown)?);
            if key == "variables" {
                variables = table;
            } else {
                message_variables = table;
            }
            continue;
        }
        // `follow_up_command = ["prog", "arg", ...]`: the program and its arguments in one list.
        if key == "follow_up_command" && command_key(&key, &value, &shown, &mut keys)? {
            continue;
        }
        let values = flag_values(&command, &key, value, &shown)?;
        keys.insert(key, values);
    }
    for (key, values) in &keys {
        let defaults = values.clone();
        command = command.mut_arg(key.as_str(), |arg| arg.default_values(defaults));
    }
    Ok((
        ConfigFile {
            path: path.to_owned(),
            keys,
            variables,
            message_variables,
            routes,
        },
        command,
    ))
}

/// The file as a TOML table; a syntax error names its line.
fn parse_toml(path: &Path, shown: &str) -> Result<toml::Table, ConfigError> {
    let bytes = super::files::read_bounded("config file", path)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| ConfigError::Invalid(format!("config file {shown}: not UTF-8 text")))?;
    toml::from_str(&text).map_err(|e| {
        let position = e
            .span()
            .map(|span| {
                let line = text[..span.start].matches('\n').count() + 1;
                format!(" at line {line}")
            })
            .unwrap_or_default();
        ConfigError::Invalid(format!(
            "config file {shown}: not valid TOML{position}: {}",
            e.message().trim()
        ))
    })
}

/// The `[[route]]` tables, unchecked.
fn route_tables(value: toml::Value, shown: &str) -> Result<Vec<toml::Table>, ConfigError> {
    let not_tables = || {
        ConfigError::Invalid(format!(
            "config file {shown}: key `route` must be a list of tables, written [[route]]"
        ))
    };
    let toml::Value::Array(items) = value else {
        return Err(not_tables());
    };
    items
        .into_iter()
        .map(|item| match item {
            toml::Value::Table(table) => Ok(table),
            _ => Err(not_tables()),
        })
        .collect()
}

/// `[variables]` or `[message_variables]`, each name checked.
fn variable_table(
    key: &str,
    value: toml::Value,
    shown: &str,
) -> Result<crate::variables::Variables, ConfigError> {
    let toml::Value::Table(entries) = value else {
        return Err(ConfigError::Invalid(format!(
            "config file {shown}: key `{key}` must be a table, like [{key}] var1 = 1"
        )));
    };
    for name in entries.keys() {
        assigned_variable_name(name).map_err(|why| {
            ConfigError::Invalid(format!("config file {shown}: key `{key}`: {why}"))
        })?;
    }
    Ok(entries
        .into_iter()
        .map(|(name, value)| (name, TypedValue::from_toml(value)))
        .collect())
}

/// `follow_up_command` given as a list: its program and arguments become the keys
/// `follow_up_command` and `follow_up_args`, and `true` is returned. A string is left to the
/// flag's parser (`false`); anything else is refused.
fn command_key(
    key: &str,
    value: &toml::Value,
    shown: &str,
    keys: &mut BTreeMap<String, Vec<String>>,
) -> Result<bool, ConfigError> {
    if let toml::Value::Array(_) = value {
        let (program, args) = command_list(value.clone()).map_err(|why| {
            ConfigError::Invalid(format!("config file {shown}: key `{key}` {why}"))
        })?;
        let Some(program) = program else {
            return Err(ConfigError::Invalid(format!(
                "config file {shown}: key `{key}` is an empty list; name the program first"
            )));
        };
        keys.insert(key.to_owned(), vec![program]);
        if !args.is_empty() {
            keys.insert("follow_up_args".to_owned(), args);
        }
        return Ok(true);
    }
    if !matches!(value, toml::Value::String(_)) {
        return Err(ConfigError::Invalid(format!(
            "config file {shown}: key `{key}` {COMMAND_SHAPE}"
        )));
    }
    Ok(false)
}

/// The values of a key that is a flag, as the flag's parser takes them.
fn flag_values(
    command: &clap::Command,
    key: &str,
    value: toml::Value,
    shown: &str,
) -> Result<Vec<String>, ConfigError> {
    let known = !NOT_IN_FILE.contains(&key) && command.get_arguments().any(|a| a.get_id() == key);
    if !known && FILTER_KEYS.contains(&key) {
        // One fetch serves every route: at the top level a filter would narrow every topic.
        return Err(ConfigError::Invalid(format!(
            "config file {shown}: key `{key}` is a route key: set it in the [[route]] table of the topic it filters"
        )));
    }
    if !known {
        return Err(ConfigError::Invalid(format!(
            "config file {shown}: unknown key `{key}`{}",
            suggestion(command, key)
        )));
    }
    let takes_list = command
        .get_arguments()
        .find(|a| a.get_id() == key)
        .is_some_and(|a| matches!(a.get_action(), clap::ArgAction::Append));
    let scalar = |value: toml::Value| match value {
        toml::Value::String(s) => Some(s),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    };
    let values = match value {
        toml::Value::Array(items) if takes_list => items
            .into_iter()
            .map(scalar)
            .collect::<Option<Vec<String>>>()
            .ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "config file {shown}: key `{key}` must be a list of strings"
                ))
            })?,
        // A list key given as one string takes commas, like its environment variable; only
        // spaces around an item are dropped (a newline in it is refused by its parser).
        toml::Value::String(s) if takes_list => s
            .split(',')
            .map(|part| part.trim_matches(' ').to_owned())
            .collect(),
        value => vec![scalar(value).ok_or_else(|| {
            ConfigError::Invalid(format!(
                "config file {shown}: key `{key}` must be a single value (string, number or boolean)"
            ))
        })?],
    };
    Ok(values)
}

/// What a `follow_up_command` value must be.
pub(super) const COMMAND_SHAPE: &str = "must be a string or a list of strings";

/// A `follow_up_command` value: the program and its arguments. `[]` is no program (a route's
/// way to do no work where the top level names a command).
pub(super) fn command_list(value: toml::Value) -> Result<(Option<String>, Vec<String>), String> {
    let items = match value {
        toml::Value::String(program) => return Ok((Some(program), Vec::new())),
        toml::Value::Array(items) => items,
        _ => return Err(COMMAND_SHAPE.to_owned()),
    };
    let mut parts = items
        .into_iter()
        .map(|item| match item {
            toml::Value::String(s) => Ok(s),
            _ => Err(COMMAND_SHAPE.to_owned()),
        })
        .collect::<Result<Vec<String>, String>>()?
        .into_iter();
    Ok((parts.next(), parts.collect()))
}

pub(super) fn blame_file_key(file: &ConfigFile, error: clap::Error) -> ConfigError {
    use clap::error::{ContextKind, ContextValue};
    let flag = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(flag)) => flag.clone(),
        _ => return ConfigError::Cli(error),
    };
    let key = flag
        .trim_start_matches("--")
        .split([' ', '='])
        .next()
        .unwrap_or_default()
        .replace('-', "_");
    let line = super::error::first_line(&super::error::escaped(error));
    let detail = line.trim_start_matches("error: ");
    ConfigError::Invalid(format!(
        "config file {}: key `{key}`: {detail}",
        file.path.display()
    ))
}

fn suggestion(command: &clap::Command, key: &str) -> String {
    let dashed = key.replace('-', "_");
    if dashed != key
        && command
            .get_arguments()
            .any(|a| a.get_id() == dashed.as_str())
    {
        return format!(" (did you mean `{dashed}`?)");
    }
    String::new()
}
