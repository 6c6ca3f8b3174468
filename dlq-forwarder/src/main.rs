//! The forwarder's `bootstrap`: validate the configuration, then serve SQS batches.

use aws_lambda_events::event::sqs::SqsEvent;
use immortal_dlq_forwarder::{config::Config, forward::Forwarder};
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
    let forwarder = Forwarder::new(config, &sdk);
    let forwarder = &forwarder;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Error>(forwarder.handle(event.payload).await)
    }))
    .await
}
