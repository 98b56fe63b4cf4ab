//! The `[[route]]` tables of the config file, checked key by key and filled from the defaults.
//!
//! Each route must name its `topic`; every other key it leaves out takes the top-level value
//! (flag > environment > file > default), and a key it sets wins over that, because a route is
//! the more specific place. `--topic` cannot be combined with `[[route]]`: the routes name the
//! topics, and a top-level one would be served by nobody. A route's `kind` decides which keys
//! it takes (see [`super::route_kind`]).

use std::collections::BTreeMap;
use std::time::Duration;

use super::file::command_list;
use super::route_filter::{filter_from, FILTER_KEYS};
use super::route_kind::{self, FailureDefaults};
use super::{ConfigError, Layers, Source};
use crate::cli::values;
use crate::correlation::FollowUpMessage;
use crate::route::{Route, RouteKind};
use crate::variables::{TypedValue, Variables};
use crate::work::{check_program, CommandWork};

/// The keys a `[[route]]` table may set besides its subscription keys ([`FILTER_KEYS`]).
pub(super) const ROUTE_KEYS: [&str; 13] = [
    "topic",
    "kind",
    "command",
    "retries",
    "retry_timeout",
    "message_name",
    "correlation_delay",
    "lock_duration",
    "variables",
    "message_variables",
    "follow_up_command",
    "fetch_variables",
    "pass_env",
];

impl Layers {
    /// The routes: the file's `[[route]]` tables over `defaults` (the top-level route), or the
    /// top-level route alone when the file has none.
    /// `command_timeout` is `--follow-up-timeout`, for a route's own command.
    pub(super) fn routes(
        &self,
        defaults: Route,
        command_timeout: Duration,
    ) -> Result<Vec<Route>, ConfigError> {
        let Some(file) = &self.file else {
            return Ok(vec![defaults]);
        };
        let Some(tables) = &file.routes else {
            return Ok(vec![defaults]);
        };
        let shown = file.path.display();
        if tables.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "config file {shown}: `route` is an empty list; add a [[route]] table with a topic, or remove the key"
            )));
        }
        match self.source("topic") {
            Source::Default => {}
            source => {
                let given = match source {
                    Source::Flag => "--topic on the command line",
                    Source::Env => "CAMUNDA_WORKER_TOPIC",
                    _ => "the top-level key `topic`",
                };
                return Err(ConfigError::Invalid(format!(
                    "config file {shown}: [[route]] tables name the topics, so {given} cannot be used with them"
                )));
            }
        }
        let failure = FailureDefaults {
            retries: self.cli.daemon.retries,
            retry_timeout: self.cli.daemon.retry_timeout,
        };
        let mut routes: Vec<Route> = Vec::with_capacity(tables.len());
        let mut seen = BTreeMap::new();
        for (index, table) in tables.iter().enumerate() {
            let number = index + 1;
            let route = route_from(table, &defaults, command_timeout, failure).map_err(|why| {
                let topic = table
                    .get("topic")
                    .and_then(|t| t.as_str())
                    .map(|t| format!(" (topic {t:?})"))
                    .unwrap_or_default();
                ConfigError::Invalid(format!(
                    "config file {shown}: [[route]] #{number}{topic}: {why}"
                ))
            })?;
            if let Some(first) = seen.insert(route.topic.clone(), number) {
                return Err(ConfigError::Invalid(format!(
                    "config file {shown}: [[route]] #{number} repeats topic {:?} of [[route]] #{first}; each topic may have one route",
                    route.topic
                )));
            }
            routes.push(route);
        }
        Ok(routes)
    }
}

/// One `[[route]]` table over `defaults` — the merge of a route and the top level, written
/// once: a key the table sets wins, a key it leaves out takes the default. The error is the key
/// and what is wrong with it.
fn route_from(
    table: &toml::Table,
    defaults: &Route,
    command_timeout: Duration,
    failure: FailureDefaults,
) -> Result<Route, String> {
    let known = |key: &str| ROUTE_KEYS.contains(&key) || FILTER_KEYS.contains(&key);
    if let Some(unknown) = table.keys().find(|k| !known(k.as_str())) {
        return Err(format!(
            "unknown key `{unknown}` (a route may set {}, {})",
            ROUTE_KEYS.join(", "),
            FILTER_KEYS.join(", ")
        ));
    }
    let keys = RouteTable(table);
    let topic = keys
        .name("topic")?
        .ok_or("no `topic`: every route names the topic it serves")?;
    let complete = route_kind::is_complete(table)?;
    route_kind::check_keys(table, complete)?;
    // A complete route's program is its own: the top level's belongs to the follow-ups.
    let inherited = (!complete)
        .then(|| defaults.follow_up_command.clone())
        .flatten();
    let command = route_command(table, inherited, command_timeout)?;
    let (follow_up_command, kind) = if complete {
        (None, route_kind::complete_kind(table, command, failure)?)
    } else {
        (command, RouteKind::Message)
    };
    // Read in this order so that, of several wrong keys, the same one is named as before.
    let message_variables = keys.variables("message_variables")?;
    let lock_duration = keys.duration("lock_duration", values::lock_duration)?;
    let variables = keys.variables("variables")?;
    let message_name = keys.name("message_name")?;
    let delay = keys.duration("correlation_delay", values::correlation_delay)?;
    let filter = filter_from(table, &defaults.filter)?;
    Ok(Route {
        topic,
        lock_duration: lock_duration.unwrap_or(defaults.lock_duration),
        // A complete route's variables are its command's output alone.
        variables: match kind {
            RouteKind::Complete(_) => Variables::new(),
            RouteKind::Message => variables.unwrap_or_else(|| defaults.variables.clone()),
        },
        message: FollowUpMessage {
            name: message_name.unwrap_or_else(|| defaults.message.name.clone()),
            delay: delay.unwrap_or(defaults.message.delay),
            variables: message_variables.unwrap_or_else(|| defaults.message.variables.clone()),
        },
        follow_up_command,
        filter,
        kind,
    })
}

/// A `[[route]]` table's values, each checked as its flag would be; `None` when the key is not
/// set.
struct RouteTable<'a>(&'a toml::Table);

impl RouteTable<'_> {
    fn text(&self, key: &str) -> Result<Option<String>, String> {
        match self.0.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(format!("key `{key}` must be a non-empty string")),
        }
    }

    fn name(&self, key: &str) -> Result<Option<String>, String> {
        self.text(key)?
            .map(|value| values::name(&value).map_err(|why| format!("key `{key}`: {why}")))
            .transpose()
    }

    fn duration(
        &self,
        key: &str,
        parse: fn(&str) -> Result<Duration, String>,
    ) -> Result<Option<Duration>, String> {
        self.text(key)?
            .map(|value| parse(&value).map_err(|why| format!("key `{key}`: {why}")))
            .transpose()
    }

    fn variables(&self, key: &str) -> Result<Option<Variables>, String> {
        match self.0.get(key) {
            None => Ok(None),
            Some(toml::Value::Table(entries)) => {
                for name in entries.keys() {
                    values::assigned_variable_name(name)
                        .map_err(|why| format!("key `{key}`: {why}"))?;
                }
                Ok(Some(
                    entries
                        .iter()
                        .map(|(name, value)| (name.clone(), TypedValue::from_toml(value.clone())))
                        .collect(),
                ))
            }
            Some(_) => Err(format!(
                "key `{key}` must be a table, like {key} = {{ name = 1 }}"
            )),
        }
    }
}

/// A route's program: its own `command` (or `follow_up_command`, its older spelling; `[]` for
/// none), or `inherited`; its `fetch_variables` and `pass_env`, or the inherited ones.
fn route_command(
    table: &toml::Table,
    inherited: Option<CommandWork>,
    timeout: Duration,
) -> Result<Option<CommandWork>, String> {
    let own = ["command", "follow_up_command"]
        .into_iter()
        .find_map(|key| table.get(key).map(|value| (key, value)));
    let mut command = match own {
        None => inherited,
        Some((key, value)) => own_command(key, value, inherited.as_ref(), timeout)?,
    };
    for key in ["fetch_variables", "pass_env"] {
        let Some(value) = table.get(key) else {
            continue;
        };
        let names = variable_names(key, value)?;
        let Some(command) = command.as_mut() else {
            return Err(format!(
                "key `{key}` is for a program (`command`, or follow_up_command), which this route does not have"
            ));
        };
        if key == "fetch_variables" {
            command.fetch_variables = names;
        } else {
            command.pass_env = names;
        }
    }
    Ok(command)
}

/// A route's own program (`key` is `command` or `follow_up_command`), checked; it keeps the
/// inherited `fetch_variables` and `pass_env` unless the route sets its own.
fn own_command(
    key: &str,
    value: &toml::Value,
    inherited: Option<&CommandWork>,
    timeout: Duration,
) -> Result<Option<CommandWork>, String> {
    let (program, args) =
        command_list(value.clone()).map_err(|why| format!("key `{key}` {why}"))?;
    let Some(program) = program else {
        return Ok(None);
    };
    let program = std::path::PathBuf::from(program);
    check_program(&program).map_err(|why| format!("key `{key}`: {why}"))?;
    Ok(Some(CommandWork {
        program,
        args,
        timeout,
        fetch_variables: inherited
            .map(|c| c.fetch_variables.clone())
            .unwrap_or_default(),
        pass_env: inherited.map(|c| c.pass_env.clone()).unwrap_or_default(),
        withheld_env: Vec::new(),
    }))
}

/// A list of variable names (`fetch_variables`, `pass_env`), each checked.
fn variable_names(key: &str, value: &toml::Value) -> Result<Vec<String>, String> {
    let names = match value {
        toml::Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<String>>>(),
        _ => None,
    }
    .ok_or(format!("key `{key}` must be a list of strings"))?;
    for name in &names {
        crate::cli::parse_variable_name(name).map_err(|why| format!("key `{key}`: {why}"))?;
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::FetchFilter;

    const FAILURE: FailureDefaults = FailureDefaults {
        retries: 3,
        retry_timeout: Duration::from_secs(10),
    };

    /// The top-level route: the defaults every `[[route]]` table is merged over.
    fn defaults() -> Route {
        Route {
            topic: "top".to_owned(),
            lock_duration: Duration::from_secs(60),
            variables: Variables::from([("v".to_owned(), TypedValue::integer(1))]),
            message: FollowUpMessage {
                name: "top_message".to_owned(),
                delay: Duration::from_secs(2),
                variables: Variables::from([("m".to_owned(), TypedValue::integer(1))]),
            },
            follow_up_command: None,
            filter: FetchFilter::default(),
            kind: RouteKind::Message,
        }
    }

    fn tables(text: &str) -> Vec<toml::Table> {
        let file: toml::Table = toml::from_str(text).expect("valid TOML");
        let Some(toml::Value::Array(routes)) = file.get("route") else {
            panic!("no [[route]] in {text}");
        };
        routes
            .iter()
            .map(|r| r.as_table().expect("a table").clone())
            .collect()
    }

    fn merged(text: &str) -> Vec<Route> {
        tables(text)
            .iter()
            .map(|t| {
                route_from(t, &defaults(), Duration::from_secs(30), FAILURE).expect("a valid route")
            })
            .collect()
    }

    #[test]
    fn a_route_key_wins_over_the_top_level() {
        let routes = merged(
            r#"
            [[route]]
            topic = "a"
            message_name = "a_done"
            correlation_delay = "5s"
            lock_duration = "90s"
            variables = { v = 2 }
            message_variables = { m = 2 }
            "#,
        );
        let route = &routes[0];
        assert_eq!(route.topic, "a");
        assert_eq!(route.lock_duration, Duration::from_secs(90));
        assert_eq!(route.variables["v"], TypedValue::integer(2));
        assert_eq!(
            route.message,
            FollowUpMessage {
                name: "a_done".to_owned(),
                delay: Duration::from_secs(5),
                variables: Variables::from([("m".to_owned(), TypedValue::integer(2))]),
            }
        );
    }

    #[test]
    fn a_key_a_route_leaves_out_takes_the_top_level_default() {
        let routes = merged("[[route]]\ntopic = \"a\"\n");
        let (route, top) = (&routes[0], defaults());
        assert_eq!(route.topic, "a");
        assert_eq!(route.lock_duration, top.lock_duration);
        assert_eq!(route.variables, top.variables);
        assert_eq!(route.message, top.message);
        assert!(route.follow_up_command.is_none());
    }

    #[test]
    fn a_complete_route_takes_its_own_command_and_the_top_level_retries_unless_it_sets_them() {
        let routes = merged(
            r#"
            [[route]]
            topic = "c"
            kind = "complete"
            command = ["sh", "-c", "true"]
            retry_timeout = "3s"
            "#,
        );
        let RouteKind::Complete(handler) = &routes[0].kind else {
            panic!("a complete route");
        };
        assert_eq!(handler.command.args, ["-c", "true"]);
        assert_eq!(handler.retries, FAILURE.retries);
        assert_eq!(handler.retry_timeout, Duration::from_secs(3));
        assert!(routes[0].follow_up_command.is_none());
        assert!(
            routes[0].variables.is_empty(),
            "its variables are its command's"
        );
        let message = merged("[[route]]\ntopic = \"m\"\ncommand = [\"sh\"]\n");
        assert!(matches!(message[0].kind, RouteKind::Message));
        assert!(
            message[0].follow_up_command.is_some(),
            "`command` names the follow-up's work"
        );
    }

    #[test]
    fn the_first_route_is_merged_like_the_others() {
        let one = "[[route]]\ntopic = \"a\"\n";
        let other = "[[route]]\ntopic = \"b\"\nmessage_name = \"b_done\"\n";
        let first_then_other = merged(&format!("{one}{other}"));
        let other_then_first = merged(&format!("{other}{one}"));
        assert_eq!(first_then_other[0].message, other_then_first[1].message);
        assert_eq!(first_then_other[1].message, other_then_first[0].message);
        assert_eq!(first_then_other[0].message, defaults().message);
        assert_eq!(first_then_other[1].message.name, "b_done");
        assert_eq!(first_then_other[1].message.delay, defaults().message.delay);
    }
}
