//! CloudWatch metrics in the embedded metric format (EMF): one JSON line per event on
//! the process's stderr, which CloudWatch Logs turns into metrics (namespace
//! [`NAMESPACE`], one dimension, [`DIMENSION`]: the function). The forwarder's lines are
//! in its Lambda log group; the runner's in its task's (the `awslogs` driver's
//! PutLogEvents extracts EMF too). The stack's dashboard graphs them.

use serde_json::{json, Map, Value};

/// The metrics' namespace.
pub const NAMESPACE: &str = "immortal";
/// The one dimension: the function's name (without qualifier, whoever names it: a
/// queue's tag, a record's ARN, the ledger's label).
pub const DIMENSION: &str = "function";

/// What is counted or measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// The forwarder launched an overflowed invocation's first attempt.
    Relaunched,
    /// A run ended with a response.
    Succeeded,
    /// A run ended with an error (the function's, or one before it could run).
    Failed,
    /// An attempt ended without an outcome (stopped, killed, lost) and was relaunched.
    Interrupted,
    /// An invocation ran out of attempts.
    Exhausted,
    /// A record the ledger already held (a redelivery, a duplicate): nothing started.
    Held,
    /// A record left for the parking queue (declined by the relaunch policy, or sent by
    /// someone who may not run the function).
    Parked,
    /// How long a run took, from the bootstrap's start to its outcome (milliseconds).
    RunDuration,
    /// From Lambda giving up on the invocation to the runner starting it (milliseconds).
    TimeToStart,
}

impl Metric {
    /// Its name in CloudWatch.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Relaunched => "relaunched",
            Metric::Succeeded => "succeeded",
            Metric::Failed => "failed",
            Metric::Interrupted => "interrupted",
            Metric::Exhausted => "exhausted",
            Metric::Held => "held",
            Metric::Parked => "parked",
            Metric::RunDuration => "run_duration",
            Metric::TimeToStart => "time_to_start",
        }
    }

    /// Its unit in CloudWatch.
    pub fn unit(self) -> &'static str {
        match self {
            Metric::RunDuration | Metric::TimeToStart => "Milliseconds",
            _ => "Count",
        }
    }

    /// Every metric, for the dashboard and the tests.
    pub const ALL: [Metric; 9] = [
        Metric::Relaunched,
        Metric::Succeeded,
        Metric::Failed,
        Metric::Interrupted,
        Metric::Exhausted,
        Metric::Held,
        Metric::Parked,
        Metric::RunDuration,
        Metric::TimeToStart,
    ];
}

/// One EMF document: `values` for `function`, at `timestamp_ms`.
///
/// ```
/// use immortal_overflow::metrics::{line, Metric};
/// let doc: serde_json::Value = serde_json::from_str(&line("thumbnail", &[(Metric::Succeeded, 1.0)], 1_700_000_000_000)).unwrap();
/// assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Namespace"], "immortal");
/// assert_eq!(doc["succeeded"], 1.0);
/// assert_eq!(doc["function"], "thumbnail");
/// let doc: serde_json::Value = serde_json::from_str(&line("thumbnail:7", &[(Metric::Held, 1.0)], 0)).unwrap();
/// assert_eq!(doc["function"], "thumbnail", "one dimension value per function, whatever the qualifier");
/// ```
pub fn line(function: &str, values: &[(Metric, f64)], timestamp_ms: u64) -> String {
    let mut doc = Map::new();
    let metrics: Vec<Value> = values
        .iter()
        .map(|(metric, _)| json!({"Name": metric.name(), "Unit": metric.unit()}))
        .collect();
    doc.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [[DIMENSION]], "Metrics": metrics}],
        }),
    );
    doc.insert(DIMENSION.into(), Value::from(function_name(function)));
    for (metric, value) in values {
        doc.insert(metric.name().into(), json!(value));
    }
    Value::Object(doc).to_string()
}

/// The function's name in `reference` (a name, `NAME:QUALIFIER` or an ARN).
///
/// ```
/// use immortal_overflow::metrics::function_name;
/// assert_eq!(function_name("arn:aws:lambda:us-east-1:123456789012:function:thumb:$LATEST"), "thumb");
/// assert_eq!(function_name("thumb:live"), "thumb");
/// ```
pub fn function_name(reference: &str) -> String {
    immortal_handler_sdk::FunctionRef::parse(reference)
        .map(|f| f.name)
        .unwrap_or_else(|_| reference.to_owned())
}

/// Writes one EMF line for `function` to stderr, now. Nothing for an empty `values`.
pub fn emit(function: &str, values: &[(Metric, f64)]) {
    if values.is_empty() {
        return;
    }
    eprintln!("{}", line(function, values, crate::ledger::now_ms()));
}

/// Emits one count of `metric` for `function`.
pub fn count(function: &str, metric: Metric) {
    emit(function, &[(metric, 1.0)]);
}
