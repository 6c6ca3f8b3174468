//! The forwarder's settings, read from the environment and validated once, at init.

use std::collections::BTreeMap;

use immortal_handler_sdk::outcome::Target;
use immortal_handler_sdk::queue_function::parse_function_map;
use immortal_handler_sdk::record::RelaunchPolicy;

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
    /// A few worker tasks (`runner --queue`) scaled on queue depth, triggered on a schedule.
    Drain(DrainSettings),
}

/// The scaling mode's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainSettings {
    /// `IMMORTAL_DRAIN_QUEUE_URL`: the overflow queue the workers drain (handed to them
    /// as `IMMORTAL_QUEUE_URL`).
    pub queue_url: String,
    /// `IMMORTAL_MAX_WORKERS` (default 10).
    pub max_workers: u64,
    /// `IMMORTAL_MESSAGES_PER_WORKER` (default 10): queue depth one worker is started for.
    pub messages_per_worker: u64,
}

/// Everything the forwarder needs to start tasks.
#[derive(Debug, Clone)]
pub struct Config {
    /// `IMMORTAL_CLUSTER`: the ECS cluster name or ARN.
    pub cluster: String,
    /// `IMMORTAL_TASK_DEFINITION`: family, family:revision or ARN of the runner's task.
    pub task_definition: String,
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
    /// `IMMORTAL_PAYLOAD_BUCKET`: where envelopes too large for the overrides go.
    pub payload_bucket: Option<String>,
    /// `IMMORTAL_FUNCTION_MAP`: `queueArn=function,...` for dead-letter queues.
    pub function_map: BTreeMap<String, String>,
    /// `IMMORTAL_RELAUNCH`: which failures are relaunched.
    pub relaunch: RelaunchPolicy,
    /// `IMMORTAL_STARTED_BY` (default `immortal-forwarder`).
    pub started_by: String,
    /// `IMMORTAL_ON_FAILURE`: where records the policy does not relaunch go, as
    /// destination records (else they stay for the parking queue).
    pub on_failure: Option<Target>,
    /// `IMMORTAL_MODE`: `task` (default) or `drain`.
    pub mode: Mode,
}

/// A setting that is missing or wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Required and absent.
    #[error("{name} is not set: {what} (see the configuration reference in the README)")]
    Missing {
        /// The variable.
        name: &'static str,
        /// What it should hold.
        what: &'static str,
    },
    /// Present but unusable.
    #[error("{name}={value:?} is not valid: {why}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        why: String,
    },
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `get` (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let value = |name: &str| get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let required = |name: &'static str, what: &'static str| value(name).ok_or(ConfigError::Missing { name, what });
        let list = |name: &'static str, what: &'static str| -> Result<Vec<String>, ConfigError> {
            let items: Vec<String> = required(name, what)?
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            if items.is_empty() {
                return Err(ConfigError::Missing { name, what });
            }
            Ok(items)
        };
        let invalid = |name: &'static str, value: &str, why: &str| ConfigError::Invalid {
            name,
            value: value.to_owned(),
            why: why.to_owned(),
        };

        let assign_public_ip = match value("IMMORTAL_ASSIGN_PUBLIC_IP")
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("DISABLED") | Some("FALSE") => false,
            Some("ENABLED") | Some("TRUE") => true,
            Some(other) => return Err(invalid("IMMORTAL_ASSIGN_PUBLIC_IP", other, "use ENABLED or DISABLED")),
        };
        let on_demand_fallback = match value("IMMORTAL_ON_DEMAND_FALLBACK")
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("true") | Some("1") | Some("yes") => true,
            Some("false") | Some("0") | Some("no") => false,
            Some(other) => return Err(invalid("IMMORTAL_ON_DEMAND_FALLBACK", other, "use true or false")),
        };
        let mut capacity_providers = Vec::new();
        for item in value("IMMORTAL_CAPACITY_PROVIDERS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let parts: Vec<&str> = item.split(':').collect();
            let number = |i: usize, default: i32| -> Result<i32, ConfigError> {
                parts.get(i).map_or(Ok(default), |n| {
                    n.parse().map_err(|_| {
                        invalid(
                            "IMMORTAL_CAPACITY_PROVIDERS",
                            item,
                            "use NAME[:WEIGHT[:BASE]], e.g. FARGATE_SPOT:4,FARGATE:1",
                        )
                    })
                })
            };
            if parts.len() > 3 || parts[0].is_empty() {
                return Err(invalid(
                    "IMMORTAL_CAPACITY_PROVIDERS",
                    item,
                    "use NAME[:WEIGHT[:BASE]], e.g. FARGATE_SPOT:4,FARGATE:1",
                ));
            }
            capacity_providers.push(CapacityProvider {
                name: parts[0].to_owned(),
                weight: number(1, 1)?,
                base: number(2, 0)?,
            });
        }
        let map_text = value("IMMORTAL_FUNCTION_MAP").unwrap_or_default();
        let function_map =
            parse_function_map(&map_text).map_err(|why| invalid("IMMORTAL_FUNCTION_MAP", &map_text, &why))?;
        let relaunch = match value("IMMORTAL_RELAUNCH") {
            Some(text) => RelaunchPolicy::parse(&text).map_err(|why| invalid("IMMORTAL_RELAUNCH", &text, &why))?,
            None => RelaunchPolicy::default(),
        };
        let started_by = value("IMMORTAL_STARTED_BY").unwrap_or_else(|| "immortal-forwarder".to_owned());
        if started_by.len() > 128
            || !started_by
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_/".contains(c))
        {
            return Err(invalid(
                "IMMORTAL_STARTED_BY",
                &started_by,
                "up to 128 letters, digits, -, _ and /",
            ));
        }
        let on_failure = match value("IMMORTAL_ON_FAILURE") {
            Some(text) => Some(Target::parse(&text).map_err(|why| invalid("IMMORTAL_ON_FAILURE", &text, &why))?),
            None => None,
        };
        let count = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
            match value(name) {
                None => Ok(default),
                Some(text) => text
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| invalid(name, &text, "a whole number above 0")),
            }
        };
        let mode = match value("IMMORTAL_MODE")
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("task") => Mode::Task,
            Some("drain") => Mode::Drain(DrainSettings {
                queue_url: required(
                    "IMMORTAL_DRAIN_QUEUE_URL",
                    "the overflow queue the drain workers read (IMMORTAL_MODE=drain)",
                )?,
                max_workers: count("IMMORTAL_MAX_WORKERS", 10)?,
                messages_per_worker: count("IMMORTAL_MESSAGES_PER_WORKER", 10)?,
            }),
            Some(other) => return Err(invalid("IMMORTAL_MODE", other, "use task or drain")),
        };
        Ok(Config {
            mode,
            on_failure,
            cluster: required("IMMORTAL_CLUSTER", "the ECS cluster to run the runner's tasks in")?,
            task_definition: required(
                "IMMORTAL_TASK_DEFINITION",
                "the runner's task definition (family[:revision] or ARN)",
            )?,
            container_name: required(
                "IMMORTAL_CONTAINER_NAME",
                "the runner's container name in that task definition",
            )?,
            subnets: list("IMMORTAL_SUBNETS", "comma-separated subnet ids for the tasks")?,
            security_groups: list(
                "IMMORTAL_SECURITY_GROUPS",
                "comma-separated security group ids for the tasks",
            )?,
            assign_public_ip,
            capacity_providers,
            on_demand_fallback,
            payload_bucket: value("IMMORTAL_PAYLOAD_BUCKET"),
            function_map,
            relaunch,
            started_by,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn minimal() -> BTreeMap<&'static str, &'static str> {
        BTreeMap::from([
            ("IMMORTAL_CLUSTER", "immortal"),
            ("IMMORTAL_TASK_DEFINITION", "immortal-runner"),
            ("IMMORTAL_CONTAINER_NAME", "runner"),
            ("IMMORTAL_SUBNETS", "subnet-1, subnet-2"),
            ("IMMORTAL_SECURITY_GROUPS", "sg-1"),
        ])
    }

    fn load(vars: &BTreeMap<&str, &str>) -> Result<Config, ConfigError> {
        Config::from_lookup(|k| vars.get(k).map(|v| v.to_string()))
    }

    #[test]
    fn a_minimal_configuration() {
        let config = load(&minimal()).unwrap();
        assert_eq!(config.subnets, ["subnet-1", "subnet-2"]);
        assert!(!config.assign_public_ip && config.capacity_providers.is_empty() && config.on_demand_fallback);
        assert_eq!(config.started_by, "immortal-forwarder");
    }

    #[test]
    fn each_missing_setting_is_named() {
        for name in [
            "IMMORTAL_CLUSTER",
            "IMMORTAL_TASK_DEFINITION",
            "IMMORTAL_CONTAINER_NAME",
            "IMMORTAL_SUBNETS",
            "IMMORTAL_SECURITY_GROUPS",
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
        vars.insert("IMMORTAL_MODE", "drain");
        assert!(load(&vars)
            .unwrap_err()
            .to_string()
            .starts_with("IMMORTAL_DRAIN_QUEUE_URL is not set"));
        vars.insert("IMMORTAL_DRAIN_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/1/q");
        vars.insert("IMMORTAL_MAX_WORKERS", "3");
        let Mode::Drain(drain) = load(&vars).unwrap().mode else {
            panic!("drain mode")
        };
        assert_eq!((drain.max_workers, drain.messages_per_worker), (3, 10));
        vars.insert("IMMORTAL_MAX_WORKERS", "0");
        assert!(load(&vars).is_err());
    }

    #[test]
    fn providers_map_and_policy() {
        let mut vars = minimal();
        vars.insert("IMMORTAL_CAPACITY_PROVIDERS", "FARGATE_SPOT:4:1,FARGATE");
        vars.insert("IMMORTAL_FUNCTION_MAP", "arn:aws:sqs:us-east-1:1:q=thumb");
        vars.insert("IMMORTAL_RELAUNCH", "timeout,error");
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
        assert_eq!(config.function_map["arn:aws:sqs:us-east-1:1:q"], "thumb");
        for (name, value) in [
            ("IMMORTAL_CAPACITY_PROVIDERS", "SPOT:x"),
            ("IMMORTAL_FUNCTION_MAP", "q=thumb"),
            ("IMMORTAL_RELAUNCH", "sometimes"),
            ("IMMORTAL_ASSIGN_PUBLIC_IP", "maybe"),
            ("IMMORTAL_STARTED_BY", "has space"),
        ] {
            let mut vars = minimal();
            vars.insert(name, value);
            assert!(load(&vars).unwrap_err().to_string().starts_with(name), "{name}");
        }
    }
}
