//! The one way the tests read the worker's metrics: the sum of the series of a name whose labels
//! contain the ones asked for, in a Prometheus text exposition. Every reading (a series, a sum
//! over labels, the engine requests a test counts) goes through [`metric_sum`], so the parsing
//! is written once.

/// The value of `name` or `name{labels}` in a Prometheus text exposition: the sum of every
/// series with those labels (whatever others it has); 0 when absent.
pub fn metric_value(metrics: &str, series: &str) -> f64 {
    // `name{a="x"}` → every series of `name` with that label, summed over the rest (the
    // per-route counters carry a `topic` label that single-route tests do not name).
    let (name, labels) = match series.split_once('{') {
        Some((name, labels)) => (name, labels.trim_end_matches('}')),
        None => (series, ""),
    };
    let labels: Vec<&str> = labels.split(',').filter(|l| !l.is_empty()).collect();
    metric_sum(metrics, name, &labels)
}

/// The sum of every series of `name` whose labels contain all of `labels` (`key="value"` pairs),
/// e.g. a counter summed over its nodes or reasons.
pub fn metric_sum(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (label_set, value) = match rest.strip_prefix('{') {
                Some(rest) => rest.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            labels
                .iter()
                .all(|wanted| label_set.split(',').any(|l| l == *wanted))
                .then(|| value.split_whitespace().next()?.parse::<f64>().ok())?
        })
        .sum()
}

/// The engine request counter, one series per endpoint.
const ENGINE_REQUESTS: &str = "camunda_worker_engine_request_duration_seconds_count";

/// Engine requests the worker made (counted when answered): of `endpoint`, or with `None` of every
/// endpoint but the fetches.
pub fn engine_requests(metrics: &str, endpoint: Option<&str>) -> f64 {
    match endpoint {
        Some(e) => metric_sum(metrics, ENGINE_REQUESTS, &[&format!("endpoint=\"{e}\"")]),
        None => {
            metric_sum(metrics, ENGINE_REQUESTS, &[])
                - metric_sum(metrics, ENGINE_REQUESTS, &["endpoint=\"fetchAndLock\""])
        }
    }
}
