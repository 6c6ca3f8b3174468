//! Starting the runner's task: the overrides budget (ECS's 8192-character limit,
//! measured), the idempotency token, and RunTask itself.

use aws_sdk_ecs::error::ProvideErrorMetadata;
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, CapacityProviderStrategyItem, ContainerOverride, KeyValuePair, LaunchType,
    NetworkConfiguration, Tag, TaskOverride,
};
use immortal_handler_sdk::aws::describe_error;
use immortal_handler_sdk::container;
use serde_json::json;

use crate::config::Config;
use crate::size::TaskSize;

/// ECS's limit on all overrides of one RunTask, JSON formatting included.
pub const OVERRIDES_LIMIT: usize = 8192;

/// The overrides as ECS receives and counts them.
pub fn overrides_json(container_name: &str, environment: &[(String, String)]) -> String {
    let environment: Vec<_> = environment
        .iter()
        .map(|(name, value)| json!({ "name": name, "value": value }))
        .collect();
    json!({ "containerOverrides": [{ "name": container_name, "environment": environment }] }).to_string()
}

/// Characters the overrides take.
pub fn overrides_size(container_name: &str, environment: &[(String, String)]) -> usize {
    overrides_json(container_name, environment).chars().count()
}

/// Whether `environment` fits in one RunTask's overrides.
pub fn fits_overrides(container_name: &str, environment: &[(String, String)]) -> bool {
    overrides_size(container_name, environment) <= OVERRIDES_LIMIT
}

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
        } else if text.to_ascii_lowercase().contains("capacity") {
            LaunchError::Capacity(text)
        } else {
            LaunchError::Api(text)
        }
    })?;
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
    if joined.to_ascii_lowercase().contains("capacity") || joined.starts_with("RESOURCE") {
        Err(LaunchError::Capacity(joined))
    } else {
        Err(LaunchError::Failures(joined))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use immortal_handler_sdk::Envelope;
    use immortal_overflow::Carrier;

    /// An envelope whose inline overrides take exactly `target` characters.
    fn envelope_of_size(target: usize) -> (Envelope, usize) {
        let base = Envelope::from_parts(r#"{"p":""}"#, r#"{"request_id":"r"}"#).unwrap();
        let size = |e: &Envelope| overrides_size("runner", &Carrier::inline(e).to_environment());
        let padding = target - size(&base);
        let envelope = Envelope::from_parts(
            &format!(r#"{{"p":"{}"}}"#, "x".repeat(padding)),
            r#"{"request_id":"r"}"#,
        )
        .unwrap();
        let measured = size(&envelope);
        (envelope, measured)
    }

    #[test]
    fn exactly_8192_characters_travel_inline_one_more_does_not() {
        let (envelope, size) = envelope_of_size(OVERRIDES_LIMIT);
        assert_eq!(size, 8192);
        assert!(fits_overrides("runner", &Carrier::inline(&envelope).to_environment()));
        let (envelope, size) = envelope_of_size(OVERRIDES_LIMIT + 1);
        assert_eq!(size, 8193);
        assert!(!fits_overrides("runner", &Carrier::inline(&envelope).to_environment()));
    }

    #[test]
    fn the_budget_counts_json_escaping() {
        // Quotes in the event are escaped twice: once in the event, once in the overrides.
        let env = vec![(container::EVENT_VAR.to_owned(), r#"{"a":"\""}"#.to_owned())];
        let json = overrides_json("runner", &env);
        assert_eq!(overrides_size("runner", &env), json.chars().count());
        assert!(json.contains(r#"{\"a\":\"\\\"\"}"#), "{json}");
    }

    #[test]
    fn client_tokens() {
        let id = "059f36b4-87a3-44ab-83d2-661975830a7d";
        assert_eq!(client_token(id), id, "the SQS message id itself");
        assert_eq!(client_token(id), client_token(id), "deterministic");
        let long = "x".repeat(100);
        let token = client_token(&long);
        assert_eq!(token.len(), 64);
        assert_ne!(client_token("a b"), "a b", "spaces are outside ECS's alphabet");
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
