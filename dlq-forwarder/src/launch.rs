//! Starting the runner's task: the idempotency token, and RunTask itself. (The event
//! never rides in the overrides: they carry the stored envelope's location and digest.)

use aws_sdk_ecs::error::ProvideErrorMetadata;
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, CapacityProviderStrategyItem, ContainerOverride, KeyValuePair, LaunchType,
    NetworkConfiguration, Tag, TaskOverride,
};
use immortal_handler_sdk::aws::describe_error;
use immortal_handler_sdk::container;

use crate::config::Config;
use crate::size::TaskSize;

/// RunTask's clientToken for a queue message: the message id, so a redelivery of the
/// same message never starts a second task. ECS allows up to 64 characters in 33..=126;
/// anything else is hashed into that alphabet.
pub fn client_token(message_id: &str) -> String {
    let valid = |t: &str| !t.is_empty() && t.len() <= 64 && t.bytes().all(|b| (33..=126).contains(&b));
    if valid(message_id) {
        return message_id.to_owned();
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(message_id.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The token for the on-demand retry after a Spot capacity failure: different (ECS
/// refuses a token reused with other parameters) but just as deterministic.
pub fn fallback_token(token: &str) -> String {
    let mut base: String = token.chars().take(61).collect();
    base.push_str("/od");
    base
}

/// A tag value ECS accepts (letters, digits, spaces and `_.:/=+-@`, at most 256).
pub fn tag_value(value: &str) -> String {
    value
        .chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(*c))
        .take(256)
        .collect()
}

/// Why a task was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaunchError {
    /// ECS throttled the call.
    #[error("ECS throttled RunTask: {0}")]
    Throttled(String),
    /// No capacity.
    #[error("no capacity to start the task: {0}")]
    Capacity(String),
    /// RunTask answered with failures.
    #[error("RunTask reported failures: {0}")]
    Failures(String),
    /// RunTask failed.
    #[error("RunTask failed: {0}")]
    Api(String),
}

/// One RunTask for one envelope.
pub struct TaskRequest<'a> {
    /// The task's CPU and memory (else the task definition's).
    pub size: Option<TaskSize>,
    /// The runner's task definition for the function's runtime.
    pub task_definition: &'a str,
    /// The carrier's environment.
    pub environment: Vec<(String, String)>,
    /// Idempotency token.
    pub token: String,
    /// `immortal:request-id`.
    pub request_id: &'a str,
    /// `immortal:function`.
    pub function: &'a str,
}

/// Calls RunTask; with a provider strategy and a capacity failure, tries once more on
/// plain FARGATE when the configuration allows. Returns the task ARN.
pub async fn run_task(
    ecs: &aws_sdk_ecs::Client,
    config: &Config,
    request: &TaskRequest<'_>,
) -> Result<String, LaunchError> {
    let first = call(
        ecs,
        config,
        request,
        &request.token,
        !config.capacity_providers.is_empty(),
    )
    .await;
    match first {
        Err(LaunchError::Capacity(reason)) if !config.capacity_providers.is_empty() && config.on_demand_fallback => {
            tracing::warn!(request_id = request.request_id, reason = %reason, "no capacity with the provider strategy; trying FARGATE on demand");
            call(ecs, config, request, &fallback_token(&request.token), false).await
        }
        other => other,
    }
}

/// The token for attempt `attempt` of invocation `request_id`: a retried launch of the
/// same attempt (a redelivered message, a forwarder that crashed mid-launch) is the
/// same RunTask to ECS, never a second task.
pub fn attempt_token(request_id: &str, attempt: u32) -> String {
    client_token(&format!("{request_id}/{attempt}"))
}

/// One RunTask: with the capacity provider strategy (`use_strategy`), else on-demand
/// Fargate. Returns the task ARN.
pub async fn call(
    ecs: &aws_sdk_ecs::Client,
    config: &Config,
    request: &TaskRequest<'_>,
    token: &str,
    use_strategy: bool,
) -> Result<String, LaunchError> {
    let environment: Vec<KeyValuePair> = request
        .environment
        .iter()
        .map(|(k, v)| KeyValuePair::builder().name(k).value(v).build())
        .collect();
    let overrides = TaskOverride::builder()
        .container_overrides(
            ContainerOverride::builder()
                .name(&config.container_name)
                .set_environment(Some(environment))
                .build(),
        )
        .set_cpu(request.size.map(|s| s.cpu.to_string()))
        .set_memory(request.size.map(|s| s.memory.to_string()))
        .build();
    let network = NetworkConfiguration::builder()
        .awsvpc_configuration(
            AwsVpcConfiguration::builder()
                .set_subnets(Some(config.subnets.clone()))
                .set_security_groups(Some(config.security_groups.clone()))
                .assign_public_ip(if config.assign_public_ip {
                    AssignPublicIp::Enabled
                } else {
                    AssignPublicIp::Disabled
                })
                .build()
                .map_err(|e| LaunchError::Api(e.to_string()))?,
        )
        .build();
    let mut call = ecs
        .run_task()
        .cluster(&config.cluster)
        .task_definition(request.task_definition)
        .count(1)
        .client_token(token)
        .started_by(&config.started_by)
        .network_configuration(network)
        .overrides(overrides)
        .tags(
            Tag::builder()
                .key(container::REQUEST_ID_TAG)
                .value(tag_value(request.request_id))
                .build(),
        )
        .tags(
            Tag::builder()
                .key(container::FUNCTION_TAG)
                .value(tag_value(request.function))
                .build(),
        );
    if use_strategy {
        for provider in &config.capacity_providers {
            call = call.capacity_provider_strategy(
                CapacityProviderStrategyItem::builder()
                    .capacity_provider(&provider.name)
                    .weight(provider.weight)
                    .base(provider.base)
                    .build()
                    .map_err(|e| LaunchError::Api(e.to_string()))?,
            );
        }
    } else {
        call = call.launch_type(LaunchType::Fargate);
    }
    let out = call.send().await.map_err(|err| {
        let code = err
            .as_service_error()
            .and_then(|e| e.code())
            .unwrap_or_default()
            .to_owned();
        let text = describe_error(&err);
        if code == "ThrottlingException" || text.contains("Rate exceeded") {
            LaunchError::Throttled(text)
        } else {
            // Not by a word in the text: "capacity provider ... not associated with the
            // cluster" is a configuration error, not a lack of room.
            LaunchError::Api(text)
        }
    })?;
    let no_room = out
        .failures()
        .iter()
        .any(|f| f.reason().is_some_and(is_capacity_failure));
    let failures: Vec<String> = out
        .failures()
        .iter()
        .map(|f| {
            format!(
                "{} ({})",
                f.reason().unwrap_or("unknown reason"),
                f.detail().unwrap_or("no detail")
            )
        })
        .collect();
    if let Some(task) = out.tasks().first().and_then(|t| t.task_arn()) {
        return Ok(task.to_owned());
    }
    let joined = if failures.is_empty() {
        "no task and no failure returned".to_owned()
    } else {
        failures.join("; ")
    };
    if no_room {
        Err(LaunchError::Capacity(joined))
    } else {
        Err(LaunchError::Failures(joined))
    }
}

/// Whether a RunTask `failures[].reason` means "no room for the task now" (worth trying
/// other capacity), as the Amazon ECS Developer Guide's "API failure reasons" page lists
/// them: `RESOURCE:CPU`, `RESOURCE:MEMORY`, `RESOURCE:PORTS`, `RESOURCE:PORTS_UDP`,
/// `RESOURCE:ENI`, `RESOURCE:GPU` on container instances, and Fargate's "Capacity is
/// unavailable at this time. Please try again later or in a different availability zone".
/// Every other documented reason (`AGENT`, `ATTRIBUTE`, `MISSING`, `INACTIVE`, ...) is not.
pub fn is_capacity_failure(reason: &str) -> bool {
    const FARGATE_NO_CAPACITY: &str = "Capacity is unavailable at this time";
    reason.starts_with("RESOURCE:") || reason.starts_with(FARGATE_NO_CAPACITY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_failure_reasons_are_told_apart() {
        // The reasons as the Amazon ECS Developer Guide spells them ("API failure reasons").
        for reason in [
            "RESOURCE:CPU",
            "RESOURCE:MEMORY",
            "RESOURCE:PORTS",
            "RESOURCE:PORTS_UDP",
            "RESOURCE:ENI",
            "RESOURCE:GPU",
            "Capacity is unavailable at this time. Please try again later or in a different availability zone",
        ] {
            assert!(is_capacity_failure(reason), "{reason}");
        }
        for reason in [
            "AGENT",
            "ATTRIBUTE",
            "MISSING",
            "INACTIVE",
            "The capacity provider strategy is invalid",
        ] {
            assert!(!is_capacity_failure(reason), "{reason}");
        }
    }

    #[test]
    fn client_tokens() {
        let id = "059f36b4-87a3-44ab-83d2-661975830a7d";
        assert_eq!(client_token(id), id, "the SQS message id itself");
        let long = "x".repeat(100);
        let token = client_token(&long);
        assert_eq!(token.len(), 64);
        assert!(
            token.bytes().all(|b| b.is_ascii_hexdigit()),
            "hashed into ECS's alphabet: {token}"
        );
        assert_ne!(client_token("a b"), "a b", "spaces are outside ECS's alphabet");
        assert_ne!(
            client_token("a b"),
            client_token("a c"),
            "different messages, different tasks"
        );
        let fallback = fallback_token(id);
        assert_ne!(fallback, id);
        assert!(fallback.len() <= 64 && fallback.bytes().all(|b| (33..=126).contains(&b)));
        assert_eq!(fallback_token(&"y".repeat(64)).len(), 64);
    }

    #[test]
    fn tag_values_drop_what_ecs_refuses() {
        assert_eq!(
            tag_value("arn:aws:lambda:us-east-1:1:function:thumb:$LATEST"),
            "arn:aws:lambda:us-east-1:1:function:thumb:LATEST"
        );
    }
}
