//! One batch of queue messages: each recognised, judged by the relaunch policy, and
//! launched as a task, or reported as a batch item failure so SQS delivers it again
//! (and, after maxReceiveCount, parks it).
//!
//! Before RunTask the invocation gets its durable record: the envelope in the payload
//! bucket and a ledger entry keyed by its request id. A message leaves the queue only
//! when ECS accepted the task (or the ledger shows the invocation already launched or
//! ended): from then on the ledger, not a process, holds the invocation. The same
//! request id delivered again, or at once by several messages, starts nothing more.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse};
use immortal_handler_sdk::record::{QueueMessage, SqsBatch};
use immortal_handler_sdk::{Envelope, FunctionRef};
use immortal_overflow::ledger::{now_ms, AttemptFacts, Entry, Ledger, State, Versioned};
use immortal_overflow::metrics::{self, Metric};
use immortal_overflow::{Carrier, Publisher, Triage, Verdict};

use crate::config::Config;
use crate::error::ForwardError;
use crate::image_task::{ImageTaskError, ImageTasks};
use crate::launch::{self, LaunchError, TaskRequest};
use crate::runtimes::TaskDefinitions;
use crate::size::{self, TaskSize};

/// How long one forwarder holds an attempt it is starting before another may take over
/// (RunTask answers in seconds; a crashed forwarder's lease runs out).
pub const LAUNCH_LEASE_MS: u64 = 120_000;

/// What became of one message.
#[derive(Debug)]
pub enum Decision {
    /// A task was started.
    Launched {
        /// Its ARN.
        task_arn: String,
    },
    /// The ledger already holds this invocation: launched, or ended. Nothing started.
    Held {
        /// Where it stands.
        state: State,
        /// Its current attempt.
        attempt: u32,
    },
    /// Not launched: declined, passed on, or failed (never `Verdict::Relaunch`).
    Settled(Verdict),
}

impl Decision {
    /// Whether the message may leave the queue.
    pub fn done(&self) -> bool {
        match self {
            Decision::Launched { .. } | Decision::Held { .. } => true,
            Decision::Settled(verdict) => verdict.done(),
        }
    }
}

/// The forwarder: configuration and AWS clients.
pub struct Forwarder {
    pub(crate) config: Config,
    pub(crate) ecs: aws_sdk_ecs::Client,
    pub(crate) ledger: Ledger,
    pub(crate) triage: Triage,
    pub(crate) publisher: Publisher,
    pub(crate) functions: std::sync::Arc<immortal_overflow::functions::Functions>,
    pub(crate) images: ImageTasks,
}

impl Forwarder {
    /// A forwarder with clients made from `sdk`.
    pub fn new(config: Config, sdk: &aws_config::SdkConfig) -> Self {
        let s3 = immortal_handler_sdk::aws::s3_client(sdk);
        let triage = Triage::new(sdk, &config.overflow, "forwarder");
        Forwarder {
            ecs: aws_sdk_ecs::Client::new(sdk),
            images: ImageTasks::new(aws_sdk_ecs::Client::new(sdk)),
            ledger: Ledger::new(s3, config.payload_bucket.clone()),
            functions: triage.functions(),
            triage,
            publisher: Publisher::new(sdk, config.overflow.payload_bucket.clone()),
            config,
        }
    }

    /// Handles a batch; the response lists the messages SQS must deliver again.
    pub async fn handle(&self, batch: SqsBatch) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        for message in &batch.records {
            // Boxed: the per-record future (triage, S3, RunTask) is deep enough to strain
            // the compiler's layout computation when nested in the runtime's service.
            let decision = Box::pin(self.forward(message)).await;
            if !decision.done() {
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
        let message_id = &message.message_id;
        match &decision {
            Decision::Launched { task_arn } => {
                tracing::info!(message_id, request_id, function, decision = "launched", task_arn = %task_arn, "record forwarded");
                metrics::count(&function, Metric::Relaunched);
            }
            Decision::Held { state, attempt } => {
                tracing::info!(message_id, request_id, function, decision = "held", state = ?state, attempt, "the ledger already holds this invocation; nothing started");
                metrics::count(&function, Metric::Held);
            }
            Decision::Settled(verdict) => {
                verdict.log(message_id, &request_id, &function);
                if matches!(verdict, Verdict::Declined { .. } | Verdict::Unauthenticated { .. }) {
                    metrics::count(&function, Metric::Parked);
                }
            }
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
        let Some(target) = function.clone() else {
            let reason = "the record names no function".to_owned();
            return (Decision::Settled(Verdict::Failed { reason }), request_id, function);
        };
        let (task_definition, size) = match self.task_definition(&target).await {
            Ok(chosen) => chosen,
            Err(Unrunnable::Retry(e)) => {
                return (
                    Decision::Settled(Verdict::Failed { reason: e.to_string() }),
                    request_id,
                    function,
                )
            }
            Err(Unrunnable::Never(reason)) => {
                let verdict = self.triage.not_runnable(message, reason).await;
                return (Decision::Settled(verdict), request_id, function);
            }
        };
        let decision = self
            .first_attempt(&envelope, &target, &task_definition, size, message.sent_ms)
            .await
            .unwrap_or_else(|e| Decision::Settled(Verdict::Failed { reason: e.to_string() }));
        (decision, request_id, function)
    }

    /// Starts attempt 1 of `envelope`'s invocation, unless the ledger already holds it.
    async fn first_attempt(
        &self,
        envelope: &Envelope,
        function: &FunctionRef,
        task_definition: &str,
        size: TaskSize,
        failed_ms: Option<u64>,
    ) -> Result<Decision, ForwardError> {
        let request_id = envelope.context.request_id.clone().ok_or(ForwardError::NoRequestId)?;
        // Created outright (a redelivery is the rare case, and then the envelope written
        // is the same bytes): one round trip fewer than reading first.
        let (at, digest) = self.ledger.store_attempt(&request_id, 1, envelope).await?;
        let now = now_ms();
        let entry = Entry {
            request_id: request_id.clone(),
            function: function.label(),
            attempt: 1,
            state: State::Launching,
            task: None,
            envelope: at.to_string(),
            digest,
            on_demand: false,
            lease_until_ms: now + LAUNCH_LEASE_MS,
            reason: None,
            history: Vec::new(),
            revision: 0,
            created_ms: now,
            failed_ms: failed_ms.unwrap_or_default(),
            counted_from: 1,
            current: launched_facts(now, size),
        };
        let mut existing = match self.ledger.create(&entry).await? {
            Ok(etag) => {
                let mut held = Versioned { entry, etag };
                let task_arn = self.launch(&mut held, function, task_definition, size).await?;
                return Ok(Decision::Launched { task_arn });
            }
            // Another delivery of the same invocation got there first.
            Err(existing) => existing,
        };
        match existing.entry.state {
            State::Launching if existing.entry.lease_until_ms > now_ms() => Err(ForwardError::Busy {
                attempt: existing.entry.attempt,
                request_id,
            }),
            State::Launching => {
                let task_arn = self.take_over(&mut existing, function, task_definition, size).await?;
                Ok(Decision::Launched { task_arn })
            }
            state => Ok(Decision::Held {
                state,
                attempt: existing.entry.attempt,
            }),
        }
    }

    /// Finishes the launch of an attempt whose starter is gone: takes its lease over
    /// and starts it with the same token (if ECS had accepted it, it answers with that
    /// task instead of starting another). Its task ARN.
    pub(crate) async fn take_over(
        &self,
        held: &mut Versioned,
        function: &FunctionRef,
        task_definition: &str,
        size: TaskSize,
    ) -> Result<String, ForwardError> {
        held.entry.lease_until_ms = now_ms() + LAUNCH_LEASE_MS;
        held.etag = self.ledger.update(&mut held.entry, &held.etag).await?;
        self.launch(held, function, task_definition, size).await
    }

    /// Starts the ledger entry's current attempt (the lease is held) and records its
    /// task; its ARN. Spot first when configured; after a capacity failure the entry says so
    /// before the on-demand try, so a retry takes the same way, never both.
    pub(crate) async fn launch(
        &self,
        held: &mut Versioned,
        function: &FunctionRef,
        task_definition: &str,
        size: TaskSize,
    ) -> Result<String, ForwardError> {
        let carrier = Carrier::Stored {
            at: immortal_handler_sdk::envelope::S3Location::parse(&held.entry.envelope).map_err(|source| {
                ForwardError::Entry {
                    what: "envelope",
                    source,
                }
            })?,
            digest: Some(held.entry.digest.clone()),
        };
        let (label, request_id) = (function.label(), held.entry.request_id.clone());
        let request = TaskRequest {
            size: Some(size),
            task_definition,
            environment: carrier.to_environment(),
            token: launch::attempt_token(&request_id, held.entry.attempt),
            request_id: &request_id,
            function: &label,
        };
        let providers = !self.config.capacity_providers.is_empty();
        let mut result = Err(LaunchError::Api("not started".into()));
        if !held.entry.on_demand {
            result = launch::call(&self.ecs, &self.config, &request, &request.token, providers).await;
            if let Err(LaunchError::Capacity(reason)) = &result {
                if providers && self.config.on_demand_fallback {
                    tracing::warn!(request_id = %request_id, reason = %reason, "no capacity with the provider strategy; trying FARGATE on demand");
                    held.entry.on_demand = true;
                    held.etag = self.ledger.update(&mut held.entry, &held.etag).await?;
                }
            }
        }
        if held.entry.on_demand {
            let token = launch::fallback_token(&request.token);
            result = launch::call(&self.ecs, &self.config, &request, &token, false).await;
        }
        match result {
            Ok(task_arn) => {
                // Its runner may have marked the attempt running already (then the entry
                // changed meanwhile): the task is recorded whoever was first.
                let attempt = held.entry.attempt;
                let mut running = held.entry.clone();
                running.task = Some(task_arn.clone());
                running.state = State::Running;
                running.lease_until_ms = 0;
                if let Ok(etag) = self.ledger.update(&mut running, &held.etag).await {
                    held.entry = running;
                    held.etag = etag;
                    return Ok(task_arn);
                }
                let recorded = self
                    .ledger
                    .modify(&request_id, |entry| {
                        if entry.attempt != attempt || entry.task.is_some() {
                            return false;
                        }
                        entry.task = Some(task_arn.clone());
                        if entry.state == State::Launching {
                            entry.state = State::Running;
                        }
                        entry.lease_until_ms = 0;
                        true
                    })
                    .await;
                match recorded {
                    Ok(Some(entry)) => held.entry = entry,
                    Ok(None) => {}
                    // The task runs and its runner moves the entry on; what matters here
                    // is that ECS accepted it.
                    Err(e) => {
                        tracing::warn!(error = %e, task_arn, "the task started but the ledger could not say so yet")
                    }
                }
                Ok(task_arn)
            }
            Err(e) => {
                // Released at once: the next delivery (or the sweep) tries this attempt again.
                held.entry.lease_until_ms = 0;
                if let Ok(etag) = self.ledger.update(&mut held.entry, &held.etag).await {
                    held.etag = etag;
                }
                Err(e.into())
            }
        }
    }

    /// The runner's task definition for the function's runtime (or, for an image
    /// function, the one that runs its image), and the task's size for its memory.
    pub(crate) async fn task_definition(&self, function: &FunctionRef) -> Result<(String, TaskSize), Unrunnable> {
        let found = self
            .functions
            .facts(function)
            .await
            .map_err(|e| Unrunnable::Retry(e.into()))?;
        let task_definition = match (&found.image, &found.runtime) {
            (Some(image), _) => self
                .images
                .for_image(
                    self.config.task_definitions.custom(),
                    &self.config.container_name,
                    image,
                    &found.architecture,
                )
                .await
                .map_err(|e| match e {
                    ImageTaskError::Retry(e) => Unrunnable::Retry(e),
                    ImageTaskError::Never(reason) => Unrunnable::Never(reason),
                })?,
            (None, Some(runtime)) => self
                .config
                .task_definitions
                .choose(runtime, &found.architecture)
                .ok_or_else(|| Unrunnable::Never(TaskDefinitions::none_for(runtime, &found.architecture)))?
                .to_owned(),
            (None, None) => {
                return Err(Unrunnable::Never(format!(
                    "{} has neither a runtime nor an image",
                    function.label()
                )))
            }
        };
        if !found.subnets.is_empty() && found.subnets != self.config.subnets {
            tracing::warn!(
                function = %function.label(),
                function_subnets = ?found.subnets,
                task_subnets = ?self.config.subnets,
                "the function runs in other VPC subnets than its task will; what it reaches there it may not reach here"
            );
        }
        let size = size::for_function(found.memory_mb, &self.config.size_limits);
        Ok((task_definition, size))
    }
}

/// Why no task definition was chosen.
#[derive(Debug)]
pub(crate) enum Unrunnable {
    /// For now (the function's configuration could not be read): try again.
    Retry(ForwardError),
    /// Never here (no runner for its runtime): passed on with the reason.
    Never(String),
}

/// A new attempt's facts as its launch begins: when, and at what size.
pub(crate) fn launched_facts(now_ms: u64, size: TaskSize) -> AttemptFacts {
    AttemptFacts {
        launched_ms: now_ms,
        cpu: Some(size.cpu),
        memory_mb: Some(size.memory),
        ..AttemptFacts::default()
    }
}
