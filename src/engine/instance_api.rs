//! The calls about process instances that keep the follow-up ledger: an instance's variables
//! (the marker, the variables a recovered follow-up's work reads), markers by value across
//! instances, where an instance waits, and the incidents a follow-up raises.

use super::dto::*;
use super::endpoint::Endpoint;
use super::error::EngineError;
use super::transport::{expect_no_content, json_body, read_json, Call};
use super::{EngineClient, TenantScope};
use crate::variables::{TypedValue, Variables};

impl EngineClient {
    /// The value of one process instance's String variable `name` (the follow-up marker); `None`
    /// when the instance has no such variable — or has ended.
    pub async fn instance_variable(
        &self,
        process_instance_id: &str,
        name: &str,
    ) -> Result<Option<String>, EngineError> {
        let found: Vec<VariableInstance> = self
            .get_json(
                Endpoint::VariableInstances,
                "",
                &[
                    ("processInstanceIdIn", process_instance_id.to_owned()),
                    ("variableName", name.to_owned()),
                    ("deserializeValues", "false".to_owned()),
                ],
            )
            .await?;
        Ok(found
            .into_iter()
            .find(|v| v.process_instance_id.as_deref() == Some(process_instance_id))
            .and_then(|v| v.value.as_str().map(str::to_owned)))
    }

    /// Variables `name` (of any instance of the `tenants`' `tenantIdIn`) whose String value lies
    /// in `[from, to)`, one page, oldest first. The engine compares String values as text, so
    /// with fixed-width numbers in the value this is a range of due times. A scope without
    /// tenant is the caller's to apply (see [`TenantScope`]).
    pub async fn variables_in_range(
        &self,
        name: &str,
        (from, to): (&str, &str),
        tenants: &TenantScope,
        first_result: u64,
        max_results: u64,
    ) -> Result<Vec<VariableInstance>, EngineError> {
        let call = Call::new(Endpoint::VariableInstanceQuery, "");
        let mut body = range_query(name, from, to);
        tenants.limit_query(&mut body);
        body["sorting"] = serde_json::json!([{"sortBy": "variableName", "sortOrder": "asc"}]);
        let reply = self
            .send_any(&call, |request| {
                request
                    .query(&[
                        ("firstResult", first_result.to_string()),
                        ("maxResults", max_results.to_string()),
                        ("deserializeValues", "false".to_owned()),
                    ])
                    .json(&body)
            })
            .await?;
        read_json(&call, reply).await
    }

    /// The String variables `name` of the `instances` (one query, at most a page of them), each
    /// with its instance: the leases of the markers a reconciler found, or the markers of the
    /// leases it found.
    pub async fn variables_of_instances(
        &self,
        name: &str,
        instances: &[&str],
    ) -> Result<Vec<VariableInstance>, EngineError> {
        if instances.is_empty() {
            return Ok(Vec::new());
        }
        let call = Call::new(Endpoint::VariableInstanceQuery, "");
        let body = serde_json::json!({"variableName": name, "processInstanceIdIn": instances});
        let reply = self
            .send_any(&call, |request| {
                request
                    .query(&[
                        ("maxResults", instances.len().to_string()),
                        ("deserializeValues", "false".to_owned()),
                    ])
                    .json(&body)
            })
            .await?;
        let found: Vec<VariableInstance> = read_json(&call, reply).await?;
        // The query cannot be trusted to have applied a filter it does not know: keep only what
        // was asked for.
        Ok(found
            .into_iter()
            .filter(|v| {
                v.name == name
                    && v.process_instance_id
                        .as_deref()
                        .is_some_and(|id| instances.contains(&id))
            })
            .collect())
    }

    /// Where one process instance waits for a message (any name): what the instances wait for
    /// when `--message-name` matches nothing, and the execution an incident goes to.
    pub async fn instance_message_waits(
        &self,
        process_instance_id: &str,
    ) -> Result<Vec<EventSubscription>, EngineError> {
        self.get_json(
            Endpoint::EventSubscriptions,
            "",
            &[
                ("eventType", "message".to_owned()),
                ("processInstanceId", process_instance_id.to_owned()),
            ],
        )
        .await
    }

    /// Raises an incident of `incident_type` on an execution; Cockpit shows it with `message`.
    pub async fn create_incident(
        &self,
        execution_id: &str,
        incident_type: &str,
        configuration: &str,
        message: &str,
    ) -> Result<(), EngineError> {
        let call = Call::new(Endpoint::CreateIncident, execution_id);
        let body = serde_json::json!({
            "incidentType": incident_type,
            "configuration": configuration,
            "message": message,
        });
        let reply = self.send_any(&call, json_body(Some(&body))).await?;
        read_json::<serde_json::Value>(&call, reply).await.map(drop)
    }

    /// The open incidents of `incident_type` on process instance `process_instance_id`, as
    /// (configuration, id).
    pub async fn open_incidents_of_instance(
        &self,
        incident_type: &str,
        process_instance_id: &str,
    ) -> Result<Vec<(String, String)>, EngineError> {
        self.open_incidents(&[
            ("incidentType", incident_type.to_owned()),
            ("processInstanceId", process_instance_id.to_owned()),
        ])
        .await
    }

    /// Resolves one incident.
    pub async fn delete_incident(&self, incident_id: &str) -> Result<(), EngineError> {
        self.task_action::<()>(Endpoint::DeleteIncident, incident_id, None)
            .await
    }

    /// How many variables `name` (of the `tenants`' `tenantIdIn`) have a String value in
    /// `[from, to)` (`status`: follow-ups owed, overdue, failed).
    pub async fn count_variables_in_range(
        &self,
        name: &str,
        (from, to): (&str, &str),
        tenants: &TenantScope,
    ) -> Result<u64, EngineError> {
        let call = Call::new(Endpoint::VariableInstanceCount, "");
        let mut body = range_query(name, from, to);
        tenants.limit_query(&mut body);
        let reply = self.send_any(&call, json_body(Some(&body))).await?;
        let count: Count = read_json(&call, reply).await?;
        Ok(count.count)
    }

    /// How many incidents of `incident_type` are open.
    pub async fn count_incidents_of(&self, incident_type: &str) -> Result<u64, EngineError> {
        let count: Count = self
            .get_json(
                Endpoint::IncidentCount,
                "",
                &[("incidentType", incident_type.to_owned())],
            )
            .await?;
        Ok(count.count)
    }

    /// Sets one variable of a process instance (the marker's lease, a failed follow-up).
    pub async fn set_instance_variable(
        &self,
        process_instance_id: &str,
        name: &str,
        value: &TypedValue,
    ) -> Result<(), EngineError> {
        let call = Call::new(Endpoint::ModifyInstanceVariables, process_instance_id);
        let body = serde_json::json!({ "modifications": { name: value } });
        expect_no_content(&call, self.send_any(&call, json_body(Some(&body))).await?).await
    }

    /// The variables `names` of a process instance, typed as stored; `None` when the instance has
    /// ended.
    pub async fn instance_variables(
        &self,
        process_instance_id: &str,
        names: &[String],
    ) -> Result<Option<Variables>, EngineError> {
        if names.is_empty() {
            return Ok(Some(Variables::new()));
        }
        let found = self
            .get_json(
                Endpoint::InstanceVariables,
                process_instance_id,
                &[
                    ("variableNames", names.join(",")),
                    ("deserializeValues", "false".to_owned()),
                ],
            )
            .await;
        match found {
            Ok(variables) => Ok(Some(variables)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A running process instance (its business key), `None` when it has ended.
    pub async fn process_instance(
        &self,
        process_instance_id: &str,
    ) -> Result<Option<ProcessInstance>, EngineError> {
        match self
            .get_json(Endpoint::ProcessInstance, process_instance_id, &[])
            .await
        {
            Ok(instance) => Ok(Some(instance)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The open incidents of `incident_type`, at most `max_results` of them, as (configuration,
    /// id): which follow-ups an operator resolved, and which have more than one open.
    pub async fn open_incidents_of(
        &self,
        incident_type: &str,
        max_results: usize,
    ) -> Result<Vec<(String, String)>, EngineError> {
        self.open_incidents(&[
            ("incidentType", incident_type.to_owned()),
            ("maxResults", max_results.to_string()),
        ])
        .await
    }

    /// The open incidents `query` finds, as (configuration, id).
    async fn open_incidents(
        &self,
        query: &[(&str, String)],
    ) -> Result<Vec<(String, String)>, EngineError> {
        let found: Vec<serde_json::Value> = self.get_json(Endpoint::Incidents, "", query).await?;
        Ok(found
            .iter()
            .filter_map(|i| {
                let configuration = i["configuration"].as_str()?;
                let id = i["id"].as_str()?;
                Some((configuration.to_owned(), id.to_owned()))
            })
            .collect())
    }
}

/// The variable-instance query of variables `name` whose String value lies in `[from, to)`.
fn range_query(name: &str, from: &str, to: &str) -> serde_json::Value {
    serde_json::json!({
        "variableName": name,
        "variableValues": [
            {"name": name, "operator": "gteq", "value": from},
            {"name": name, "operator": "lt", "value": to},
        ],
    })
}
