//! The work as a program (`--follow-up-command`): run without a shell, fed the completed task as
//! one JSON object on stdin, printing the follow-up message's variables as one JSON object on
//! stdout (typed like `--var`). Each stderr line goes to the log, in the follow-up's span, bounded
//! and rate-limited ([`super::relay`]); the last one is what an incident shows when the program
//! keeps failing.
//!
//! A non-zero exit, a timeout, stdout that is not a JSON object, or stdout over
//! [`MAX_OUTPUT_BYTES`] is a failure, retried by the follow-up. At shutdown the program gets
//! SIGTERM when the grace begins, and is killed when the follow-up is abandoned at its end. The
//! program runs in a process group of its own, and both signals go to the whole group: a shell
//! script's children end with it instead of outliving the worker and holding its pipes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio_util::sync::CancellationToken;

use super::environment::command_environment;
use super::{CompletedTask, FollowUpWork, WorkError};
use crate::traces;
use crate::variables::{TypedValue, Variables};

/// The most a command may print on stdout: the message's variables, not a data transfer.
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;

/// A program as the follow-up's work.
#[derive(Debug, Clone)]
pub struct CommandWork {
    /// The program (a path, or a name found in `PATH`).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// How long one run may take (`--follow-up-timeout`).
    pub timeout: Duration,
    /// The variables it reads (`--fetch-var`).
    pub fetch_variables: Vec<String>,
    /// Variables of the worker's environment it gets although they are withheld (`--pass-env`,
    /// see [`super::environment`]).
    pub pass_env: Vec<String>,
    /// Variables of the worker's environment that hold one of the worker's secrets, withheld
    /// (found at start, see [`super::environment::holding_secrets`]).
    pub withheld_env: Vec<String>,
}

/// Checks at start that `program` can be run: a path must name an executable file, a bare name
/// must be found in `PATH`. The error names the program and what is wrong with it.
pub fn check_program(program: &Path) -> Result<PathBuf, String> {
    let shown = program.display();
    let candidates: Vec<PathBuf> = if program.components().count() > 1 {
        vec![program.to_owned()]
    } else {
        std::env::var_os("PATH")
            .map(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join(program))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut found_unexecutable = false;
    for candidate in &candidates {
        let Ok(meta) = std::fs::metadata(candidate) else {
            continue;
        };
        if meta.is_file() && is_executable(&meta) {
            return Ok(candidate.clone());
        }
        found_unexecutable = true;
    }
    Err(if found_unexecutable {
        format!("{shown} is not an executable file (chmod +x it, or name its interpreter first)")
    } else if candidates.len() == 1 {
        format!("{shown} does not exist")
    } else {
        format!("{shown} is not found in PATH")
    })
}

#[cfg(unix)]
fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_: &std::fs::Metadata) -> bool {
    true
}

impl CommandWork {
    /// The program as messages name it.
    pub(super) fn name(&self) -> String {
        self.program.display().to_string()
    }

    /// Starts the program with the environment it may see, its three pipes, in a process group of
    /// its own.
    fn spawn(&self, name: &str) -> Result<Child, WorkError> {
        let environment =
            command_environment(std::env::vars_os(), &self.pass_env, &self.withheld_env);
        // With traces on, the command's own spans join the follow-up's trace.
        let traceparent = traces::traceparent(&tracing::Span::current());
        Command::new(&self.program)
            .args(&self.args)
            .env_clear()
            .envs(environment)
            .envs(traceparent.map(|value| ("TRACEPARENT", value)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Dropped when the shutdown grace is over: the program must not outlive the worker.
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .map_err(|e| WorkError::transient(format!("{name}: cannot start: {e}")))
    }

    /// Runs `work` (the program's run, to its exit) within `--follow-up-timeout`; at shutdown the
    /// program's group gets SIGTERM once, and the run goes on until it ends or the timeout.
    async fn within_timeout<T>(
        &self,
        name: &str,
        pid: Option<u32>,
        work: impl std::future::Future<Output = T>,
        shutdown: &CancellationToken,
    ) -> Result<T, WorkError> {
        tokio::pin!(work);
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        let mut terminated = false;
        loop {
            tokio::select! {
                done = &mut work => return Ok(done),
                () = &mut deadline => {
                    // Dropping the run drops its wait on the child, which is killed with it
                    // (kill_on_drop), its group too (see `Group`).
                    return Err(WorkError::transient(format!(
                        "{name} did not finish within --follow-up-timeout {}; killed",
                        humantime::format_duration(self.timeout)
                    )));
                }
                () = shutdown.cancelled(), if !terminated => {
                    terminated = true;
                    if let Some(pid) = pid {
                        signal_group(pid, Signal::Terminate);
                    }
                }
            }
        }
    }
}

impl FollowUpWork for CommandWork {
    fn variables_to_fetch(&self) -> Vec<String> {
        self.fetch_variables.clone()
    }

    async fn run(
        &self,
        task: &CompletedTask,
        shutdown: &CancellationToken,
    ) -> Result<Variables, WorkError> {
        let name = self.name();
        let input = serde_json::to_vec(task).unwrap_or_default();
        let exited = self.execute(input, shutdown).await?;
        ended(&name, exited.status, exited.output, &exited.last_stderr)
    }
}

/// How one run of the program ended, before anyone judged it: the follow-up's work and the
/// `complete` route's handler read the same run differently.
pub(super) struct Exited {
    /// The exit status (or why it could not be had).
    pub status: std::io::Result<std::process::ExitStatus>,
    /// Stdout, at most [`MAX_OUTPUT_BYTES`] and one byte more.
    pub output: std::io::Result<Vec<u8>>,
    /// The last stderr line: what a failure shows.
    pub last_stderr: String,
}

impl CommandWork {
    /// Runs the program once, `input` on its stdin, to its exit or the timeout (an error then).
    /// Should the run be dropped before the program ended, its whole group is killed.
    pub(super) async fn execute(
        &self,
        input: Vec<u8>,
        shutdown: &CancellationToken,
    ) -> Result<Exited, WorkError> {
        let name = self.name();
        let mut child = self.spawn(&name)?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(WorkError::transient(format!("{name}: no pipes")));
        };
        let pid = child.id();
        // Should this run be dropped before the program ended (timeout, end of the grace), its
        // whole group is killed, not only the program itself.
        let mut group = Group { pid, armed: true };
        let work = async {
            // Bounded lines, invalid UTF-8 replaced, rate-limited: see `relay`.
            let read_stderr = super::relay::relay_stderr(BufReader::new(stderr));
            let ((), output, last_stderr) =
                tokio::join!(feed(stdin, input), read_stdout(stdout), read_stderr);
            (output, last_stderr, child.wait().await)
        };
        let (output, last_stderr, status) = self.within_timeout(&name, pid, work, shutdown).await?;
        group.armed = false;
        Ok(Exited {
            status,
            output,
            last_stderr,
        })
    }
}

/// Writes the completed task to the program's stdin and closes it.
async fn feed(mut stdin: ChildStdin, input: Vec<u8>) {
    // A program that does not read its input closes the pipe early: not an error.
    let _ = stdin.write_all(&input).await;
    drop(stdin);
}

/// Reads the program's stdout, at most [`MAX_OUTPUT_BYTES`] and one byte more (to tell that it
/// was over).
async fn read_stdout(stdout: ChildStdout) -> std::io::Result<Vec<u8>> {
    let mut output = Vec::new();
    let limit = u64::try_from(MAX_OUTPUT_BYTES).unwrap_or(u64::MAX) + 1;
    let mut limited = stdout.take(limit);
    limited.read_to_end(&mut output).await?;
    // Past the bound the rest is read and dropped, so that the program is not left blocked on a
    // full pipe (and the failure is reported now, not at the timeout).
    tokio::io::copy(&mut limited.into_inner(), &mut tokio::io::sink()).await?;
    Ok(output)
}

/// The run's result from how the program ended: its exit status, its stdout, and the last
/// stderr line (which a failure names).
fn ended(
    name: &str,
    status: std::io::Result<std::process::ExitStatus>,
    output: std::io::Result<Vec<u8>>,
    last_stderr: &str,
) -> Result<Variables, WorkError> {
    let status = status.map_err(|e| WorkError::transient(format!("{name}: {e}")))?;
    let because = |what: String| {
        if last_stderr.is_empty() {
            what
        } else {
            format!("{what}: {last_stderr}")
        }
    };
    if !status.success() {
        let what = match status.code() {
            Some(code) => format!("{name} exited with status {code}"),
            None => format!("{name} was ended by a signal"),
        };
        return Err(WorkError::transient(because(what)));
    }
    let output = output.map_err(|e| WorkError::transient(format!("{name}: stdout: {e}")))?;
    if output.len() > MAX_OUTPUT_BYTES {
        return Err(WorkError::transient(format!(
            "{name} printed more than {MAX_OUTPUT_BYTES} bytes on stdout; print only the message's variables as one JSON object"
        )));
    }
    parse_output(&output).map_err(|what| WorkError::transient(format!("{name}: {what}")))
}

/// The message's variables from a command's stdout: one JSON object, each member typed like
/// `--var`.
pub(super) fn parse_output(output: &[u8]) -> Result<Variables, String> {
    let text = String::from_utf8_lossy(output);
    if text.trim().is_empty() {
        return Err("printed nothing on stdout; print one JSON object, e.g. {}".to_owned());
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(members)) => Ok(members
            .into_iter()
            .map(|(name, value)| (name, TypedValue::from_json(value)))
            .collect()),
        Ok(other) => Err(format!(
            "stdout is JSON but not an object (it starts {}); print one JSON object",
            other.to_string().chars().take(40).collect::<String>()
        )),
        Err(e) => Err(format!("stdout is not JSON ({e}); print one JSON object")),
    }
}

/// The signals a program's group gets.
#[derive(Debug, Clone, Copy)]
enum Signal {
    /// Stop soon: the shutdown grace begins.
    Terminate,
    /// Stop now: the run was abandoned.
    Kill,
}

/// Signals the process group the program leads (it was started with `process_group(0)`).
fn signal_group(pid: u32, signal: Signal) {
    #[cfg(unix)]
    if let Ok(pid) = i32::try_from(pid) {
        use nix::sys::signal::{killpg, Signal as Sig};
        let sig = match signal {
            Signal::Terminate => Sig::SIGTERM,
            Signal::Kill => Sig::SIGKILL,
        };
        // The group is gone once all its processes have ended: nothing to do then.
        let _ = killpg(nix::unistd::Pid::from_raw(pid), sig);
    }
    #[cfg(not(unix))]
    let _ = (pid, signal);
}

/// Kills the program's whole group when a run is abandoned before the program ended.
struct Group {
    pid: Option<u32>,
    armed: bool,
}

impl Drop for Group {
    fn drop(&mut self) {
        if let (true, Some(pid)) = (self.armed, self.pid) {
            signal_group(pid, Signal::Kill);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdout_must_be_one_json_object_whose_members_are_typed_like_var() {
        let variables = parse_output(br#"{"n": 1, "big": 9999999999, "s": "x"}"#).unwrap();
        assert_eq!(variables["n"].value_type, "Integer");
        assert_eq!(variables["big"].value_type, "Long");
        assert_eq!(variables["s"].value_type, "String");
        assert!(parse_output(b"[1]").unwrap_err().contains("not an object"));
        assert!(parse_output(b"ok").unwrap_err().contains("not JSON"));
        assert!(parse_output(b"  \n")
            .unwrap_err()
            .contains("printed nothing"));
    }

    #[test]
    fn a_program_is_checked_at_start() {
        assert!(check_program(Path::new("sh")).is_ok(), "sh is in PATH");
        let missing = check_program(Path::new("/nonexistent/prog")).unwrap_err();
        assert!(missing.contains("does not exist"), "{missing}");
        let not_found = check_program(Path::new("no-such-program-xyz")).unwrap_err();
        assert!(not_found.contains("not found in PATH"), "{not_found}");
        let not_executable = check_program(Path::new("Cargo.toml")).unwrap_err();
        assert!(
            not_executable.contains("not found in PATH")
                || not_executable.contains("not an executable"),
            "{not_executable}"
        );
        let dir = std::env::temp_dir().join(format!("cw-check-{}", std::process::id()));
        std::fs::write(&dir, "x").unwrap();
        let plain = check_program(&dir).unwrap_err();
        std::fs::remove_file(&dir).unwrap();
        assert!(plain.contains("not an executable file"), "{plain}");
    }
}
