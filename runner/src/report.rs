//! Reporting each outcome durably, in Lambda's own destination-record format, to the
//! success or failure destination. A record that cannot be delivered is written to
//! the log in full and the run ends with exit 6: never lost silently.

use immortal_handler_sdk::aws;
use immortal_handler_sdk::destination::{DestinationRecord, OutcomeFacts};
use immortal_overflow::publisher::{timestamp_now, Delivered};
use immortal_overflow::{OverflowSettings, Publisher, Target};
use serde_json::value::RawValue;

use crate::exit::Exit;
use crate::invocation::Invocation;
use crate::outcome::Outcome;

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
    on_success: Option<Target>,
    on_failure: Option<Target>,
    payload_bucket: Option<String>,
    publisher: tokio::sync::OnceCell<Publisher>,
}

impl Reporter {
    /// A reporter to the destinations of `settings`.
    pub fn new(settings: &OverflowSettings) -> Self {
        Reporter {
            on_success: settings.on_success.clone(),
            on_failure: settings.on_failure.clone(),
            payload_bucket: settings.payload_bucket.clone(),
            publisher: tokio::sync::OnceCell::new(),
        }
    }

    /// Sends the outcome's record where it belongs; `Err(Exit::Undelivered)` when it
    /// could not be delivered (the record is then in the log, whole).
    pub async fn deliver(&self, invocation: &Invocation, outcome: &Outcome) -> Result<(), Exit> {
        let target = match outcome {
            Outcome::Response { .. } => self.on_success.as_ref(),
            Outcome::Failed { .. } => self.on_failure.as_ref(),
        };
        let Some(target) = target else { return Ok(()) };
        let record = record(invocation, outcome);
        let publisher = self
            .publisher
            .get_or_init(|| async { Publisher::new(aws::shared().await, self.payload_bucket.clone()) })
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
