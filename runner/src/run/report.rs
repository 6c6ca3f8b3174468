//! Reporting each outcome durably, in Lambda's own destination-record format, to the
//! success or failure destination. A record that cannot be delivered is kept whole (in
//! the payload bucket, else a private local file), logged by location only (it holds
//! the event), and the run ends with exit 6: never lost silently.

use immortal_handler_sdk::aws;
use immortal_handler_sdk::destination::{DestinationRecord, OutcomeFacts};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

use immortal_overflow::publisher::{timestamp_now, Delivered};
use immortal_overflow::{OverflowSettings, Publisher, Target};
use serde_json::value::RawValue;

use crate::emulator::invocation::Invocation;
use crate::emulator::outcome::Outcome;
use crate::exit::Exit;

/// The destination record for `outcome`.
pub(crate) fn record(invocation: &Invocation, outcome: &Outcome) -> DestinationRecord {
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
pub(crate) struct Reporter {
    on_success: Option<Target>,
    on_failure: Option<Target>,
    payload_bucket: Option<String>,
    publisher: tokio::sync::OnceCell<Publisher>,
}

impl Reporter {
    /// A reporter to the destinations of `settings`.
    pub(crate) fn new(settings: &OverflowSettings) -> Self {
        Reporter {
            on_success: settings.on_success.clone(),
            on_failure: settings.on_failure.clone(),
            payload_bucket: settings.payload_bucket.clone(),
            publisher: tokio::sync::OnceCell::new(),
        }
    }

    /// Sends the outcome's record where it belongs; `Err(Exit::Undelivered)` when it
    /// could not be delivered (the record is then in the log, whole).
    pub(crate) async fn deliver(&self, invocation: &Invocation, outcome: &Outcome) -> Result<(), Exit> {
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
                // The record holds the event and the response: kept whole, but never in
                // a log line (logs are read more widely than the payload bucket).
                let kept = self.keep(&record, publisher).await;
                tracing::error!(destination = %target, error = %e, kept = %kept, "the outcome record could not be delivered; it is kept whole there");
                Err(Exit::Undelivered)
            }
        }
    }

    /// Keeps an undelivered record: in the payload bucket (`undelivered/REQUEST/...`),
    /// else (a local run without one) in a file only the runner's user can read.
    /// Where it is.
    async fn keep(&self, record: &DestinationRecord, publisher: &Publisher) -> String {
        match publisher.keep_undelivered(record).await {
            Some(Ok(at)) => return at.to_string(),
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot keep the undelivered record in the payload bucket; keeping it in a local file")
            }
            None => {}
        }
        let dir = std::env::temp_dir().join("immortal-undelivered");
        let path = dir.join(format!(
            "{}-{}-{}.json",
            record.request_context.request_id,
            record.request_context.condition,
            record.timestamp.replace(':', "-")
        ));
        let body = serde_json::to_vec(record).expect("a record serializes");
        let written = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .and_then(|()| {
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&path)?;
                std::io::Write::write_all(&mut file, &body)
            });
        match written {
            Ok(()) => path.display().to_string(),
            Err(e) => format!("nowhere: cannot write {}: {e}", path.display()),
        }
    }
}
