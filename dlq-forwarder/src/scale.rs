//! The scaling mode (`IMMORTAL_MODE=drain`): on a schedule, start just enough drain
//! workers (`runner drain`) for the overflow queues' depth, counting the ones already
//! running. Each worker drains every queue: the configured ones and (unless
//! `IMMORTAL_DRAIN_ATTACHED=false`) the attached functions' own dead-letter queues,
//! which it finds by their tags as the scaler does.

use aws_sdk_sqs::types::QueueAttributeName;
use immortal_handler_sdk::aws::CallFailed;
use immortal_handler_sdk::container::{DRAIN_ATTACHED_VAR, QUEUE_URL_VAR};
use immortal_overflow::attached_queues::{with_attached, AttachedQueues};

use crate::config::{Config, DrainSettings};
use crate::error::ForwardError;
use crate::launch::{self, TaskRequest};
use crate::size;

/// How many workers to start: enough for `depth` messages at `per_worker` each, at most
/// `max_workers` in all, minus those `running`.
///
/// ```
/// use immortal_dlq_forwarder::scale::workers_to_start;
/// assert_eq!(workers_to_start(0, 0, 10, 10), 0);
/// assert_eq!(workers_to_start(25, 1, 10, 10), 2);
/// assert_eq!(workers_to_start(1000, 4, 10, 10), 6);
/// ```
pub fn workers_to_start(depth: u64, running: u64, max_workers: u64, per_worker: u64) -> u64 {
    let wanted = depth.div_ceil(per_worker.max(1)).min(max_workers);
    wanted.saturating_sub(running)
}

/// What one tick did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Tick {
    /// The queues counted: the configured ones, then the attached ones.
    pub queues: Vec<String>,
    /// Visible plus in-flight messages, over every queue.
    pub depth: u64,
    /// Workers already running (or starting).
    pub running: u64,
    /// Workers started now.
    pub started: u64,
    /// Their task ARNs.
    pub tasks: Vec<String>,
}

/// One scheduled tick. `seed` (the schedule event's id) makes the RunTask calls of a
/// retried tick idempotent; `attached` finds the attached functions' own queues.
pub async fn tick(
    (ecs, sqs): (&aws_sdk_ecs::Client, &aws_sdk_sqs::Client),
    config: &Config,
    drain: &DrainSettings,
    attached: &AttachedQueues,
    seed: &str,
) -> Result<Tick, ForwardError> {
    let queues = match drain.attached {
        true => with_attached(&drain.queue_urls, attached.list().await?),
        false => drain.queue_urls.clone(),
    };
    let mut depth = 0;
    for queue_url in &queues {
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| CallFailed::new(format!("GetQueueAttributes({queue_url})"), &e))?
            .attributes
            .unwrap_or_default();
        let count = |name: QueueAttributeName| attributes.get(&name).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        depth += count(QueueAttributeName::ApproximateNumberOfMessages)
            + count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible);
    }
    let mut running = 0u64;
    let mut next = None;
    loop {
        let page = ecs
            .list_tasks()
            .cluster(&config.cluster)
            .started_by(&config.started_by)
            .desired_status(aws_sdk_ecs::types::DesiredStatus::Running)
            .set_next_token(next)
            .send()
            .await
            .map_err(|e| CallFailed::new(format!("ListTasks({})", config.cluster), &e))?;
        running += page.task_arns().len() as u64;
        next = page.next_token;
        if next.is_none() {
            break;
        }
    }
    let started = workers_to_start(depth, running, drain.max_workers, drain.messages_per_worker);
    let mut tasks = Vec::new();
    for n in 0..started {
        let request = TaskRequest {
            // A worker runs many functions: as large as the ceiling allows, else the task
            // definition's own size.
            size: config
                .size_limits
                .max_memory
                .map(|max| size::for_function(max, &config.size_limits)),
            task_definition: config.task_definitions.custom(),
            // Every worker drains every queue: the attached ones it finds itself (the
            // list could outgrow ECS's 8 KiB of overrides).
            environment: vec![
                (QUEUE_URL_VAR.to_owned(), drain.queue_urls.join(",")),
                (DRAIN_ATTACHED_VAR.to_owned(), drain.attached.to_string()),
            ],
            token: launch::client_token(&format!("{seed}/{n}")),
            request_id: "drain-worker",
            function: "drain-worker",
        };
        match launch::run_task(ecs, config, &request).await {
            Ok(task) => tasks.push(task),
            Err(e) => {
                tracing::error!(error = %e, started = tasks.len(), wanted = started, "could not start every worker; the next tick tries again");
                break;
            }
        }
    }
    let tick = Tick {
        queues,
        depth,
        running,
        started: tasks.len() as u64,
        tasks,
    };
    tracing::info!(
        queues = tick.queues.len(),
        depth = tick.depth,
        running = tick.running,
        started = tick.started,
        "drain tick"
    );
    Ok(tick)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaler_arithmetic() {
        assert_eq!(workers_to_start(0, 0, 10, 10), 0, "empty queue: nothing");
        assert_eq!(workers_to_start(0, 3, 10, 10), 0, "never negative");
        assert_eq!(workers_to_start(1, 0, 10, 10), 1, "one message needs a worker");
        assert_eq!(workers_to_start(10, 0, 10, 10), 1);
        assert_eq!(workers_to_start(11, 0, 10, 10), 2, "rounded up");
        assert_eq!(workers_to_start(95, 0, 10, 10), 10, "below the cap");
        assert_eq!(workers_to_start(500, 0, 10, 10), 10, "above the cap");
        assert_eq!(workers_to_start(500, 7, 10, 10), 3, "tasks already running count");
        assert_eq!(workers_to_start(500, 12, 10, 10), 0, "over the cap already");
        assert_eq!(workers_to_start(200, 0, 3, 1), 3);
    }
}
