//! Which of a topic's tasks one fetch may hand out: the per-topic fields of
//! `POST /external-task/fetchAndLock` beside `topicName`, named exactly as the REST API names them.
//!
//! The engine ignores a field it does not know, silently: a misspelled name here would fetch every
//! task of the topic. So each field is serialized under its REST name and left out when unset, and
//! every one is checked against the real engine: the filters in tests/it/subscriptions.rs, what
//! the last three bring with a task in tests/it/subscriptions_payload.rs; the exact body is pinned
//! in tests/it/subscriptions_config.rs.

use std::collections::BTreeMap;

use serde::Serialize;

/// The filter of one route's topic in the fetch; the default filters nothing.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FetchFilter {
    /// Only tasks of these tenants (`tenantIdIn`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id_in: Option<Vec<String>>,
    /// Only tasks without a tenant (`withoutTenantId`); contradicts `tenant_id_in`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub without_tenant_id: bool,
    /// Only tasks of these process definition keys (`processDefinitionKeyIn`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_definition_key_in: Option<Vec<String>>,
    /// Only tasks of these process definition ids (`processDefinitionIdIn`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_definition_id_in: Option<Vec<String>>,
    /// Only tasks of definitions with this version tag (`processDefinitionVersionTag`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_definition_version_tag: Option<String>,
    /// Only the task of the instance with this business key (`businessKey`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub business_key: Option<String>,
    /// Only tasks whose process variables have these values (`processVariables`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_variables: Option<BTreeMap<String, serde_json::Value>>,
    /// Fetch only the variables local to the task's execution (`localVariables`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub local_variables: bool,
    /// Hand out the service task's BPMN extension properties (`includeExtensionProperties`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub include_extension_properties: bool,
    /// Serialized object variables deserialized by the engine (`deserializeValues`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deserialize_values: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_filter_adds_no_field_to_the_fetch() {
        let json = serde_json::to_value(FetchFilter::default()).expect("serializable");
        assert_eq!(json, serde_json::json!({}));
    }

    #[test]
    fn each_field_carries_its_rest_name() {
        let filter = FetchFilter {
            tenant_id_in: Some(vec!["a".into()]),
            without_tenant_id: true,
            process_definition_key_in: Some(vec!["k".into()]),
            process_definition_id_in: Some(vec!["k:1:x".into()]),
            process_definition_version_tag: Some("v1".into()),
            business_key: Some("b".into()),
            process_variables: Some(BTreeMap::from([("x".into(), serde_json::json!(1))])),
            local_variables: true,
            include_extension_properties: true,
            deserialize_values: true,
        };
        let json = serde_json::to_value(filter).expect("serializable");
        let mut names: Vec<&str> = json
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "businessKey",
                "deserializeValues",
                "includeExtensionProperties",
                "localVariables",
                "processDefinitionIdIn",
                "processDefinitionKeyIn",
                "processDefinitionVersionTag",
                "processVariables",
                "tenantIdIn",
                "withoutTenantId",
            ]
        );
    }
}
