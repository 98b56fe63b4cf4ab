//! What the standard `OTEL_*` variables say about traces: off unless an OTLP endpoint is set, and
//! a setting the worker cannot use refused at start in one line that names the variable.

use std::time::Duration;

/// The exporter's request deadline when `OTEL_EXPORTER_OTLP_TIMEOUT` is not set (the
/// specification's default).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the environment says about traces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSettings {
    /// The deadline of one export request.
    pub timeout: Duration,
    /// `service.name`: `OTEL_SERVICE_NAME`, or `camunda-worker`.
    pub service_name: String,
}

/// A variable that cannot work, named.
#[derive(Debug, thiserror::Error)]
pub enum TraceSetupError {
    /// A variable's value is not one the worker can use.
    #[error("{variable}: {problem}")]
    Variable {
        /// The variable.
        variable: &'static str,
        /// What is wrong with it (never its value: an endpoint may hold credentials).
        problem: String,
    },
    /// The exporter could not be built.
    #[error("cannot start the trace exporter: {0}")]
    Exporter(String),
}

/// The first of `names` that is set and not empty, with its value.
fn first_set(
    env: &impl Fn(&str) -> Option<String>,
    names: &[&'static str],
) -> Option<(&'static str, String)> {
    names.iter().find_map(|name| {
        env(name)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (*name, v))
    })
}

impl TraceSettings {
    /// Reads the standard variables from the process's environment: `None` when traces are off.
    pub fn from_env() -> Result<Option<Self>, TraceSetupError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`TraceSettings::from_env`] over any lookup (tests).
    pub fn from_lookup(
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, TraceSetupError> {
        if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        if !exporter_is_otlp(&env)? {
            return Ok(None);
        }
        let endpoints = [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ];
        let Some((variable, endpoint)) = first_set(&env, &endpoints) else {
            return Ok(None);
        };
        check_endpoint(variable, &endpoint)?;
        check_protocol(&env)?;
        let service_name = first_set(&env, &["OTEL_SERVICE_NAME"])
            .map_or_else(|| "camunda-worker".to_owned(), |(_, name)| name);
        Ok(Some(TraceSettings {
            timeout: timeout(&env)?,
            service_name,
        }))
    }
}

/// Whether `OTEL_TRACES_EXPORTER` asks for OTLP (the default) rather than `none`.
fn exporter_is_otlp(env: &impl Fn(&str) -> Option<String>) -> Result<bool, TraceSetupError> {
    match first_set(env, &["OTEL_TRACES_EXPORTER"]) {
        None => Ok(true),
        Some((_, value)) if value.trim() == "otlp" => Ok(true),
        Some((_, value)) if value.trim() == "none" => Ok(false),
        Some((variable, value)) => Err(TraceSetupError::Variable {
            variable,
            problem: format!("`{}` is not supported (otlp or none)", value.trim()),
        }),
    }
}

/// An endpoint must be an http(s) URL with a host. The error never shows it: it may hold
/// credentials.
fn check_endpoint(variable: &'static str, endpoint: &str) -> Result<(), TraceSetupError> {
    match url::Url::parse(endpoint.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(()),
        _ => Err(TraceSetupError::Variable {
            variable,
            problem: "not an http:// or https:// URL".to_owned(),
        }),
    }
}

/// The worker speaks OTLP over HTTP/protobuf only.
fn check_protocol(env: &impl Fn(&str) -> Option<String>) -> Result<(), TraceSetupError> {
    let protocols = [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ];
    match first_set(env, &protocols) {
        Some((variable, protocol)) if protocol.trim() != "http/protobuf" => {
            Err(TraceSetupError::Variable {
                variable,
                problem: format!(
                    "`{}` is not supported: the worker sends OTLP over http/protobuf",
                    protocol.trim()
                ),
            })
        }
        _ => Ok(()),
    }
}

/// The export request's deadline: `OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT` in milliseconds.
fn timeout(env: &impl Fn(&str) -> Option<String>) -> Result<Duration, TraceSetupError> {
    let timeouts = [
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ];
    let Some((variable, millis)) = first_set(env, &timeouts) else {
        return Ok(DEFAULT_TIMEOUT);
    };
    match millis.trim().parse::<u64>() {
        Ok(millis) if millis > 0 => Ok(Duration::from_millis(millis)),
        _ => Err(TraceSetupError::Variable {
            variable,
            problem: format!("`{}` is not a number of milliseconds", millis.trim()),
        }),
    }
}
