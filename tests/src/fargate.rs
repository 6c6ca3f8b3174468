//! A stand-in for what the emulator's ECS does not do. [`EcsProxy`] sits in front of the
//! emulator: it plays RunTask's `clientToken` idempotency, injects throttling and
//! capacity failures, and hands each newly started task to the test. [`run_task`] runs
//! such a task's container as Fargate would (the runner with the task's overrides),
//! stops it the ways Fargate does (never started, SIGKILL, a Spot interruption's
//! SIGTERM) and returns the ECS "Task State Change" event EventBridge would deliver, in
//! its documented format.

use std::collections::BTreeMap;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};

use crate::emulator::Emulator;
use crate::runner::{Ran, RunnerCmd};
use crate::server::{Reply, Seen, TestServer};

/// Tasks started, by client token.
pub type Launched = Arc<Mutex<BTreeMap<String, usize>>>;

/// A fault for one RunTask call (given its client token), or `None` to let it through.
pub type Fault = Box<dyn Fn(&str) -> Option<Reply> + Send + Sync>;

/// The ECS endpoint the forwarder talks to in these tests.
pub struct EcsProxy {
    /// The proxy (its `url` is the endpoint).
    pub server: TestServer,
    /// Tasks started, by client token.
    pub launched: Launched,
    started: Mutex<mpsc::Receiver<Value>>,
}

/// A throttled AWS JSON-protocol call.
pub fn throttled() -> Reply {
    Reply::Full {
        status: 400,
        headers: vec![("content-type".into(), "application/x-amz-json-1.1".into())],
        body: Bytes::from_static(br#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#),
    }
}

/// RunTask's answer when Fargate (Spot) has no capacity.
pub fn no_capacity() -> Reply {
    Reply::json(
        200,
        &json!({"tasks": [], "failures": [{"reason": "Capacity is unavailable at this time. Please try again later or in a different availability zone"}]}),
    )
}

impl EcsProxy {
    /// A proxy that answers RunTask with `fault(token)` when it returns one; otherwise a
    /// token that already started a task gets that task back (as ECS does), and a new
    /// one starts a task in the emulator.
    pub fn start(fault: impl Fn(&str) -> Option<Reply> + Send + Sync + 'static) -> EcsProxy {
        let launched: Launched = Arc::default();
        let counted = launched.clone();
        let started: Arc<Mutex<BTreeMap<String, Bytes>>> = Arc::default();
        let (tell, told) = mpsc::channel::<Value>();
        let tell = Arc::new(Mutex::new(tell));
        let server = TestServer::start(Some(Emulator::shared().url.clone()), move |req: &Seen| {
            if req.target() != Some("RunTask") {
                return Reply::Forward;
            }
            let token = req.json()["clientToken"].as_str().unwrap_or_default().to_owned();
            if let Some(reply) = fault(&token) {
                return reply;
            }
            if let Some(earlier) = started.lock().unwrap().get(&token) {
                return Reply::Full {
                    status: 200,
                    headers: vec![],
                    body: earlier.clone(),
                };
            }
            // Two calls with one token at once would both start a task here (and count
            // two): the forwarder's lease is what must keep that from happening.
            let (started, counted, tell) = (started.clone(), counted.clone(), tell.clone());
            Reply::ForwardThen(Box::new(move |status, body| {
                let answer: Value = serde_json::from_slice(body).unwrap_or_default();
                let Some(task) = answer["tasks"].as_array().and_then(|t| t.first()).cloned() else {
                    return;
                };
                if status == 200 {
                    started.lock().unwrap().insert(token.clone(), body.clone());
                    *counted.lock().unwrap().entry(token).or_default() += 1;
                    let _ = tell.lock().unwrap().send(task);
                }
            }))
        });
        EcsProxy {
            server,
            launched,
            started: Mutex::new(told),
        }
    }

    /// The endpoint.
    pub fn url(&self) -> &str {
        &self.server.url
    }

    /// Tasks started since the last call, as RunTask answered them (JSON).
    pub fn started(&self) -> Vec<Value> {
        self.started.lock().unwrap().try_iter().collect()
    }

    /// Waits up to `limit` for `n` more started tasks.
    pub fn wait_started(&self, n: usize, limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        let told = self.started.lock().unwrap();
        let mut tasks = Vec::new();
        while tasks.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match told.recv_timeout(left) {
                Ok(task) => tasks.push(task),
                Err(_) => break,
            }
        }
        tasks
    }
}

/// How Fargate ends a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// It never starts (the image cannot be pulled): `TaskFailedToStart`.
    FailToStart,
    /// Its container is killed outright (out of memory, the host lost).
    Kill(When),
    /// A Spot interruption: SIGTERM, then SIGKILL after the stop timeout.
    Interrupt(When),
    /// It runs to its end.
    Run,
}

/// When a stop comes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum When {
    /// This long after the container started.
    After(Duration),
    /// As soon as this file exists (a fixture writes it once the function runs).
    Exists(std::path::PathBuf),
}

impl When {
    fn wait(&self) {
        match self {
            When::After(after) => std::thread::sleep(*after),
            When::Exists(path) => {
                let deadline = Instant::now() + Duration::from_secs(60);
                while !path.exists() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                assert!(path.exists(), "{} never appeared", path.display());
            }
        }
    }
}

/// One task's run.
pub struct TaskRun {
    /// The task as RunTask answered it.
    pub task: Value,
    /// How it ended.
    pub fate: Fate,
    /// The runner's run (none when the task never started).
    pub ran: Option<Ran>,
    /// The "ECS Task State Change" event of its stop.
    pub stopped: Value,
}

/// The container's environment overrides of a task (JSON, as ECS writes it).
pub fn overrides(task: &Value) -> Vec<(String, String)> {
    task["overrides"]["containerOverrides"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["environment"].as_array().into_iter().flatten())
        .filter_map(|kv| Some((kv["name"].as_str()?.to_owned(), kv["value"].as_str()?.to_owned())))
        .collect()
}

/// The request id a runner task's envelope belongs to (`envelopes/<id>/attempt-<n>.json`).
pub fn task_request(task: &Value) -> Option<(String, u32)> {
    let url = overrides(task)
        .into_iter()
        .find(|(k, _)| k == "IMMORTAL_ENVELOPE_URL")?
        .1;
    let (_, key) = url.strip_prefix("s3://")?.split_once('/')?;
    let rest = key.strip_prefix("envelopes/")?;
    let (id, file) = rest.split_once('/')?;
    let attempt = file.strip_prefix("attempt-")?.strip_suffix(".json")?.parse().ok()?;
    Some((id.to_owned(), attempt))
}

/// Runs `task`'s container: `runner` (the task definition's part: image settings, the
/// emulator) plus the task's overrides, ended by `fate`; `stop_timeout` is the task
/// definition's. Returns the run and the stop event.
pub fn run_task(task: Value, runner: RunnerCmd, fate: Fate, stop_timeout: Duration) -> TaskRun {
    let ran = match fate {
        Fate::FailToStart => None,
        _ => {
            let running = runner
                .envs(overrides(&task).into_iter().map(|(k, v)| (&*k.leak(), v)))
                .spawn();
            Some(match &fate {
                Fate::Kill(when) => {
                    when.wait();
                    running.signal(libc::SIGKILL);
                    running.wait(Duration::from_secs(10))
                }
                Fate::Interrupt(when) => {
                    when.wait();
                    running.signal(libc::SIGTERM);
                    running.wait(stop_timeout)
                }
                _ => running.wait(Duration::from_secs(120)),
            })
        }
    };
    let exit = ran.as_ref().and_then(|r| r.code.or(Some(137)));
    let stopped = match fate {
        Fate::FailToStart => stopped_event(
            &task,
            "TaskFailedToStart",
            "CannotPullContainerError: pull image manifest has been retried 5 time(s): failed to resolve ref immortal-runner:latest: not found",
            None,
        ),
        Fate::Kill(_) => stopped_event(&task, "EssentialContainerExited", "Essential container in task exited", exit),
        Fate::Interrupt(_) => stopped_event(&task, "SpotInterruption", "Your Spot Task was interrupted.", exit),
        Fate::Run => stopped_event(&task, "EssentialContainerExited", "Essential container in task exited", exit),
    };
    TaskRun {
        task,
        fate,
        ran,
        stopped,
    }
}

/// The EventBridge event ECS sends when `task` stops: AWS's published example, verbatim
/// (`dlq-forwarder/fixtures/aws-ecs-task-state-change.json`; its source is noted beside
/// it), with the task's own fields and the stopped-task fields the same documentation
/// describes: `stop_code`, `reason`, and the container's exit code (`None`: it never ran).
pub fn stopped_event(task: &Value, stop_code: &str, reason: &str, exit_code: Option<i32>) -> Value {
    let mut event: Value = serde_json::from_str(include_str!(
        "../../dlq-forwarder/fixtures/aws-ecs-task-state-change.json"
    ))
    .expect("AWS's sample event");
    let arn = task["taskArn"].clone();
    event["id"] = json!(crate::lambda::uuid_like());
    event["resources"] = json!([arn]);
    let detail = &mut event["detail"];
    for field in [
        "taskArn",
        "clusterArn",
        "taskDefinitionArn",
        "overrides",
        "startedBy",
        "group",
        "launchType",
        "capacityProviderName",
    ] {
        if !task[field].is_null() {
            detail[field] = task[field].clone();
        }
    }
    let name = task["overrides"]["containerOverrides"][0]["name"]
        .as_str()
        .unwrap_or("runner");
    let mut container = json!({
        "containerArn": format!("{}/container", arn.as_str().unwrap_or_default()),
        "lastStatus": "STOPPED",
        "name": name,
        "taskArn": arn,
    });
    match exit_code {
        Some(code) => container["exitCode"] = json!(code),
        None => container["reason"] = json!(reason),
    }
    detail["containers"] = json!([container]);
    detail["lastStatus"] = json!("STOPPED");
    detail["desiredStatus"] = json!("STOPPED");
    detail["stopCode"] = json!(stop_code);
    detail["stoppedReason"] = json!(reason);
    event
}

/// A small deterministic random source (xorshift), seeded so a failing run can be
/// repeated.
pub struct Dice(u64);

impl Dice {
    /// Seeded from `seed` (0 is replaced).
    pub fn new(seed: u64) -> Dice {
        Dice(seed.max(1))
    }

    /// The next number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}
