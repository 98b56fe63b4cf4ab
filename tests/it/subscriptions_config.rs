//! The subscription keys and the fetch's order as configured: the exact fetchAndLock body they
//! make the worker send (mock engine), and the configurations refused at start — exit 2, one
//! line naming the culprit. That each field has its effect on the real engine is shown in
//! `subscriptions`, `subscriptions_payload` and `subscriptions_order`.

use std::time::Duration;

use serde_json::json;

use crate::cli::{config_file, rejects};
use crate::support::binary;
use crate::support::mock::MockEngine;

/// A route setting every subscription key, and a worker with `--sorting` and `--use-priority`:
/// each field under its REST name — the filter flat in the topic beside `topicName`, the order at
/// the top level — and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscription_key_and_the_order_are_sent_under_their_rest_names() {
    let engine = MockEngine::start(vec![]).await;
    let file = config_file(
        r#"
[[route]]
topic = "invoice"
message_name = "invoiced"
command = ["sh", "-c", "echo {}"]
fetch_variables = ["amount"]
tenant_ids = ["tenant-a", "tenant-b"]
process_definition_keys = ["billing"]
process_definition_ids = ["billing:3:abc"]
process_definition_version_tag = "v3"
business_key = "order-7"
process_variables = { region = "north", size = 3, ratio = 0.5, rush = true }
local_variables = true
include_extension_properties = true
deserialize_values = true
"#,
    );
    let fetch = engine
        .first_request(
            engine.worker(&[
                "--config",
                file.path().to_str().unwrap(),
                "--worker-id",
                "w-subs",
                "--max-tasks",
                "2",
                "--long-poll",
                "1500ms",
                "--lock-duration",
                "45s",
                "--use-priority",
                "false",
                "--sorting",
                "create-time-desc",
            ]),
            "/fetchAndLock",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(
        fetch.body,
        json!({
            "workerId": "w-subs",
            "maxTasks": 2,
            "usePriority": false,
            "asyncResponseTimeout": 1500,
            "sorting": [{"sortBy": "createTime", "sortOrder": "desc"}],
            "topics": [{
                "topicName": "invoice",
                "lockDuration": 45000,
                "variables": ["amount"],
                "tenantIdIn": ["tenant-a", "tenant-b"],
                "processDefinitionKeyIn": ["billing"],
                "processDefinitionIdIn": ["billing:3:abc"],
                "processDefinitionVersionTag": "v3",
                "businessKey": "order-7",
                "processVariables": {"ratio": 0.5, "region": "north", "rush": true, "size": 3},
                "localVariables": true,
                "includeExtensionProperties": true,
                "deserializeValues": true,
            }]
        })
    );
}

/// `without_tenant_id` is the one key the route above cannot set beside `tenant_ids`; and
/// `--sorting create-time-asc` is the other order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tenant_id_and_the_ascending_order_are_sent_under_their_rest_names() {
    let engine = MockEngine::start(vec![]).await;
    let file = config_file("[[route]]\ntopic = \"invoice\"\nwithout_tenant_id = true\n");
    let fetch = engine
        .first_request(
            engine.worker(&[
                "--config",
                file.path().to_str().unwrap(),
                "--sorting",
                "create-time-asc",
            ]),
            "/fetchAndLock",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(fetch.body["usePriority"], json!(true), "the default");
    assert_eq!(
        fetch.body["sorting"],
        json!([{"sortBy": "createTime", "sortOrder": "asc"}])
    );
    let topic = &fetch.body["topics"][0];
    assert_eq!(topic["withoutTenantId"], json!(true), "{topic}");
    assert_eq!(topic.get("tenantIdIn"), None, "{topic}");
}

/// Runs `--print-config` with `text` as the config file and `flags`; exit 2, one line with
/// every needle.
fn refused(text: &str, flags: &[&str], needles: &[&str]) {
    let file = config_file(text);
    let mut command = binary();
    command
        .args(["--config", file.path().to_str().unwrap(), "--print-config"])
        .args(flags);
    rejects(&mut command, needles);
}

#[test]
fn a_subscription_key_of_the_wrong_type_is_refused_naming_the_route_and_the_key() {
    let route = "[[route]]\ntopic = \"a\"\n";
    for (key_line, needles) in [
        (
            "local_variables = \"yes\"",
            &[
                "[[route]] #1 (topic \"a\")",
                "key `local_variables`",
                "true or false",
            ][..],
        ),
        (
            "tenant_ids = \"tenant-a\"",
            &["key `tenant_ids`", "list of strings"][..],
        ),
        (
            "process_variables = [\"region\"]",
            &["key `process_variables`", "must be a table"][..],
        ),
    ] {
        refused(&format!("{route}{key_line}\n"), &[], needles);
    }
}

#[test]
fn tenant_ids_with_without_tenant_id_are_refused_naming_both() {
    refused(
        "[[route]]\ntopic = \"a\"\ntenant_ids = [\"tenant-a\"]\nwithout_tenant_id = true\n",
        &[],
        &[
            "(topic \"a\")",
            "`tenant_ids`",
            "`without_tenant_id = true`",
        ],
    );
}

#[test]
fn an_unknown_route_key_is_refused_naming_it() {
    refused(
        "[[route]]\ntopic = \"a\"\ntenant_id = [\"tenant-a\"]\n",
        &[],
        &["(topic \"a\")", "unknown key `tenant_id`", "tenant_ids"],
    );
}

/// A filter belongs to one topic: at the top level it would filter every route's.
#[test]
fn a_subscription_key_at_the_top_level_is_refused_as_a_route_key() {
    refused(
        "business_key = \"order-7\"\n",
        &[],
        &["key `business_key`", "[[route]]"],
    );
}

#[test]
fn an_unknown_sorting_is_refused_naming_the_flag_or_the_key() {
    let choices = "(possible values: none, create-time-asc, create-time-desc)";
    refused(
        "",
        &["--sorting", "sideways"],
        &["--sorting", "sideways", choices],
    );
    refused(
        "sorting = \"upwards\"\n",
        &[],
        &["key `sorting`", "upwards", choices],
    );
    refused(
        "",
        &["--use-priority", "maybe"],
        &["--use-priority", "maybe"],
    );
}
