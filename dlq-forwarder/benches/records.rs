//! Records per second through the forwarder's handler logic (no network): recognise
//! the record, apply the policy, build the envelope, size the overrides, derive the
//! token. Prints one JSON line for bench/run.py.

use std::hint::black_box;
use std::time::Instant;

use immortal_dlq_forwarder::launch;
use immortal_handler_sdk::record::{self, QueueMessage};
use immortal_handler_sdk::FunctionRef;
use immortal_overflow::{Carrier, FailureClass, RelaunchPolicy};

fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn main() {
    let fixtures = [
        include_str!("../../handler-sdk/fixtures/sqs-dlq-timeout-new.json"),
        include_str!("../../handler-sdk/fixtures/sqs-dlq-timeout-old.json"),
        include_str!("../../handler-sdk/fixtures/sqs-destination-retries-exhausted.json"),
        include_str!("../../handler-sdk/fixtures/sqs-dlq-overflow.json"),
    ];
    let messages: Vec<_> = fixtures
        .iter()
        .map(|f| serde_json::from_str::<QueueMessage>(f).expect("fixture"))
        .collect();
    let policy = RelaunchPolicy::default();
    let thumbnail = FunctionRef::named("thumbnail");
    let rounds = 50_000;
    let (wall, cpu) = (Instant::now(), cpu_seconds());
    let mut launched = 0usize;
    for _ in 0..rounds {
        for message in &messages {
            let record = record::parse(message).expect("a known format");
            if !policy.relaunches(FailureClass::of(&record)) {
                continue;
            }
            let envelope = record.to_envelope(message, Some(&thumbnail)).expect("an envelope");
            let environment = Carrier::inline(&envelope).to_environment();
            black_box((environment, launch::client_token(&message.message_id)));
            launched += 1;
        }
    }
    let (wall, cpu) = (wall.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    let records = (rounds * messages.len()) as f64;
    println!(
        "{}",
        serde_json::json!({"records": records, "launched": launched, "records_per_second": records / wall, "cpu_us_per_record": cpu / records * 1e6})
    );
}
