//! The command line as typed: clap flags, each with its `CAMUNDA_WORKER_*` environment variable.
//!
//! Values are parsed into their types here (URLs, durations, addresses) so that a bad flag or
//! environment value is reported by clap with the flag's name. Defaults that a config file may
//! override are plain clap defaults: `config.rs` turns the file's keys into new defaults, which
//! gives the precedence flag > environment > file > built-in default for free.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use url::Url;

use crate::correlation::CorrelateBy;

pub mod values;

/// camunda-worker: completes Camunda 7 external tasks and correlates the follow-up message.
#[derive(Debug, Parser)]
#[command(name = "camunda-worker", version, about, long_about = None)]
pub struct Cli {
    /// What to do; without a subcommand the worker daemon runs.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Options every subcommand shares (engine, credentials, config file, logs).
    #[command(flatten)]
    pub connection: ConnectionArgs,

    /// Options of the daemon.
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Deploy BPMN files (default: the bundled message-correlation process), skipping unchanged ones.
    Deploy(DeployArgs),
    /// Start process instances with business keys.
    Start(StartArgs),
    /// Show, from the engine, what waits: instances at the catch event, open tasks, incidents.
    Status,
    /// Probe this worker's own /healthz (for container images without curl); exit 0 when healthy.
    Healthcheck(HealthcheckArgs),
}

/// `deploy` arguments.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// BPMN files to deploy; none = the bundled `message-correlation.bpmn`.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The deployment name shown in Cockpit.
    #[arg(long, default_value = "camunda-worker", value_parser = values::name)]
    pub name: String,
    /// Deploy for this tenant (the definitions belong to it; its instances and tasks carry it).
    #[arg(long, value_parser = values::tenant_id)]
    pub tenant_id: Option<String>,
}

/// `start` arguments.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// The process definition key.
    #[arg(long, default_value = "message_correlation", value_parser = values::name)]
    pub process_key: String,
    /// The business key (default: a generated UUID).
    #[arg(long, conflicts_with = "count", value_parser = values::name)]
    pub business_key: Option<String>,
    /// How many instances to start, each with a generated UUID business key.
    #[arg(long, default_value = "1", value_parser = values::start_count)]
    pub count: NonZeroU32,
    /// Start variable NAME=JSON (repeatable), typed like the daemon's --var.
    #[arg(long = "var", value_name = "NAME=JSON")]
    pub variables: Vec<String>,
    /// Instances started at once.
    #[arg(long, default_value = "16", value_parser = values::start_concurrency)]
    pub concurrency: NonZeroU32,
    /// Start the tenant's definition of the process key (needed once several tenants deploy
    /// the same key).
    #[arg(long, value_parser = values::tenant_id)]
    pub tenant_id: Option<String>,
}

/// `healthcheck` arguments.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// Probe this URL instead of http://<metrics-addr>/healthz.
    #[arg(long, value_parser = values::http_url)]
    pub url: Option<Url>,
}

/// How the worker finds the engine's nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum EngineDiscovery {
    /// Use the `--engine-url`s as given.
    #[default]
    None,
    /// Resolve the host of the single `--engine-url` again and again and poll every address it
    /// has (a Kubernetes headless Service: one address per engine pod).
    Dns,
}

/// How many tasks the worker keeps in flight (`--concurrency`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Concurrency {
    /// A limit that finds its own level from the time the engine takes to answer: it starts low,
    /// grows while answers stay quick, and comes down when they slow (at most `--max-tasks`).
    #[default]
    Adaptive,
    /// Always `--max-tasks`.
    Fixed,
}

/// In which order of creation a fetch hands out tasks (`--sorting`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum TaskOrder {
    /// The engine's own order (no `sorting` sent).
    #[default]
    None,
    /// The oldest tasks first.
    CreateTimeAsc,
    /// The newest tasks first.
    CreateTimeDesc,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Options every subcommand shares. `Debug` masks what may be a secret (see the impl).
#[derive(Args)]
pub struct ConnectionArgs {
    /// TOML config file; its keys are the long flag names with `_` for `-`.
    #[arg(
        long,
        global = true,
        env = "CAMUNDA_WORKER_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// The engine's REST root. For a cluster, every node's (repeat the flag, or separate the URLs
    /// with commas): the worker keeps one long poll per node.
    /// Credentials in the URL (`http://user:password@host/...`) become --username/--password.
    #[arg(long, global = true, env = "CAMUNDA_WORKER_ENGINE_URL", value_name = "URL",
          default_value = "http://localhost:8080/engine-rest", value_parser = parse_engine_url,
          action = ArgAction::Append, value_delimiter = ',', hide_env_values = true)]
    pub engine_url: Vec<Url>,

    /// Log format; levels come from RUST_LOG (default info).
    #[arg(
        long,
        global = true,
        env = "CAMUNDA_WORKER_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    pub log_format: LogFormat,

    /// HTTP Basic user name.
    #[arg(long, global = true, env = "CAMUNDA_WORKER_USERNAME")]
    pub username: Option<String>,
    /// HTTP Basic password (prefer --password-file).
    #[arg(
        long,
        global = true,
        env = "CAMUNDA_WORKER_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// File holding the HTTP Basic password.
    #[arg(
        long,
        global = true,
        env = "CAMUNDA_WORKER_PASSWORD_FILE",
        value_name = "FILE",
        conflicts_with = "password"
    )]
    pub password_file: Option<PathBuf>,

    /// Bearer token sent with every call (prefer --bearer-token-file).
    #[arg(
        long,
        global = true,
        env = "CAMUNDA_WORKER_BEARER_TOKEN",
        hide_env_values = true
    )]
    pub bearer_token: Option<String>,
    /// File holding the bearer token; re-read whenever it changes.
    #[arg(
        long,
        global = true,
        env = "CAMUNDA_WORKER_BEARER_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "bearer_token"
    )]
    pub bearer_token_file: Option<PathBuf>,

    /// OAuth2 token endpoint (client-credentials grant); credentials in the URL
    /// (`https://client-id:secret@host/...`) become --oauth-client-id/--oauth-client-secret.
    #[arg(
        long,
        global = true,
        env = "CAMUNDA_WORKER_OAUTH_TOKEN_URL",
        value_name = "URL",
        hide_env_values = true,
        value_parser = values::http_url
    )]
    pub oauth_token_url: Option<Url>,
    /// OAuth2 client id.
    #[arg(long, global = true, env = "CAMUNDA_WORKER_OAUTH_CLIENT_ID")]
    pub oauth_client_id: Option<String>,
    /// OAuth2 client secret (prefer --oauth-client-secret-file).
    #[arg(
        long,
        global = true,
        env = "CAMUNDA_WORKER_OAUTH_CLIENT_SECRET",
        hide_env_values = true
    )]
    pub oauth_client_secret: Option<String>,
    /// File holding the OAuth2 client secret.
    #[arg(
        long,
        global = true,
        env = "CAMUNDA_WORKER_OAUTH_CLIENT_SECRET_FILE",
        value_name = "FILE",
        conflicts_with = "oauth_client_secret"
    )]
    pub oauth_client_secret_file: Option<PathBuf>,
    /// OAuth2 scope to request.
    #[arg(long, global = true, env = "CAMUNDA_WORKER_OAUTH_SCOPE")]
    pub oauth_scope: Option<String>,

    /// Extra trusted root certificate (PEM).
    #[arg(
        long,
        global = true,
        env = "CAMUNDA_WORKER_CA_CERT",
        value_name = "FILE"
    )]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate for mutual TLS (PEM); needs --client-key.
    #[arg(
        long,
        global = true,
        env = "CAMUNDA_WORKER_CLIENT_CERT",
        value_name = "FILE",
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// Private key of the client certificate (PEM).
    #[arg(
        long,
        global = true,
        env = "CAMUNDA_WORKER_CLIENT_KEY",
        value_name = "FILE",
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,

    /// How long an engine call may take before it counts as failed (fetch-and-lock: its long poll
    /// plus a margin instead).
    #[arg(long, global = true, env = "CAMUNDA_WORKER_REQUEST_TIMEOUT", value_name = "DURATION",
          default_value = "30s", value_parser = values::request_timeout)]
    pub request_timeout: Duration,

    /// Address of the metrics and health endpoints (/metrics, /healthz, /readyz); `off` serves
    /// none of them.
    #[arg(
        long,
        global = true,
        env = "CAMUNDA_WORKER_METRICS_ADDR",
        value_name = "ADDR|off",
        default_value = "127.0.0.1:9464",
        value_parser = parse_metrics_addr
    )]
    pub metrics_addr: MetricsAddr,
}

/// Where the metrics and health listener listens, if anywhere (`--metrics-addr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsAddr(pub Option<SocketAddr>);

/// `off`, or an address with its port (`127.0.0.1:9464`, `[::]:9464`).
fn parse_metrics_addr(text: &str) -> Result<MetricsAddr, String> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(MetricsAddr(None));
    }
    text.trim()
        .parse()
        .map(|addr| MetricsAddr(Some(addr)))
        .map_err(|_| {
            format!("`{text}` is not an address with a port (like 127.0.0.1:9464), nor `off`")
        })
}

/// Secrets masked, URLs without their userinfo: a `{:?}` of the flags must not print a credential.
impl std::fmt::Debug for ConnectionArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let masked = |secret: &Option<String>| secret.as_ref().map(|_| "********");
        let engine_urls: Vec<String> = self
            .engine_url
            .iter()
            .map(|url| crate::secret::without_userinfo(url).to_string())
            .collect();
        f.debug_struct("ConnectionArgs")
            .field("config", &self.config)
            .field("engine_url", &engine_urls)
            .field("log_format", &self.log_format)
            .field("username", &self.username)
            .field("password", &masked(&self.password))
            .field("password_file", &self.password_file)
            .field("bearer_token", &masked(&self.bearer_token))
            .field("bearer_token_file", &self.bearer_token_file)
            .field(
                "oauth_token_url",
                &self
                    .oauth_token_url
                    .as_ref()
                    .map(|url| crate::secret::without_userinfo(url).to_string()),
            )
            .field("oauth_client_id", &self.oauth_client_id)
            .field("oauth_client_secret", &masked(&self.oauth_client_secret))
            .field("oauth_client_secret_file", &self.oauth_client_secret_file)
            .field("oauth_scope", &self.oauth_scope)
            .field("ca_cert", &self.ca_cert)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("request_timeout", &self.request_timeout)
            .field("metrics_addr", &self.metrics_addr)
            .finish()
    }
}

/// Options of the daemon.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// External-task topic to serve.
    #[arg(long, env = "CAMUNDA_WORKER_TOPIC", default_value = "messageSending",
          value_parser = values::name)]
    pub topic: String,

    /// Name of the follow-up message.
    #[arg(
        long,
        env = "CAMUNDA_WORKER_MESSAGE_NAME",
        default_value = "sample_response",
        value_parser = values::name
    )]
    pub message_name: String,

    /// Wait between completing a task and sending its message.
    #[arg(long, env = "CAMUNDA_WORKER_CORRELATION_DELAY", value_name = "DURATION",
          default_value = "2s", value_parser = values::correlation_delay)]
    pub correlation_delay: Duration,

    /// How long fetched tasks stay locked (extended while a handler runs).
    #[arg(long, env = "CAMUNDA_WORKER_LOCK_DURATION", value_name = "DURATION",
          default_value = "1m", value_parser = values::lock_duration)]
    pub lock_duration: Duration,

    /// How long the engine may hold a fetch open when no task is available (at most 30m).
    #[arg(long, env = "CAMUNDA_WORKER_LONG_POLL", value_name = "DURATION",
          default_value = "45s", value_parser = values::long_poll)]
    pub long_poll: Duration,

    /// Shortest time between two fetches that come back empty: an empty reply that comes back
    /// sooner (a `--long-poll` of 0s, a proxy that ends long polls) waits out the rest. Replies
    /// with tasks are not paced. `0s` turns it off.
    #[arg(long, env = "CAMUNDA_WORKER_MIN_POLL_INTERVAL", value_name = "DURATION",
          default_value = "1s", value_parser = values::min_poll_interval)]
    pub min_poll_interval: Duration,

    /// How to find the engine's nodes: `none` (the --engine-url list) or `dns` (every address of
    /// the single --engine-url's host, resolved again every 15 s).
    #[arg(
        long,
        env = "CAMUNDA_WORKER_ENGINE_DISCOVERY",
        value_enum,
        default_value_t
    )]
    pub engine_discovery: EngineDiscovery,

    /// Tasks in flight at once, at most (with --concurrency adaptive, the ceiling of the limit).
    #[arg(long, env = "CAMUNDA_WORKER_MAX_TASKS", value_name = "N", default_value = "64",
          value_parser = values::max_tasks)]
    pub max_tasks: NonZeroU32,

    /// How many tasks are in flight: `adaptive` (a limit found from the engine's latency, starting
    /// at 16, up to --max-tasks) or `fixed` (--max-tasks always).
    #[arg(long, env = "CAMUNDA_WORKER_CONCURRENCY", value_enum, default_value_t)]
    pub concurrency: Concurrency,

    /// Worker id for locks [default: hostname + random suffix]. Must be unique per replica.
    #[arg(long, env = "CAMUNDA_WORKER_WORKER_ID", value_parser = values::name)]
    pub worker_id: Option<String>,

    /// Variable set on completion, NAME=JSON (repeatable; replaces var1=1, var2="value").
    #[arg(long = "var", env = "CAMUNDA_WORKER_VAR", value_name = "NAME=JSON",
          value_parser = parse_variable)]
    pub variables: Vec<(String, crate::variables::TypedValue)>,

    /// How long a follow-up that finds no waiting instance is retried.
    #[arg(long, env = "CAMUNDA_WORKER_CORRELATION_TIMEOUT", value_name = "DURATION",
          default_value = "5m", value_parser = values::correlation_timeout)]
    pub correlation_timeout: Duration,

    /// Follow-ups held in memory at most; when that many wait, fetching pauses until there is room.
    #[arg(long, env = "CAMUNDA_WORKER_MAX_PENDING_FOLLOW_UPS", value_name = "N",
          default_value_t = crate::correlation::DEFAULT_CAPACITY,
          value_parser = values::max_pending_follow_ups)]
    pub max_pending_follow_ups: usize,

    /// Process variable that records, in the engine, each follow-up owed and delivered (set by
    /// complete, flipped by the message): the ledger that makes delivery exactly once.
    #[arg(long, env = "CAMUNDA_WORKER_MARKER_VARIABLE", value_name = "NAME",
          default_value = crate::ledger::DEFAULT_MARKER_VARIABLE, value_parser = parse_variable_name)]
    pub marker_variable: String,

    /// Engine requests per second the worker may spend on retries, recoveries and incidents
    /// (first attempts are not counted): what an undeliverable backlog can cost the engine.
    #[arg(long, env = "CAMUNDA_WORKER_RETRY_BUDGET", value_name = "N",
          default_value_t = crate::budget::DEFAULT_RETRY_BUDGET,
          value_parser = values::retry_budget)]
    pub retry_budget: u32,

    /// Variable the follow-up message carries, NAME=JSON (repeatable; typed like --var).
    #[arg(long = "message-var", env = "CAMUNDA_WORKER_MESSAGE_VAR", value_name = "NAME=JSON",
          value_parser = parse_variable)]
    pub message_variables: Vec<(String, crate::variables::TypedValue)>,

    /// The follow-up's work: a program run after the task is completed (no shell), the task as
    /// JSON on stdin, the message's variables as one JSON object on stdout.
    #[arg(long, env = "CAMUNDA_WORKER_FOLLOW_UP_COMMAND", value_name = "PROGRAM")]
    pub follow_up_command: Option<std::path::PathBuf>,

    /// An argument of --follow-up-command (repeatable, in order).
    #[arg(
        long = "follow-up-arg",
        env = "CAMUNDA_WORKER_FOLLOW_UP_ARG",
        value_name = "ARG",
        allow_hyphen_values = true,
        hide_env_values = true
    )]
    pub follow_up_args: Vec<String>,

    /// Process variable fetched with each task and given to --follow-up-command (repeatable).
    #[arg(long = "fetch-var", env = "CAMUNDA_WORKER_FETCH_VAR", value_name = "NAME",
          value_parser = parse_variable_name)]
    pub fetch_variables: Vec<String>,

    /// Environment variable --follow-up-command gets although the worker withholds it (its own
    /// CAMUNDA_WORKER_* settings and the credentials it holds); repeatable or comma-separated.
    #[arg(long = "pass-env", env = "CAMUNDA_WORKER_PASS_ENV", value_name = "NAME",
          value_delimiter = ',', value_parser = parse_variable_name)]
    pub pass_env: Vec<String>,

    /// How long one run of --follow-up-command may take before it is killed (and retried).
    #[arg(long, env = "CAMUNDA_WORKER_FOLLOW_UP_TIMEOUT", value_name = "DURATION",
          default_value = "10m", value_parser = values::follow_up_timeout)]
    pub follow_up_timeout: Duration,

    /// Runs of a failing follow-up work after the first, before an incident shows it.
    #[arg(
        long,
        env = "CAMUNDA_WORKER_FOLLOW_UP_RETRIES",
        value_name = "N",
        default_value_t = 3,
        value_parser = values::follow_up_retries
    )]
    pub follow_up_retries: u32,

    /// Follow-up works (commands) running at once; more wait, and count against
    /// --max-pending-follow-ups.
    #[arg(long, env = "CAMUNDA_WORKER_FOLLOW_UP_CONCURRENCY", value_name = "N",
          default_value_t = crate::correlation::DEFAULT_WORK_CONCURRENCY,
          value_parser = values::follow_up_concurrency)]
    pub follow_up_concurrency: usize,

    /// How long a running work's claim lasts unrenewed (renewed every quarter of it): after a
    /// crash, another worker runs the work again once it has run out.
    #[arg(long, env = "CAMUNDA_WORKER_FOLLOW_UP_LEASE", value_name = "DURATION",
          default_value = "1m", value_parser = values::follow_up_lease)]
    pub follow_up_lease: Duration,

    /// How the follow-up finds its instance: both (business key and process instance id),
    /// business-key or process-instance.
    #[arg(long, env = "CAMUNDA_WORKER_CORRELATE_BY", default_value = "both",
          value_parser = parse_correlate_by)]
    pub correlate_by: CorrelateBy,

    /// Hand out a topic's high-priority tasks first (fetchAndLock's `usePriority`): true or
    /// false. Worker-wide, since one fetch serves every route.
    #[arg(long, env = "CAMUNDA_WORKER_USE_PRIORITY", value_name = "BOOL", default_value = "true",
          action = ArgAction::Set, value_parser = clap::value_parser!(bool))]
    pub use_priority: bool,

    /// Order of the tasks a fetch hands out by their creation (fetchAndLock's `sorting`, Camunda
    /// 7.21+): none, create-time-asc (oldest first) or create-time-desc. After the priority
    /// when --use-priority is true. Worker-wide, since one fetch serves every route.
    #[arg(
        long,
        env = "CAMUNDA_WORKER_SORTING",
        value_name = "ORDER",
        default_value = "none",
        value_enum
    )]
    pub sorting: TaskOrder,

    /// Retries reported on a task's first failure.
    #[arg(long, env = "CAMUNDA_WORKER_RETRIES", value_name = "N", default_value = "3",
          value_parser = values::retries)]
    pub retries: i32,

    /// How long the engine waits before handing a failed task out again.
    #[arg(long, env = "CAMUNDA_WORKER_RETRY_TIMEOUT", value_name = "DURATION",
          default_value = "30s", value_parser = values::retry_timeout)]
    pub retry_timeout: Duration,

    /// Cap of the backoff while the engine is unavailable.
    #[arg(long, env = "CAMUNDA_WORKER_MAX_BACKOFF", value_name = "DURATION",
          default_value = "30s", value_parser = values::max_backoff)]
    pub max_backoff: Duration,

    /// On SIGTERM/SIGINT, how long running tasks and pending messages may take to finish.
    #[arg(long, env = "CAMUNDA_WORKER_SHUTDOWN_GRACE", value_name = "DURATION",
          default_value = "25s", value_parser = values::shutdown_grace)]
    pub shutdown_grace: Duration,

    /// How often to look for instances whose follow-up was lost (0 disables).
    #[arg(long, env = "CAMUNDA_WORKER_RECONCILE_INTERVAL", value_name = "DURATION",
          default_value = "30s", value_parser = values::reconcile_interval)]
    pub reconcile_interval: Duration,

    /// Print the effective configuration, and where each value came from, then exit.
    #[arg(long)]
    pub print_config: bool,
}

/// A process variable name: not empty, no spaces, control characters or colons.
pub(crate) fn parse_variable_name(text: &str) -> Result<String, String> {
    let name = text.trim();
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ':')
    {
        return Err(format!(
            "`{}` is not a variable name (no spaces or colons)",
            text.escape_debug()
        ));
    }
    Ok(name.to_owned())
}

fn parse_engine_url(text: &str) -> Result<Url, String> {
    values::http_url(text)
}

fn parse_variable(text: &str) -> Result<(String, crate::variables::TypedValue), String> {
    let (name, value) = crate::variables::parse_assignment(text)?;
    values::assigned_variable_name(&name)?;
    Ok((name, value))
}

fn parse_correlate_by(text: &str) -> Result<CorrelateBy, String> {
    CorrelateBy::parse(text.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse_in_humantime_form() {
        assert_eq!(
            values::correlation_delay("500ms"),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(
            values::correlation_delay("5m"),
            Ok(Duration::from_secs(300))
        );
        assert_eq!(values::correlation_delay("0s"), Ok(Duration::ZERO));
        assert!(values::correlation_delay("soon").is_err());
        assert!(values::long_poll("30m").is_ok());
        assert!(values::long_poll("31m").unwrap_err().contains("30m"));
        assert!(parse_engine_url("localhost:8080").is_err());
        assert!(parse_engine_url("http://localhost:8080/engine-rest/").is_ok());
    }
}
