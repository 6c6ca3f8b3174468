//! Settings read from the environment once, at start, and validated then: one reader
//! for every part ([`Lookup`]), and the settings the forwarder and the runner share
//! ([`OverflowSettings`]). A bad value is an error naming the variable.

use std::collections::BTreeMap;

use immortal_handler_sdk::container::{
    FUNCTION_MAP_VAR, ON_FAILURE_VAR, ON_SUCCESS_VAR, PAYLOAD_BUCKET_VAR, RELAUNCH_VAR, TRUSTED_SENDERS_VAR,
};
use immortal_handler_sdk::FunctionRef;

use crate::policy::RelaunchPolicy;
use crate::publisher::Target;

/// A setting that is missing or wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    /// Required and absent.
    #[error("{name} is not set: {what} (see the configuration reference, docs/configuration.md)")]
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

/// Reads settings by name: the process environment, or anything a test or a command
/// line supplies. Values are trimmed; an empty value counts as unset.
pub struct Lookup<'a> {
    get: Box<Getter<'a>>,
}

/// Answers a variable's value by name.
type Getter<'a> = dyn Fn(&str) -> Option<String> + 'a;

impl<'a> Lookup<'a> {
    /// Settings from `get`.
    pub fn new(get: impl Fn(&str) -> Option<String> + 'a) -> Self {
        Lookup { get: Box::new(get) }
    }

    /// Settings from the process environment.
    pub fn env() -> Lookup<'static> {
        Lookup::new(|name| std::env::var(name).ok())
    }

    /// The value of `name`, if set and not blank.
    pub fn value(&self, name: &str) -> Option<String> {
        (self.get)(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    /// The value of `name`, which must be set.
    pub fn required(&self, name: &'static str, what: &'static str) -> Result<String, SettingError> {
        self.value(name).ok_or(SettingError::Missing { name, what })
    }

    /// A required comma-separated list with at least one item.
    pub fn list(&self, name: &'static str, what: &'static str) -> Result<Vec<String>, SettingError> {
        let items: Vec<String> = self
            .required(name, what)?
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        if items.is_empty() {
            return Err(SettingError::Missing { name, what });
        }
        Ok(items)
    }

    /// The value of `name` through `parse` (`None` when unset).
    pub fn parsed<T, E: std::fmt::Display>(
        &self,
        name: &'static str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<Option<T>, SettingError> {
        self.value(name)
            .map(|text| parse(&text).map_err(|why| invalid(name, &text, &why.to_string())))
            .transpose()
    }

    /// A whole number above 0, `default` when unset.
    pub fn count(&self, name: &'static str, default: u64) -> Result<u64, SettingError> {
        Ok(self
            .parsed(name, |text| {
                text.parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or("a whole number above 0")
            })?
            .unwrap_or(default))
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`), `default` when unset.
    pub fn flag(&self, name: &'static str, default: bool) -> Result<bool, SettingError> {
        Ok(self
            .parsed(name, |text| match text.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" => Ok(false),
                _ => Err("use true or false"),
            })?
            .unwrap_or(default))
    }
}

/// A [`SettingError::Invalid`].
pub fn invalid(name: &'static str, value: &str, why: &str) -> SettingError {
    SettingError::Invalid {
        name,
        value: value.to_owned(),
        why: why.to_owned(),
    }
}

/// What the forwarder and the runner (drain workers, outcome reports) both read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverflowSettings {
    /// `IMMORTAL_RELAUNCH`: which failures are relaunched.
    pub relaunch: RelaunchPolicy,
    /// `IMMORTAL_FUNCTION_MAP`: dead-letter queue ARN → its function.
    pub function_map: BTreeMap<String, FunctionRef>,
    /// `IMMORTAL_ON_SUCCESS`: where success records go.
    pub on_success: Option<Target>,
    /// `IMMORTAL_ON_FAILURE`: where failure records go.
    pub on_failure: Option<Target>,
    /// `IMMORTAL_PAYLOAD_BUCKET`: stored envelopes and oversized records.
    pub payload_bucket: Option<String>,
    /// `IMMORTAL_TRUSTED_SENDERS`: who besides a function's own role may have it run.
    pub trusted_senders: std::collections::BTreeSet<String>,
}

impl OverflowSettings {
    /// From the process environment.
    pub fn from_env() -> Result<Self, SettingError> {
        Self::read(&Lookup::env())
    }

    /// Through `lookup`.
    pub fn read(lookup: &Lookup<'_>) -> Result<Self, SettingError> {
        Ok(OverflowSettings {
            relaunch: lookup.parsed(RELAUNCH_VAR, RelaunchPolicy::parse)?.unwrap_or_default(),
            function_map: lookup.parsed(FUNCTION_MAP_VAR, parse_function_map)?.unwrap_or_default(),
            on_success: lookup.parsed(ON_SUCCESS_VAR, Target::parse)?,
            on_failure: lookup.parsed(ON_FAILURE_VAR, Target::parse)?,
            payload_bucket: lookup.value(PAYLOAD_BUCKET_VAR),
            trusted_senders: lookup
                .parsed(TRUSTED_SENDERS_VAR, crate::sender::parse_trusted)?
                .unwrap_or_default(),
        })
    }
}

/// A pair of `IMMORTAL_FUNCTION_MAP` that is not `queueArn=function`.
#[derive(Debug, thiserror::Error)]
#[error("`{pair}`: use queueArn=function, e.g. arn:aws:sqs:us-east-1:123456789012:thumbnail-dlq=thumbnail{}", .function.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
pub struct FunctionMapError {
    /// The pair as written.
    pub pair: String,
    /// Why its function is not one, when that is the problem.
    #[source]
    pub function: Option<immortal_handler_sdk::EnvelopeError>,
}

/// Parses `queueArn=function,...` (the function a name, `NAME:QUALIFIER` or an ARN).
pub fn parse_function_map(text: &str) -> Result<BTreeMap<String, FunctionRef>, FunctionMapError> {
    let mut map = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let error = |function| FunctionMapError {
            pair: pair.to_owned(),
            function,
        };
        let (queue, function) = pair
            .split_once('=')
            .filter(|(q, f)| q.starts_with("arn:") && !f.is_empty())
            .ok_or_else(|| error(None))?;
        let function = FunctionRef::parse(function).map_err(|e| error(Some(e)))?;
        map.insert(queue.to_owned(), function);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(vars: &[(&str, &str)]) -> Result<OverflowSettings, SettingError> {
        let vars: BTreeMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let settings = OverflowSettings::read(&Lookup::new(|k| vars.get(k).cloned()));
        settings
    }

    #[test]
    fn shared_settings() {
        assert_eq!(read(&[]).unwrap(), OverflowSettings::default());
        let settings = read(&[
            (FUNCTION_MAP_VAR, "arn:aws:sqs:us-east-1:1:q=thumb:live"),
            (RELAUNCH_VAR, "timeout,error"),
            (ON_FAILURE_VAR, "arn:aws:sqs:us-east-1:1:failures"),
            (PAYLOAD_BUCKET_VAR, "  "),
        ])
        .unwrap();
        assert_eq!(settings.function_map["arn:aws:sqs:us-east-1:1:q"].label(), "thumb:live");
        assert!(matches!(settings.on_failure, Some(Target::Sqs(_))));
        assert_eq!(settings.payload_bucket, None, "blank is unset");
        for (name, value) in [
            (FUNCTION_MAP_VAR, "q=thumb"),
            (RELAUNCH_VAR, "sometimes"),
            (ON_SUCCESS_VAR, "arn:aws:s3:::bucket"),
        ] {
            let err = read(&[(name, value)]).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{name}=")), "{err}");
        }
    }

    #[test]
    fn counts_and_flags() {
        let lookup = Lookup::new(|k| Some(if k == "A" { "0" } else { "no" }.to_owned()));
        assert!(lookup.count("A", 3).is_err());
        assert!(!lookup.flag("B", true).unwrap());
    }
}
