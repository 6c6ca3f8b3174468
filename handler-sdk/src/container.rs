//! Names shared between the parts: every `IMMORTAL_*` variable, tags, error types.
//!
//! Decided once, here; every other crate uses these constants, never the literals.

// ---- The envelope's trip into a container (see `immortal_overflow::carrier`) ----

/// The original event (JSON), for a run started by hand (`runner` reads it like `--event`).
pub const EVENT_VAR: &str = "IMMORTAL_EVENT";
/// The invocation context (JSON), read like `--context`.
pub const CONTEXT_VAR: &str = "IMMORTAL_CONTEXT";
/// Where a whole envelope is stored (`s3://bucket/key`). Takes the place of
/// [`EVENT_VAR`] and [`CONTEXT_VAR`].
pub const ENVELOPE_URL_VAR: &str = "IMMORTAL_ENVELOPE_URL";
/// The stored envelope's SHA-256 (hex): the runner refuses one that differs.
pub const ENVELOPE_DIGEST_VAR: &str = "IMMORTAL_ENVELOPE_DIGEST";

// ---- What the runner sets for the bootstrap ----

/// Set by the runner for the bootstrap: the runner's version. Its presence means
/// "running in the overflow runner, not in Lambda".
pub const RUNNER_VAR: &str = "IMMORTAL_RUNNER";
/// Set by the runner for the bootstrap to `1` when the invocation has no time limit
/// (the deadline header then carries a far-future placeholder).
pub const NO_DEADLINE_VAR: &str = "IMMORTAL_NO_DEADLINE";
/// How far ahead the deadline header points when there is no time limit: 21 days, the
/// largest round figure whose remaining milliseconds still fit a signed 32-bit integer
/// (Java's `Context.getRemainingTimeInMillis()` returns `int`).
pub const NO_DEADLINE_SECS: u64 = 21 * 24 * 3600;
/// Set by the runner for the bootstrap, only in overflow runs: the context's
/// `overflow` object as JSON (attempt, original error, source).
pub const OVERFLOW_VAR: &str = "IMMORTAL_OVERFLOW";

// ---- Settings shared by the forwarder and the runner ----

/// Which failures are relaunched (`timeout,overflow` by default).
pub const RELAUNCH_VAR: &str = "IMMORTAL_RELAUNCH";
/// `queueArn=function,...` for dead-letter queues without the [`FUNCTION_TAG`].
pub const FUNCTION_MAP_VAR: &str = "IMMORTAL_FUNCTION_MAP";
/// Who besides each function's own role may send a record that runs it: unique ids of
/// IAM principals (`AIDA...`, `AROA...`) or `ROLE_ID:SESSION`, comma-separated.
pub const TRUSTED_SENDERS_VAR: &str = "IMMORTAL_TRUSTED_SENDERS";
/// Where a drain worker hands the records it cannot run in its image (another runtime
/// or architecture): a queue the forwarder launches from in every mode.
pub const HAND_OFF_QUEUE_URL_VAR: &str = "IMMORTAL_HAND_OFF_QUEUE_URL";
/// The message attribute naming the function of a handed-off dead-letter message (its
/// own queue, whose tag named it, is no longer where it is).
pub const FUNCTION_ATTRIBUTE: &str = "ImmortalFunction";
/// Where success records go (an SQS queue, SNS topic or EventBridge bus).
pub const ON_SUCCESS_VAR: &str = "IMMORTAL_ON_SUCCESS";
/// Where failure records go.
pub const ON_FAILURE_VAR: &str = "IMMORTAL_ON_FAILURE";
/// The bucket for stored envelopes and records too large for their destination.
pub const PAYLOAD_BUCKET_VAR: &str = "IMMORTAL_PAYLOAD_BUCKET";

// ---- The forwarder's settings ----

/// The ECS cluster the runner's tasks run in.
pub const CLUSTER_VAR: &str = "IMMORTAL_CLUSTER";
/// The runner's task definition for custom runtimes (`provided.*`).
pub const TASK_DEFINITION_VAR: &str = "IMMORTAL_TASK_DEFINITION";
/// `RUNTIME[/ARCHITECTURE]=TASK_DEFINITION,...`: the runner's task definition per
/// managed runtime (`*` catches the rest).
pub const TASK_DEFINITIONS_VAR: &str = "IMMORTAL_TASK_DEFINITIONS";
/// The runner's container in that task definition.
pub const CONTAINER_NAME_VAR: &str = "IMMORTAL_CONTAINER_NAME";
/// Subnets for the tasks.
pub const SUBNETS_VAR: &str = "IMMORTAL_SUBNETS";
/// Security groups for the tasks.
pub const SECURITY_GROUPS_VAR: &str = "IMMORTAL_SECURITY_GROUPS";
/// `ENABLED` or `DISABLED`.
pub const ASSIGN_PUBLIC_IP_VAR: &str = "IMMORTAL_ASSIGN_PUBLIC_IP";
/// The capacity provider strategy.
pub const CAPACITY_PROVIDERS_VAR: &str = "IMMORTAL_CAPACITY_PROVIDERS";
/// Whether a capacity failure falls back to on-demand Fargate once.
pub const ON_DEMAND_FALLBACK_VAR: &str = "IMMORTAL_ON_DEMAND_FALLBACK";
/// The tasks' `startedBy`.
pub const STARTED_BY_VAR: &str = "IMMORTAL_STARTED_BY";
/// `task` (one task per message) or `drain` (a scaler of drain workers).
pub const MODE_VAR: &str = "IMMORTAL_MODE";
/// The least memory (MB) a runner task gets.
pub const MIN_MEMORY_VAR: &str = "IMMORTAL_MIN_MEMORY";
/// The most memory (MB) a runner task gets (and a drain worker's size).
pub const MAX_MEMORY_VAR: &str = "IMMORTAL_MAX_MEMORY";
/// Container attempts per invocation before it is reported `RetriesExhausted` (default 3).
pub const MAX_ATTEMPTS_VAR: &str = "IMMORTAL_MAX_ATTEMPTS";
/// The runner container's `stopTimeout` (seconds): how long ECS waits after SIGTERM.
pub const STOP_TIMEOUT_VAR: &str = "IMMORTAL_STOP_TIMEOUT";
/// Drain mode: the queue the workers drain.
pub const DRAIN_QUEUE_URL_VAR: &str = "IMMORTAL_DRAIN_QUEUE_URL";
/// Drain mode: the most workers at once.
pub const MAX_WORKERS_VAR: &str = "IMMORTAL_MAX_WORKERS";
/// Drain mode: queued messages per worker.
pub const MESSAGES_PER_WORKER_VAR: &str = "IMMORTAL_MESSAGES_PER_WORKER";
/// Drain mode: whether the workers also drain every attached function's own dead-letter
/// queue, found by its tags (default `true`; the scaler passes it on to the workers).
pub const DRAIN_ATTACHED_VAR: &str = "IMMORTAL_DRAIN_ATTACHED";

// ---- The runner's settings ----

/// The overflow queues a drain worker (`runner --queue`) reads, comma-separated; set by
/// the scaler.
pub const QUEUE_URL_VAR: &str = "IMMORTAL_QUEUE_URL";
/// SIGTERM → SIGKILL delay for the bootstrap.
pub const GRACE_PERIOD_VAR: &str = "IMMORTAL_GRACE_PERIOD";
/// The code cache.
pub const CACHE_DIR_VAR: &str = "IMMORTAL_CACHE_DIR";
/// Whose credentials the function gets: `assume` (its own role), `inherit`, or a role ARN.
pub const FUNCTION_ROLE_VAR: &str = "IMMORTAL_FUNCTION_ROLE";
/// How long a served credential lives before the runner renews it (seconds).
pub const CREDENTIALS_LIFETIME_VAR: &str = "IMMORTAL_CREDENTIALS_LIFETIME";
/// `immortal-sandbox`, to run each function as a user of its own (set by the image).
pub const SANDBOX_VAR: &str = "IMMORTAL_SANDBOX";
/// `true`: /tmp belongs to this runner alone (set by the image), emptied between functions.
pub const OWN_TMP_VAR: &str = "IMMORTAL_OWN_TMP";
/// `off`: the runner starts no extensions (as `--no-extensions`).
pub const EXTENSIONS_VAR: &str = "IMMORTAL_EXTENSIONS";
/// Seconds between the runner's "still running" lines during a run (0: none).
pub const HEARTBEAT_VAR: &str = "IMMORTAL_HEARTBEAT";
/// Where the function's logs go: `cloudwatch` or `stderr`.
pub const FUNCTION_LOGS_VAR: &str = "IMMORTAL_FUNCTION_LOGS";
/// The layers root.
pub const OPT_DIR_VAR: &str = "IMMORTAL_OPT_DIR";
/// The runtime directory (`/var/runtime` in AWS's base images).
pub const RUNTIME_DIR_VAR: &str = "IMMORTAL_RUNTIME_DIR";
/// The runtime whose userland the runner's image holds (set by the image).
pub const IMAGE_RUNTIME_VAR: &str = "IMMORTAL_IMAGE_RUNTIME";
/// Where the function's code appears (`/var/task` in the image): a folder the runner
/// owns and fills with the function's code before each run.
pub const TASK_ROOT_VAR: &str = "IMMORTAL_TASK_ROOT";
/// Where Lambda shows a function its code (`LAMBDA_TASK_ROOT`), in AWS's base images
/// and in the runner's images alike.
pub const TASK_ROOT: &str = "/var/task";
/// Where Lambda shows a function its layers, and an image holds its extensions.
pub const LAYERS_ROOT: &str = "/opt";
/// Where the task of a container-image function mounts the runner and its sandbox
/// helper (copied there by the runner image's init container) inside the function's
/// own image.
pub const IMAGE_RUNNER_DIR: &str = "/immortal";
/// The runner's user in its image (the Dockerfile's `USER`), kept in a function's image.
pub const RUNNER_USER: &str = "10001:10001";
/// The per-zip unpacked size limit.
pub const MAX_UNPACKED_SIZE_VAR: &str = "IMMORTAL_MAX_UNPACKED_SIZE";
/// Drain mode: messages run at once.
pub const CONCURRENCY_VAR: &str = "IMMORTAL_CONCURRENCY";
/// Drain mode: exit after the queue stayed empty this long.
pub const IDLE_TIMEOUT_VAR: &str = "IMMORTAL_IDLE_TIMEOUT";
/// Drain mode: the heartbeat's visibility extension.
pub const VISIBILITY_TIMEOUT_VAR: &str = "IMMORTAL_VISIBILITY_TIMEOUT";
/// Drain mode: how long a message may run before the worker hands it to the ledger
/// (seconds; SQS keeps a message invisible for 12 hours at most).
pub const HANDOVER_AFTER_VAR: &str = "IMMORTAL_HANDOVER_AFTER";

// ---- Tags ----

/// Queue tag naming the function whose dead-letter queue this is (name or ARN).
pub const FUNCTION_TAG: &str = "immortal:function";
/// `true` on what immortal may touch: attached functions, their roles, their
/// dead-letter queues, their images' repositories (the stack's IAM is conditioned on it).
pub const ENABLED_TAG: &str = "immortal:enabled";
/// A function's own relaunch setting (`timeout+error`: tag values hold no commas), over
/// `IMMORTAL_RELAUNCH`.
pub const RELAUNCH_TAG: &str = "immortal:relaunch";
/// Task tag carrying the original request id.
pub const REQUEST_ID_TAG: &str = "immortal:request-id";

// ---- Error types ----

/// The error type a handler returns to hand its invocation to the runner at once.
pub const OVERFLOW_ERROR_TYPE: &str = "Immortal.Overflow";
/// Lambda's error type for a timed-out invocation.
pub const TIMEOUT_ERROR_TYPE: &str = "Sandbox.Timedout";
/// The phrase in Lambda's timeout messages, in both the old and new formats.
pub const TIMEOUT_PHRASE: &str = "Task timed out after";
/// The failure record's error type when an invocation's container attempts ran out.
pub const ATTEMPTS_EXHAUSTED_ERROR_TYPE: &str = "Immortal.AttemptsExhausted";
/// The failure record's error type of an invocation a person stopped (`immortal stop`).
pub const STOPPED_ERROR_TYPE: &str = "Immortal.Stopped";
/// What a task's runner answers when it was stopped from outside (Spot, scale-in, a
/// signal) mid-run: not the invocation's outcome; the attempt is relaunched.
pub const INTERRUPTED_ERROR_TYPE: &str = "Immortal.Interrupted";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variable_has_the_prefix() {
        for name in [EVENT_VAR, QUEUE_URL_VAR, RELAUNCH_VAR, CLUSTER_VAR, GRACE_PERIOD_VAR] {
            assert!(name.starts_with("IMMORTAL_"), "{name}");
        }
    }
}
