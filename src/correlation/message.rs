//! A route's follow-up message: its name, its delay and the variables it carries — what a route
//! decides about the message, fully resolved when the configuration is built — and the request
//! that delivers it.

use std::time::Duration;

use super::CorrelationTarget;
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
    /// The request that delivers `marker` (in `marker_variable`) to `target`: matches only while
    /// the marker is owed, and flips it. Besides the marker's flip, the message carries its own
    /// variables and the work's `variables`. A target by business key alone is kept within its
    /// tenant (see [`CorrelationTarget::tenant_id`]).
    pub fn request(
        &self,
        marker_variable: &str,
        marker: &Marker,
        target: &CorrelationTarget,
        variables: &Variables,
    ) -> CorrelateMessageRequest {
        let mut process_variables = self.variables.clone();
        process_variables.extend(variables.clone());
        process_variables.insert(
            marker_variable.to_owned(),
            TypedValue::string(marker.delivered().to_string()),
        );
        // The instance id pins the tenant, and the engine refuses a tenant beside it.
        let by_key_alone = target.process_instance_id.is_none();
        CorrelateMessageRequest {
            message_name: self.name.clone(),
            business_key: target.business_key.clone(),
            process_instance_id: target.process_instance_id.clone(),
            tenant_id: target.tenant_id.clone().filter(|_| by_key_alone),
            without_tenant_id: by_key_alone && target.tenant_id.is_none(),
            correlation_keys: Variables::from([(
                marker_variable.to_owned(),
                TypedValue::string(marker.to_string()),
            )]),
            process_variables,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The correlate body for `target`, as the engine receives it.
    fn body(target: CorrelationTarget) -> serde_json::Value {
        let marker = Marker::owed("t", "task-1", Duration::ZERO);
        let request = FollowUpMessage::default().request("m", &marker, &target, &Variables::new());
        serde_json::to_value(request).expect("serializable")
    }

    fn target(
        key: Option<&str>,
        instance: Option<&str>,
        tenant: Option<&str>,
    ) -> CorrelationTarget {
        CorrelationTarget {
            business_key: key.map(str::to_owned),
            process_instance_id: instance.map(str::to_owned),
            tenant_id: tenant.map(str::to_owned),
        }
    }

    #[test]
    fn a_message_by_business_key_stays_within_the_tasks_tenant() {
        let tenant = body(target(Some("k"), None, Some("a")));
        assert_eq!(tenant["businessKey"], "k");
        assert_eq!(tenant["tenantId"], "a");
        assert!(tenant.get("withoutTenantId").is_none(), "{tenant}");
        let none = body(target(Some("k"), None, None));
        assert_eq!(none["withoutTenantId"], true);
        assert!(none.get("tenantId").is_none(), "{none}");
    }

    #[test]
    fn a_message_naming_the_instance_sends_no_tenant_since_the_engine_refuses_it() {
        for tenant in [Some("a"), None] {
            for key in [Some("k"), None] {
                let sent = body(target(key, Some("pi"), tenant));
                assert_eq!(sent["processInstanceId"], "pi");
                assert!(sent.get("tenantId").is_none(), "{sent}");
                assert!(sent.get("withoutTenantId").is_none(), "{sent}");
            }
        }
    }
}
