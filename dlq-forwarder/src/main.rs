//! The forwarder's `bootstrap`: validate the configuration, then serve SQS batches (one
//! task per message) or scheduled ticks (the drain mode's scaler).

use immortal_dlq_forwarder::config::{Config, DrainSettings, Mode};
use immortal_dlq_forwarder::{forward::Forwarder, scale};
use immortal_handler_sdk::record::SqsBatch;
use immortal_handler_sdk::{aws, init_error, logging};
use lambda_runtime::{service_fn, Error, LambdaEvent};

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
    match config.mode.clone() {
        Mode::Task => Box::pin(per_message_tasks(config, sdk)).await,
        Mode::Drain(drain) => Box::pin(scaler(config, drain, sdk)).await,
    }
}

/// One task per message, for every SQS batch.
async fn per_message_tasks(config: Config, sdk: aws_config::SdkConfig) -> Result<(), Error> {
    let forwarder = Forwarder::new(config, &sdk);
    let forwarder = &forwarder;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsBatch>| async move {
        Ok::<_, Error>(forwarder.handle(event.payload).await)
    }))
    .await
}

/// Drain mode: a scaling tick for every scheduled event.
async fn scaler(config: Config, drain: DrainSettings, sdk: aws_config::SdkConfig) -> Result<(), Error> {
    let (ecs, sqs) = (aws_sdk_ecs::Client::new(&sdk), aws_sdk_sqs::Client::new(&sdk));
    let (config, drain, ecs, sqs) = (&config, &drain, &ecs, &sqs);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        // A schedule event's id makes a retried tick's RunTask calls idempotent.
        let seed = event.payload["id"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or(event.context.request_id);
        scale::tick(ecs, sqs, config, drain, &seed).await.map_err(Error::from)
    }))
    .await
}
