//! In-process mode (`--lib`): a handler exported from a `cdylib` with
//! `immortal_handler_sdk::export_handler!`, loaded with libloading and called with the
//! same envelope a bootstrap would get, with the same outcomes and exit codes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use immortal_handler_sdk::ffi::{self, Buffer, Status};

use crate::code::artifact_name;
use crate::emulator::bootstrap::{self, CodeLayout, LaunchConfig, Passthrough, BOOTSTRAP};
use crate::emulator::invocation::FunctionFacts;
use crate::emulator::outcome::{timeout_message, Failure, Outcome};
use crate::error::{CodeError, RunnerError};
use crate::exit::Exit;
use crate::run::execution::{self, Job};
use crate::run::report::Reporter;
use crate::signals::{stop_requested, StopSignal};

type VersionFn = unsafe extern "C" fn() -> u32;
type InvokeFn = unsafe extern "C" fn(*const u8, usize, *mut Buffer) -> i32;
type FreeFn = unsafe extern "C" fn(Buffer);

/// A loaded handler library.
pub(crate) struct HandlerLibrary {
    invoke: InvokeFn,
    free: FreeFn,
    // Keeps the code mapped while the function pointers are used.
    _library: libloading::Library,
}

impl HandlerLibrary {
    /// Loads `path` and checks it speaks this runner's ABI version.
    pub(crate) fn load(path: &Path) -> Result<HandlerLibrary, RunnerError> {
        let unusable = |reason: String| {
            RunnerError::Code(CodeError::Library {
                path: path.to_owned(),
                reason,
            })
        };
        if !path.is_file() {
            return Err(RunnerError::Code(CodeError::MissingArtifact { path: path.to_owned() }));
        }
        // SAFETY: loading runs the library's initialisers; the user asked for this library.
        let library = unsafe { libloading::Library::new(path) }.map_err(|e| unusable(e.to_string()))?;
        // SAFETY: the symbol types are the ones ffi documents; a library exporting these
        // names with other signatures breaks the contract export_handler! upholds.
        let version = unsafe {
            let version = library.get::<VersionFn>(ffi::VERSION_SYMBOL).map_err(|_| {
                unusable(
                    "it exports no immortal_abi_version: export the handler with immortal_handler_sdk::export_handler!"
                        .into(),
                )
            })?;
            version()
        };
        if version != ffi::ABI_VERSION {
            return Err(unusable(format!(
                "it speaks handler ABI version {version}, this runner speaks version {}; rebuild it against immortal-handler-sdk {}",
                ffi::ABI_VERSION,
                env!("CARGO_PKG_VERSION")
            )));
        }
        let missing = |name: &str| unusable(format!("it exports no {name} (ABI version {version})"));
        // SAFETY: as above.
        let (invoke, free) = unsafe {
            (
                *library
                    .get::<InvokeFn>(ffi::INVOKE_SYMBOL)
                    .map_err(|_| missing("immortal_invoke"))?,
                *library
                    .get::<FreeFn>(ffi::FREE_SYMBOL)
                    .map_err(|_| missing("immortal_free"))?,
            )
        };
        Ok(HandlerLibrary {
            invoke,
            free,
            _library: library,
        })
    }

    /// Calls the handler with `envelope` (JSON), on a blocking thread.
    fn call(&self, envelope: &[u8]) -> (Option<Status>, Bytes) {
        let mut out = Buffer::empty();
        // SAFETY: envelope is a valid slice and out a valid Buffer, as the ABI requires.
        let raw = unsafe { (self.invoke)(envelope.as_ptr(), envelope.len(), &mut out) };
        let bytes = if out.ptr.is_null() {
            Bytes::new()
        } else {
            // SAFETY: the library filled `out` with `len` initialised bytes.
            Bytes::copy_from_slice(unsafe { std::slice::from_raw_parts(out.ptr, out.len) })
        };
        // SAFETY: `out` came from this library's immortal_invoke and is freed once.
        unsafe { (self.free)(out) };
        (Status::from_raw(raw), bytes)
    }
}

/// `--lib`: the handler library in-process, with Lambda's environment set in this
/// process, the same outputs and exit codes as a bootstrap run.
pub(crate) async fn run(library_path: &Path, job: Job, stop: StopSignal) -> Result<Exit, RunnerError> {
    let reporter = Reporter::new(&job.overflow);
    let envelope = execution::open(&job.carrier).await?;
    let function = execution::function_of(&envelope)?;
    let library = Arc::new(HandlerLibrary::load(library_path)?);
    let facts = FunctionFacts {
        name: Some(artifact_name(library_path).trim_start_matches("lib").to_owned()),
        ..Default::default()
    };
    let invocation = execution::resolve(&envelope, function.as_ref(), &facts);
    let layout = CodeLayout {
        task_root: library_path
            .parent()
            .map(|p| p.to_owned())
            .unwrap_or_else(|| ".".into()),
        opt_dir: job.code_options.opt_dir.clone(),
        runtime_dir: None,
        image: None,
    };
    let env = bootstrap::environment(&LaunchConfig {
        invocation: &invocation,
        layout: &layout,
        handler: job.settings.handler.as_deref().unwrap_or(BOOTSTRAP),
        runtime: None,
        logging: &Default::default(),
        runtime_api: "",
        function_env: &job.settings.env,
        unlimited: job.settings.timeout.is_none(),
        passthrough: Passthrough::Shell,
        credentials: &[],
        scratch: &std::env::temp_dir(),
    });
    for (key, value) in env.iter().filter(|(k, _)| k.as_str() != "AWS_LAMBDA_RUNTIME_API") {
        // The handler reads its configuration from the process environment, as in Lambda;
        // nothing else runs yet that could read it concurrently.
        std::env::set_var(key, value);
    }
    let resolved = immortal_handler_sdk::Envelope {
        event: envelope.event.clone(),
        context: invocation.to_context(),
    };
    tracing::info!(library = %library_path.display(), request_id = %invocation.request_id, "invoking in-process");
    let sink = execution::open_sink(job.output.as_deref()).await?;
    let outcome = invoke(
        library,
        resolved.to_json().into_bytes(),
        &invocation.request_id,
        job.settings.timeout,
        stop,
    )
    .await;
    execution::write_outcome(&sink, &outcome, job.output.as_deref()).await?;
    Ok(execution::finish(&reporter, &invocation, &outcome).await)
}

/// Runs one invocation in-process. A timeout or a stop request cannot interrupt a
/// thread, so they end the invocation (and the runner exits with their code).
pub(crate) async fn invoke(
    library: Arc<HandlerLibrary>,
    envelope: Vec<u8>,
    request_id: &str,
    timeout: Option<Duration>,
    mut stop: StopSignal,
) -> Outcome {
    let call = tokio::task::spawn_blocking(move || library.call(&envelope));
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        result = call => match result {
            Ok((Some(Status::Response), body)) => Outcome::Response { body, streamed: false },
            Ok((Some(Status::InitError), body)) => Outcome::Failed { kind: Failure::Init, body },
            Ok((Some(Status::FunctionError), body)) | Ok((Some(Status::BadEnvelope), body)) => Outcome::Failed { kind: Failure::Function, body },
            Ok((None, _)) => Outcome::failed(Failure::Function, "Runtime.ExitError", "the handler library returned an unknown status"),
            Err(e) => Outcome::failed(Failure::Function, "Runtime.ExitError", &format!("the handler thread failed: {e}")),
        },
        _ = deadline => Outcome::failed(
            Failure::Timeout,
            immortal_handler_sdk::container::TIMEOUT_ERROR_TYPE,
            &timeout_message(request_id, timeout.unwrap_or_default().as_secs_f64()),
        ),
        Some(signal) = stop_requested(&mut stop) => Outcome::failed(
            Failure::Signal(signal),
            "Runtime.ExitError",
            &format!("RequestId: {request_id} Error: the runner was stopped by {} during an in-process invocation", crate::emulator::outcome::signal_name(signal)),
        ),
    }
}
