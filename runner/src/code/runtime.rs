//! The function's runtime: its identifier, what Lambda sets for it, where its own
//! `bootstrap` lives, and which AWS base image holds its userland.
//!
//! AWS publishes every managed runtime as a container image
//! (`public.ecr.aws/lambda/python:3.12`...): the interpreter under `/var/lang`, the
//! runtime interface client and its `bootstrap` under `/var/runtime`. The runner takes
//! the place of the Runtime Interface Emulator in those images and looks for the
//! bootstrap where the emulator does: `/var/task/bootstrap`, `/opt/bootstrap`,
//! `/var/runtime/bootstrap`.

use std::path::PathBuf;

/// Where AWS's base images keep the runtime (its `bootstrap` and client).
pub(crate) const DEFAULT_RUNTIME_DIR: &str = "/var/runtime";

/// A Lambda runtime identifier: `python3.12`, `nodejs22.x`, `provided.al2023`...
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Runtime(String);

impl Runtime {
    /// The runtime named `id`.
    pub(crate) fn new(id: impl Into<String>) -> Self {
        Runtime(id.into())
    }

    /// The identifier.
    pub(crate) fn id(&self) -> &str {
        &self.0
    }

    /// An OS-only runtime (`provided`, `provided.al2`, `provided.al2023`): the function
    /// brings its own bootstrap.
    pub(crate) fn is_custom(&self) -> bool {
        self.0 == "provided" || self.0.starts_with("provided.")
    }

    /// A handler as this runtime names one, the Lambda console's default for new
    /// functions: `lambda_function.lambda_handler` (Python, Ruby), `index.handler`
    /// (Node.js), `example.Hello::handleRequest` (Java),
    /// `Assembly::Namespace.Function::FunctionHandler` (.NET).
    pub(crate) fn handler_example(&self) -> &'static str {
        let id = self.0.as_str();
        if id.starts_with("nodejs") {
            "index.handler"
        } else if id.starts_with("java") {
            "example.Hello::handleRequest"
        } else if id.starts_with("dotnet") {
            "Assembly::Namespace.Function::FunctionHandler"
        } else {
            "lambda_function.lambda_handler"
        }
    }

    /// `AWS_EXECUTION_ENV` as Lambda sets it: `AWS_Lambda_<runtime>`, and not at all
    /// for OS-only runtimes.
    pub(crate) fn execution_env(&self) -> Option<String> {
        (!self.is_custom()).then(|| format!("AWS_Lambda_{}", self.0))
    }

    /// AWS's base image for this runtime (`public.ecr.aws/lambda/python:3.12`), when the
    /// identifier has a known shape.
    pub(crate) fn base_image(&self) -> Option<String> {
        let (family, version) = self.family_version()?;
        Some(format!("public.ecr.aws/lambda/{family}:{version}"))
    }

    /// The runtime as Lambda's `INIT_START` line names its version (`python:3.12`,
    /// `nodejs:20`, `provided:al2023`), without the release suffix (`.v38`) only Lambda
    /// knows; the identifier itself when its shape is unknown.
    pub(crate) fn version_label(&self) -> String {
        self.family_version()
            .map(|(family, version)| format!("{family}:{version}"))
            .unwrap_or_else(|| self.0.clone())
    }

    /// The base image's repository and tag (`python`, `3.12`; `nodejs`, `20`).
    pub(crate) fn family_version(&self) -> Option<(&'static str, String)> {
        let id = self.0.as_str();
        let (family, version) = if let Some(v) = id.strip_prefix("provided.") {
            ("provided", v.to_owned())
        } else if let Some(v) = id.strip_prefix("nodejs") {
            ("nodejs", v.trim_end_matches(".x").to_owned())
        } else if let Some(v) = id.strip_prefix("python") {
            ("python", v.to_owned())
        } else if let Some(v) = id.strip_prefix("ruby") {
            ("ruby", v.to_owned())
        } else if let Some(v) = id.strip_prefix("java") {
            ("java", v.trim_end_matches(".al2").to_owned())
        } else if let Some(v) = id.strip_prefix("dotnet") {
            ("dotnet", v.to_owned())
        } else {
            return None;
        };
        (!version.is_empty()).then_some((family, version))
    }
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The runtime directory the runner serves functions from, and which runtime it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuntimeDir {
    /// `/var/runtime` in AWS's images; any folder holding a `bootstrap` locally.
    pub(crate) path: PathBuf,
    /// The runtime the image was built for (`IMMORTAL_IMAGE_RUNTIME`), when known:
    /// a function of another managed runtime is refused, naming the image to use.
    pub(crate) image_runtime: Option<Runtime>,
    /// The runtime a local folder was made for by `runner runtime install` (its
    /// marker), when it was.
    pub(crate) installed_runtime: Option<Runtime>,
}

impl RuntimeDir {
    /// The runtime directory at `path`, holding `image_runtime` when the image says so;
    /// a folder `runner runtime install` made says which runtime it holds itself.
    pub(crate) fn new(path: PathBuf, image_runtime: Option<Runtime>) -> Self {
        let installed_runtime = crate::code::runtime_folder::Installed::read(&path).map(|i| Runtime::new(i.runtime));
        RuntimeDir {
            path,
            image_runtime,
            installed_runtime,
        }
    }

    /// The runtime's `bootstrap` in this directory.
    pub(crate) fn bootstrap(&self) -> PathBuf {
        self.path.join(crate::emulator::bootstrap::BOOTSTRAP)
    }

    /// The runtime this directory says it holds: the image's, else the one it was
    /// installed for.
    pub(crate) fn declared_runtime(&self) -> Option<&Runtime> {
        self.image_runtime.as_ref().or(self.installed_runtime.as_ref())
    }

    /// Whether this directory can serve a managed `runtime` (unknown runtimes and
    /// directories without a declared runtime are trusted: a local run names its own).
    pub(crate) fn serves(&self, runtime: Option<&Runtime>) -> bool {
        match (self.declared_runtime(), runtime) {
            (Some(declared), Some(wanted)) => declared == wanted,
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        let python = Runtime::new("python3.12");
        assert_eq!(python.execution_env().as_deref(), Some("AWS_Lambda_python3.12"));
        assert_eq!(
            python.base_image().as_deref(),
            Some("public.ecr.aws/lambda/python:3.12")
        );
        assert_eq!(
            Runtime::new("nodejs22.x").base_image().as_deref(),
            Some("public.ecr.aws/lambda/nodejs:22")
        );
        assert_eq!(
            Runtime::new("java8.al2").base_image().as_deref(),
            Some("public.ecr.aws/lambda/java:8")
        );
        let custom = Runtime::new("provided.al2023");
        assert!(custom.is_custom());
        assert_eq!(custom.execution_env(), None, "Lambda sets none for OS-only runtimes");
        assert_eq!(
            custom.base_image().as_deref(),
            Some("public.ecr.aws/lambda/provided:al2023")
        );
        assert_eq!(Runtime::new("cobol").base_image(), None);
        assert_eq!(python.version_label(), "python:3.12");
        assert_eq!(Runtime::new("nodejs20.x").version_label(), "nodejs:20");
        assert_eq!(custom.version_label(), "provided:al2023");
        assert_eq!(Runtime::new("cobol").version_label(), "cobol");
    }

    #[test]
    fn an_image_serves_its_own_runtime() {
        let dir = RuntimeDir {
            path: DEFAULT_RUNTIME_DIR.into(),
            image_runtime: Some(Runtime::new("python3.12")),
            installed_runtime: None,
        };
        assert!(dir.serves(Some(&Runtime::new("python3.12"))));
        assert!(!dir.serves(Some(&Runtime::new("python3.13"))));
        assert!(dir.serves(None));
    }
}
