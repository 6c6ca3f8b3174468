//! The sweep over `BENCH_LIVE` live invocations (default 10,000) whose tasks all run,
//! with every AWS call through the bench's proxy (`AWS_ENDPOINT_URL`: it adds a fixed
//! latency to each call, counts them, and answers DescribeTasks, see bench/run.py),
//! beside the one-by-one sweep it replaced (each entry read, then DescribeTasks of its
//! one task, in turn) over `BENCH_REFERENCE` of them. The entries are written straight
//! to the emulator (`BENCH_DIRECT_URL`), as the forwarder writes them. Prints one JSON
//! line.

use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use immortal_dlq_forwarder::config::Config;
use immortal_dlq_forwarder::forward::Forwarder;
use immortal_overflow::ledger::{Entry, Ledger, State};

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|n| n.parse().ok()).unwrap_or(default)
}

/// The proxy's count of calls it passed on or answered.
async fn calls(proxy: &str) -> u64 {
    reqwest::get(format!("{proxy}/__calls"))
        .await
        .expect("the proxy answers")
        .text()
        .await
        .expect("a count")
        .trim()
        .parse()
        .expect("a number")
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let live = setting("BENCH_LIVE", 10_000);
    let reference = setting("BENCH_REFERENCE", 300);
    let config = Config::from_env().expect("the forwarder's settings");
    let proxy = std::env::var("AWS_ENDPOINT_URL").expect("the proxy");
    let direct = std::env::var("BENCH_DIRECT_URL").expect("the emulator");
    let sdk = immortal_handler_sdk::aws::load().await;
    let direct_sdk = sdk.to_builder().endpoint_url(&direct).build();
    let bucket = config.payload_bucket.clone();
    let writer = Ledger::new(immortal_handler_sdk::aws::s3_client(&direct_sdk), bucket.clone());
    let run = std::process::id();
    stream::iter(0..live)
        .for_each_concurrent(32, |n| {
            let writer = &writer;
            let cluster = &config.cluster;
            async move {
                let entry = Entry {
                    request_id: format!("live-{run}-{n:05}"),
                    function: "bench-sweep".into(),
                    attempt: 1,
                    state: State::Running,
                    task: Some(format!("arn:aws:ecs:us-east-1:123456789012:task/{cluster}/{n:032x}")),
                    // Never read: the sweep reads an envelope only to relaunch.
                    envelope: format!("s3://bench/envelopes/live-{run}-{n:05}/attempt-1.json"),
                    digest: "0".repeat(64),
                    on_demand: false,
                    lease_until_ms: 0,
                    reason: None,
                    history: Vec::new(),
                    revision: 0,
                    created_ms: 0,
                    failed_ms: 0,
                    counted_from: 1,
                    current: Default::default(),
                };
                writer.create(&entry).await.expect("written").expect("new");
            }
        })
        .await;

    let forwarder = Forwarder::new(config.clone(), &sdk);
    let before = calls(&proxy).await;
    let started = Instant::now();
    let swept = forwarder
        .sweep(Some(tokio::time::Instant::now() + Duration::from_secs(60)))
        .await;
    let sweep_s = started.elapsed().as_secs_f64();
    let sweep_calls = calls(&proxy).await - before;
    assert!(
        swept.outcomes.is_empty(),
        "every task runs: {:?}",
        &swept.outcomes[..3.min(swept.outcomes.len())]
    );
    assert!(swept.live >= live, "{} live", swept.live);

    // The one-by-one sweep it replaced, over the first `reference` entries.
    let ledger = Ledger::new(immortal_handler_sdk::aws::s3_client(&sdk), bucket);
    let ecs = aws_sdk_ecs::Client::new(&sdk);
    let ids = ledger.live().await.expect("listed");
    let before = calls(&proxy).await;
    let started = Instant::now();
    for id in ids.iter().take(reference) {
        let held = ledger.read(id).await.expect("read").expect("an entry");
        let task = held.entry.task.expect("a task");
        ecs.describe_tasks()
            .cluster(&config.cluster)
            .tasks(task)
            .send()
            .await
            .expect("described");
    }
    let reference_s = started.elapsed().as_secs_f64();
    let reference_calls = calls(&proxy).await - before;
    println!(
        "{}",
        serde_json::json!({
            "live": swept.live, "looked_at": swept.looked_at, "complete": swept.complete,
            "sweep_s": sweep_s, "sweep_calls": sweep_calls,
            "reference_entries": reference.min(ids.len()), "reference_s": reference_s, "reference_calls": reference_calls,
        })
    );
}
