//! Task definitions for container-image functions. Such a function's task runs *its own
//! image* with the runner inside it, without touching the image: a task definition per
//! (runner task definition, function image digest), registered once and reused, with two
//! containers:
//!
//! - the runner image as a non-essential init container, which copies the runner and
//!   its sandbox helper (setuid, so as root) into a task volume and exits;
//! - the function's image, started after it (`SUCCESS`) with its entry point set to the
//!   runner from that volume, as the runner's user, with the runner container's name,
//!   environment, logs and stop timeout, so that overrides, size and roles apply to it
//!   exactly as to a zip function's runner.
//!
//! The runner then starts what Lambda would start in that image (see the runner's
//! `code::image`).

use std::collections::HashMap;
use std::sync::Mutex;

use aws_sdk_ecs::types::{
    ContainerCondition, ContainerDefinition, ContainerDependency, CpuArchitecture, KeyValuePair, MountPoint,
    TaskDefinition, TaskDefinitionStatus, Volume,
};
use immortal_handler_sdk::aws::CallFailed;
use immortal_handler_sdk::container::{
    CACHE_DIR_VAR, FUNCTION_LOGS_VAR, FUNCTION_ROLE_VAR, IMAGE_RUNNER_DIR, IMAGE_RUNTIME_VAR, LAYERS_ROOT, OPT_DIR_VAR,
    OWN_TMP_VAR, RUNNER_USER, RUNTIME_DIR_VAR, SANDBOX_VAR, TASK_ROOT, TASK_ROOT_VAR,
};
use sha2::Digest;

use crate::error::ForwardError;

/// The init container's name.
pub const INIT_CONTAINER: &str = "immortal-runner-init";
/// The init container's memory reservation (MiB).
pub const INIT_MEMORY_MB: i32 = 32;
/// The task volume the runner is copied into.
pub const RUNNER_VOLUME: &str = "immortal-runner";
/// What the init container runs (as root, in the runner image): the runner, and the
/// sandbox helper with its setuid bit and owner, then a code cache the runner alone
/// may open.
pub fn init_script() -> String {
    let dir = IMAGE_RUNNER_DIR;
    format!("set -e; cp -p /usr/local/bin/runner /usr/local/bin/immortal-sandbox {dir}/; mkdir -p {dir}/cache; chown {RUNNER_USER} {dir}/cache; chmod 0700 {dir}/cache")
}

/// Why no task definition can run an image function.
#[derive(Debug)]
pub enum ImageTaskError {
    /// For now (ECS could not be asked): try again.
    Retry(ForwardError),
    /// Never with this stack (another architecture, no runner container).
    Never(String),
}

/// Finds or registers, and remembers, the task definition of each function image.
pub struct ImageTasks {
    ecs: aws_sdk_ecs::Client,
    known: Mutex<HashMap<String, String>>,
}

impl ImageTasks {
    /// With the forwarder's ECS client.
    pub fn new(ecs: aws_sdk_ecs::Client) -> Self {
        ImageTasks {
            ecs,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The task definition (its ARN) that runs `image` (by digest), built on the runner
    /// task definition `template` whose runner container is `container`.
    pub async fn for_image(
        &self,
        template: &str,
        container: &str,
        image: &str,
        architecture: &str,
    ) -> Result<String, ImageTaskError> {
        let key = format!("{template}\n{container}\n{image}");
        if let Some(arn) = self.known.lock().expect("image tasks").get(&key) {
            return Ok(arn.clone());
        }
        let template = self.describe(template).await?.ok_or_else(|| {
            ImageTaskError::Retry(ForwardError::Aws(CallFailed {
                call: format!("DescribeTaskDefinition({template})"),
                detail: "no such task definition (check IMMORTAL_TASK_DEFINITION)".into(),
            }))
        })?;
        let family = family_for(&template, image);
        let arn = match self.describe(&family).await? {
            Some(existing) if existing.status == Some(TaskDefinitionStatus::Active) => {
                existing.task_definition_arn.unwrap_or(family)
            }
            _ => {
                let arn = self
                    .register(&template, &family, container, image, architecture)
                    .await?;
                tracing::info!(family, image, task_definition = %arn, "registered the task definition of a container-image function");
                arn
            }
        };
        self.known.lock().expect("image tasks").insert(key, arn.clone());
        Ok(arn)
    }

    async fn describe(&self, task_definition: &str) -> Result<Option<TaskDefinition>, ImageTaskError> {
        match self
            .ecs
            .describe_task_definition()
            .task_definition(task_definition)
            .send()
            .await
        {
            Ok(out) => Ok(out.task_definition),
            // ECS answers a missing one with ClientException ("Unable to describe task
            // definition"); a refusal is AccessDeniedException.
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => {
                let mut failed = CallFailed::new(format!("DescribeTaskDefinition({task_definition})"), &e);
                failed
                    .detail
                    .push_str(" (the forwarder's role needs ecs:DescribeTaskDefinition)");
                Err(ImageTaskError::Retry(failed.into()))
            }
        }
    }

    async fn register(
        &self,
        template: &TaskDefinition,
        family: &str,
        container: &str,
        image: &str,
        architecture: &str,
    ) -> Result<String, ImageTaskError> {
        let runner_arch = template
            .runtime_platform
            .as_ref()
            .and_then(|p| p.cpu_architecture.clone())
            .unwrap_or(CpuArchitecture::X8664);
        let wanted = if architecture == "arm64" {
            CpuArchitecture::Arm64
        } else {
            CpuArchitecture::X8664
        };
        if runner_arch != wanted {
            return Err(ImageTaskError::Never(format!(
                "the image function runs on {architecture}, but the runner's task definition runs on {}: its runner could not start in the function's image; deploy a runner task definition for {architecture}",
                runner_arch.as_str()
            )));
        }
        let runner = template
            .container_definitions()
            .iter()
            .find(|c| c.name() == Some(container))
            .ok_or_else(|| {
                ImageTaskError::Never(format!(
                    "the runner's task definition has no container named {container} (IMMORTAL_CONTAINER_NAME)"
                ))
            })?;
        let (init, function) = containers(runner, image);
        let out = self
            .ecs
            .register_task_definition()
            .family(family)
            .set_task_role_arn(template.task_role_arn.clone())
            .set_execution_role_arn(template.execution_role_arn.clone())
            .set_network_mode(template.network_mode.clone())
            .set_requires_compatibilities(template.requires_compatibilities.clone())
            .set_cpu(template.cpu.clone())
            .set_memory(template.memory.clone())
            .set_runtime_platform(template.runtime_platform.clone())
            .set_ephemeral_storage(template.ephemeral_storage.clone())
            .volumes(Volume::builder().name(RUNNER_VOLUME).build())
            .container_definitions(init)
            .container_definitions(function)
            .send()
            .await
            .map_err(|e| {
                let mut failed = CallFailed::new(format!("RegisterTaskDefinition({family})"), &e);
                failed
                    .detail
                    .push_str(" (the forwarder's role needs ecs:RegisterTaskDefinition on it, and iam:PassRole on the runner's roles)");
                ImageTaskError::Retry(failed.into())
            })?;
        Ok(out
            .task_definition
            .and_then(|t| t.task_definition_arn)
            .unwrap_or_else(|| family.to_owned()))
    }
}

fn is_not_found<E, R>(err: &aws_sdk_ecs::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_ecs::error::ProvideErrorMetadata,
{
    err.as_service_error()
        .is_some_and(|e| e.code() == Some("ClientException"))
}

/// `{template family}-image-{16 hex}`: one per template revision and image, so a new
/// runner image (a new template revision) or a new function image gets a new one.
pub fn family_for(template: &TaskDefinition, image: &str) -> String {
    let template_arn = template.task_definition_arn.as_deref().unwrap_or_default();
    let digest = sha2::Sha256::digest(format!("{template_arn}\n{image}").as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let base: String = template
        .family
        .as_deref()
        .unwrap_or("immortal")
        .chars()
        .take(200)
        .collect();
    format!("{base}-image-{hex}")
}

/// The init container (the runner image, copying the runner into the volume) and the
/// function's container (its image, started by the runner from the volume).
pub fn containers(runner: &ContainerDefinition, image: &str) -> (ContainerDefinition, ContainerDefinition) {
    let mount = |read_only: bool| {
        MountPoint::builder()
            .source_volume(RUNNER_VOLUME)
            .container_path(IMAGE_RUNNER_DIR)
            .read_only(read_only)
            .build()
    };
    let init = ContainerDefinition::builder()
        .name(INIT_CONTAINER)
        .set_image(runner.image.clone())
        .essential(false)
        .user("0")
        .entry_point("/bin/sh")
        .entry_point("-c")
        .command(init_script())
        .mount_points(mount(false))
        // A soft limit, within any task size: it only copies two files.
        .memory_reservation(INIT_MEMORY_MB)
        .set_log_configuration(runner.log_configuration.clone())
        .build();
    let mut function = runner.clone();
    function.image = Some(image.to_owned());
    function.essential = Some(true);
    function.entry_point = Some(vec![format!("{IMAGE_RUNNER_DIR}/runner")]);
    function.command = None;
    function.working_directory = None;
    function.user = Some(RUNNER_USER.to_owned());
    function.depends_on = Some(vec![ContainerDependency::builder()
        .container_name(INIT_CONTAINER)
        .condition(ContainerCondition::Success)
        .build()
        .expect("name and condition are set")]);
    function.mount_points.get_or_insert_with(Vec::new).push(mount(false));
    let environment = function.environment.get_or_insert_with(Vec::new);
    environment.retain(|kv| !image_settings().iter().any(|(name, _)| kv.name() == Some(*name)));
    environment.extend(
        image_settings()
            .into_iter()
            .filter_map(|(name, value)| value.map(|v| KeyValuePair::builder().name(name).value(v).build())),
    );
    (init, function)
}

/// What the runner image's `ENV` says, said again for a function's image: the same
/// settings, with the runner's files in the volume. No image runtime and no runtime
/// directory: the function's image is its runtime.
fn image_settings() -> Vec<(&'static str, Option<String>)> {
    vec![
        (CACHE_DIR_VAR, Some(format!("{IMAGE_RUNNER_DIR}/cache"))),
        (SANDBOX_VAR, Some(format!("{IMAGE_RUNNER_DIR}/immortal-sandbox"))),
        (TASK_ROOT_VAR, Some(TASK_ROOT.to_owned())),
        (OPT_DIR_VAR, Some(LAYERS_ROOT.to_owned())),
        (OWN_TMP_VAR, Some("true".to_owned())),
        (FUNCTION_ROLE_VAR, Some("assume".to_owned())),
        (FUNCTION_LOGS_VAR, Some("cloudwatch".to_owned())),
        (IMAGE_RUNTIME_VAR, None),
        (RUNTIME_DIR_VAR, None),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(arn: &str) -> TaskDefinition {
        TaskDefinition::builder()
            .family("immortal-dev-runner")
            .task_definition_arn(arn)
            .build()
    }

    #[test]
    fn one_family_per_template_revision_and_image() {
        let t1 = template("arn:aws:ecs:us-east-1:1:task-definition/immortal-dev-runner:1");
        let t2 = template("arn:aws:ecs:us-east-1:1:task-definition/immortal-dev-runner:2");
        let image = "1.dkr.ecr.us-east-1.amazonaws.com/f@sha256:aa";
        let family = family_for(&t1, image);
        assert!(
            family.starts_with("immortal-dev-runner-image-") && family.len() == "immortal-dev-runner-image-".len() + 16
        );
        assert!(
            family
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{family}"
        );
        assert_eq!(family, family_for(&t1, image), "the same again");
        assert_ne!(family, family_for(&t2, image), "a new runner image");
        assert_ne!(family, family_for(&t1, "1.dkr.ecr.us-east-1.amazonaws.com/f@sha256:bb"));
    }

    #[test]
    fn the_function_container_is_the_runner_container_in_the_functions_image() {
        let runner = ContainerDefinition::builder()
            .name("runner")
            .image("1.dkr.ecr.us-east-1.amazonaws.com/immortal:provided.al2023-x86_64")
            .essential(true)
            .stop_timeout(120)
            .environment(
                KeyValuePair::builder()
                    .name("IMMORTAL_PAYLOAD_BUCKET")
                    .value("b")
                    .build(),
            )
            .environment(
                KeyValuePair::builder()
                    .name(IMAGE_RUNTIME_VAR)
                    .value("provided.al2023")
                    .build(),
            )
            .build();
        let image = "1.dkr.ecr.us-east-1.amazonaws.com/f@sha256:aa";
        let (init, function) = containers(&runner, image);
        assert_eq!(init.image, runner.image);
        assert_eq!((init.essential, init.user.as_deref()), (Some(false), Some("0")));
        assert_eq!(function.name.as_deref(), Some("runner"), "overrides still reach it");
        assert_eq!(function.image.as_deref(), Some(image));
        assert_eq!(function.entry_point, Some(vec!["/immortal/runner".to_owned()]));
        assert_eq!(function.user.as_deref(), Some(RUNNER_USER));
        assert_eq!(function.stop_timeout, Some(120));
        let dep = &function.depends_on()[0];
        assert_eq!(
            (dep.container_name(), dep.condition()),
            (INIT_CONTAINER, &ContainerCondition::Success)
        );
        let env: HashMap<_, _> = function
            .environment()
            .iter()
            .map(|kv| (kv.name().unwrap(), kv.value().unwrap()))
            .collect();
        assert_eq!(env.get("IMMORTAL_PAYLOAD_BUCKET"), Some(&"b"));
        assert_eq!(env.get(SANDBOX_VAR), Some(&"/immortal/immortal-sandbox"));
        assert_eq!(env.get(CACHE_DIR_VAR), Some(&"/immortal/cache"));
        assert!(
            !env.contains_key(IMAGE_RUNTIME_VAR),
            "the function's image is its runtime"
        );
        assert!(init_script().contains("chown 10001:10001 /immortal/cache"));
    }
}
