//! One batch of queue messages: each recognised, judged by the relaunch policy, and
//! launched as a task, or reported as a batch item failure so SQS delivers it again
//! (and, after maxReceiveCount, parks it). Nothing is deleted that did not start a task.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse};
use immortal_handler_sdk::container::PAYLOAD_BUCKET_VAR;
use immortal_handler_sdk::record::{QueueMessage, SqsBatch};
use immortal_handler_sdk::{Envelope, FunctionRef};
use immortal_overflow::{Carrier, Triage, Verdict};

use crate::config::Config;
use crate::launch::{self, TaskRequest};
use crate::runtimes::{FunctionRuntimes, TaskDefinitions};
use crate::size::{self, TaskSize};

/// What became of one message.
#[derive(Debug)]
pub enum Decision {
    /// A task was started.
    Launched {
        /// Its ARN.
        task_arn: String,
    },
    /// Not launched: declined, passed on, or failed (never `Verdict::Relaunch`).
    Settled(Verdict),
}

impl Decision {
    /// Whether the message may leave the queue.
    pub fn done(&self) -> bool {
        match self {
            Decision::Launched { .. } => true,
            Decision::Settled(verdict) => verdict.done(),
        }
    }
}

/// The forwarder: configuration and AWS clients.
pub struct Forwarder {
    config: Config,
    ecs: aws_sdk_ecs::Client,
    s3: aws_sdk_s3::Client,
    triage: Triage,
    runtimes: FunctionRuntimes,
}

impl Forwarder {
    /// A forwarder with clients made from `sdk`.
    pub fn new(config: Config, sdk: &aws_config::SdkConfig) -> Self {
        let triage = Triage::new(sdk, &config.overflow, "forwarder");
        Forwarder {
            config,
            ecs: aws_sdk_ecs::Client::new(sdk),
            s3: immortal_handler_sdk::aws::s3_client(sdk),
            runtimes: FunctionRuntimes::new(sdk),
            triage,
        }
    }

    /// Handles a batch; the response lists the messages SQS must deliver again.
    pub async fn handle(&self, batch: SqsBatch) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        for message in &batch.records {
            // Boxed: the per-record future (triage, S3, RunTask) is deep enough to strain
            // the compiler's layout computation when nested in the runtime's service.
            let decision = Box::pin(self.forward(message)).await;
            let retry = !decision.done();
            if retry {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = message.message_id.clone();
                response.batch_item_failures.push(failure);
            }
        }
        response
    }

    /// Decides and acts on one message, and logs one line about it.
    pub async fn forward(&self, message: &QueueMessage) -> Decision {
        let (decision, request_id, function) = self.decide(message).await;
        let request_id = request_id.unwrap_or_default();
        let function = function.map(|f| f.label()).unwrap_or_default();
        match &decision {
            Decision::Launched { task_arn } => {
                tracing::info!(message_id = %message.message_id, request_id, function, decision = "launched", task_arn = %task_arn, "record forwarded")
            }
            Decision::Settled(verdict) => verdict.log(&message.message_id, &request_id, &function),
        }
        decision
    }

    async fn decide(&self, message: &QueueMessage) -> (Decision, Option<String>, Option<FunctionRef>) {
        let triaged = self.triage.triage(message).await;
        let (request_id, function) = (triaged.request_id, triaged.function);
        let envelope = match triaged.verdict {
            Verdict::Relaunch(envelope) => envelope,
            settled => return (Decision::Settled(settled), request_id, function),
        };
        let (task_definition, size) = match self.task_definition(message, function.as_ref()).await {
            Ok(chosen) => chosen,
            Err(verdict) => return (Decision::Settled(verdict), request_id, function),
        };
        let carrier = match self.carrier(&envelope, &message.message_id).await {
            Ok(carrier) => carrier,
            Err(reason) => return (Decision::Settled(Verdict::Failed { reason }), request_id, function),
        };
        let label = function.as_ref().map(|f| f.label()).unwrap_or_default();
        let request = TaskRequest {
            size: Some(size),
            task_definition: &task_definition,
            environment: carrier.to_environment(),
            token: launch::client_token(&message.message_id),
            request_id: request_id.as_deref().unwrap_or_default(),
            function: &label,
        };
        let decision = match launch::run_task(&self.ecs, &self.config, &request).await {
            Ok(task_arn) => Decision::Launched { task_arn },
            Err(e) => Decision::Settled(Verdict::Failed { reason: e.to_string() }),
        };
        (decision, request_id, function)
    }

    /// The runner's task definition for the function's runtime, and the task's size for
    /// its memory; when nothing runs it, the verdict (passed on with the reason, or kept
    /// queued).
    async fn task_definition(
        &self,
        message: &QueueMessage,
        function: Option<&FunctionRef>,
    ) -> Result<(String, TaskSize), Verdict> {
        let Some(function) = function else {
            return Err(Verdict::Failed {
                reason: "the record names no function".into(),
            });
        };
        let found = self
            .runtimes
            .of(function)
            .await
            .map_err(|reason| Verdict::Failed { reason })?;
        let reason = match &found.runtime {
            None => format!(
                "{} is a container-image function; the runner runs zip functions (run its image on ECS instead)",
                function.label()
            ),
            Some(runtime) => match self.config.task_definitions.choose(runtime, &found.architecture) {
                Some(task_definition) => {
                    if !found.subnets.is_empty() && found.subnets != self.config.subnets {
                        tracing::warn!(
                            function = %function.label(),
                            function_subnets = ?found.subnets,
                            task_subnets = ?self.config.subnets,
                            "the function runs in other VPC subnets than its task will; what it reaches there it may not reach here"
                        );
                    }
                    let size = size::for_function(found.memory_mb, &self.config.size_limits);
                    return Ok((task_definition.to_owned(), size));
                }
                None => TaskDefinitions::none_for(runtime, &found.architecture),
            },
        };
        Err(self.triage.not_runnable(message, reason).await)
    }

    /// Inline overrides when they fit, else the envelope stored in the payload bucket.
    async fn carrier(&self, envelope: &Envelope, message_id: &str) -> Result<Carrier, String> {
        let inline = Carrier::inline(envelope);
        if launch::fits_overrides(&self.config.container_name, &inline.to_environment()) {
            return Ok(inline);
        }
        let Some(bucket) = &self.config.overflow.payload_bucket else {
            return Err(format!(
                "the envelope is too large for ECS's {}-character overrides limit and {PAYLOAD_BUCKET_VAR} is not set; set it to a bucket the forwarder can write and the runner can read",
                launch::OVERRIDES_LIMIT
            ));
        };
        let request_id = envelope.context.request_id.as_deref().unwrap_or("unknown");
        Carrier::store(&self.s3, Carrier::location(bucket, request_id, message_id), envelope).await
    }
}
