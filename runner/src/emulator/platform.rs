//! The platform's records (`platform.*`), typed and built once. Each is rendered for the
//! Telemetry API (its `record`) and for the function's log (Lambda's text lines, or its
//! JSON records when the function's `LoggingConfig` says JSON), so the two can never say
//! different things.

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

/// How an invocation ended, in the words of the Telemetry API's schema (`status` of
/// `platform.runtimeDone` and `platform.report`: success, error, failure, timeout), which
/// Lambda's JSON log format writes too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Status {
    /// A response.
    #[default]
    Success,
    /// The function's error, or the runtime exiting mid-invocation.
    Error,
    /// The platform or an extension failed the invocation.
    Failure,
    /// The invocation ran past its time (or an extension held it past it).
    Timeout,
}

impl Status {
    /// The schema's word.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Error => "error",
            Status::Failure => "failure",
            Status::Timeout => "timeout",
        }
    }
}

/// What the REPORT line and the `platform.report` record say.
#[derive(Debug, Clone, Default)]
pub(crate) struct Report {
    /// The invocation.
    pub(crate) request_id: String,
    /// From the event's delivery to the result.
    pub(crate) duration: Duration,
    /// From the bootstrap's start to its first request for an event.
    pub(crate) init: Option<Duration>,
    /// The function's memory setting.
    pub(crate) memory_mb: u64,
    /// The peak resident memory of the bootstrap and what it started.
    pub(crate) max_memory_mb: u64,
    /// How it ended.
    pub(crate) status: Status,
    /// The error type when the runtime did not end the invocation itself (a timeout, an
    /// exit): the text REPORT line names only these, as Lambda's does.
    pub(crate) error_type: Option<&'static str>,
}

/// One platform event of an invocation's life, in the order Lambda emits them.
#[derive(Debug, Clone)]
pub(crate) enum Platform<'a> {
    /// The init phase begins.
    InitStart {
        /// The function.
        function_name: &'a str,
        /// Its version.
        function_version: &'a str,
        /// The runtime, as Lambda names its version (`python:3.12`; `provided` for
        /// local code of no declared runtime).
        runtime_version: &'a str,
    },
    /// The runtime finished its init (asked for its first event).
    InitRuntimeDone,
    /// How long init took.
    InitReport {
        /// From the bootstrap's start to its first request for an event.
        duration: Duration,
    },
    /// The invocation begins (`START`).
    Start {
        /// The invocation.
        request_id: &'a str,
        /// The function's version.
        version: &'a str,
        /// The X-Ray trace header, when there is one.
        trace: Option<&'a str>,
    },
    /// An extension is ready (`EXTENSION`).
    Extension {
        /// Its name.
        name: &'a str,
        /// The events it registered for.
        events: &'a [&'static str],
    },
    /// The runtime answered (or the invocation ended without it).
    RuntimeDone {
        /// The invocation.
        request_id: &'a str,
        /// How it ended.
        status: Status,
        /// From the event's delivery to the result.
        duration: Duration,
        /// The response's size.
        produced_bytes: usize,
    },
    /// The invocation is complete (`END` and `REPORT`).
    Report(&'a Report),
}

impl Platform<'_> {
    /// The Telemetry API's `type`.
    pub(crate) fn event_type(&self) -> &'static str {
        match self {
            Platform::InitStart { .. } => "platform.initStart",
            Platform::InitRuntimeDone => "platform.initRuntimeDone",
            Platform::InitReport { .. } => "platform.initReport",
            Platform::Start { .. } => "platform.start",
            Platform::Extension { .. } => "platform.extension",
            Platform::RuntimeDone { .. } => "platform.runtimeDone",
            Platform::Report(_) => "platform.report",
        }
    }

    /// The Telemetry API's `record` (also the JSON log's).
    pub(crate) fn record(&self) -> Value {
        match self {
            Platform::InitStart {
                function_name,
                function_version,
                runtime_version,
            } => json!({"initializationType": "on-demand", "phase": "init", "functionName": function_name,
                        "functionVersion": function_version, "runtimeVersion": runtime_version}),
            Platform::InitRuntimeDone => {
                json!({"initializationType": "on-demand", "phase": "init", "status": "success"})
            }
            Platform::InitReport { duration } => {
                json!({"initializationType": "on-demand", "phase": "init", "status": "success",
                                                        "metrics": {"durationMs": ms(*duration)}})
            }
            Platform::Start {
                request_id,
                version,
                trace,
            } => {
                let mut record = json!({"requestId": request_id, "version": version});
                if let Some(trace) = trace.filter(|t| !t.is_empty()) {
                    record["tracing"] = json!({"type": "X-Amzn-Trace-Id", "value": trace});
                }
                record
            }
            Platform::Extension { name, events } => json!({"name": name, "state": "Ready", "events": events}),
            Platform::RuntimeDone {
                request_id,
                status,
                duration,
                produced_bytes,
            } => json!({"requestId": request_id, "status": status.as_str(),
                        "metrics": {"durationMs": ms(*duration), "producedBytes": produced_bytes}}),
            Platform::Report(report) => {
                let mut metrics = json!({
                    "durationMs": ms(report.duration),
                    "billedDurationMs": billed_ms(report.duration),
                    "memorySizeMB": report.memory_mb,
                    "maxMemoryUsedMB": report.max_memory_mb,
                });
                if let Some(init) = report.init {
                    metrics["initDurationMs"] = json!(ms(init));
                }
                let mut record =
                    json!({"requestId": report.request_id, "status": report.status.as_str(), "metrics": metrics});
                if let Some(error_type) = report.error_type {
                    record["errorType"] = json!(error_type);
                }
                record
            }
        }
    }

    /// The lines Lambda writes to the function's log for this event in its text format;
    /// `None` for the events it does not write there (in either format).
    pub(crate) fn text_lines(&self) -> Option<Vec<String>> {
        match self {
            // Lambda's line also names the runtime version's ARN, which only Lambda knows.
            Platform::InitStart { runtime_version, .. } => {
                Some(vec![format!("INIT_START Runtime Version: {runtime_version}")])
            }
            Platform::Start {
                request_id, version, ..
            } => Some(vec![format!("START RequestId: {request_id} Version: {version}")]),
            Platform::Extension { name, events } => Some(vec![format!(
                "EXTENSION\tName: {name}\tState: Ready\tEvents: [{}]",
                events.join(",")
            )]),
            Platform::Report(report) => {
                let id = &report.request_id;
                let mut line = format!(
                    "REPORT RequestId: {id}\tDuration: {:.2} ms\tBilled Duration: {} ms\tMemory Size: {} MB\tMax Memory Used: {} MB",
                    report.duration.as_secs_f64() * 1000.0,
                    billed_ms(report.duration),
                    report.memory_mb,
                    report.max_memory_mb
                );
                if let Some(init) = report.init {
                    line.push_str(&format!("\tInit Duration: {:.2} ms", init.as_secs_f64() * 1000.0));
                }
                if let Some(error_type) = report.error_type {
                    line.push_str(&format!(
                        "\tStatus: {}\tError Type: {error_type}",
                        report.status.as_str()
                    ));
                }
                Some(vec![format!("END RequestId: {id}"), line])
            }
            _ => None,
        }
    }

    /// The function log's lines for this event: the text lines, or Lambda's JSON record
    /// (`{"time", "type", "record"}`) when `json`.
    pub(crate) fn log_lines(&self, json: bool) -> Vec<String> {
        match self.text_lines() {
            None => Vec::new(),
            Some(_) if json => {
                let time = aws_smithy_types::DateTime::from(SystemTime::now())
                    .fmt(aws_smithy_types::date_time::Format::DateTime)
                    .unwrap_or_default();
                vec![json!({"time": time, "type": self.event_type(), "record": self.record()}).to_string()]
            }
            Some(lines) => lines,
        }
    }
}

/// Lambda's billed duration: whole milliseconds, rounded up.
pub(crate) fn billed_ms(duration: Duration) -> u64 {
    duration.as_millis() as u64 + u64::from(!duration.subsec_nanos().is_multiple_of(1_000_000))
}

/// Milliseconds as Lambda's records write them: two decimals.
fn ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 100_000.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billed_duration_is_the_duration_rounded_up_to_a_whole_millisecond() {
        let ms_ = Duration::from_millis;
        assert_eq!(billed_ms(ms_(12)), 12, "a whole millisecond is billed as itself");
        assert_eq!(billed_ms(ms_(12) + Duration::from_nanos(1)), 13);
        assert_eq!(billed_ms(ms_(12) + Duration::from_micros(999)), 13);
        assert_eq!(billed_ms(Duration::from_micros(1)), 1);
        assert_eq!(billed_ms(Duration::from_secs(3600)), 3_600_000);
        assert_eq!(ms(Duration::from_micros(2_599_404)), 2599.4);
    }

    /// The JSON log and the Telemetry API carry one record per event; the text log has
    /// Lambda's lines for the events it writes.
    #[test]
    fn one_record_rendered_for_the_log_and_the_telemetry_api() {
        let report = Report {
            request_id: "r".into(),
            duration: Duration::from_micros(1500),
            init: Some(Duration::from_millis(3)),
            memory_mb: 128,
            max_memory_mb: 9,
            status: Status::Error,
            error_type: Some("Runtime.ExitError"),
        };
        let event = Platform::Report(&report);
        let json: Value = serde_json::from_str(&event.log_lines(true)[0]).unwrap();
        assert_eq!(json["type"], "platform.report");
        assert_eq!(json["record"], event.record());
        assert_eq!(event.record()["metrics"]["billedDurationMs"], 2);
        assert_eq!(event.record()["status"], "error");
        let text = event.log_lines(false);
        assert_eq!(text[0], "END RequestId: r");
        assert!(
            text[1].starts_with("REPORT RequestId: r\tDuration: 1.50 ms\tBilled Duration: 2 ms")
                && text[1].ends_with("\tInit Duration: 3.00 ms\tStatus: error\tError Type: Runtime.ExitError"),
            "{}",
            text[1]
        );
        let start = Platform::Start {
            request_id: "r",
            version: "$LATEST",
            trace: Some("Root=1-x"),
        };
        assert_eq!(start.log_lines(false), ["START RequestId: r Version: $LATEST"]);
        assert_eq!(start.record()["tracing"]["value"], "Root=1-x");
        assert!(Platform::InitRuntimeDone.log_lines(true).is_empty(), "telemetry only");
        let init = Platform::InitStart {
            function_name: "f",
            function_version: "$LATEST",
            runtime_version: "python:3.12",
        };
        assert_eq!(init.log_lines(false), ["INIT_START Runtime Version: python:3.12"]);
        assert_eq!(init.record()["runtimeVersion"], "python:3.12");
    }
}
