//! Which of the runner's task definitions runs a function: its runtime and architecture
//! (from `overflow::functions`), matched
//! against `IMMORTAL_TASK_DEFINITIONS`. A Python function needs the runner image built on
//! AWS's Python image; launching it anywhere else would only fail in the container.

use immortal_handler_sdk::container::{TASK_DEFINITIONS_VAR, TASK_DEFINITION_VAR};

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
