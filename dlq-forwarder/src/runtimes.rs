//! Which of the runner's task definitions runs a function, and how large: its runtime,
//! architecture and memory (GetFunctionConfiguration, remembered for a minute), matched
//! against `IMMORTAL_TASK_DEFINITIONS`. A Python function needs the runner image built on
//! AWS's Python image; launching it anywhere else would only fail in the container.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use immortal_handler_sdk::aws::CallFailed;
use immortal_handler_sdk::container::{TASK_DEFINITIONS_VAR, TASK_DEFINITION_VAR};
use immortal_handler_sdk::FunctionRef;

use crate::error::ForwardError;

/// How long a function's runtime is remembered (a redeploy to another runtime is rare,
/// and a stale answer fails loudly in the container).
const REMEMBER: Duration = Duration::from_secs(60);

/// The task definition per runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDefinitions {
    custom: String,
    entries: Vec<Entry>,
    catch_all: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    runtime: String,
    architecture: Option<String>,
    task_definition: String,
}

/// A pair of `IMMORTAL_TASK_DEFINITIONS` that is not `RUNTIME[/ARCHITECTURE]=TASK_DEFINITION`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{pair}`: use RUNTIME[/ARCHITECTURE]=TASK_DEFINITION, e.g. python3.12=immortal-python312,nodejs22.x/arm64=immortal-node22-arm,*=immortal-any{}", if *.architecture { "; the architecture is x86_64 or arm64" } else { "" })]
pub struct BadTaskDefinitions {
    /// The pair as written.
    pub pair: String,
    /// Whether its architecture is the problem.
    pub architecture: bool,
}

impl TaskDefinitions {
    /// `custom` (`IMMORTAL_TASK_DEFINITION`) for OS-only runtimes, and `map`
    /// (`IMMORTAL_TASK_DEFINITIONS`): `RUNTIME[/ARCHITECTURE]=TASK_DEFINITION,...`, `*`
    /// for every other runtime.
    pub fn parse(custom: String, map: Option<&str>) -> Result<Self, BadTaskDefinitions> {
        let mut defs = TaskDefinitions {
            custom,
            entries: Vec::new(),
            catch_all: None,
        };
        for pair in map
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let bad = |architecture| BadTaskDefinitions {
                pair: pair.to_owned(),
                architecture,
            };
            let (key, task_definition) = pair.split_once('=').ok_or_else(|| bad(false))?;
            let (key, task_definition) = (key.trim(), task_definition.trim());
            if key.is_empty() || task_definition.is_empty() {
                return Err(bad(false));
            }
            if key == "*" {
                defs.catch_all = Some(task_definition.to_owned());
                continue;
            }
            let (runtime, architecture) = match key.split_once('/') {
                Some((runtime, arch)) if ["x86_64", "arm64"].contains(&arch) => (runtime, Some(arch.to_owned())),
                Some(_) => return Err(bad(true)),
                None => (key, None),
            };
            defs.entries.push(Entry {
                runtime: runtime.to_owned(),
                architecture,
                task_definition: task_definition.to_owned(),
            });
        }
        Ok(defs)
    }

    /// The task definition for custom runtimes (and the drain workers').
    pub fn custom(&self) -> &str {
        &self.custom
    }

    /// The task definition that runs `runtime` on `architecture`: an exact entry, then
    /// one for every architecture, then the custom one for `provided.*`, then `*`.
    pub fn choose(&self, runtime: &str, architecture: &str) -> Option<&str> {
        let entry = |arch: Option<&str>| {
            self.entries
                .iter()
                .find(|e| e.runtime == runtime && e.architecture.as_deref() == arch)
                .map(|e| e.task_definition.as_str())
        };
        entry(Some(architecture))
            .or_else(|| entry(None))
            .or_else(|| (runtime == "provided" || runtime.starts_with("provided.")).then_some(self.custom.as_str()))
            .or(self.catch_all.as_deref())
    }

    /// Why nothing runs `runtime`, and the fix.
    pub fn none_for(runtime: &str, architecture: &str) -> String {
        format!(
            "no runner task definition runs {runtime} on {architecture}: add {runtime}={{TASK_DEFINITION}} (built on AWS's base image for {runtime}) to {TASK_DEFINITIONS_VAR}, or a catch-all *={{TASK_DEFINITION}}; {TASK_DEFINITION_VAR} serves custom runtimes (provided.*) only"
        )
    }
}

/// What the forwarder needs of a function's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRuntime {
    /// `python3.12`...; `None` for container-image functions.
    pub runtime: Option<String>,
    /// `x86_64` or `arm64`.
    pub architecture: String,
    /// `MemorySize`.
    pub memory_mb: u32,
    /// `VpcConfig`'s subnets, when it runs in a VPC.
    pub subnets: Vec<String>,
    /// A container-image function's image, by digest when Lambda resolved one
    /// (GetFunction's `Code.ResolvedImageUri`).
    pub image: Option<String>,
}

/// Looks functions' runtimes up, remembering each for a minute.
pub struct FunctionRuntimes {
    lambda: aws_sdk_lambda::Client,
    known: Mutex<HashMap<String, (FunctionRuntime, Instant)>>,
}

impl FunctionRuntimes {
    /// A lookup with clients from `sdk`.
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        FunctionRuntimes {
            lambda: aws_sdk_lambda::Client::new(sdk),
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The runtime of `function` (its qualified version, when the reference has one).
    pub async fn of(&self, function: &FunctionRef) -> Result<FunctionRuntime, ForwardError> {
        let key = function.arn("", "");
        if let Some((known, at)) = self.known.lock().expect("runtime cache").get(&key) {
            if at.elapsed() < REMEMBER {
                return Ok(known.clone());
            }
        }
        let name = function.api_name();
        let config = self
            .lambda
            .get_function_configuration()
            .function_name(name)
            .set_qualifier(function.qualifier.clone())
            .send()
            .await
            .map_err(|e| {
                let mut failed = CallFailed::new(format!("GetFunctionConfiguration({})", function.label()), &e);
                failed
                    .detail
                    .push_str(" (the forwarder's role needs lambda:GetFunctionConfiguration on it)");
                ForwardError::from(failed)
            })?;
        let image = match config.package_type.as_ref().map(|p| p.as_str()) {
            Some("Image") => Some(self.image_of(function).await?),
            _ => None,
        };
        let found = FunctionRuntime {
            image,
            runtime: config.runtime.map(|r| r.as_str().to_owned()),
            architecture: config
                .architectures
                .and_then(|a| a.first().map(|a| a.as_str().to_owned()))
                .unwrap_or_else(|| "x86_64".to_owned()),
            memory_mb: config
                .memory_size
                .and_then(|m| u32::try_from(m).ok())
                .unwrap_or(immortal_handler_sdk::function_ref::DEFAULT_MEMORY_MB),
            subnets: config.vpc_config.and_then(|v| v.subnet_ids).unwrap_or_default(),
        };
        self.known
            .lock()
            .expect("runtime cache")
            .insert(key, (found.clone(), Instant::now()));
        Ok(found)
    }

    /// An image function's image (GetFunction: GetFunctionConfiguration does not say).
    async fn image_of(&self, function: &FunctionRef) -> Result<String, ForwardError> {
        let out = self
            .lambda
            .get_function()
            .function_name(function.api_name())
            .set_qualifier(function.qualifier.clone())
            .send()
            .await
            .map_err(|e| {
                let mut failed = CallFailed::new(format!("GetFunction({})", function.label()), &e);
                failed
                    .detail
                    .push_str(" (the forwarder's role needs lambda:GetFunction on image functions)");
                ForwardError::from(failed)
            })?;
        let code = out
            .code
            .unwrap_or_else(|| aws_sdk_lambda::types::FunctionCodeLocation::builder().build());
        code.resolved_image_uri
            .filter(|uri| uri.contains("@sha256:"))
            .or(code.image_uri)
            .ok_or_else(|| {
                ForwardError::Aws(CallFailed {
                    call: format!("GetFunction({})", function.label()),
                    detail: "an image function with no Code.ImageUri".into(),
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_find_their_task_definition() {
        let defs = TaskDefinitions::parse(
            "immortal-custom".into(),
            Some("python3.12=immortal-py312, nodejs22.x/arm64=immortal-node22-arm,nodejs22.x=immortal-node22"),
        )
        .unwrap();
        assert_eq!(defs.choose("python3.12", "x86_64"), Some("immortal-py312"));
        assert_eq!(
            defs.choose("python3.12", "arm64"),
            Some("immortal-py312"),
            "no architecture: any"
        );
        assert_eq!(defs.choose("nodejs22.x", "arm64"), Some("immortal-node22-arm"));
        assert_eq!(defs.choose("nodejs22.x", "x86_64"), Some("immortal-node22"));
        assert_eq!(defs.choose("provided.al2023", "x86_64"), Some("immortal-custom"));
        assert_eq!(defs.choose("python3.13", "x86_64"), None);
        let with_star = TaskDefinitions::parse("c".into(), Some("*=anything")).unwrap();
        assert_eq!(with_star.choose("python3.13", "x86_64"), Some("anything"));
        assert_eq!(with_star.choose("provided.al2", "x86_64"), Some("c"), "custom before *");
        let why = TaskDefinitions::none_for("python3.13", "x86_64");
        assert!(
            why.contains("python3.13=") && why.contains(TASK_DEFINITIONS_VAR),
            "{why}"
        );
    }

    #[test]
    fn bad_maps_say_how() {
        for bad in ["python3.12", "=td", "python3.12/sparc=td", "python3.12="] {
            let err = TaskDefinitions::parse("c".into(), Some(bad)).unwrap_err().to_string();
            assert!(err.contains("RUNTIME[/ARCHITECTURE]=TASK_DEFINITION"), "{bad}: {err}");
        }
    }
}
