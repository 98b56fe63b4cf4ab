//! The command contract of a `complete` route, each case a tiny `sh -c` program run for real.

use std::path::PathBuf;
use std::time::Duration;

use super::*;

/// A handler running `sh -c script` with 2 retries and a 7 s retry timeout.
fn handler(script: &str) -> CommandHandler {
    CommandHandler {
        command: CommandWork {
            program: PathBuf::from("sh"),
            args: vec!["-c".to_owned(), script.to_owned()],
            timeout: Duration::from_secs(10),
            fetch_variables: Vec::new(),
            pass_env: Vec::new(),
            withheld_env: Vec::new(),
        },
        retries: 2,
        retry_timeout: Duration::from_secs(7),
    }
}

fn task(retries: Option<i32>) -> ExternalTask {
    serde_json::from_value(serde_json::json!({
        "id": "t1",
        "topicName": "plain",
        "businessKey": "k1",
        "processInstanceId": "p1",
        "retries": retries,
    }))
    .expect("valid task")
}

async fn run(script: &str) -> Result<TaskResult, HandlerError> {
    handler(script).handle(&task(None)).await
}

#[tokio::test]
async fn exit_0_with_an_object_completes_with_typed_variables_and_no_follow_up() {
    let result = run(r#"cat >/dev/null; echo '{"n": 42, "s": "x", "big": 9999999999}'"#).await;
    let Ok(TaskResult::Complete {
        variables,
        follow_up,
    }) = result
    else {
        panic!("must complete: {result:?}");
    };
    assert_eq!(follow_up, None);
    assert_eq!(variables["n"], TypedValue::integer(42));
    assert_eq!(variables["s"], TypedValue::string("x"));
    assert_eq!(variables["big"].value_type, "Long");
}

#[tokio::test]
async fn the_task_reaches_the_command_on_stdin() {
    let result = run(r#"read -r task; case "$task" in *'"businessKey":"k1"'*) echo '{"saw": true}';; *) echo "$task" >&2; exit 3;; esac"#).await;
    let Ok(TaskResult::Complete { variables, .. }) = result else {
        panic!("must complete: {result:?}");
    };
    assert_eq!(variables["saw"].value, serde_json::json!(true));
}

#[tokio::test]
async fn a_bpmn_error_object_is_a_bpmn_error_with_its_variables() {
    let result = run(
        r#"echo '{"bpmnError": {"code": "NOT_FOUND", "message": "no such order", "variables": {"reason": "gone"}}}'"#,
    )
    .await;
    assert_eq!(
        result,
        Ok(TaskResult::BpmnError {
            code: "NOT_FOUND".to_owned(),
            message: "no such order".to_owned(),
            variables: Variables::from([("reason".to_owned(), TypedValue::string("gone"))]),
        })
    );
    let bare = run(r#"echo '{"bpmnError": {"code": "E1"}}'"#).await;
    assert!(
        matches!(&bare, Ok(TaskResult::BpmnError { code, message, variables }) if code == "E1" && message.is_empty() && variables.is_empty()),
        "{bare:?}"
    );
}

#[tokio::test]
async fn a_bpmn_error_without_a_code_is_a_failure_naming_it() {
    let error = run(r#"echo '{"bpmnError": {"message": "m"}}'"#)
        .await
        .expect_err("must fail");
    assert!(error.message.contains("`code`"), "{}", error.message);
}

#[tokio::test]
async fn a_non_zero_exit_fails_with_the_last_stderr_line_and_the_routes_retries() {
    let error = run("echo first >&2; echo 'order 7 is locked' >&2; exit 4")
        .await
        .expect_err("must fail");
    assert_eq!(error.message, "order 7 is locked");
    assert!(
        error.details.contains("exited with status 4"),
        "{}",
        error.details
    );
    assert_eq!(
        error.retries,
        Some(2),
        "a first failure reports the route's retries"
    );
    assert_eq!(error.retry_timeout, Some(Duration::from_secs(7)));
    let again = handler("exit 1")
        .handle(&task(Some(1)))
        .await
        .expect_err("must fail");
    assert_eq!(
        again.retries,
        Some(0),
        "one less than the task has left: an incident"
    );
    assert!(
        again.message.contains("exited with status 1"),
        "{}",
        again.message
    );
}

#[tokio::test]
async fn a_crash_and_output_that_is_no_object_are_failures() {
    let killed = run("echo dying >&2; kill -9 $$")
        .await
        .expect_err("must fail");
    assert_eq!(killed.message, "dying");
    assert!(
        killed.details.contains("ended by a signal"),
        "{}",
        killed.details
    );
    let text = run("echo done").await.expect_err("must fail");
    assert!(text.message.contains("not JSON"), "{}", text.message);
    let nothing = run("true").await.expect_err("must fail");
    assert!(
        nothing.message.contains("printed nothing"),
        "{}",
        nothing.message
    );
}

#[tokio::test]
async fn a_command_outliving_its_timeout_fails() {
    let mut slow = handler("sleep 30");
    slow.command.timeout = Duration::from_millis(300);
    let error = slow.handle(&task(None)).await.expect_err("must fail");
    assert!(
        error.message.contains("did not finish within"),
        "{}",
        error.message
    );
    assert_eq!(error.retries, Some(2));
}
