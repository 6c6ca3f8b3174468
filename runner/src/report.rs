//! Reporting each outcome durably, in Lambda's own destination-record format, to
//! `IMMORTAL_ON_SUCCESS` / `IMMORTAL_ON_FAILURE`. A record that cannot be delivered is
//! written to the log in full and the run ends with exit 6: never lost silently.

use immortal_handler_sdk::aws;
use immortal_handler_sdk::destination::{DestinationRecord, OutcomeFacts};
use immortal_handler_sdk::outcome::{timestamp_now, Delivered, Publisher, Target};
use serde_json::value::RawValue;

use crate::error::RunnerError;
use crate::exit::Exit;
use crate::invocation::Invocation;
use crate::outcome::Outcome;

/// Where outcomes go.
#[derive(Debug, Clone, Default)]
pub struct Destinations {
    /// For successes.
    pub on_success: Option<Target>,
    /// For failures of any kind.
    pub on_failure: Option<Target>,
    /// Where records too large for their destination are stored.
    pub payload_bucket: Option<String>,
}

impl Destinations {
    /// Parses the configured destinations (bad values are usage errors, found before the run).
    pub fn parse(
        on_success: Option<&str>,
        on_failure: Option<&str>,
        payload_bucket: Option<&str>,
    ) -> Result<Self, RunnerError> {
        let parse = |name: &str, value: Option<&str>| {
            value
                .filter(|v| !v.trim().is_empty())
                .map(|v| Target::parse(v).map_err(|e| RunnerError::Usage(format!("{name}: {e}"))))
                .transpose()
        };
        Ok(Destinations {
            on_success: parse("IMMORTAL_ON_SUCCESS", on_success)?,
            on_failure: parse("IMMORTAL_ON_FAILURE", on_failure)?,
            payload_bucket: payload_bucket.filter(|b| !b.trim().is_empty()).map(str::to_owned),
        })
    }
}

/// The destination record for `outcome`.
pub fn record(invocation: &Invocation, outcome: &Outcome) -> DestinationRecord {
    let event = std::str::from_utf8(&invocation.event)
        .ok()
        .and_then(|e| RawValue::from_string(e.to_owned()).ok())
        .unwrap_or_else(|| RawValue::from_string("null".into()).expect("null is JSON"));
    DestinationRecord::outcome(OutcomeFacts {
        request_id: &invocation.request_id,
        function_arn: &invocation.invoked_function_arn,
        executed_version: &invocation.function_version,
        invoke_count: invocation.overflow.as_ref().map(|o| o.attempt).unwrap_or(1),
        request_payload: &event,
        success: matches!(outcome, Outcome::Response { .. }),
        response: outcome.body(),
        timestamp: timestamp_now(),
        marker: ("runner", env!("CARGO_PKG_VERSION")),
    })
}

/// Delivers outcome records; the publisher (and what it learns about its queues) is
/// made once, on the first record.
pub struct Reporter {
    destinations: Destinations,
    publisher: tokio::sync::OnceCell<Publisher>,
}

impl Reporter {
    /// A reporter for `destinations`.
    pub fn new(destinations: Destinations) -> Self {
        Reporter {
            destinations,
            publisher: tokio::sync::OnceCell::new(),
        }
    }

    /// The destinations.
    pub fn destinations(&self) -> &Destinations {
        &self.destinations
    }

    /// Sends the outcome's record where it belongs; `Err(Exit::Undelivered)` when it
    /// could not be delivered (the record is then in the log, whole).
    pub async fn deliver(&self, invocation: &Invocation, outcome: &Outcome) -> Result<(), Exit> {
        let target = match outcome {
            Outcome::Response { .. } => self.destinations.on_success.as_ref(),
            Outcome::Failed { .. } => self.destinations.on_failure.as_ref(),
        };
        let Some(target) = target else { return Ok(()) };
        let record = record(invocation, outcome);
        let publisher = self
            .publisher
            .get_or_init(|| async { Publisher::new(aws::shared().await, self.destinations.payload_bucket.clone()) })
            .await;
        match publisher.publish(target, &record).await {
            Ok(Delivered::Inline) => {
                tracing::info!(destination = %target, condition = %record.request_context.condition, "outcome record delivered");
                Ok(())
            }
            Ok(Delivered::Pointer(at)) => {
                tracing::info!(destination = %target, condition = %record.request_context.condition, record = %at, "outcome record delivered as a pointer to the full record in S3");
                Ok(())
            }
            Err(e) => {
                let full = serde_json::to_string(&record).expect("a record serializes");
                tracing::error!(destination = %target, error = %e, record = %full, "the outcome record could not be delivered; here it is in full");
                Err(Exit::Undelivered)
            }
        }
    }
}
