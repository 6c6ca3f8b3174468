//! An ECS cluster and the runner's task definition in the emulator, and what its
//! tasks were started with.

use std::collections::BTreeMap;

use aws_config::SdkConfig;
use aws_sdk_ecs::types::{ContainerDefinition, Task, TaskField};

/// A cluster with the runner's task definition.
#[derive(Clone)]
pub struct Cluster {
    /// The client.
    pub ecs: aws_sdk_ecs::Client,
    /// Cluster name.
    pub name: String,
    /// Task definition family.
    pub task_definition: String,
    /// The runner's container name.
    pub container: String,
    /// A subnet and security group of the emulator's default VPC.
    pub network: (String, String),
    /// The payload bucket (envelopes and the ledger).
    pub payload_bucket: String,
    /// An S3 client for it.
    pub s3: aws_sdk_s3::Client,
}

impl Cluster {
    /// Creates cluster `name` and task definition `name-runner` with container `runner`
    /// (and makes sure the functions the fixture records name exist).
    pub async fn create(sdk: &SdkConfig, name: &str) -> Cluster {
        let ecs = aws_sdk_ecs::Client::new(sdk);
        ecs.create_cluster()
            .cluster_name(name)
            .capacity_providers("FARGATE")
            .capacity_providers("FARGATE_SPOT")
            .send()
            .await
            .expect("create cluster");
        let family = format!("{name}-runner");
        register(&ecs, &family).await;
        let network = default_network(sdk.endpoint_url().expect("an emulator endpoint"));
        crate::lambda::fixture_functions(sdk).await;
        let s3 = immortal_handler_sdk::aws::s3_client(sdk);
        let payload_bucket = format!("{}-payloads", name.to_ascii_lowercase());
        s3.create_bucket()
            .bucket(&payload_bucket)
            .send()
            .await
            .expect("create the payload bucket");
        Cluster {
            ecs,
            name: name.to_owned(),
            task_definition: family,
            container: "runner".into(),
            network,
            payload_bucket,
            s3,
        }
    }

    /// Registers another runner task definition, `family` (e.g. one per runtime).
    pub async fn register_task_definition(&self, family: &str) {
        register(&self.ecs, family).await;
    }

    /// The forwarder settings that target this cluster (in the default VPC).
    pub fn forwarder_env(&self) -> Vec<(&'static str, String)> {
        let (subnet, group) = self.network.clone();
        vec![
            ("IMMORTAL_CLUSTER", self.name.clone()),
            ("IMMORTAL_TASK_DEFINITION", self.task_definition.clone()),
            ("IMMORTAL_CONTAINER_NAME", self.container.clone()),
            ("IMMORTAL_SUBNETS", subnet),
            ("IMMORTAL_SECURITY_GROUPS", group),
            ("IMMORTAL_PAYLOAD_BUCKET", self.payload_bucket.clone()),
            ("IMMORTAL_TRUSTED_SENDERS", crate::queue::EMULATOR_SENDER.to_owned()),
        ]
    }

    /// The forwarder, as Lambda runs it, on `messages` of `queue` with this cluster's
    /// settings and `extra`; asserts that every message may leave the queue.
    pub async fn forward_all(
        &self,
        queue: &crate::queue::Queue,
        messages: &[aws_sdk_sqs::types::Message],
        extra: &[(&'static str, String)],
    ) -> crate::runner::Ran {
        let cmd = crate::runner::RunnerCmd::lambda("dlq-forwarder", &queue.lambda_event(messages).to_string())
            .envs(crate::emulator::Emulator::shared().env())
            .envs(self.forwarder_env())
            .envs(extra.iter().cloned());
        let ran = tokio::task::spawn_blocking(move || cmd.run()).await.unwrap();
        assert_eq!(
            ran.json(),
            serde_json::json!({"batchItemFailures": []}),
            "{}",
            ran.stderr
        );
        ran
    }

    /// The envelope `task` was started with, read from the payload bucket.
    pub async fn task_envelope(&self, task: &Task) -> serde_json::Value {
        let env = task_env(task);
        let url = env.get("IMMORTAL_ENVELOPE_URL").expect("the task names its envelope");
        let bytes = crate::s3::read(&self.s3, url).await;
        serde_json::from_slice(&bytes).expect("an envelope")
    }

    /// The ledger entry of `request_id`.
    pub async fn ledger_entry(&self, request_id: &str) -> Option<serde_json::Value> {
        let out = self
            .s3
            .get_object()
            .bucket(&self.payload_bucket)
            .key(format!("ledger/{request_id}.json"))
            .send()
            .await
            .ok()?;
        serde_json::from_slice(&out.body.collect().await.ok()?.into_bytes()).ok()
    }

    /// Every task started in the cluster, with tags.
    pub async fn tasks(&self) -> Vec<Task> {
        let arns = self
            .ecs
            .list_tasks()
            .cluster(&self.name)
            .send()
            .await
            .expect("list tasks")
            .task_arns
            .unwrap_or_default();
        if arns.is_empty() {
            return vec![];
        }
        let mut tasks = Vec::new();
        for chunk in arns.chunks(100) {
            let out = self
                .ecs
                .describe_tasks()
                .cluster(&self.name)
                .set_tasks(Some(chunk.to_vec()))
                .include(TaskField::Tags)
                .send()
                .await
                .expect("describe tasks");
            tasks.extend(out.tasks.unwrap_or_default());
        }
        tasks
    }
}

/// Registers a runner task definition `family` with container `runner`.
async fn register(ecs: &aws_sdk_ecs::Client, family: &str) {
    ecs.register_task_definition()
        .family(family)
        .network_mode(aws_sdk_ecs::types::NetworkMode::Awsvpc)
        .requires_compatibilities(aws_sdk_ecs::types::Compatibility::Fargate)
        .cpu("1024")
        .memory("2048")
        // moto answers HTTP 500 to a task definition with task-level memory only.
        .container_definitions(
            ContainerDefinition::builder()
                .name("runner")
                .image("immortal-runner:latest")
                .memory(2048)
                .essential(true)
                .build(),
        )
        .send()
        .await
        .expect("register task definition");
}

/// The environment overrides of the runner's container in `task`.
pub fn task_env(task: &Task) -> BTreeMap<String, String> {
    task.overrides()
        .map(|o| o.container_overrides())
        .unwrap_or_default()
        .iter()
        .flat_map(|c| c.environment())
        .filter_map(|kv| Some((kv.name()?.to_owned(), kv.value()?.to_owned())))
        .collect()
}

/// A task's tag.
pub fn task_tag(task: &Task, key: &str) -> Option<String> {
    task.tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value().map(str::to_owned))
}

/// A subnet and the security group of the emulator's default VPC (RunTask checks they
/// exist). Read with EC2's query API directly: the emulator does not check signatures,
/// and this spares the tests the EC2 SDK.
pub fn default_network(url: &str) -> (String, String) {
    static KNOWN: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, (String, String)>>> =
        std::sync::OnceLock::new();
    let known = KNOWN.get_or_init(Default::default);
    if let Some(network) = known.lock().unwrap().get(url) {
        return network.clone();
    }
    let query = |action: &str, tag: &str| -> String {
        let body = std::process::Command::new("curl")
            .args(["-s", "-X", "POST", "-d", &format!("Action={action}&Version=2016-11-15"), url])
            .args(["-H", "Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=x"])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&body.stdout).into_owned();
        let start = text
            .find(&format!("<{tag}>"))
            .unwrap_or_else(|| panic!("no {tag} in {action}: {text}"))
            + tag.len()
            + 2;
        let end = text[start..].find('<').unwrap() + start;
        text[start..end].to_owned()
    };
    (
        query("DescribeSubnets", "subnetId"),
        query("DescribeSecurityGroups", "groupId"),
    )
}
