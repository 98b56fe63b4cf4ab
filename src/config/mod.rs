//! The validated configuration, merged from flags, environment, a TOML file and defaults.
//!
//! Precedence is flag > environment > file > default. clap already orders flags, environment and
//! defaults; the file slots in by becoming the new default of each key it sets (after its value
//! passed the same parser a flag would). Every problem becomes a [`ConfigError`]: one line naming
//! the flag or key, exit code 2.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

mod credentials;
mod error;
mod file;
mod files;
mod report;
mod route_filter;
mod route_kind;
mod routes;

use crate::cli::{Cli, Command, Concurrency, EngineDiscovery, LogFormat, TaskOrder};
use crate::correlation::{CorrelateBy, CorrelationPolicy, FollowUpMessage};
use crate::engine::{
    Credentials, EngineSettings, FetchFilter, SortBy, SortOrder, Sorting, TlsSettings,
};
use crate::route::{Route, RouteKind};
use crate::secret::Secret;
use crate::variables::{default_variables, Variables};
use crate::work::{check_program, holding_secrets, CommandWork};
use crate::worker::{generated_worker_id, WorkerSettings};
pub use error::ConfigError;
use file::{blame_file_key, read_config_file};

/// Config keys (= clap argument ids) whose values are secrets, masked in `--print-config`.
const SECRET_KEYS: [&str; 3] = ["password", "bearer_token", "oauth_client_secret"];

/// Arguments that are not configuration and so not accepted in the file.
const NOT_IN_FILE: [&str; 4] = ["config", "print_config", "help", "version"];

/// Where a value came from, for `--print-config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// A `CAMUNDA_WORKER_*` environment variable.
    Env,
    /// The config file.
    File,
    /// The built-in default.
    Default,
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Env => "env",
            Source::File => "file",
            Source::Default => "default",
        }
    }
}

/// The command line merged with environment and config file, not yet validated as a whole.
pub struct Layers {
    /// The typed flags, after merging.
    pub cli: Cli,
    matches: ArgMatches,
    file: Option<ConfigFile>,
}

struct ConfigFile {
    path: PathBuf,
    /// The keys the file sets, with their values (several for a list, like `engine_url`).
    keys: BTreeMap<String, Vec<String>>,
    variables: Option<Variables>,
    message_variables: Option<Variables>,
    /// The `[[route]]` tables, unchecked; `None` when the file has none.
    routes: Option<Vec<toml::Table>>,
}

/// Parses the command line (and `--config` file) from `args`, the program name first.
pub fn parse_layers<I, T>(args: I) -> Result<Layers, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    // First pass: only to learn whether a config file was named (flag or environment).
    let first = Cli::command().try_get_matches_from(&args)?;
    let Some(path) = first.get_one::<PathBuf>("config").cloned() else {
        let cli = Cli::from_arg_matches(&first)?;
        return Ok(Layers {
            cli,
            matches: first,
            file: None,
        });
    };
    let (file, command) = read_config_file(&path)?;
    // Values from the file are now defaults; clap checks them with the flag's own parser. The
    // first pass succeeded, so a failure here comes from the file: name its key.
    let matches = command
        .try_get_matches_from(&args)
        .map_err(|e| blame_file_key(&file, e))?;
    let cli = Cli::from_arg_matches(&matches)?;
    Ok(Layers {
        cli,
        matches,
        file: Some(file),
    })
}

/// The flags (their own `Debug` masks secrets) and the file's path; never the raw values clap and
/// the file hold, which may be secrets.
impl std::fmt::Debug for Layers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layers")
            .field("cli", &self.cli)
            .field("file", &self.file.as_ref().map(|file| &file.path))
            .finish_non_exhaustive()
    }
}

impl Layers {
    /// Where the value of `key` came from.
    pub fn source(&self, key: &str) -> Source {
        let sources = [self.subcommand_matches(), &self.matches]
            .into_iter()
            .filter_map(|m| {
                m.try_contains_id(key)
                    .ok()
                    .filter(|known| *known)
                    .map(|_| m)
            })
            .find_map(|m| m.value_source(key));
        match sources {
            Some(ValueSource::CommandLine) => Source::Flag,
            Some(ValueSource::EnvVariable) => Source::Env,
            _ if self.file.as_ref().is_some_and(|f| f.keys.contains_key(key)) => Source::File,
            _ => Source::Default,
        }
    }

    fn subcommand_matches(&self) -> &ArgMatches {
        // Global arguments are propagated into the subcommand's matches, with their sources.
        self.matches
            .subcommand()
            .map(|(_, sub)| sub)
            .unwrap_or(&self.matches)
    }

    /// Validates the merged layers into a [`Config`] (reads password, secret and certificate
    /// files, so that a missing file is reported at start, naming its flag). Here, and only
    /// here, each route's keys are merged over the top level's: the routes the `Config` holds
    /// are fully resolved.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let connection = &self.cli.connection;
        let daemon = &self.cli.daemon;
        let tls = self.tls()?;
        let (nodes, credentials) = credentials::connection(connection, &tls)?;
        let (defaults, variables_source) = self.top_level_route()?;
        let mut routes = self.routes(defaults.clone(), daemon.follow_up_timeout)?;
        withhold_secrets(&mut routes, &credentials);
        check_marker_variable(&routes, &daemon.marker_variable)?;
        let engine = self.engine_settings(nodes, credentials, tls)?;
        let config = Config {
            engine,
            worker: self.worker_settings(&routes),
            correlation: self.correlation_policy(),
            routes,
            correlate_by: daemon.correlate_by,
            engine_discovery: daemon.engine_discovery,
            shutdown_grace: daemon.shutdown_grace,
            reconcile_interval: Some(daemon.reconcile_interval).filter(|d| !d.is_zero()),
            metrics_addr: connection.metrics_addr.0,
            log_format: connection.log_format,
            report: Vec::new(),
        };
        let report = self.report(&config, &defaults, variables_source);
        Ok(config.with_report(report))
    }

    /// `--ca-cert` and the client identity, read and checked.
    fn tls(&self) -> Result<TlsSettings, ConfigError> {
        let connection = &self.cli.connection;
        let ca_cert_pem = match &connection.ca_cert {
            Some(path) => {
                let pem = read_file("--ca-cert", path)?;
                files::check_ca_cert(path, &pem)?;
                Some(pem)
            }
            None => None,
        };
        let client_identity_pem = match (&connection.client_cert, &connection.client_key) {
            (Some(cert), Some(key)) => {
                let mut pem = read_file("--client-cert", cert)?;
                let key_pem = read_file("--client-key", key)?;
                files::check_client_identity((cert, &pem), (key, &key_pem))?;
                pem.push(b'\n');
                pem.extend(key_pem);
                Some(pem)
            }
            _ => None,
        };
        Ok(TlsSettings {
            ca_cert_pem,
            client_identity_pem,
        })
    }

    /// The route of the top-level keys and flags: the only route without `[[route]]`, the
    /// defaults of every route with it. Also where its `[variables]` came from, for the report.
    fn top_level_route(&self) -> Result<(Route, Source), ConfigError> {
        let daemon = &self.cli.daemon;
        let file = self.file.as_ref();
        let (variables, variables_source) = if !daemon.variables.is_empty() {
            let given = daemon.variables.iter().cloned().collect();
            (given, self.source("variables"))
        } else if let Some(variables) = file.and_then(|f| f.variables.clone()) {
            (variables, Source::File)
        } else {
            (default_variables(), Source::Default)
        };
        let message_variables: Variables = if !daemon.message_variables.is_empty() {
            daemon.message_variables.iter().cloned().collect()
        } else {
            file.and_then(|f| f.message_variables.clone())
                .unwrap_or_default()
        };
        let route = Route {
            topic: daemon.topic.clone(),
            lock_duration: daemon.lock_duration,
            variables,
            message: FollowUpMessage {
                name: daemon.message_name.clone(),
                delay: daemon.correlation_delay,
                variables: message_variables,
            },
            follow_up_command: self.follow_up_command()?,
            filter: FetchFilter::default(),
            kind: RouteKind::Message,
        };
        Ok((route, variables_source))
    }

    /// Where the engine is and how to reach it.
    fn engine_settings(
        &self,
        nodes: Vec<url::Url>,
        credentials: Credentials,
        tls: TlsSettings,
    ) -> Result<EngineSettings, ConfigError> {
        let connection = &self.cli.connection;
        if self.cli.daemon.engine_discovery == EngineDiscovery::Dns
            && connection.engine_url.len() != 1
        {
            return Err(ConfigError::Invalid(format!(
                "--engine-discovery dns resolves the host of one --engine-url; {} were given",
                connection.engine_url.len()
            )));
        }
        let Some(first_url) = nodes.first() else {
            return Err(ConfigError::Invalid(
                "--engine-url: no URL given".to_owned(),
            ));
        };
        let mut engine = EngineSettings::new(first_url.clone());
        engine.nodes = nodes;
        engine.credentials = credentials;
        engine.tls = tls;
        engine.request_timeout = connection.request_timeout;
        Ok(engine)
    }

    /// How to fetch: one subscription per route.
    fn worker_settings(&self, routes: &[Route]) -> WorkerSettings {
        let daemon = &self.cli.daemon;
        WorkerSettings {
            worker_id: daemon
                .worker_id
                .clone()
                .filter(|id| !id.trim().is_empty())
                .unwrap_or_else(generated_worker_id),
            subscriptions: routes.iter().map(Route::subscription).collect(),
            long_poll: daemon.long_poll,
            max_tasks: daemon.max_tasks.get(),
            adaptive_concurrency: daemon.concurrency == Concurrency::Adaptive,
            retries: daemon.retries,
            retry_timeout: daemon.retry_timeout,
            max_backoff: daemon.max_backoff,
            min_poll_interval: daemon.min_poll_interval,
            use_priority: daemon.use_priority,
            sorting: sorting(daemon.sorting),
        }
    }

    /// The worker-wide policy of follow-ups, the same for every route.
    fn correlation_policy(&self) -> CorrelationPolicy {
        let daemon = &self.cli.daemon;
        CorrelationPolicy {
            timeout: daemon.correlation_timeout,
            max_backoff: daemon.max_backoff,
            capacity: daemon.max_pending_follow_ups,
            marker_variable: daemon.marker_variable.clone(),
            retry_budget: daemon.retry_budget,
            work_retries: daemon.follow_up_retries,
            work_concurrency: daemon.follow_up_concurrency,
            lease: daemon.follow_up_lease,
        }
    }
}

/// `--sorting` as the fetch's `sorting` list.
fn sorting(order: TaskOrder) -> Vec<Sorting> {
    let by_create_time = |sort_order| Sorting {
        sort_by: SortBy::CreateTime,
        sort_order,
    };
    match order {
        TaskOrder::None => Vec::new(),
        TaskOrder::CreateTimeAsc => vec![by_create_time(SortOrder::Asc)],
        TaskOrder::CreateTimeDesc => vec![by_create_time(SortOrder::Desc)],
    }
}

/// Every route's command runs without the environment variables that hold the credentials.
fn withhold_secrets(routes: &mut [Route], credentials: &Credentials) {
    let secrets: Vec<&str> = credentials
        .secrets()
        .into_iter()
        .map(Secret::expose)
        .collect();
    let withheld = holding_secrets(std::env::vars_os(), &secrets);
    for route in routes.iter_mut() {
        let complete = match &mut route.kind {
            RouteKind::Complete(handler) => Some(&mut handler.command),
            RouteKind::Message => None,
        };
        for command in route.follow_up_command.iter_mut().chain(complete) {
            command.withheld_env.clone_from(&withheld);
        }
    }
}

/// The message sets the marker variable itself: no route's message variables may name it.
fn check_marker_variable(routes: &[Route], marker_variable: &str) -> Result<(), ConfigError> {
    if routes
        .iter()
        .any(|route| route.message.variables.contains_key(marker_variable))
    {
        return Err(ConfigError::Invalid(format!(
            "--message-var {marker_variable}: that is the marker variable (--marker-variable), which the message sets itself"
        )));
    }
    Ok(())
}

impl Layers {
    /// `--follow-up-command` and its arguments, checked: a program that cannot run is reported
    /// at start, not at the first task.
    fn follow_up_command(&self) -> Result<Option<CommandWork>, ConfigError> {
        let daemon = &self.cli.daemon;
        let Some(program) = &daemon.follow_up_command else {
            for (given, flag) in [
                (!daemon.follow_up_args.is_empty(), "--follow-up-arg"),
                (!daemon.fetch_variables.is_empty(), "--fetch-var"),
                (!daemon.pass_env.is_empty(), "--pass-env"),
            ] {
                if given {
                    return Err(ConfigError::Invalid(format!(
                        "{flag} is for --follow-up-command, which is not set"
                    )));
                }
            }
            return Ok(None);
        };
        check_program(program)
            .map_err(|why| ConfigError::Invalid(format!("--follow-up-command: {why}")))?;
        Ok(Some(CommandWork {
            program: program.clone(),
            args: daemon.follow_up_args.clone(),
            timeout: daemon.follow_up_timeout,
            fetch_variables: daemon.fetch_variables.clone(),
            pass_env: daemon.pass_env.clone(),
            // Filled in with the credentials, for every route's command (see `into_config`).
            withheld_env: Vec::new(),
        }))
    }
}

fn read_file(flag: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    files::read_bounded(flag, path)
}

/// The validated configuration of the daemon and the subcommands.
#[derive(Debug, Clone)]
pub struct Config {
    /// How to reach the engine.
    pub engine: EngineSettings,
    /// How to fetch and handle tasks.
    pub worker: WorkerSettings,
    /// How follow-up messages are delivered, worker-wide (what a route decides is in
    /// [`Config::routes`]).
    pub correlation: CorrelationPolicy,
    /// How follow-ups find their instance.
    pub correlate_by: CorrelateBy,
    /// How the engine's nodes are found.
    pub engine_discovery: EngineDiscovery,
    /// The topic/message pairs served (at least one): the file's `[[route]]` tables, or the
    /// one route of the top-level keys and flags.
    pub routes: Vec<Route>,
    /// How long shutdown may take.
    pub shutdown_grace: Duration,
    /// How often the reconciler runs; `None` = disabled.
    pub reconcile_interval: Option<Duration>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; `None` (`--metrics-addr off`):
    /// nowhere.
    pub metrics_addr: Option<SocketAddr>,
    /// Log format.
    pub log_format: LogFormat,
    report: Vec<String>,
}

impl Config {
    fn with_report(mut self, report: Vec<String>) -> Self {
        self.report = report;
        self
    }

    /// The effective configuration, one `key = value  # source` line each, secrets masked.
    pub fn describe(&self) -> String {
        let mut text = self.report.join("\n");
        text.push('\n');
        text
    }
}

/// Parses arguments into the subcommand to run, the typed flags and the validated configuration.
pub fn load<I, T>(args: I) -> Result<(Option<Command>, bool, Config), ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut layers = parse_layers(args)?;
    let command = layers.cli.command.take();
    let print_config = layers.cli.daemon.print_config;
    Ok((command, print_config, layers.into_config()?))
}
