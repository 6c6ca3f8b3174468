//! What the overflow needs to know about an attached function, asked once: one
//! GetFunction (its configuration, image and tags) per function version, remembered for
//! a minute and shared by the sender check, the relaunch policy and (in the forwarder)
//! the choice of task definition. A redeploy takes effect within that minute.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_lambda::types::{FunctionCodeLocation, FunctionConfiguration};
use immortal_handler_sdk::aws::CallFailed;
use immortal_handler_sdk::container::RELAUNCH_TAG;
use immortal_handler_sdk::function_ref::DEFAULT_MEMORY_MB;
use immortal_handler_sdk::FunctionRef;

use crate::policy::{RelaunchPolicy, UnknownClass};

/// How long a function's facts are remembered.
const REMEMBER: Duration = Duration::from_secs(60);

/// An attached function, as GetFunction describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FunctionFacts {
    /// Its execution role (`Configuration.Role`).
    pub role: Option<String>,
    /// `python3.12`...; `None` for container-image functions.
    pub runtime: Option<String>,
    /// `x86_64` or `arm64`.
    pub architecture: String,
    /// `MemorySize`.
    pub memory_mb: u32,
    /// `VpcConfig`'s subnets, when it runs in a VPC.
    pub subnets: Vec<String>,
    /// A container-image function's image, by digest when Lambda resolved one.
    pub image: Option<String>,
    /// Its tags.
    pub tags: HashMap<String, String>,
}

impl FunctionFacts {
    /// Its own relaunch policy (the tag `immortal:relaunch`, as the Serverless plugin
    /// writes it: `timeout+error`), when it has one.
    pub fn relaunch(&self) -> Option<Result<RelaunchPolicy, UnknownClass>> {
        self.tags.get(RELAUNCH_TAG).map(|value| RelaunchPolicy::parse(value))
    }
}

/// A function's architecture as Lambda names it (`x86_64` when it says none).
pub fn architecture_of(config: &FunctionConfiguration) -> String {
    config
        .architectures
        .as_ref()
        .and_then(|a| a.first().map(|a| a.as_str().to_owned()))
        .unwrap_or_else(|| "x86_64".to_owned())
}

/// A container-image function's image: by digest when Lambda resolved one
/// (`ResolvedImageUri`), else as deployed (`ImageUri`); `None` for a zip function.
pub fn image_of(config: &FunctionConfiguration, code: &FunctionCodeLocation) -> Option<String> {
    if config.package_type.as_ref().map(|p| p.as_str()) != Some("Image") {
        return None;
    }
    code.resolved_image_uri
        .clone()
        .filter(|uri| uri.contains("@sha256:"))
        .or_else(|| code.image_uri.clone())
}

/// Looks functions up, remembering each for a minute.
pub struct Functions {
    lambda: aws_sdk_lambda::Client,
    known: Mutex<HashMap<String, (Arc<FunctionFacts>, Instant)>>,
}

impl Functions {
    /// A lookup with a Lambda client from `sdk`.
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        Functions {
            lambda: aws_sdk_lambda::Client::new(sdk),
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The facts of `function` (its qualified version, when the reference has one), in
    /// its own region when its ARN names one.
    pub async fn facts(&self, function: &FunctionRef) -> Result<Arc<FunctionFacts>, CallFailed> {
        let key = function.arn("", "");
        if let Some((known, at)) = self.known.lock().expect("functions").get(&key) {
            if at.elapsed() < REMEMBER {
                return Ok(known.clone());
            }
        }
        let lambda = match &function.region {
            Some(region) => aws_sdk_lambda::Client::from_conf(
                self.lambda
                    .config()
                    .to_builder()
                    .region(aws_sdk_lambda::config::Region::new(region.clone()))
                    .build(),
            ),
            None => self.lambda.clone(),
        };
        let out = lambda
            .get_function()
            .function_name(function.api_name())
            .set_qualifier(function.qualifier.clone())
            .send()
            .await
            .map_err(|e| {
                let mut failed = CallFailed::new(format!("GetFunction({})", function.label()), &e);
                failed
                    .detail
                    .push_str(" (the role that reads the queue needs lambda:GetFunction and lambda:ListTags on it)");
                failed
            })?;
        let config = out
            .configuration
            .unwrap_or_else(|| FunctionConfiguration::builder().build());
        let image = out.code.as_ref().and_then(|code| image_of(&config, code));
        let architecture = architecture_of(&config);
        let facts = Arc::new(FunctionFacts {
            role: config.role,
            runtime: config.runtime.map(|r| r.as_str().to_owned()),
            architecture,
            memory_mb: config
                .memory_size
                .and_then(|m| u32::try_from(m).ok())
                .unwrap_or(DEFAULT_MEMORY_MB),
            subnets: config.vpc_config.and_then(|v| v.subnet_ids).unwrap_or_default(),
            image,
            tags: out.tags.unwrap_or_default(),
        });
        self.known
            .lock()
            .expect("functions")
            .insert(key, (facts.clone(), Instant::now()));
        Ok(facts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::FailureClass;

    #[test]
    fn a_functions_own_relaunch_setting_is_its_tag_as_the_plugin_writes_it() {
        let mut facts = FunctionFacts::default();
        assert!(facts.relaunch().is_none(), "no tag: the stack's setting");
        facts.tags.insert(RELAUNCH_TAG.into(), "timeout+error".into());
        let policy = facts.relaunch().unwrap().unwrap();
        assert!(policy.relaunches(FailureClass::Error) && policy.relaunches(FailureClass::Timeout));
        assert!(!policy.relaunches(FailureClass::Overflow));
        facts.tags.insert(RELAUNCH_TAG.into(), "timeout+sometimes".into());
        assert!(facts.relaunch().unwrap().is_err());
    }
}
