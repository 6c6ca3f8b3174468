//! The forwarder's `bootstrap`: validate the configuration, then serve whatever triggers
//! it, recognised by shape: SQS batches (one task per message), ECS "Task State Change"
//! events (a stopped task without an outcome is relaunched), and scheduled events (the
//! ledger's sweep; in drain mode, the scaler's tick).

use immortal_dlq_forwarder::config::{Config, Mode};
use immortal_dlq_forwarder::forward::Forwarder;
use immortal_dlq_forwarder::reconcile::{Reconciled, StoppedTask};
use immortal_dlq_forwarder::scale;
use immortal_handler_sdk::record::SqsBatch;
use immortal_handler_sdk::{aws, init_error, logging};
use immortal_overflow::attached_queues::AttachedQueues;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    logging::init();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("{e}");
            init_error::report("Immortal.Config", &e.to_string());
            return Err(e.into());
        }
    };
    let sdk = aws::load().await;
    let (ecs, sqs) = (aws_sdk_ecs::Client::new(&sdk), aws_sdk_sqs::Client::new(&sdk));
    let forwarder = Forwarder::new(config.clone(), &sdk);
    let attached = AttachedQueues::new(sqs.clone());
    let (config, forwarder, ecs, sqs, attached) = (&config, &forwarder, &ecs, &sqs, &attached);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let (payload, context) = event.into_parts();
        if payload.get("Records").is_some() {
            let batch: SqsBatch = serde_json::from_value(payload)?;
            return Ok::<_, Error>(serde_json::to_value(Box::pin(forwarder.handle(batch)).await)?);
        }
        if let Some(stopped) = StoppedTask::from_event(&payload) {
            return match Box::pin(forwarder.reconcile(&stopped)).await {
                // Failed, so that EventBridge's retries (and then the sweep) try again.
                Reconciled::Failed { reason } => Err(Error::from(reason)),
                done => Ok(serde_json::to_value(done)?),
            };
        }
        if payload["detail-type"] == "Scheduled Event" {
            return match &config.mode {
                Mode::Task => {
                    let deadline = deadline_of(context.deadline);
                    let swept = Box::pin(forwarder.sweep(Some(deadline))).await;
                    Ok(json!({"swept": swept.outcomes, "live": swept.live, "looked_at": swept.looked_at, "orphans": swept.orphans, "complete": swept.complete}))
                }
                Mode::Drain(drain) => {
                    // A schedule event's id makes a retried tick's RunTask calls idempotent.
                    let seed = payload["id"].as_str().unwrap_or(&context.request_id).to_owned();
                    Ok(json!({"tick": scale::tick((ecs, sqs), config, drain, attached, &seed).await?}))
                }
            };
        }
        if payload["source"] == "aws.ecs" {
            return Ok(json!({"ignored": "a task state change other than a runner task stopping"}));
        }
        Err(Error::from(
            "unrecognised event: the forwarder takes SQS batches, ECS Task State Change events and scheduled events",
        ))
    }))
    .await
}

/// The invocation's deadline (ms since the epoch, from the Runtime API) as an instant.
fn deadline_of(deadline_ms: u64) -> tokio::time::Instant {
    let left = deadline_ms.saturating_sub(immortal_overflow::ledger::now_ms());
    tokio::time::Instant::now() + std::time::Duration::from_millis(left)
}
