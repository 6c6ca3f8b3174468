//! Drain-worker mode (`runner --queue URL`): long-poll the overflow queue and run each
//! message exactly as a single-task run would, sharing the code cache across messages.
//!
//! A message is deleted only once its run has an outcome (and that outcome was
//! reported); while it runs, its visibility timeout is extended (a heartbeat). The
//! worker exits after the queue has stayed empty for the idle time. On SIGTERM it takes
//! no new messages, stops the running bootstraps, releases their messages (visibility 0)
//! so another worker runs them, and exits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use immortal_handler_sdk::aws::{self, describe_error};
use immortal_handler_sdk::record::{MessageAttribute, QueueMessage};
use immortal_overflow::{OverflowSettings, Triage, Verdict};
use tokio::task::JoinSet;

use crate::code::{CodeOptions, CodeSource};
use crate::error::RunnerError;
use crate::execution::{self, RunSettings, Slot};
use crate::exit::Exit;
use crate::outcome::Outcome;
use crate::report::Reporter;
use crate::runtime_api::ResponseSink;
use crate::signals::{stop_requested, StopSignal};

/// How a worker runs.
pub struct DrainOptions {
    /// The queue.
    pub queue_url: String,
    /// Messages run at once.
    pub concurrency: usize,
    /// Exit after the queue has been empty this long.
    pub idle: Duration,
    /// How long a received message stays invisible per heartbeat (default: the queue's own).
    pub visibility: Option<i32>,
    /// The relaunch policy, the function map, where outcomes go.
    pub overflow: OverflowSettings,
    /// Code cache and layers.
    pub code: CodeOptions,
    /// Timeout, grace period, handler.
    pub settings: RunSettings,
}

/// Everything a message's run needs, shared by the runs.
struct Worker {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    queue_arn: Option<String>,
    visibility: i32,
    triage: Triage,
    reporter: Reporter,
    options: DrainOptions,
}

/// Drains the queue until it stays empty or a stop is requested.
pub async fn drain(options: DrainOptions, stop: StopSignal) -> Result<Exit, RunnerError> {
    let sdk = aws::shared().await;
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&options.queue_url)
        .attribute_names(QueueAttributeName::VisibilityTimeout)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| {
            RunnerError::Usage(format!(
                "cannot read the queue {}: {}",
                options.queue_url,
                describe_error(&e)
            ))
        })?
        .attributes
        .unwrap_or_default();
    let visibility = options
        .visibility
        .or_else(|| {
            attributes
                .get(&QueueAttributeName::VisibilityTimeout)
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(30)
        .max(2);
    let worker = Arc::new(Worker {
        sqs,
        queue_url: options.queue_url.clone(),
        queue_arn: attributes.get(&QueueAttributeName::QueueArn).cloned(),
        visibility,
        triage: Triage::new(sdk, &options.overflow, "runner"),
        reporter: Reporter::new(&options.overflow),
        options,
    });
    let (concurrency, idle) = (worker.options.concurrency, worker.options.idle);
    tracing::info!(queue = %worker.queue_url, concurrency, idle_s = idle.as_secs_f64(), visibility_s = visibility, "draining");

    // Each run holds a slot, and in it the user id its function runs as: two functions
    // running at once never share a user, one after the other they may.
    let mut running: JoinSet<Slot> = JoinSet::new();
    let mut free: Vec<Slot> = (0..concurrency as u32).rev().map(Slot).collect();
    let mut idle_since = Instant::now();
    let mut stopping = stop.clone();
    let (mut ran, mut stopped) = (0usize, false);
    loop {
        while let Some(done) = running.try_join_next() {
            free.extend(done.ok());
        }
        if stop.borrow().is_some() {
            stopped = true;
            break;
        }
        if running.len() >= concurrency || free.is_empty() {
            tokio::select! {
                done = running.join_next() => free.extend(done.and_then(Result::ok)),
                _ = stop_requested(&mut stopping) => {}
            }
            continue;
        }
        let room = free.len().min(10) as i32;
        // Short polls while runs are in flight, so finished slots refill quickly.
        let wait = if running.is_empty() {
            idle.as_secs().clamp(1, 20) as i32
        } else {
            1
        };
        let received = tokio::select! {
            received = worker.receive(room, wait) => received,
            _ = stop_requested(&mut stopping) => continue,
        };
        match received {
            Ok(messages) if !messages.is_empty() => {
                idle_since = Instant::now();
                for message in messages {
                    ran += 1;
                    let (worker, stop) = (worker.clone(), stop.clone());
                    let slot = free.pop().expect("no more messages than free slots are received");
                    running.spawn(async move {
                        worker.run(message, stop, slot).await;
                        slot
                    });
                }
            }
            Ok(_) => {
                if running.is_empty() && idle_since.elapsed() >= idle {
                    break;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot receive from the queue; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    while running.join_next().await.is_some() {}
    tracing::info!(messages = ran, stopped, "drain worker done");
    Ok(match *stop.borrow() {
        Some(signal) => Exit::Signal(signal),
        None => Exit::Success,
    })
}

impl Worker {
    async fn receive(&self, max: i32, wait: i32) -> Result<Vec<Message>, String> {
        Ok(self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max)
            .wait_time_seconds(wait)
            .visibility_timeout(self.visibility)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| describe_error(&e))?
            .messages
            .unwrap_or_default())
    }

    /// Runs one message to its end, with a heartbeat while it runs.
    async fn run(self: Arc<Self>, message: Message, stop: StopSignal, slot: Slot) {
        let receipt = message.receipt_handle.clone().unwrap_or_default();
        let message_id = message.message_id.clone().unwrap_or_default();
        let heartbeat = tokio::spawn(self.clone().heartbeat(receipt.clone()));
        let settled = self.process(&message, stop.clone(), slot).await;
        heartbeat.abort();
        match settled {
            Settled::Done => self.delete(&receipt, &message_id).await,
            Settled::Release => self.set_visibility(&receipt, 0).await,
            Settled::Leave => {}
        }
    }

    async fn process(&self, message: &Message, stop: StopSignal, slot: Slot) -> Settled {
        let queued = self.queue_message(message);
        let triaged = self.triage.triage(&queued).await;
        let request_id = triaged.request_id.unwrap_or_default();
        let function = triaged.function.as_ref().map(|f| f.label()).unwrap_or_default();
        let envelope = match triaged.verdict {
            Verdict::Relaunch(envelope) => envelope,
            settled => {
                settled.log(&queued.message_id, &request_id, &function);
                // Passed on: done. Declined or failed: its visibility runs out and SQS
                // delivers it again, then parks it.
                return if settled.done() { Settled::Done } else { Settled::Leave };
            }
        };
        let result = async {
            let function = execution::function_of(&envelope)?;
            let code = CodeSource::Remote {
                function: None,
                qualifier: None,
            };
            let prepared = code.prepare(function.as_ref(), &self.options.code, aws::shared).await?;
            execution::run_envelope(
                prepared,
                &envelope,
                function.as_ref(),
                &self.options.settings,
                slot,
                false,
                ResponseSink::discard(),
                stop.clone(),
            )
            .await
        }
        .await;
        let (invocation, outcome) = match result {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(message_id = %queued.message_id, request_id, function, error = %e, "the run could not start; SQS will deliver the message again");
                return Settled::Leave;
            }
        };
        if stop.borrow().is_some() {
            tracing::warn!(message_id = %queued.message_id, request_id, "stopped mid-run; the message is released for another worker");
            return Settled::Release;
        }
        let ok = matches!(outcome, Outcome::Response { .. });
        tracing::info!(message_id = %queued.message_id, request_id, function, success = ok, error_type = outcome.error_type().unwrap_or_default(), "message ran");
        match self.reporter.deliver(&invocation, &outcome).await {
            Ok(()) => Settled::Done,
            // The record is in the log in full; the message runs again rather than vanish.
            Err(_) => Settled::Release,
        }
    }

    /// Keeps the message invisible for as long as it runs.
    async fn heartbeat(self: Arc<Self>, receipt: String) {
        let every = Duration::from_secs_f64((self.visibility as f64 / 3.0).max(0.5));
        loop {
            tokio::time::sleep(every).await;
            self.set_visibility(&receipt, self.visibility).await;
        }
    }

    async fn set_visibility(&self, receipt: &str, seconds: i32) {
        let result = self
            .sqs
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(seconds)
            .send()
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %describe_error(&e), seconds, "cannot change the message's visibility");
        }
    }

    async fn delete(&self, receipt: &str, message_id: &str) {
        if let Err(e) = self
            .sqs
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .send()
            .await
        {
            tracing::error!(message_id, error = %describe_error(&e), "cannot delete the message; it may run again");
        }
    }

    fn queue_message(&self, message: &Message) -> QueueMessage {
        QueueMessage {
            message_id: message.message_id.clone().unwrap_or_default(),
            body: message.body.clone().unwrap_or_default(),
            attributes: message
                .message_attributes
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|(name, a)| {
                    (
                        name,
                        MessageAttribute {
                            data_type: a.data_type,
                            string_value: a.string_value,
                        },
                    )
                })
                .collect(),
            queue_arn: self.queue_arn.clone(),
        }
    }
}

/// What happens to a message after its run.
enum Settled {
    /// Delete it: it has an outcome.
    Done,
    /// Make it visible again now (stopped, or the outcome could not be reported).
    Release,
    /// Leave it: its visibility runs out and SQS delivers it again (then parks it).
    Leave,
}
