use super::*;

fn settings(vars: &[(&str, &str)]) -> Result<Option<TraceSettings>, TraceSetupError> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    TraceSettings::from_lookup(|name| vars.get(name).cloned())
}

fn problem(vars: &[(&str, &str)]) -> String {
    match settings(vars) {
        Err(error) => error.to_string(),
        Ok(other) => panic!("expected an error, got {other:?}"),
    }
}

const ENDPOINT: (&str, &str) = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");

#[test]
fn traces_are_off_without_an_endpoint_or_when_switched_off() {
    assert_eq!(settings(&[]).ok(), Some(None));
    assert_eq!(
        settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).ok(),
        Some(None)
    );
    assert_eq!(
        settings(&[ENDPOINT, ("OTEL_SDK_DISABLED", "TRUE")]).ok(),
        Some(None)
    );
    assert_eq!(
        settings(&[ENDPOINT, ("OTEL_TRACES_EXPORTER", "none")]).ok(),
        Some(None)
    );
}

#[test]
fn an_endpoint_turns_traces_on_with_the_standard_defaults() {
    let on = settings(&[ENDPOINT]).ok().flatten();
    assert_eq!(
        on,
        Some(TraceSettings {
            timeout: Duration::from_secs(10),
            service_name: "camunda-worker".to_owned(),
        })
    );
    let on = settings(&[
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "https://collector/v1/traces",
        ),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ("OTEL_SERVICE_NAME", "orders-worker"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_TRACES_EXPORTER", "otlp"),
    ])
    .ok()
    .flatten();
    assert_eq!(
        on,
        Some(TraceSettings {
            timeout: Duration::from_millis(2500),
            service_name: "orders-worker".to_owned(),
        })
    );
}

#[test]
fn a_setting_that_cannot_work_is_named_without_its_value() {
    let secret = "http//user:s3cret@collector";
    let line = problem(&[("OTEL_EXPORTER_OTLP_ENDPOINT", secret)]);
    assert_eq!(
        line,
        "OTEL_EXPORTER_OTLP_ENDPOINT: not an http:// or https:// URL"
    );
    assert_eq!(
        problem(&[ENDPOINT, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]),
        "OTEL_EXPORTER_OTLP_PROTOCOL: `grpc` is not supported: the worker sends OTLP over http/protobuf"
    );
    assert_eq!(
        problem(&[ENDPOINT, ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "10s")]),
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: `10s` is not a number of milliseconds"
    );
    assert_eq!(
        problem(&[ENDPOINT, ("OTEL_TRACES_EXPORTER", "zipkin")]),
        "OTEL_TRACES_EXPORTER: `zipkin` is not supported (otlp or none)"
    );
}

#[test]
fn without_traces_a_span_has_no_context_and_no_traceparent() {
    let span = tracing::info_span!("task");
    assert!(span_context(&span).is_none());
    assert!(traceparent(&span).is_none());
}
