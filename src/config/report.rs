//! What `--print-config` shows: every effective key with its value and where it came from,
//! secrets masked.

use std::io::{ErrorKind, Write};
use std::process::ExitCode;

use clap::CommandFactory;

use super::{Config, Layers, Source, NOT_IN_FILE, SECRET_KEYS};
use crate::cli::Cli;
use crate::route::{Route, RouteKind};
use crate::secret::mask_userinfo;
use crate::variables::Variables;
use crate::work::CommandHandler;

impl Layers {
    /// The effective configuration as `key = value  # source` lines, secrets masked.
    pub(super) fn report(
        &self,
        config: &Config,
        defaults: &Route,
        variables_source: Source,
    ) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(file) = &self.file {
            lines.push(format!("# config file: {}", file.path.display()));
        }
        self.push_flags(&mut lines, config);
        lines.push(format!("[variables]  # {}", variables_source.label()));
        push_variables(&mut lines, &defaults.variables);
        let message_source = self.message_variables_source();
        lines.push(format!("[message_variables]  # {}", message_source.label()));
        push_variables(&mut lines, &defaults.message.variables);
        if self.file.as_ref().is_some_and(|f| f.routes.is_some()) {
            for route in &config.routes {
                push_route(&mut lines, route);
            }
        }
        lines
    }

    /// One line per flag that has a value (the variable tables come after).
    fn push_flags(&self, lines: &mut Vec<String>, config: &Config) {
        let command = Cli::command();
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if NOT_IN_FILE.contains(&id) || id == "variables" || id == "message_variables" {
                continue;
            }
            let raw = [self.subcommand_matches(), &self.matches]
                .into_iter()
                .find_map(|m| m.try_get_raw(id).ok().flatten());
            let values: Vec<String> = match raw {
                // A URL's userinfo is a credential: shown masked.
                Some(raw) => raw.map(|v| mask_userinfo(&v.to_string_lossy())).collect(),
                None if id == "worker_id" => vec![config.worker.worker_id.clone()],
                None => continue,
            };
            let shown = if SECRET_KEYS.contains(&id) {
                "\"********\"".to_owned()
            } else if values.len() == 1 {
                toml_quote(&values[0])
            } else {
                let items: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
                format!("[{}]", items.join(", "))
            };
            let source = match (id, self.source(id)) {
                ("worker_id", Source::Default) => "generated".to_owned(),
                (_, source) => source.label().to_owned(),
            };
            lines.push(format!("{id} = {shown}  # {source}"));
        }
    }

    /// Where the top-level `[message_variables]` came from.
    fn message_variables_source(&self) -> Source {
        if !self.cli.daemon.message_variables.is_empty() {
            self.source("message_variables")
        } else if self
            .file
            .as_ref()
            .is_some_and(|f| f.message_variables.is_some())
        {
            Source::File
        } else {
            Source::Default
        }
    }
}

fn push_variables(lines: &mut Vec<String>, variables: &Variables) {
    for (name, value) in variables {
        lines.push(format!("{name} = {}  # {}", value.value, value.value_type));
    }
}

/// One route as the file would set it, every key given (the defaults filled in).
fn push_route(lines: &mut Vec<String>, route: &Route) {
    let duration = |d| format!("{:?}", humantime::format_duration(d).to_string());
    lines.push("[[route]]  # file".to_owned());
    lines.push(format!("topic = {:?}", route.topic));
    lines.push(format!("kind = {:?}", route.kind.name()));
    if let RouteKind::Complete(handler) = &route.kind {
        push_complete_route(lines, route, handler);
        return;
    }
    lines.push(format!("message_name = {:?}", route.message.name));
    lines.push(format!(
        "correlation_delay = {}",
        duration(route.message.delay)
    ));
    lines.push(format!("lock_duration = {}", duration(route.lock_duration)));
    match &route.follow_up_command {
        Some(command) => {
            let mut parts = vec![format!("{:?}", command.program.display().to_string())];
            parts.extend(command.args.iter().map(|a| format!("{a:?}")));
            lines.push(format!("follow_up_command = [{}]", parts.join(", ")));
            let fetched: Vec<String> = command
                .fetch_variables
                .iter()
                .map(|v| format!("{v:?}"))
                .collect();
            lines.push(format!("fetch_variables = [{}]", fetched.join(", ")));
            let passed: Vec<String> = command.pass_env.iter().map(|v| format!("{v:?}")).collect();
            lines.push(format!("pass_env = [{}]", passed.join(", ")));
        }
        None => lines.push("follow_up_command = []  # none: the delay alone".to_owned()),
    }
    lines.extend(super::route_filter::filter_lines(&route.filter));
    lines.push("[route.variables]".to_owned());
    push_variables(lines, &route.variables);
    lines.push("[route.message_variables]".to_owned());
    push_variables(lines, &route.message.variables);
}

/// A complete route's keys: its lock, its command and how its failures are reported.
fn push_complete_route(lines: &mut Vec<String>, route: &Route, handler: &CommandHandler) {
    let duration = |d| format!("{:?}", humantime::format_duration(d).to_string());
    let quoted = |items: &[String]| {
        items
            .iter()
            .map(|v| format!("{v:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let command = &handler.command;
    lines.push(format!("lock_duration = {}", duration(route.lock_duration)));
    let mut parts = vec![command.program.display().to_string()];
    parts.extend(command.args.iter().cloned());
    lines.push(format!("command = [{}]", quoted(&parts)));
    lines.push(format!(
        "fetch_variables = [{}]",
        quoted(&command.fetch_variables)
    ));
    lines.push(format!("pass_env = [{}]", quoted(&command.pass_env)));
    lines.push(format!("retries = {}", handler.retries));
    lines.push(format!(
        "retry_timeout = {}",
        duration(handler.retry_timeout)
    ));
}

fn toml_quote(value: &str) -> String {
    if value.parse::<i64>().is_ok() || value == "true" || value == "false" {
        value.to_owned()
    } else {
        format!("{value:?}")
    }
}

impl Config {
    /// Writes [`Config::describe`] to stdout for `--print-config`. A reader that closed the pipe
    /// early (`camunda-worker --print-config | head -1`) took what it wanted: exit 0, quietly, as
    /// the usual Unix tools do when SIGPIPE ends them — never a panic message. Any other write
    /// error (a full disk) is one line and exit 1.
    pub fn print_description(&self) -> ExitCode {
        let mut stdout = std::io::stdout().lock();
        let written = stdout
            .write_all(self.describe().as_bytes())
            .and_then(|()| stdout.flush());
        match written {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.kind() == ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "error: cannot write the configuration to stdout: {e}"
                );
                ExitCode::FAILURE
            }
        }
    }
}
