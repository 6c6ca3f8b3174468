//! Drain-worker mode (`runner --queue URL[,URL...]`): long-poll the overflow queues and
//! run each message exactly as a single-task run would, sharing the code cache across
//! messages. With `--attached` (the scaler's workers), the attached functions' own
//! dead-letter queues are drained too, found by their tags at start and every five
//! minutes.
//!
//! A message is deleted only once its run has an outcome (and that outcome was
//! reported); while it runs, its visibility timeout is extended (a heartbeat). SQS
//! keeps a message invisible for 12 hours at most: a run that reaches
//! `--handover-after` is handed to the ledger in the payload bucket (which then owns
//! it, as it owns every task the forwarder starts) and its message deleted, so it is
//! never delivered a second time. The worker exits after every queue has stayed empty
//! for the idle time. On SIGTERM it takes no new messages, stops the running
//! bootstraps, releases their messages (visibility 0) so another worker runs them (or,
//! for a handed-over run, marks the attempt interrupted for the reconciler), and exits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use immortal_handler_sdk::aws::{self, describe_error, CallFailed};
use immortal_handler_sdk::container::FUNCTION_ATTRIBUTE;
use immortal_handler_sdk::record::{MessageAttribute, QueueMessage};
use immortal_handler_sdk::Envelope;
use immortal_overflow::attached_queues::AttachedQueues;
use immortal_overflow::metrics::{self, Metric};
use immortal_overflow::{OverflowSettings, Triage, Verdict};
use tokio::task::JoinSet;

use crate::code::{self, CodeOptions};
use crate::emulator::bootstrap::Swept;
use crate::emulator::outcome::Outcome;
use crate::emulator::runtime_api::ResponseSink;
use crate::error::RunnerError;
use crate::exit::Exit;
use crate::run::attempt::Attempt;
use crate::run::execution::{self, Ran, RunSettings, Slot};
use crate::run::report::Reporter;
use crate::run::settlement::End;
use crate::run::tenancy::Tenancy;
use crate::signals::{stop_requested, StopSignal};

/// How a worker runs.
pub(crate) struct DrainOptions {
    /// The queues.
    pub(crate) queue_urls: Vec<String>,
    /// Also the attached functions' own dead-letter queues, found by their tags.
    pub(crate) attached: bool,
    /// Messages run at once.
    pub(crate) concurrency: usize,
    /// Exit after every queue has been empty this long.
    pub(crate) idle: Duration,
    /// How long a received message stays invisible per heartbeat (default: its queue's own).
    pub(crate) visibility: Option<i32>,
    /// After how long a running message is handed to the ledger.
    pub(crate) handover_after: Duration,
    /// The relaunch policy, the function map, where outcomes go.
    pub(crate) overflow: OverflowSettings,
    /// Where records this worker's image cannot run go, for the forwarder to launch.
    pub(crate) hand_off_queue: Option<String>,
    /// Code cache and layers.
    pub(crate) code: CodeOptions,
    /// Timeout, grace period, handler.
    pub(crate) settings: RunSettings,
}

/// One overflow queue.
struct Queue {
    url: String,
    arn: Option<String>,
    visibility: i32,
}

/// Everything a message's run needs, shared by the runs.
struct Worker {
    sqs: aws_sdk_sqs::Client,
    triage: Triage,
    reporter: Reporter,
    /// One function's code at a time: the task root and layers root are the task's.
    tenancy: Arc<Tenancy>,
    /// A function's user had leftovers after its run: no more work is taken.
    tainted: AtomicBool,
    options: DrainOptions,
}

impl Queue {
    /// The queue's ARN and visibility timeout (`visibility` overrides it), read once.
    async fn look_up(sqs: &aws_sdk_sqs::Client, url: &str, visibility: Option<i32>) -> Result<Queue, RunnerError> {
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::VisibilityTimeout)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| RunnerError::Usage(format!("cannot read the queue {url}: {}", describe_error(&e))))?
            .attributes
            .unwrap_or_default();
        let visibility = visibility
            .or_else(|| {
                attributes
                    .get(&QueueAttributeName::VisibilityTimeout)
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(30)
            .max(2);
        Ok(Queue {
            url: url.to_owned(),
            arn: attributes.get(&QueueAttributeName::QueueArn).cloned(),
            visibility,
        })
    }

    /// A message received from this queue, as triage reads it.
    fn message(&self, message: &Message) -> QueueMessage {
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
            queue_arn: self.arn.clone(),
            sender_id: message
                .attributes
                .as_ref()
                .and_then(|a| a.get(&MessageSystemAttributeName::SenderId))
                .cloned(),
            sent_ms: message
                .attributes
                .as_ref()
                .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                .and_then(|v| v.parse().ok()),
        }
    }
}

/// How often a worker looks for attached dead-letter queues added since it started.
const LOOK_FOR_ATTACHED: Duration = Duration::from_secs(300);

/// Adds the attached dead-letter queues not in `queues` yet. A failure is logged: the
/// worker drains what it has and looks again later.
async fn add_attached(
    sqs: &aws_sdk_sqs::Client,
    attached: &AttachedQueues,
    queues: &mut Vec<Arc<Queue>>,
    visibility: Option<i32>,
) {
    let found = match attached.list().await {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(error = %e, "cannot list the attached dead-letter queues; looking again later");
            return;
        }
    };
    for url in found {
        if queues.iter().any(|q| q.url == url) {
            continue;
        }
        match Queue::look_up(sqs, &url, visibility).await {
            Ok(queue) => {
                tracing::info!(queue = %url, "an attached function's dead-letter queue: draining it too");
                queues.push(Arc::new(queue));
            }
            Err(e) => tracing::error!(queue = %url, error = %e, "cannot read the attached queue; looking again later"),
        }
    }
}

/// Drains the queues until they stay empty or a stop is requested.
pub(crate) async fn drain(options: DrainOptions, stop: StopSignal) -> Result<Exit, RunnerError> {
    let sdk = aws::shared().await;
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let mut queues = Vec::new();
    for url in &options.queue_urls {
        queues.push(Arc::new(Queue::look_up(&sqs, url, options.visibility).await?));
    }
    let attached = options.attached.then(|| AttachedQueues::new(sqs.clone()));
    if let Some(attached) = &attached {
        add_attached(&sqs, attached, &mut queues, options.visibility).await;
        if queues.is_empty() {
            return Err(RunnerError::Usage(
                "no queue to drain: give --queue, or tag the attached functions' dead-letter queues immortal:function=NAME and immortal:enabled=true".to_owned(),
            ));
        }
    }
    let mut looked_for_attached = Instant::now();
    if options.overflow.payload_bucket.is_none() {
        tracing::warn!(
            "no payload bucket (IMMORTAL_PAYLOAD_BUCKET): a run longer than 12 hours cannot be handed to the ledger, and SQS will deliver its message again"
        );
    }
    let worker = Arc::new(Worker {
        sqs,
        triage: Triage::new(sdk, &options.overflow, "runner"),
        reporter: Reporter::new(&options.overflow),
        tenancy: Arc::default(),
        tainted: AtomicBool::new(false),
        options,
    });
    let (concurrency, idle) = (worker.options.concurrency, worker.options.idle);
    for queue in &queues {
        tracing::info!(queue = %queue.url, concurrency, idle_s = idle.as_secs_f64(), visibility_s = queue.visibility, "draining");
    }

    // Each run holds a slot, and in it the user id its function runs as: two functions
    // running at once never share a user, one after the other they may.
    let mut running: JoinSet<Slot> = JoinSet::new();
    let mut free: Vec<Slot> = (0..concurrency as u32).rev().map(Slot).collect();
    let mut idle_since = Instant::now();
    let mut stopping = stop.clone();
    let (mut ran, mut stopped, mut next) = (0usize, false, 0usize);
    loop {
        while let Some(done) = running.try_join_next() {
            free.extend(done.ok());
        }
        if stop.borrow().is_some() {
            stopped = true;
            break;
        }
        if worker.tainted.load(Ordering::SeqCst) {
            tracing::error!("a function's user kept processes or files after its run; this worker takes no more work (its task ends, other workers drain the queues)");
            break;
        }
        if running.len() >= concurrency || free.is_empty() {
            tokio::select! {
                done = running.join_next() => free.extend(done.and_then(Result::ok)),
                _ = stop_requested(&mut stopping) => {}
            }
            continue;
        }
        if let Some(attached) = attached
            .as_ref()
            .filter(|_| looked_for_attached.elapsed() >= LOOK_FOR_ATTACHED)
        {
            looked_for_attached = Instant::now();
            add_attached(&worker.sqs, attached, &mut queues, worker.options.visibility).await;
        }
        let room = free.len().min(10) as i32;
        // One queue per poll, in turn. Short polls while runs are in flight (so finished
        // slots refill quickly) and when there are several queues (so none waits on
        // another's long poll).
        let queue = queues[next % queues.len()].clone();
        next += 1;
        let wait = if running.is_empty() && queues.len() == 1 {
            idle.as_secs().clamp(1, 20) as i32
        } else {
            1
        };
        let received = tokio::select! {
            received = worker.receive(&queue, room, wait) => received,
            _ = stop_requested(&mut stopping) => continue,
        };
        match received {
            Ok(messages) if !messages.is_empty() => {
                idle_since = Instant::now();
                for message in messages {
                    ran += 1;
                    let (worker, stop, queue) = (worker.clone(), stop.clone(), queue.clone());
                    let slot = free.pop().expect("no more messages than free slots are received");
                    running.spawn(async move {
                        worker.run(queue, message, stop, slot).await;
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
                tracing::error!(queue = %queue.url, error = %describe_error(&e), "cannot receive from the queue; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    while running.join_next().await.is_some() {}
    tracing::info!(messages = ran, stopped, "drain worker done");
    Ok(match *stop.borrow() {
        Some(signal) => Exit::Signal(signal),
        None if worker.tainted.load(Ordering::SeqCst) => Exit::Tainted,
        None => Exit::Success,
    })
}

impl Worker {
    async fn receive(
        &self,
        queue: &Queue,
        max: i32,
        wait: i32,
    ) -> Result<Vec<Message>, aws_sdk_sqs::error::SdkError<aws_sdk_sqs::operation::receive_message::ReceiveMessageError>>
    {
        Ok(self
            .sqs
            .receive_message()
            .queue_url(&queue.url)
            .max_number_of_messages(max)
            .wait_time_seconds(wait)
            .visibility_timeout(queue.visibility)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SenderId)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await?
            .messages
            .unwrap_or_default())
    }

    /// Runs one message to its end, with a heartbeat while it runs (until it is handed
    /// to the ledger).
    async fn run(self: Arc<Self>, queue: Arc<Queue>, message: Message, stop: StopSignal, slot: Slot) {
        let receipt = message.receipt_handle.clone().unwrap_or_default();
        let message_id = message.message_id.clone().unwrap_or_default();
        let heartbeat = tokio::spawn(self.clone().heartbeat(queue.clone(), receipt.clone()));
        let queued = queue.message(&message);
        let settled = self.process(&queue, &queued, &receipt, stop, slot, &heartbeat).await;
        heartbeat.abort();
        match settled {
            Settled::Done => self.delete(&queue, &receipt, &message_id).await,
            Settled::Release => self.set_visibility(&queue, &receipt, 0).await,
            Settled::Leave | Settled::HandedOver => {}
        }
    }

    async fn process(
        &self,
        queue: &Queue,
        queued: &QueueMessage,
        receipt: &str,
        stop: StopSignal,
        slot: Slot,
        heartbeat: &tokio::task::JoinHandle<()>,
    ) -> Settled {
        let triaged = self.triage.triage(queued).await;
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
        if let Some(sent) = queued.sent_ms {
            let waited = immortal_overflow::ledger::now_ms().saturating_sub(sent);
            metrics::emit(&function, &[(Metric::TimeToStart, waited as f64)]);
        }
        let run = self.execute(&envelope, stop.clone(), slot);
        tokio::pin!(run);
        let handover = tokio::time::sleep(self.options.handover_after);
        tokio::pin!(handover);
        let (mut handed, mut tried) = (None, false);
        let result = loop {
            tokio::select! {
                result = &mut run => break result,
                _ = &mut handover, if !tried => {
                    tried = true;
                    handed = self.hand_over(&envelope, &function, queued.sent_ms).await;
                    if handed.is_some() {
                        heartbeat.abort();
                        self.delete(queue, receipt, &queued.message_id).await;
                    }
                }
            }
        };
        let (invocation, outcome) = match result {
            Ok(ran) => {
                if stop.borrow().is_none() {
                    ran.emit_metrics();
                }
                let Ran {
                    invocation,
                    outcome,
                    swept,
                    ..
                } = ran;
                if swept == Swept::Leftovers {
                    // Its user must not serve another run: no more work for this worker.
                    self.tainted.store(true, Ordering::SeqCst);
                }
                (invocation, outcome)
            }
            Err(e) => {
                let about = (queued, envelope.as_ref(), request_id.as_str(), function.as_str());
                return self.not_run(about, handed.as_ref(), e).await;
            }
        };
        let stopped_by = *stop.borrow();
        if let Some(signal) = stopped_by {
            return match &handed {
                Some(attempt) => {
                    tracing::warn!(message_id = %queued.message_id, request_id, signal, "stopped mid-run; the ledger's reconciler relaunches it");
                    attempt.settle(End::Stopped(signal)).await;
                    Settled::HandedOver
                }
                None => {
                    tracing::warn!(message_id = %queued.message_id, request_id, "stopped mid-run; the message is released for another worker");
                    Settled::Release
                }
            };
        }
        let ok = matches!(outcome, Outcome::Response { .. });
        tracing::info!(message_id = %queued.message_id, request_id, function, success = ok, error_type = outcome.error_type().unwrap_or_default(), "message ran");
        let delivered = self.reporter.deliver(&invocation, &outcome).await;
        match (&handed, delivered) {
            (None, Ok(())) => Settled::Done,
            // The record is in the log in full; the message runs again rather than vanish.
            (None, Err(_)) => Settled::Release,
            // Undelivered, it is left running in the ledger: relaunched once this
            // worker's task has stopped.
            (Some(attempt), delivered) => {
                attempt
                    .settle(End::Ran {
                        outcome: &outcome,
                        delivered: delivered.is_ok(),
                    })
                    .await;
                Settled::HandedOver
            }
        }
    }

    /// A message whose run could not start. A record this worker's image cannot run is
    /// handed off (not a failure of the invocation); anything else is the invocation's
    /// outcome, reported with its cause, as a single task does.
    async fn not_run(
        &self,
        (queued, envelope, request_id, function): (&QueueMessage, &Envelope, &str, &str),
        handed: Option<&Attempt>,
        e: RunnerError,
    ) -> Settled {
        let message_id = &queued.message_id;
        if e.needs_another_image() && handed.is_none() && self.options.hand_off_queue.is_some() {
            return match self.hand_off(queued, envelope).await {
                Ok(()) => {
                    tracing::warn!(message_id, request_id, function, why = %e, "handed off to a task of the right image");
                    Settled::Done
                }
                Err(err) => {
                    tracing::error!(message_id, request_id, function, error = %err, "cannot hand the record off; SQS will deliver it again");
                    Settled::Leave
                }
            };
        }
        if e.is_transient() {
            // Not the invocation's end: SQS delivers the message again (or, once the
            // ledger owns the run, the sweep relaunches the interrupted attempt).
            if let Some(attempt) = handed {
                attempt.settle(End::Unavailable(&e)).await;
                tracing::warn!(message_id, request_id, function, error = %e, "the run could not start for now; the ledger relaunches it");
                return Settled::HandedOver;
            }
            tracing::warn!(message_id, request_id, function, error = %e, "the run could not start for now; SQS will deliver the message again");
            return Settled::Leave;
        }
        let target = execution::function_of(envelope).ok().flatten();
        let delivered = execution::report_unrun(&self.reporter, envelope, target.as_ref(), &e).await;
        if let Some(attempt) = handed {
            attempt.settle(End::Unrun { err: &e, delivered }).await;
        }
        if !delivered {
            tracing::error!(message_id, request_id, function, error = %e, "the run could not start; SQS will deliver the message again");
            return Settled::Leave;
        }
        tracing::error!(message_id, request_id, function, error = %e, "the run could not start; reported as its outcome");
        if handed.is_some() {
            Settled::HandedOver
        } else {
            Settled::Done
        }
    }

    /// Sends the message as it came, naming its function, to the hand-off queue.
    async fn hand_off(&self, queued: &QueueMessage, envelope: &Envelope) -> Result<(), CallFailed> {
        let url = self.options.hand_off_queue.as_deref().expect("checked by the caller");
        let attribute = |data_type: &str, value: &str| {
            aws_sdk_sqs::types::MessageAttributeValue::builder()
                .data_type(data_type)
                .string_value(value)
                .build()
                .expect("a data type and a value make an attribute")
        };
        let mut send = self.sqs.send_message().queue_url(url).message_body(&queued.body);
        for (name, value) in &queued.attributes {
            if let Some(text) = &value.string_value {
                send = send.message_attributes(name, attribute(&value.data_type, text));
            }
        }
        if let Some(function) = envelope.context.invoked_function_arn.as_deref() {
            send = send.message_attributes(FUNCTION_ATTRIBUTE, attribute("String", function));
        }
        send.send()
            .await
            .map(|_| ())
            .map_err(|e| CallFailed::new(format!("SendMessage({url})"), &e))
    }

    /// Runs `envelope` with its function's code, in `slot`.
    async fn execute(&self, envelope: &Envelope, stop: StopSignal, slot: Slot) -> Result<Ran, RunnerError> {
        let function = execution::function_of(envelope)?;
        let target = code::function_ref(None, None, function.as_ref())?;
        let fetched = code::fetch(&target, &self.options.code, aws::shared().await).await?;
        // Shown to the function only when no other function's run could see it.
        let _tenant = self.tenancy.enter(&fetched.identity()).await;
        let prepared = fetched.present(&self.options.code).await?;
        execution::run_envelope(
            prepared,
            envelope,
            function.as_ref(),
            &self.options.settings,
            (slot, None),
            ResponseSink::discard(),
            stop,
        )
        .await
    }

    /// Hands a long run to the ledger, which then owns it (`None`: not possible, and the
    /// heartbeat goes on).
    async fn hand_over(&self, envelope: &Envelope, function: &str, sent_ms: Option<u64>) -> Option<Attempt> {
        let Some(bucket) = self.options.overflow.payload_bucket.as_deref() else {
            tracing::error!("the run nears SQS's 12-hour visibility limit and there is no payload bucket to hand it to; its message may be delivered again");
            return None;
        };
        match Attempt::hand_over(bucket, envelope, function, sent_ms).await {
            Ok(Some(attempt)) => {
                tracing::info!(request_id = %attempt.request_id, "the run is handed to the ledger; its message leaves the queue");
                Some(attempt)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "cannot hand the run to the ledger; the heartbeat goes on");
                None
            }
        }
    }

    /// Keeps the message invisible for as long as it runs.
    async fn heartbeat(self: Arc<Self>, queue: Arc<Queue>, receipt: String) {
        let visibility = queue.visibility;
        let every = Duration::from_secs_f64((visibility as f64 / 3.0).max(0.5));
        loop {
            tokio::time::sleep(every).await;
            self.set_visibility(&queue, &receipt, visibility).await;
        }
    }

    async fn set_visibility(&self, queue: &Queue, receipt: &str, seconds: i32) {
        let result = self
            .sqs
            .change_message_visibility()
            .queue_url(&queue.url)
            .receipt_handle(receipt)
            .visibility_timeout(seconds)
            .send()
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %describe_error(&e), seconds, "cannot change the message's visibility");
        }
    }

    async fn delete(&self, queue: &Queue, receipt: &str, message_id: &str) {
        if let Err(e) = self
            .sqs
            .delete_message()
            .queue_url(&queue.url)
            .receipt_handle(receipt)
            .send()
            .await
        {
            tracing::error!(message_id, error = %describe_error(&e), "cannot delete the message; it may run again");
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
    /// Nothing more to do with the message: it was handed to the ledger and deleted.
    HandedOver,
}
