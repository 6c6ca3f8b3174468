//! A drain worker in a runner image (`provided.al2023`) given a record it cannot run
//! (another runtime, an image function): it hands the record on to the hand-off queue,
//! deletes its message only then, and sends no failure record.

use aws_sdk_sqs::types::Message;

use crate::emulator::Emulator;
use crate::queue::{Queue, EMULATOR_SENDER};
use crate::runner::RunnerCmd;

/// Sends a timed-out invocation (`request_id`, event `{"name":"handed"}`) to `queue`,
/// runs a drain worker on it, checks it handed the record on and nothing else, and
/// returns the hand-off queue and what it holds.
pub async fn drained_to_hand_off(queue: &Queue, request_id: &str) -> (Queue, Vec<Message>) {
    let sdk = Emulator::shared().sdk_config().await;
    let id = crate::lambda::uuid_like();
    let hand_off = Queue::create(&sdk, &format!("hand-off-{id}"), &[], &[]).await;
    let failures = Queue::create(&sdk, &format!("failures-{id}"), &[], &[]).await;
    queue
        .send_dead_letter(r#"{"name":"handed"}"#, request_id, "Task timed out after 3.00 seconds")
        .await;
    let worker = RunnerCmd::new()
        .envs(Emulator::shared().env())
        .env("IMMORTAL_IMAGE_RUNTIME", "provided.al2023")
        .env("IMMORTAL_HAND_OFF_QUEUE_URL", &hand_off.url)
        .env("IMMORTAL_ON_FAILURE", &failures.url)
        .env("IMMORTAL_TRUSTED_SENDERS", EMULATOR_SENDER)
        .args(["drain", "--queue", &queue.url, "--idle-timeout", "2"]);
    let ran = tokio::task::spawn_blocking(move || worker.run()).await.unwrap();
    ran.expect_code(0);
    assert!(
        ran.stderr.contains("handed off to a task of the right image"),
        "{}",
        ran.stderr
    );
    assert!(
        failures.receive(10, 1).await.is_empty(),
        "no failure record: {}",
        ran.stderr
    );
    assert_eq!(queue.depth().await, 0, "deleted once handed on");
    let messages = hand_off.receive(10, 1).await;
    assert_eq!(messages.len(), 1, "handed on once");
    (hand_off, messages)
}
