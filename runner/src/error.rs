//! The runner's typed errors, each mapped to one exit code.

use std::path::PathBuf;

use crate::exit::Exit;

/// Everything that can stop the runner before or around an invocation.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunnerError {
    /// Bad usage or bad input (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The code could not be obtained, verified or unpacked (exit 3).
    #[error(transparent)]
    Code(#[from] CodeError),
    /// The Lambda API refused or failed (exit 3: the code could not be obtained).
    #[error("{0}")]
    Function(String),
    /// Could not set up the local Runtime API or start the bootstrap (exit 4).
    #[error("{0}")]
    Start(String),
    /// The function's own role could not be assumed (exit 3: it cannot run as itself).
    #[error(transparent)]
    Credentials(#[from] crate::emulator::credentials::CredentialsError),
    /// AWS did not answer for now, after the SDK's retries (exit 8): throttled, failing
    /// (5xx) or unreachable. Nothing about the invocation failed.
    #[error("{0}")]
    Unavailable(String),
    /// The function is configured in a way the runner cannot honour (exit 3): never a
    /// silent half-run.
    #[error("{0}")]
    Configuration(String),
    /// A local runtime folder could not be made (exit 2 for a runtime it cannot make,
    /// else 3: what the folder needs is missing or would not install).
    #[error(transparent)]
    RuntimeInstall(#[from] crate::code::runtime_folder::InstallError),
    /// A local I/O failure writing the result (exit 1 would lie; reported as usage of a bad --output).
    #[error("cannot write the result to {path}: {source}")]
    Output {
        /// Where we tried to write.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
}

impl RunnerError {
    /// The exit code this error ends the run with.
    pub(crate) fn exit(&self) -> Exit {
        match self {
            RunnerError::Credentials(crate::emulator::credentials::CredentialsError::Unavailable { .. }) => {
                Exit::Unavailable
            }
            RunnerError::Usage(_)
            | RunnerError::Output { .. }
            | RunnerError::RuntimeInstall(crate::code::runtime_folder::InstallError::Unsupported { .. }) => Exit::Usage,
            RunnerError::RuntimeInstall(_) => Exit::Code,
            RunnerError::Code(_)
            | RunnerError::Function(_)
            | RunnerError::Credentials(_)
            | RunnerError::Configuration(_) => Exit::Code,
            RunnerError::Start(_) => Exit::Init,
            RunnerError::Unavailable(_) => Exit::Unavailable,
        }
    }

    /// Whether another attempt may succeed where this one could not start: AWS was
    /// unavailable, or the code's download failed after its retries (a new attempt gets a
    /// new location). Such an attempt ends `interrupted` and is relaunched; what can
    /// never succeed (a hash mismatch, an unsafe zip, a refused role, no runtime) ends
    /// the invocation with its record.
    pub(crate) fn is_transient(&self) -> bool {
        matches!(
            self,
            RunnerError::Unavailable(_)
                | RunnerError::Code(CodeError::Download { .. })
                | RunnerError::Credentials(crate::emulator::credentials::CredentialsError::Unavailable { .. })
        )
    }

    /// Whether the function could run in another runner image (its runtime's, or one
    /// for its architecture): a drain worker hands such a record on instead of failing it.
    pub(crate) fn needs_another_image(&self) -> bool {
        matches!(
            self,
            RunnerError::Code(
                CodeError::WrongRuntime { .. } | CodeError::Architecture { .. } | CodeError::NotItsImage { .. }
            )
        )
    }

    /// The errorType of the failure record for an invocation this stopped before its
    /// bootstrap ran (`None`: nothing to report, e.g. a bad --output path).
    pub(crate) fn error_type(&self) -> Option<&'static str> {
        Some(match self {
            RunnerError::Code(
                CodeError::NoBootstrap { .. }
                | CodeError::WrongRuntime { .. }
                | CodeError::WrongRuntimeFolder { .. }
                | CodeError::NoEntryPoint { .. }
                | CodeError::NotItsImage { .. },
            ) => "Immortal.RuntimeUnavailable",
            RunnerError::Code(_) | RunnerError::Function(_) => "Immortal.CodeUnavailable",
            RunnerError::Credentials(crate::emulator::credentials::CredentialsError::Unavailable { .. }) => {
                "Immortal.AwsUnavailable"
            }
            RunnerError::Credentials(_) => "Immortal.RoleUnavailable",
            RunnerError::Configuration(_) => "Immortal.ConfigurationUnsupported",
            RunnerError::Start(_) => "Immortal.StartFailed",
            RunnerError::Unavailable(_) => "Immortal.AwsUnavailable",
            RunnerError::Usage(_) => "Immortal.BadInput",
            RunnerError::Output { .. } | RunnerError::RuntimeInstall(_) => return None,
        })
    }
}

/// Why the function's code could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    /// The `--artifact` path does not exist.
    #[error("the artifact {path} does not exist; pass a code zip (cargo lambda build --output-format zip) or an unpacked folder")]
    MissingArtifact {
        /// The path given.
        path: PathBuf,
    },
    /// A `--layer` path does not exist.
    #[error("the layer {path} does not exist; pass a layer zip, an unpacked layer folder (python/, nodejs/, bin/...) or a layer version ARN (arn:aws:lambda:REGION:ACCOUNT:layer:NAME:VERSION)")]
    MissingLayer {
        /// The path given.
        path: PathBuf,
    },
    /// The artifact is neither a folder nor a readable zip.
    #[error("the artifact {path} is not a zip archive ({reason}); pass a code zip, an unpacked folder, or the bootstrap executable itself")]
    NotAZip {
        /// The path given.
        path: PathBuf,
        /// The zip reader's complaint.
        reason: String,
    },
    /// No bootstrap where Lambda looks for one.
    #[error("no `bootstrap` in {searched}; {hint}")]
    NoBootstrap {
        /// The folders searched.
        searched: String,
        /// What the function needs, given its runtime.
        hint: String,
    },
    /// The function's managed runtime is not the one this image holds.
    #[error("the function runs on {runtime}, but this runner image holds {image_runtime}; start it with the runner's task definition for {runtime} ({map}), on the runner image built on {base_image}", map = immortal_handler_sdk::container::TASK_DEFINITIONS_VAR)]
    WrongRuntime {
        /// The function's runtime.
        runtime: String,
        /// The image's.
        image_runtime: String,
        /// AWS's base image for the function's runtime.
        base_image: String,
    },
    /// A local runtime folder made for another runtime than the function's.
    #[error("the function runs on {runtime}, but the runtime folder {folder} was made for {made_for}; make one for {runtime} with `runner runtime install {runtime}` (and pass its --dir as --runtime-dir, if not the default), or pass --runtime {made_for} if that is the function's runtime")]
    WrongRuntimeFolder {
        /// The function's runtime.
        runtime: String,
        /// The folder.
        folder: PathBuf,
        /// The runtime it holds.
        made_for: String,
    },
    /// The bootstrap exists but cannot be executed.
    #[error("{path} is not executable (mode {mode:o}): set its executable bit (chmod 755 bootstrap) in the function's folder, or before zipping it")]
    NotExecutable {
        /// The bootstrap found.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// An entry would land outside the target folder.
    #[error("refusing to unpack {archive}: entry `{entry}` {why}")]
    UnsafeEntry {
        /// The archive being unpacked.
        archive: String,
        /// The offending entry name.
        entry: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The archive unpacks to more than the limit.
    #[error("refusing to unpack {archive}: it unpacks to more than {limit} bytes (the limit; Lambda's is 250 MB unzipped); raise --max-unpacked-size if this is expected")]
    TooLarge {
        /// The archive being unpacked.
        archive: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// The download's hash differs from the one Lambda reports.
    #[error("the code of {what} does not match its CodeSha256: expected {expected}, downloaded {actual}; nothing was unpacked")]
    HashMismatch {
        /// Function or layer.
        what: String,
        /// CodeSha256 from Lambda.
        expected: String,
        /// Hash of the bytes received.
        actual: String,
    },
    /// Downloading failed after all retries.
    #[error("could not download the code of {what} from {url}: {reason}")]
    Download {
        /// Function or layer.
        what: String,
        /// The location (query string removed: it may carry a signature).
        url: String,
        /// The last failure.
        reason: String,
    },
    /// The function is built for another CPU.
    #[error("{function} is built for {wanted}, but this machine is {machine}; run the runner on a {wanted} host (Fargate: runtimePlatform.cpuArchitecture = {fargate})")]
    Architecture {
        /// The function.
        function: String,
        /// Its architecture (x86_64 or arm64).
        wanted: String,
        /// This machine's.
        machine: String,
        /// The Fargate name for it.
        fargate: String,
    },
    /// A container-image function with nothing to start in this container.
    #[error("cannot run the image function {image}: {why}")]
    NoEntryPoint {
        /// The function's image.
        image: String,
        /// What is missing.
        why: String,
    },
    /// The image's own ENTRYPOINT/CMD/WorkingDir were needed and could not be read.
    #[error("cannot read the ENTRYPOINT, CMD and WORKDIR of {image} from ECR ({reason}); give the runner's role ecr:BatchGetImage and ecr:GetDownloadUrlForLayer on its repository, or set them in the function's ImageConfig (EntryPoint, Command, WorkingDirectory)")]
    ImageConfigUnread {
        /// The function's image.
        image: String,
        /// Why.
        reason: String,
    },
    /// A container-image function given to a runner in another image (a runner image).
    #[error("{function} is a container-image function ({image}); it runs in its own image, from the task definition the forwarder registers for that image, not in a runner image")]
    NotItsImage {
        /// The function.
        function: String,
        /// Its image.
        image: String,
    },
    /// A `--lib` handler library that cannot be used.
    #[error("cannot use the handler library {path}: {reason}")]
    Library {
        /// The library.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A local file-system failure while unpacking or caching.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl CodeError {
    /// Wraps an I/O error with what was being done where.
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> CodeError {
        let path = path.into();
        move |source| CodeError::Io { action, path, source }
    }
}
