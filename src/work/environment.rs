//! The follow-up command's environment: the worker's own, without what is the worker's alone.
//!
//! A follow-up command is the user's program, often a script that calls other systems; it needs
//! `PATH`, `HOME`, proxies and its own variables, but not the worker's settings
//! (`CAMUNDA_WORKER_*`, the engine password among them) nor the credentials the worker holds. It
//! gets the worker's environment minus:
//! - every `CAMUNDA_WORKER_*` variable;
//! - every OpenTelemetry exporter setting (`OTEL_EXPORTER_*`: the headers carry collector
//!   credentials, an endpoint may too);
//! - a `TRACEPARENT` or `TRACESTATE` the worker was started with: with traces on, the command
//!   gets the `TRACEPARENT` of its own follow-up's `work` span instead (see [`crate::traces`]);
//! - every variable whose value holds one of the worker's secrets (a password given as
//!   `--password "$DB_PASSWORD"` leaves `DB_PASSWORD` behind).
//!
//! Variables named in `pass_env` (`--pass-env`, or a route's `pass_env`) are passed on anyway: a
//! route that needs one says so.

use std::ffi::OsString;

/// The shortest secret looked for inside other values: shorter ones are matched whole, so that
/// a one-letter password does not withhold every variable that contains the letter.
const MIN_SECRET_SEARCHED: usize = 6;

/// Whether a variable of this name is withheld from the command by its name alone.
pub fn withheld_by_name(name: &str) -> bool {
    name.starts_with("CAMUNDA_WORKER_")
        || name.starts_with("OTEL_EXPORTER_")
        || name == "TRACEPARENT"
        || name == "TRACESTATE"
}

/// The names of the variables of `environment` whose values hold one of `secrets`: read at start,
/// so that the secrets themselves need not stay with the command.
pub fn holding_secrets(
    environment: impl IntoIterator<Item = (OsString, OsString)>,
    secrets: &[&str],
) -> Vec<String> {
    let secrets: Vec<&str> = secrets.iter().copied().filter(|s| !s.is_empty()).collect();
    environment
        .into_iter()
        .filter_map(|(name, value)| {
            let value = value.to_string_lossy();
            let holds = secrets.iter().any(|secret| {
                *secret == value || (secret.len() >= MIN_SECRET_SEARCHED && value.contains(secret))
            });
            holds.then(|| name.to_string_lossy().into_owned())
        })
        .collect()
}

/// The command's environment: `environment` without the withheld variables (by name, or named in
/// `holding`), except those in `pass`.
pub fn command_environment(
    environment: impl IntoIterator<Item = (OsString, OsString)>,
    pass: &[String],
    holding: &[String],
) -> Vec<(OsString, OsString)> {
    environment
        .into_iter()
        .filter(|(name, _)| {
            let name = name.to_string_lossy();
            pass.iter().any(|p| *p == name)
                || !(withheld_by_name(&name) || holding.iter().any(|h| *h == name))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(n, v)| (OsString::from(n), OsString::from(v)))
            .collect()
    }

    #[test]
    fn the_worker_s_settings_and_credentials_are_withheld_unless_passed_on() {
        let environment = env(&[
            ("PATH", "/usr/bin"),
            ("CAMUNDA_WORKER_PASSWORD", "hunter22"),
            ("CAMUNDA_WORKER_TOPIC", "t"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer x"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                "authorization=Bearer x",
            ),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://u:p@collector"),
            ("OTEL_SERVICE_NAME", "w"),
            (
                "TRACEPARENT",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("DB_PASSWORD", "hunter22"),
            ("DSN", "postgres://u:hunter22@db/x"),
            ("SHORT", "ab"),
        ]);
        let holding = holding_secrets(environment.clone(), &["hunter22", "a"]);
        assert_eq!(holding, ["CAMUNDA_WORKER_PASSWORD", "DB_PASSWORD", "DSN"]);
        let names = |pass: &[String]| -> Vec<String> {
            command_environment(environment.clone(), pass, &holding)
                .into_iter()
                .map(|(n, _)| n.into_string().unwrap())
                .collect()
        };
        assert_eq!(names(&[]), ["PATH", "OTEL_SERVICE_NAME", "SHORT"]);
        assert_eq!(
            names(&["CAMUNDA_WORKER_TOPIC".to_owned(), "DSN".to_owned()]),
            [
                "PATH",
                "CAMUNDA_WORKER_TOPIC",
                "OTEL_SERVICE_NAME",
                "DSN",
                "SHORT"
            ]
        );
    }
}
