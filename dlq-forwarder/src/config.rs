//! The forwarder's settings, read from the environment and validated once, at init.

use immortal_handler_sdk::container::{
    ASSIGN_PUBLIC_IP_VAR, CAPACITY_PROVIDERS_VAR, CLUSTER_VAR, CONTAINER_NAME_VAR, DRAIN_ATTACHED_VAR,
    DRAIN_QUEUE_URL_VAR, MAX_MEMORY_VAR, MAX_WORKERS_VAR, MESSAGES_PER_WORKER_VAR, MIN_MEMORY_VAR, MODE_VAR,
    ON_DEMAND_FALLBACK_VAR, SECURITY_GROUPS_VAR, STARTED_BY_VAR, SUBNETS_VAR, TASK_DEFINITIONS_VAR,
    TASK_DEFINITION_VAR,
};
use immortal_handler_sdk::container::{MAX_ATTEMPTS_VAR, PAYLOAD_BUCKET_VAR};
use immortal_overflow::settings::invalid;
use immortal_overflow::{Lookup, OverflowSettings, SettingError};

use crate::runtimes::TaskDefinitions;
use crate::size::SizeLimits;

/// A capacity provider in the RunTask strategy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapacityProvider {
    /// `FARGATE_SPOT`, `FARGATE`, or a custom provider.
    pub name: String,
    /// Relative weight.
    pub weight: i32,
    /// Tasks placed here first.
    pub base: i32,
}

/// How overflowed invocations become tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// One task per message, triggered by SQS (the default).
    Task,
    /// A few worker tasks (`runner drain`) scaled on queue depth, triggered on a schedule.
    Drain(DrainSettings),
}

/// The scaling mode's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainSettings {
    /// `IMMORTAL_DRAIN_QUEUE_URL`: the overflow queues the workers drain, comma-separated
    /// (every queue whose trigger drain mode switches off; handed to the workers as
    /// `IMMORTAL_QUEUE_URL`).
    pub queue_urls: Vec<String>,
    /// `IMMORTAL_MAX_WORKERS` (default 10).
    pub max_workers: u64,
    /// `IMMORTAL_MESSAGES_PER_WORKER` (default 10): queue depth one worker is started for.
    pub messages_per_worker: u64,
    /// `IMMORTAL_DRAIN_ATTACHED` (default true): the attached functions' own dead-letter
    /// queues (found by their tags) are counted and drained too.
    pub attached: bool,
}

/// Everything the forwarder needs to start tasks.
#[derive(Debug, Clone)]
pub struct Config {
    /// `IMMORTAL_CLUSTER`: the ECS cluster name or ARN.
    pub cluster: String,
    /// The runner's task definitions: `IMMORTAL_TASK_DEFINITION` (custom runtimes and
    /// drain workers) and `IMMORTAL_TASK_DEFINITIONS` (per managed runtime).
    pub task_definitions: TaskDefinitions,
    /// `IMMORTAL_CONTAINER_NAME`: the runner's container in that task definition.
    pub container_name: String,
    /// `IMMORTAL_SUBNETS`.
    pub subnets: Vec<String>,
    /// `IMMORTAL_SECURITY_GROUPS`.
    pub security_groups: Vec<String>,
    /// `IMMORTAL_ASSIGN_PUBLIC_IP` (`ENABLED`/`DISABLED`, default DISABLED).
    pub assign_public_ip: bool,
    /// `IMMORTAL_CAPACITY_PROVIDERS`: `NAME[:WEIGHT[:BASE]],...`; empty = launch type FARGATE.
    pub capacity_providers: Vec<CapacityProvider>,
    /// `IMMORTAL_ON_DEMAND_FALLBACK` (default true): after a capacity failure with a
    /// provider strategy, try once more with launch type FARGATE.
    pub on_demand_fallback: bool,
    /// `IMMORTAL_STARTED_BY` (default `immortal-forwarder`).
    pub started_by: String,
    /// `IMMORTAL_MIN_MEMORY`, `IMMORTAL_MAX_MEMORY`: bounds on a task's memory.
    pub size_limits: SizeLimits,
    /// What the forwarder shares with the runner: the relaunch policy, the function
    /// map, where records go, the payload bucket.
    pub overflow: OverflowSettings,
    /// `IMMORTAL_PAYLOAD_BUCKET`, required here: where every relaunched invocation's
    /// envelope and ledger entry live.
    pub payload_bucket: String,
    /// `IMMORTAL_MAX_ATTEMPTS` (default 3): container attempts per invocation.
    pub max_attempts: u32,
    /// `IMMORTAL_MODE`: `task` (default) or `drain`.
    pub mode: Mode,
}

/// The usage hint for the capacity provider strategy.
const PROVIDERS_USAGE: &str = "use NAME[:WEIGHT[:BASE]], e.g. FARGATE_SPOT:4,FARGATE:1";

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, SettingError> {
        Self::read(&Lookup::env())
    }

    /// Reads settings through `lookup` (tests pass a map).
    pub fn read(lookup: &Lookup<'_>) -> Result<Config, SettingError> {
        let assign_public_ip = lookup
            .parsed(ASSIGN_PUBLIC_IP_VAR, |text| match text.to_ascii_uppercase().as_str() {
                "DISABLED" | "FALSE" => Ok(false),
                "ENABLED" | "TRUE" => Ok(true),
                _ => Err("use ENABLED or DISABLED"),
            })?
            .unwrap_or(false);
        let capacity_providers = lookup
            .parsed(CAPACITY_PROVIDERS_VAR, parse_capacity_providers)?
            .unwrap_or_default();
        let started_by = lookup
            .parsed(STARTED_BY_VAR, |text| {
                let ok = text.len() <= 128 && text.chars().all(|c| c.is_ascii_alphanumeric() || "-_/".contains(c));
                ok.then(|| text.to_owned())
                    .ok_or("up to 128 letters, digits, -, _ and /")
            })?
            .unwrap_or_else(|| "immortal-forwarder".to_owned());
        let mode = match lookup
            .parsed(MODE_VAR, |text| match text.to_ascii_lowercase().as_str() {
                "task" => Ok(false),
                "drain" => Ok(true),
                _ => Err("use task or drain"),
            })?
            .unwrap_or(false)
        {
            false => Mode::Task,
            true => Mode::Drain(DrainSettings {
                queue_urls: lookup.list(
                    DRAIN_QUEUE_URL_VAR,
                    "the overflow queues the drain workers read, comma-separated (drain mode)",
                )?,
                max_workers: lookup.count(MAX_WORKERS_VAR, 10)?,
                messages_per_worker: lookup.count(MESSAGES_PER_WORKER_VAR, 10)?,
                attached: lookup.flag(DRAIN_ATTACHED_VAR, true)?,
            }),
        };
        let overflow = OverflowSettings::read(lookup)?;
        Ok(Config {
            mode,
            payload_bucket: overflow.payload_bucket.clone().ok_or(SettingError::Missing {
                name: PAYLOAD_BUCKET_VAR,
                what: "the bucket for the envelopes and the ledger: the durable record of every relaunched invocation (the runner's role reads it too)",
            })?,
            max_attempts: lookup.count(MAX_ATTEMPTS_VAR, 3)? as u32,
            overflow,
            cluster: lookup.required(CLUSTER_VAR, "the ECS cluster to run the runner's tasks in")?,
            task_definitions: {
                let custom = lookup.required(
                    TASK_DEFINITION_VAR,
                    "the runner's task definition for custom runtimes (family[:revision] or ARN)",
                )?;
                let map = lookup.value(TASK_DEFINITIONS_VAR);
                TaskDefinitions::parse(custom, map.as_deref())
                    .map_err(|why| invalid(TASK_DEFINITIONS_VAR, map.as_deref().unwrap_or_default(), &why.to_string()))?
            },
            container_name: lookup.required(
                CONTAINER_NAME_VAR,
                "the runner's container name in that task definition",
            )?,
            subnets: lookup.list(SUBNETS_VAR, "comma-separated subnet ids for the tasks")?,
            security_groups: lookup.list(SECURITY_GROUPS_VAR, "comma-separated security group ids for the tasks")?,
            assign_public_ip,
            capacity_providers,
            on_demand_fallback: lookup.flag(ON_DEMAND_FALLBACK_VAR, true)?,
            size_limits: SizeLimits {
                min_memory: memory_setting(lookup, MIN_MEMORY_VAR)?,
                max_memory: memory_setting(lookup, MAX_MEMORY_VAR)?,
            },
            started_by,
        })
    }
}

/// A memory bound in MB, within Fargate's range.
fn memory_setting(lookup: &Lookup<'_>, name: &'static str) -> Result<Option<u32>, SettingError> {
    lookup.parsed(name, |text| {
        text.parse::<u32>()
            .ok()
            .filter(|mb| (512..=122_880).contains(mb))
            .ok_or("a number of MB from 512 to 122880 (Fargate's range)")
    })
}

/// An item of `IMMORTAL_CAPACITY_PROVIDERS` that is not `NAME[:WEIGHT[:BASE]]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}`: {PROVIDERS_USAGE}")]
pub struct BadCapacityProvider(pub String);

/// Parses `NAME[:WEIGHT[:BASE]],...`.
fn parse_capacity_providers(text: &str) -> Result<Vec<CapacityProvider>, BadCapacityProvider> {
    let mut providers = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let parts: Vec<&str> = item.split(':').collect();
        let bad = || BadCapacityProvider(item.to_owned());
        if parts.len() > 3 || parts[0].is_empty() {
            return Err(bad());
        }
        let number = |i: usize, default: i32| -> Result<i32, BadCapacityProvider> {
            parts.get(i).map_or(Ok(default), |n| n.parse().map_err(|_| bad()))
        };
        providers.push(CapacityProvider {
            name: parts[0].to_owned(),
            weight: number(1, 1)?,
            base: number(2, 0)?,
        });
    }
    Ok(providers)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use immortal_handler_sdk::container::{FUNCTION_MAP_VAR, RELAUNCH_VAR};

    use std::collections::BTreeMap;

    pub(crate) fn minimal() -> BTreeMap<&'static str, &'static str> {
        BTreeMap::from([
            (CLUSTER_VAR, "immortal"),
            (TASK_DEFINITION_VAR, "immortal-runner"),
            (CONTAINER_NAME_VAR, "runner"),
            (SUBNETS_VAR, "subnet-1, subnet-2"),
            (SECURITY_GROUPS_VAR, "sg-1"),
            (PAYLOAD_BUCKET_VAR, "payloads"),
        ])
    }

    fn load(vars: &BTreeMap<&str, &str>) -> Result<Config, SettingError> {
        let config = Config::read(&Lookup::new(|k| vars.get(k).map(|v| v.to_string())));
        config
    }

    #[test]
    fn a_minimal_configuration() {
        let config = load(&minimal()).unwrap();
        assert_eq!(config.subnets, ["subnet-1", "subnet-2"]);
        assert!(!config.assign_public_ip && config.capacity_providers.is_empty() && config.on_demand_fallback);
        assert_eq!(config.started_by, "immortal-forwarder");
        assert_eq!((config.payload_bucket.as_str(), config.max_attempts), ("payloads", 3));
    }

    #[test]
    fn each_missing_setting_is_named() {
        for name in [
            CLUSTER_VAR,
            TASK_DEFINITION_VAR,
            CONTAINER_NAME_VAR,
            SUBNETS_VAR,
            SECURITY_GROUPS_VAR,
            PAYLOAD_BUCKET_VAR,
        ] {
            let mut vars = minimal();
            vars.remove(name);
            let err = load(&vars).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{name} is not set")), "{err}");
        }
    }

    #[test]
    fn drain_mode_needs_its_queue() {
        let mut vars = minimal();
        vars.insert(MODE_VAR, "drain");
        assert!(load(&vars)
            .unwrap_err()
            .to_string()
            .starts_with(&format!("{DRAIN_QUEUE_URL_VAR} is not set")));
        vars.insert(
            DRAIN_QUEUE_URL_VAR,
            "https://sqs.us-east-1.amazonaws.com/1/a, https://sqs.us-east-1.amazonaws.com/1/b",
        );
        vars.insert(MAX_WORKERS_VAR, "3");
        let Mode::Drain(drain) = load(&vars).unwrap().mode else {
            panic!("drain mode")
        };
        assert_eq!((drain.max_workers, drain.messages_per_worker), (3, 10));
        assert_eq!(drain.queue_urls.len(), 2, "every overflow queue");
        assert!(drain.attached, "attached dead-letter queues are drained by default");
        vars.insert(DRAIN_ATTACHED_VAR, "false");
        let Mode::Drain(drain) = load(&vars).unwrap().mode else {
            panic!("drain mode")
        };
        assert!(!drain.attached);
        vars.insert(MAX_WORKERS_VAR, "0");
        assert!(load(&vars).is_err());
    }

    #[test]
    fn providers_map_and_policy() {
        let mut vars = minimal();
        vars.insert(CAPACITY_PROVIDERS_VAR, "FARGATE_SPOT:4:1,FARGATE");
        vars.insert(FUNCTION_MAP_VAR, "arn:aws:sqs:us-east-1:1:q=thumb");
        vars.insert(RELAUNCH_VAR, "timeout,error");
        let config = load(&vars).unwrap();
        assert_eq!(
            config.capacity_providers[0],
            CapacityProvider {
                name: "FARGATE_SPOT".into(),
                weight: 4,
                base: 1
            }
        );
        assert_eq!(
            config.capacity_providers[1],
            CapacityProvider {
                name: "FARGATE".into(),
                weight: 1,
                base: 0
            }
        );
        assert_eq!(config.overflow.function_map["arn:aws:sqs:us-east-1:1:q"].name, "thumb");
        for (name, value) in [
            (CAPACITY_PROVIDERS_VAR, "SPOT:x"),
            (FUNCTION_MAP_VAR, "q=thumb"),
            (RELAUNCH_VAR, "sometimes"),
            (ASSIGN_PUBLIC_IP_VAR, "maybe"),
            (STARTED_BY_VAR, "has space"),
        ] {
            let mut vars = minimal();
            vars.insert(name, value);
            assert!(load(&vars).unwrap_err().to_string().starts_with(name), "{name}");
        }
    }
}
