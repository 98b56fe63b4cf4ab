//! A route's follow-up message: its name, its delay and the variables it carries — what a route
//! decides about the message, fully resolved when the configuration is built — and the request
//! that delivers it.

use std::time::Duration;

use crate::engine::CorrelateMessageRequest;
use crate::ledger::Marker;
use crate::variables::{TypedValue, Variables};

/// The message a route's follow-ups send.
#[derive(Debug, Clone, PartialEq)]
pub struct FollowUpMessage {
    /// The message name (`sample_response`).
    pub name: String,
    /// How long after the completion the message goes, at the earliest.
    pub delay: Duration,
    /// Variables every message carries (`--message-var`), besides the work's result.
    pub variables: Variables,
}

/// The message of a topic that no route names (a library user's `FollowUps::new`): the
/// defaults of `--message-name` and `--correlation-delay`.
impl Default for FollowUpMessage {
    fn default() -> Self {
        FollowUpMessage {
            name: "sample_response".to_owned(),
            delay: Duration::from_secs(2),
            variables: Variables::new(),
        }
    }
}

impl FollowUpMessage {
    /// The request that delivers `marker` (in `marker_variable`) to `process_instance_id` (and
    /// `business_key`, the original script's shape): matches only while the marker is owed, and
    /// flips it. Besides the marker's flip, the message carries its own variables and the work's
    /// `variables`.
    pub fn request(
        &self,
        marker_variable: &str,
        marker: &Marker,
        business_key: Option<String>,
        process_instance_id: Option<String>,
        variables: &Variables,
    ) -> CorrelateMessageRequest {
        let mut process_variables = self.variables.clone();
        process_variables.extend(variables.clone());
        process_variables.insert(
            marker_variable.to_owned(),
            TypedValue::string(marker.delivered().to_string()),
        );
        CorrelateMessageRequest {
            message_name: self.name.clone(),
            business_key,
            process_instance_id,
            correlation_keys: Variables::from([(
                marker_variable.to_owned(),
                TypedValue::string(marker.to_string()),
            )]),
            process_variables,
        }
    }
}
