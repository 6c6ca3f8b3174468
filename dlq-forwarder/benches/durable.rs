//! The forwarder's cost per record with the durable write (the envelope stored, the
//! ledger entry created, then RunTask, then the entry updated) beside its cost without
//! it (the same record launched with the event inline in the overrides, as before the
//! ledger), against the AWS endpoint the environment names (bench/run.py starts the
//! local emulator and sets the forwarder's settings). The two are interleaved, record
//! by record, so the machine's noise falls on both. Prints one JSON line.

use std::time::Instant;

use immortal_dlq_forwarder::config::Config;
use immortal_dlq_forwarder::forward::{Decision, Forwarder};
use immortal_dlq_forwarder::launch::{self, TaskRequest};
use immortal_dlq_forwarder::size;
use immortal_handler_sdk::record::{MessageAttribute, QueueMessage};
use immortal_overflow::functions::Functions;
use immortal_overflow::{Carrier, Triage, Verdict};

/// A timed-out invocation's dead-letter message, with request id `id`.
fn message(template: &QueueMessage, id: &str) -> QueueMessage {
    let mut message = template.clone();
    message.message_id = format!("m-{id}");
    message.attributes.insert(
        "RequestID".into(),
        MessageAttribute {
            data_type: "String".into(),
            string_value: Some(id.into()),
        },
    );
    message
}

/// The record launched the way the forwarder did before the ledger: the envelope inline.
async fn inline(
    triage: &Triage,
    functions: &Functions,
    ecs: &aws_sdk_ecs::Client,
    config: &Config,
    message: &QueueMessage,
) -> String {
    let triaged = triage.triage(message).await;
    let Verdict::Relaunch(envelope) = triaged.verdict else {
        panic!("relaunched")
    };
    let function = triaged.function.expect("a function");
    let found = functions.facts(&function).await.expect("its configuration");
    let runtime = found.runtime.as_deref().expect("a zip function");
    let task_definition = config
        .task_definitions
        .choose(runtime, &found.architecture)
        .expect("a runner");
    let request = TaskRequest {
        size: Some(size::for_function(found.memory_mb, &config.size_limits)),
        task_definition,
        environment: Carrier::inline(&envelope).to_environment(),
        token: launch::client_token(&message.message_id),
        request_id: triaged.request_id.as_deref().unwrap_or_default(),
        function: &function.label(),
    };
    launch::run_task(ecs, config, &request).await.expect("launched")
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let records: usize = std::env::var("BENCH_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    let config = Config::from_env().expect("the forwarder's settings");
    let sdk = immortal_handler_sdk::aws::load().await;
    let forwarder = Forwarder::new(config.clone(), &sdk);
    let triage = Triage::new(&sdk, &config.overflow, "bench");
    let functions = triage.functions();
    let ecs = aws_sdk_ecs::Client::new(&sdk);
    let template: QueueMessage =
        serde_json::from_str(include_str!("../../handler-sdk/fixtures/sqs-dlq-timeout-new.json")).expect("fixture");
    let run = std::process::id();
    // Warm both paths (clients, connections, the runtime cache).
    let warm = message(&template, &format!("warm-{run}"));
    assert!(matches!(forwarder.forward(&warm).await, Decision::Launched { .. }));
    inline(
        &triage,
        &functions,
        &ecs,
        &config,
        &message(&template, &format!("warm-inline-{run}")),
    )
    .await;
    let (mut durable, mut plain) = (Vec::new(), Vec::new());
    for n in 0..records {
        let started = Instant::now();
        let decision = forwarder
            .forward(&message(&template, &format!("durable-{run}-{n}")))
            .await;
        assert!(matches!(decision, Decision::Launched { .. }), "{decision:?}");
        durable.push(started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        inline(
            &triage,
            &functions,
            &ecs,
            &config,
            &message(&template, &format!("inline-{run}-{n}")),
        )
        .await;
        plain.push(started.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "{}",
        serde_json::json!({"records": records, "durable_ms": median(durable), "inline_ms": median(plain)})
    );
}
