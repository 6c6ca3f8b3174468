//! The sweep at scale, against the emulator: the forwarder's library as its Lambda binary
//! runs it, on ledger entries written as the forwarder writes them, with its ECS calls
//! through the tests' proxy, which counts the tasks started per launch token.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use immortal_dlq_forwarder::config::Config;
use immortal_dlq_forwarder::forward::{Forwarder, LAUNCH_LEASE_MS};
use immortal_dlq_forwarder::reconcile::{Reconciled, StoppedTask};
use immortal_dlq_forwarder::sweep::MARGIN;
use immortal_handler_sdk::Envelope;
use immortal_overflow::ledger::{now_ms, Entry, Ledger, State, LIVE, RUN_LEASE_MS};
use immortal_overflow::Lookup;
use immortal_tests::ecs::Cluster;
use immortal_tests::emulator::Emulator;
use immortal_tests::fargate::EcsProxy;
use immortal_tests::lambda::{deploy, uuid_like};
use immortal_tests::runner::fixture;
use immortal_tests::zips::bootstrap_zip_bytes;
use serde_json::json;
use tokio::time::Instant;

/// Tasks the emulator starts stay as they are until stopped (it would otherwise move
/// each a step towards STOPPED at every DescribeTasks).
async fn tasks_stay_running() {
    let url = format!("{}/moto-api/state-manager/set-transition", Emulator::shared().url);
    let body = json!({"model_name": "ecs::task", "transition": {"progression": "manual", "times": 1_000_000}});
    let status = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "{status}");
}

struct Setup {
    cluster: Cluster,
    proxy: Arc<EcsProxy>,
    forwarder: Forwarder,
    ledger: Ledger,
    function: String,
}

impl Setup {
    async fn new() -> Setup {
        tasks_stay_running().await;
        let sdk = Emulator::shared().sdk_config().await;
        let id = uuid_like();
        let cluster = Cluster::create(&sdk, &format!("sweep-{id}")).await;
        let function = format!("swept-{id}");
        deploy(&sdk, &function, &bootstrap_zip_bytes(&fixture("echo")), &[]).await;
        let proxy = Arc::new(EcsProxy::start(|_| None));
        let forwarder_sdk = immortal_tests::emulator::sdk_config(proxy.url()).await;
        let vars: HashMap<String, String> = cluster
            .forwarder_env()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let config = Config::read(&Lookup::new(|k| vars.get(k).cloned())).unwrap();
        let forwarder = Forwarder::new(config, &forwarder_sdk);
        let ledger = Ledger::new(cluster.s3.clone(), cluster.payload_bucket.clone());
        Setup {
            cluster,
            proxy,
            forwarder,
            ledger,
            function,
        }
    }

    /// A task ARN of the cluster that ECS does not know (a task long gone).
    fn gone_task(&self, n: usize) -> String {
        format!("arn:aws:ecs:us-east-1:123456789012:task/{}/{n:032x}", self.cluster.name)
    }

    /// Writes attempt 1 of `request_id` as running in `task`, as the forwarder does.
    async fn running(&self, request_id: &str, task: &str) {
        self.write(request_id, State::Running, Some(task), 0).await;
    }

    /// Writes attempt 1 of `request_id` in `state`, in `task`, leased until `lease`.
    async fn write(&self, request_id: &str, state: State, task: Option<&str>, lease: u64) {
        let context = json!({"request_id": request_id, "invoked_function_arn": format!("arn:aws:lambda:us-east-1:123456789012:function:{}", self.function)});
        let envelope = Envelope::from_parts(r#"{"n":1}"#, &context.to_string()).unwrap();
        let (at, digest) = self.ledger.store_attempt(request_id, 1, &envelope).await.unwrap();
        let entry = Entry {
            request_id: request_id.to_owned(),
            function: self.function.clone(),
            attempt: 1,
            state,
            task: task.map(str::to_owned),
            envelope: at.to_string(),
            digest,
            on_demand: false,
            lease_until_ms: lease,
            reason: None,
            history: Vec::new(),
            revision: 0,
            created_ms: 0,
            failed_ms: 0,
            counted_from: 1,
            current: Default::default(),
        };
        self.ledger.create(&entry).await.unwrap().expect("a new entry");
    }

    async fn entry(&self, request_id: &str) -> Entry {
        self.ledger.read(request_id).await.unwrap().expect("an entry").entry
    }
}

#[tokio::test]
async fn a_thousand_invocations_whose_tasks_are_gone_are_each_relaunched_once_by_sweeps_within_their_deadline() {
    const LIVE: usize = 1000;
    let s = Setup::new().await;
    let ids: Vec<String> = (0..LIVE).map(|n| format!("swept-{n:04}")).collect();
    stream::iter(ids.iter().enumerate())
        .for_each_concurrent(16, |(n, id)| {
            let task = s.gone_task(n);
            let s = &s;
            async move { s.running(id, &task).await }
        })
        .await;

    // A sweep with no time left looks at nothing and says so.
    let none = s.forwarder.sweep(Some(Instant::now())).await;
    assert_eq!((none.live, none.looked_at, none.complete), (LIVE, 0, false));

    let mut sweeps = 0;
    let mut relaunched = 0;
    while relaunched < LIVE {
        sweeps += 1;
        assert!(sweeps <= 20, "{relaunched} of {LIVE} relaunched after {sweeps} sweeps");
        let deadline = Instant::now() + MARGIN + Duration::from_secs(20);
        let swept = s.forwarder.sweep(Some(deadline)).await;
        assert!(Instant::now() < deadline, "sweep {sweeps} ended after its deadline");
        for outcome in &swept.outcomes {
            match outcome {
                Reconciled::Relaunched { attempt: 2, .. } => relaunched += 1,
                other => panic!("sweep {sweeps}: {other:?}"),
            }
        }
    }
    assert_eq!(relaunched, LIVE);
    println!("{LIVE} invocations relaunched by {sweeps} sweeps of at most 20 s each");
    let launched = s.proxy.launched.lock().unwrap().clone();
    assert_eq!(launched.len(), LIVE, "one launch token per invocation's attempt 2");
    assert!(launched.values().all(|n| *n == 1), "no attempt started twice");
    for id in ids.iter().step_by(97) {
        let entry = s.entry(id).await;
        assert_eq!((entry.attempt, entry.state), (2, State::Running), "{id}");
        assert!(entry.history[0].reason.contains("gone from ECS"), "{:?}", entry.history);
    }
    // The new attempts' tasks run: the next sweep leaves them all alone.
    let quiet = s.forwarder.sweep(None).await;
    assert!(quiet.outcomes.is_empty(), "{:?}", quiet.outcomes);
    assert!(quiet.complete && quiet.looked_at == LIVE);
}

#[tokio::test]
async fn a_repeated_or_late_stop_event_relaunches_once() {
    let s = Setup::new().await;
    let task = s.gone_task(7);
    s.running("late-stop", &task).await;
    let entry = s.entry("late-stop").await;
    let stopped = StoppedTask {
        task_arn: task.clone(),
        envelope: immortal_handler_sdk::envelope::S3Location::parse(&entry.envelope).unwrap(),
        reason: "stop code SpotInterruption: spot capacity reclaimed".into(),
    };
    let first = s.forwarder.reconcile(&stopped).await;
    assert!(matches!(first, Reconciled::Relaunched { attempt: 2, .. }), "{first:?}");
    // The same event again (EventBridge delivers at least once), and the sweep that
    // finds the same task gone: attempt 1 ended, nothing more starts.
    let again = s.forwarder.reconcile(&stopped).await;
    assert!(matches!(again, Reconciled::Nothing { .. }), "{again:?}");
    let swept = s.forwarder.sweep(None).await;
    assert!(swept.outcomes.is_empty(), "{:?}", swept.outcomes);
    let entry = s.entry("late-stop").await;
    assert_eq!((entry.attempt, entry.history.len()), (2, 1));
    let launched = s.proxy.launched.lock().unwrap().clone();
    assert_eq!(launched.values().sum::<usize>(), 1, "one task: {launched:?}");
}

/// A running attempt with no task (a drain worker's hand-over) proves it is alive by its
/// lease: once the lease lapses, its worker is gone and the sweep relaunches it; while
/// it holds, nothing happens. One its runner marked interrupted is relaunched at once.
#[tokio::test]
async fn a_taskless_attempt_is_relaunched_once_its_lease_lapses_or_it_was_interrupted() {
    let s = Setup::new().await;
    s.write("lease-lapsed", State::Running, None, now_ms() - 1).await;
    s.write("lease-held", State::Running, None, now_ms() + RUN_LEASE_MS)
        .await;
    s.write("interrupted", State::Interrupted, None, 0).await;
    let swept = s.forwarder.sweep(None).await;
    let mut relaunched: Vec<&str> = swept
        .outcomes
        .iter()
        .map(|o| match o {
            Reconciled::Relaunched {
                request_id, attempt: 2, ..
            } => request_id.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    relaunched.sort();
    assert_eq!(relaunched, ["interrupted", "lease-lapsed"]);
    let lapsed = s.entry("lease-lapsed").await;
    assert!(
        lapsed.history[0].reason.contains("stopped renewing its lease"),
        "{:?}",
        lapsed.history
    );
    assert_eq!(s.entry("lease-held").await.attempt, 1, "a held lease is left alone");
}

/// A live marker whose entry was never written (the entry's PUT failed for another
/// reason than a conflict) is left alone while a launch could still write that entry,
/// and removed by the first sweep after the launch's lease: it is not re-read forever.
#[tokio::test]
async fn an_orphaned_live_marker_disappears_once_no_launch_can_still_write_its_entry() {
    let s = Setup::new().await;
    // The marker as the forwarder writes it before the entry (ledger/live/<request id>).
    s.cluster
        .s3
        .put_object()
        .bucket(&s.cluster.payload_bucket)
        .key(format!("{LIVE}orphan"))
        .body(Vec::new().into())
        .send()
        .await
        .unwrap();
    // Beside it, an invocation whose (taskless) runner holds its lease past both sweeps.
    s.write("kept", State::Running, None, now_ms() + RUN_LEASE_MS).await;
    let live = |ledger: &Ledger| {
        let ledger = ledger.clone();
        async move {
            let mut live = ledger.live().await.unwrap();
            live.sort();
            live
        }
    };
    assert_eq!(live(&s.ledger).await, ["kept", "orphan"]);

    let young = s.forwarder.sweep_as_of(None, now_ms()).await;
    assert_eq!(young.orphans, 0, "a launch may still write its entry");
    assert!(live(&s.ledger).await.contains(&"orphan".to_owned()));

    let later = s.forwarder.sweep_as_of(None, now_ms() + LAUNCH_LEASE_MS + 1_000).await;
    assert_eq!(later.orphans, 1, "{later:?}");
    assert_eq!(live(&s.ledger).await, ["kept"], "only the orphan went");
    let again = s.forwarder.sweep(None).await;
    assert_eq!((again.live, again.orphans), (1, 0), "never looked at again");
}
