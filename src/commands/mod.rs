//! The subcommands other than the daemon: one file each. They print results on stdout (for
//! scripts) and logs on stderr.

pub mod deploy;
pub mod healthcheck;
pub mod start;
pub mod status;

/// The process this worker was built for, embedded so that `deploy` works from any directory
/// and inside a container image.
pub const BUNDLED_BPMN: &str = include_str!("../../bpmn/message-correlation.bpmn");

/// The file name the bundled process is deployed under.
pub const BUNDLED_BPMN_NAME: &str = "message-correlation.bpmn";
