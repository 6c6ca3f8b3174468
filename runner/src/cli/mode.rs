//! What this run of the runner is, decided once from the command line: run an
//! invocation (with local code, code fetched from Lambda, or a handler library
//! in-process), only fetch code, or drain a queue.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use immortal_handler_sdk::container::{
    CONTEXT_VAR, ENVELOPE_URL_VAR, EVENT_VAR, FUNCTION_MAP_VAR, ON_FAILURE_VAR, ON_SUCCESS_VAR, OPT_DIR_VAR,
    PAYLOAD_BUCKET_VAR, RELAUNCH_VAR, TASK_ROOT_VAR, TRUSTED_SENDERS_VAR,
};
use immortal_handler_sdk::envelope::{nearest_context_field, InvocationContext, S3Location, CONTEXT_FIELDS};
use immortal_handler_sdk::{Envelope, FunctionRef};
use immortal_overflow::{Carrier, Lookup, OverflowSettings};

use crate::cli::{
    CacheAction, CacheArgs, Cli, CodeArgs, Command, DrainArgs, FetchArgs, InvokeArgs, OutcomeArgs, RunArgs,
    RuntimeAction, RuntimeArgs,
};
use crate::code::artifact::cache::PruneRule;
use crate::code::artifact::Cache;
use crate::code::runtime::{Runtime, RuntimeDir, DEFAULT_RUNTIME_DIR};
use crate::code::runtime_folder;
use crate::code::{CodeOptions, CodeSource, LayerSource, RuntimeOptions};
use crate::error::RunnerError;
use crate::run::drain::DrainOptions;
use crate::run::execution::{Job, RunSettings};

/// What to do.
pub(crate) enum Mode {
    /// Run one invocation with a bootstrap: local code (`--artifact`) or the function's
    /// own, fetched from Lambda.
    Run(Job),
    /// Run one invocation in-process (`--lib`).
    InProcess {
        /// The handler library.
        library: PathBuf,
        /// The invocation and where its result goes.
        job: Job,
    },
    /// Fetch, verify and unpack the code, print the task root (`--fetch-only`).
    FetchOnly {
        /// Which code.
        code: CodeSource,
        /// The envelope (only its context matters: which function).
        carrier: Carrier,
        /// Cache and limits.
        options: CodeOptions,
    },
    /// Drain an overflow queue (`--queue`).
    Drain(DrainOptions),
    /// Make a local runtime folder.
    RuntimeInstall(runtime_folder::InstallRequest),
    /// Prune the code cache.
    Prune {
        /// The cache.
        cache: Cache,
        /// What goes.
        rule: PruneRule,
    },
}

impl Mode {
    /// Reads the command line (and, for the envelope, the container's environment).
    pub(crate) fn from_cli(cli: Cli) -> Result<Mode, RunnerError> {
        match cli.chosen() {
            Command::Invoke(args) => invoke(args),
            Command::Drain(args) => drain(args),
            Command::Fetch(args) => fetch(args),
            Command::Cache(CacheArgs {
                action: CacheAction::Prune(args),
            }) => Ok(Mode::Prune {
                cache: Cache::new(cache_root(args.cache_dir.as_deref())),
                rule: PruneRule {
                    keep: args.keep,
                    older_than: args.older_than,
                    dry_run: args.dry_run,
                },
            }),
            Command::Runtime(RuntimeArgs {
                action: RuntimeAction::Install(args),
            }) => {
                let runtime = Runtime::new(args.runtime);
                let dir = match &args.dir {
                    Some(dir) => absolute(dir),
                    None => runtime_folder::default_dir(&cache_root(args.cache_dir.as_deref()), &runtime),
                };
                Ok(Mode::RuntimeInstall(runtime_folder::InstallRequest {
                    runtime,
                    dir,
                    with: args.with,
                    interpreter: args.interpreter,
                }))
            }
        }
    }
}

fn invoke(args: InvokeArgs) -> Result<Mode, RunnerError> {
    keep_the_cache_private(&args.run, &args.code)?;
    let carrier = envelope_carrier(args.envelope.as_deref(), args.event.as_deref(), args.context.as_deref())?
        .ok_or_else(|| {
            RunnerError::Usage(format!(
                "no event given: pass --event JSON|@FILE|- (or set {EVENT_VAR}, or {ENVELOPE_URL_VAR})"
            ))
        })?;
    let job = Job {
        code: code_source(args.artifact.as_ref(), args.function.as_deref(), &args.qualifier)?,
        carrier,
        code_options: CodeOptions {
            layers: args.layers.iter().map(|l| LayerSource::parse(l)).collect(),
            ..code_options(&args.code)
        },
        settings: run_settings(&args.run)?,
        output: args.output,
        overflow: overflow_settings(&args.outcomes, [])?,
    };
    Ok(match args.lib {
        Some(library) => Mode::InProcess { library, job },
        None => Mode::Run(job),
    })
}

fn drain(args: DrainArgs) -> Result<Mode, RunnerError> {
    keep_the_cache_private(&args.run, &args.code)?;
    Ok(Mode::Drain(DrainOptions {
        overflow: overflow_settings(
            &args.outcomes,
            [
                (RELAUNCH_VAR, args.relaunch.as_ref()),
                (FUNCTION_MAP_VAR, args.function_map.as_ref()),
                (TRUSTED_SENDERS_VAR, args.trusted_senders.as_ref()),
            ],
        )?,
        queue_urls: args.queue,
        attached: args.attached,
        hand_off_queue: args.hand_off_queue,
        handover_after: Duration::from_secs_f64(args.handover_after),
        concurrency: args.concurrency.max(1),
        idle: Duration::from_secs_f64(args.idle_timeout),
        visibility: args.visibility_timeout,
        code: code_options(&args.code),
        settings: run_settings(&args.run)?,
    }))
}

fn fetch(args: FetchArgs) -> Result<Mode, RunnerError> {
    let carrier = match envelope_carrier(args.envelope.as_deref(), None, args.context.as_deref())? {
        Some(carrier) => carrier,
        // Only the context matters here: which function to fetch.
        None => Carrier::Inline {
            event: "{}".into(),
            context: read_context(args.context.as_deref())?.unwrap_or_default(),
        },
    };
    Ok(Mode::FetchOnly {
        code: code_source(args.artifact.as_ref(), args.function.as_deref(), &args.qualifier)?,
        carrier,
        options: code_options(&args.code),
    })
}

/// Local code (`--artifact`), else the function's own from Lambda.
fn code_source(
    artifact: Option<&PathBuf>,
    function: Option<&str>,
    qualifier: &Option<String>,
) -> Result<CodeSource, RunnerError> {
    Ok(match artifact {
        Some(path) => CodeSource::Local(path.clone()),
        None => CodeSource::Remote {
            function: function
                .map(FunctionRef::parse)
                .transpose()
                .map_err(|e| RunnerError::Usage(e.to_string()))?,
            qualifier: qualifier.clone(),
        },
    })
}

/// With the sandbox, each function sees its code only at the task root and its layers
/// only at the layers root (hard links into the cache): the cache, which holds the code
/// of every function that ran in this task, is the runner's alone (0700).
fn keep_the_cache_private(run: &RunArgs, code: &CodeArgs) -> Result<(), RunnerError> {
    if run.sandbox.is_none() {
        return Ok(());
    }
    if code.task_root.is_none() || code.opt_dir.is_none() {
        return Err(RunnerError::Usage(format!(
            "--sandbox needs --task-root and --opt-dir ({TASK_ROOT_VAR} and {OPT_DIR_VAR}; /var/task and /opt in the image): a sandboxed function sees its code and layers there, never in the cache"
        )));
    }
    let cache = code_options(code).cache;
    cache.make_private().map_err(|e| {
        RunnerError::Usage(format!(
            "cannot make the code cache {} the runner's alone (mode 0700): {e}; give the runner a cache folder it owns (--cache-dir)",
            cache.root().display()
        ))
    })
}

fn code_options(args: &CodeArgs) -> CodeOptions {
    let cache_root = cache_root(args.cache_dir.as_deref());
    let runtime_dir = runtime_dir(args, &cache_root);
    CodeOptions {
        cache: Cache::new(cache_root),
        opt_dir: args.opt_dir.as_deref().map(absolute),
        layers: Vec::new(),
        max_unpacked: args.max_unpacked_size,
        runtime: RuntimeOptions {
            dir: RuntimeDir::new(runtime_dir, args.image_runtime.clone().map(Runtime::new)),
            runtime: args.runtime.clone().map(Runtime::new),
            task_root: args.task_root.as_deref().map(absolute),
        },
    }
}

/// The code cache: `--cache-dir` (made absolute), else ~/.cache/immortal.
fn cache_root(dir: Option<&Path>) -> PathBuf {
    dir.map(absolute).unwrap_or_else(Cache::default_root)
}

/// The runtime directory: as given, else /var/runtime (AWS's base images), else, for a
/// local run of a `--runtime` that /var/runtime does not hold, the folder
/// `runner runtime install` makes for it by default.
fn runtime_dir(args: &CodeArgs, cache_root: &Path) -> PathBuf {
    let given = absolute(&args.runtime_dir);
    if given != Path::new(DEFAULT_RUNTIME_DIR) || given.join(crate::emulator::bootstrap::BOOTSTRAP).exists() {
        return given;
    }
    match &args.runtime {
        Some(runtime) => {
            let installed = runtime_folder::default_dir(cache_root, &Runtime::new(runtime.clone()));
            if installed.join(runtime_folder::MARKER).is_file() {
                installed
            } else {
                given
            }
        }
        None => given,
    }
}

fn run_settings(args: &RunArgs) -> Result<RunSettings, RunnerError> {
    let mut env = match &args.env_file {
        Some(path) => read_env_file(path)?,
        None => BTreeMap::new(),
    };
    env.extend(args.env.iter().cloned());
    Ok(RunSettings {
        timeout: args.timeout.map(Duration::from_secs_f64),
        grace: Duration::from_secs_f64(grace_period(args.grace_period, args.stop_timeout)),
        handler: args.handler.clone(),
        function_role: args.function_role.clone(),
        credentials_lifetime: args.credentials_lifetime.map(Duration::from_secs_f64),
        sandbox: args.sandbox.as_deref().map(absolute),
        own_tmp: args.own_tmp,
        env,
        function_logs: args.function_logs,
        extensions: !args.no_extensions && args.extensions.as_deref() != Some("off"),
        heartbeat: (args.heartbeat > 0.0).then(|| Duration::from_secs_f64(args.heartbeat)),
    })
}

/// A path the bootstrap, its environment or a process started in the task root will see:
/// made absolute against the runner's working directory, since the bootstrap runs in
/// the task root, where a relative path would name something else.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The bootstrap's grace after SIGTERM: as given, else what the task's stop timeout
/// leaves after the runner's own 5 s (to record the interruption), else 2 s.
fn grace_period(given: Option<f64>, stop_timeout: Option<f64>) -> f64 {
    given
        .or(stop_timeout.map(|t| (t - RUNNER_STOP_SECONDS).max(1.0)))
        .unwrap_or(DEFAULT_GRACE_SECONDS)
}

/// What the runner keeps of the task's stop timeout for itself.
const RUNNER_STOP_SECONDS: f64 = 5.0;
/// The bootstrap's grace when nothing says otherwise.
const DEFAULT_GRACE_SECONDS: f64 = 2.0;

/// The shared overflow settings, through the one parser both binaries use; clap has
/// already filled each option from its variable when the flag is absent. `triage` (the
/// relaunch policy, the function map, the trusted senders) matters only to a drain
/// worker.
fn overflow_settings<const N: usize>(
    outcomes: &OutcomeArgs,
    triage: [(&str, Option<&String>); N],
) -> Result<OverflowSettings, RunnerError> {
    let given: Vec<(&str, Option<&String>)> = [
        (ON_SUCCESS_VAR, outcomes.on_success.as_ref()),
        (ON_FAILURE_VAR, outcomes.on_failure.as_ref()),
        (PAYLOAD_BUCKET_VAR, outcomes.payload_bucket.as_ref()),
    ]
    .into_iter()
    .chain(triage)
    .collect();
    let lookup = Lookup::new(|name| {
        given
            .iter()
            .find(|(var, _)| *var == name)
            .and_then(|(_, value)| value.cloned())
    });
    OverflowSettings::read(&lookup).map_err(|e| RunnerError::Usage(e.to_string()))
}

/// Where the envelope comes from: `--envelope`, `--event` (and `--context`), else the
/// container's environment. `None` when nothing names one.
fn envelope_carrier(
    envelope: Option<&str>,
    event: Option<&str>,
    context: Option<&str>,
) -> Result<Option<Carrier>, RunnerError> {
    if let Some(location) = envelope {
        if location.starts_with('@') || location == "-" {
            let text = Source::parse(location).read("envelope")?;
            let envelope = Envelope::from_json(&text).map_err(|e| RunnerError::Usage(e.to_string()))?;
            return Ok(Some(Carrier::inline(&envelope)));
        }
        let at = S3Location::parse(location).map_err(|e| RunnerError::Usage(format!("--envelope: {e}")))?;
        return Ok(Some(Carrier::Stored { at, digest: None }));
    }
    let carrier = match event {
        Some(event) => Some(Carrier::Inline {
            event: event.to_owned(),
            context: context.unwrap_or_default().to_owned(),
        }),
        None => Carrier::from_environment(&Lookup::env()).map_err(|e| RunnerError::Usage(e.to_string()))?,
    };
    // An inline half may name a file or stdin; a flag wins over the variable.
    let Some(Carrier::Inline {
        event,
        context: context_from_env,
    }) = carrier
    else {
        return Ok(carrier);
    };
    let event_source = Source::parse(&event);
    let context = context.map(str::to_owned).unwrap_or(context_from_env);
    let context_source = (!context.is_empty()).then(|| Source::parse(&context));
    if event_source == Source::Stdin && context_source == Some(Source::Stdin) {
        return Err(RunnerError::Usage(
            "--event and --context cannot both read stdin (-); put one in a file".into(),
        ));
    }
    let context = match context_source {
        Some(source) => source.read("context")?,
        None => String::new(),
    };
    warn_unknown_context_fields(&context);
    Ok(Some(Carrier::Inline {
        event: event_source.read("event")?,
        context,
    }))
}

/// Says which fields of a context a person wrote the runner does not know (it passes
/// them on unread), with the field they most likely meant.
fn warn_unknown_context_fields(context: &str) {
    let Ok(parsed) = serde_json::from_str::<InvocationContext>(context) else {
        return; // Said later, when the envelope is opened.
    };
    for field in parsed.extra.keys() {
        match nearest_context_field(field) {
            Some(known) => tracing::warn!(
                field = %field,
                "the context field `{field}` is not one the runner reads: did you mean `{known}`? (it is passed on unread)"
            ),
            None => tracing::warn!(
                field = %field,
                "the context field `{field}` is not one the runner reads (it is passed on unread); it reads {}",
                CONTEXT_FIELDS.join(", ")
            ),
        }
    }
}

/// `--context` (else the container's), read, for a run that needs nothing else.
fn read_context(context: Option<&str>) -> Result<Option<String>, RunnerError> {
    context
        .map(str::to_owned)
        .or_else(|| Lookup::env().value(CONTEXT_VAR))
        .map(|text| Source::parse(&text).read("context"))
        .transpose()
}

/// A dotenv file: `KEY=VALUE` lines (an optional `export `, quotes around the value),
/// blank lines and `#` comments.
fn read_env_file(path: &Path) -> Result<BTreeMap<String, String>, RunnerError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| RunnerError::Usage(format!("cannot read the env file {}: {e}", path.display())))?;
    let mut vars = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (key, value) = line
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| {
                RunnerError::Usage(format!("{} line {}: `{line}` is not KEY=VALUE", path.display(), n + 1))
            })?;
        let value = value.trim();
        let unquoted = ['"', '\'']
            .iter()
            .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
            .unwrap_or(value);
        vars.insert(key.trim().to_owned(), unquoted.to_owned());
    }
    Ok(vars)
}

/// Where one half of the envelope comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// The JSON text itself.
    Inline(String),
    /// `@path`: a file holding the JSON.
    File(PathBuf),
    /// `-`: standard input.
    Stdin,
}

impl Source {
    /// Interprets a command-line value.
    pub(crate) fn parse(value: &str) -> Source {
        if value == "-" {
            Source::Stdin
        } else if let Some(path) = value.strip_prefix('@') {
            Source::File(path.into())
        } else {
            Source::Inline(value.to_owned())
        }
    }

    /// Reads the text; `what` names the option in errors.
    pub(crate) fn read(&self, what: &str) -> Result<String, RunnerError> {
        match self {
            Source::Inline(text) => Ok(text.clone()),
            Source::File(path) => std::fs::read_to_string(path)
                .map_err(|e| RunnerError::Usage(format!("cannot read the {what} file {}: {e}", path.display()))),
            Source::Stdin => {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .map_err(|e| RunnerError::Usage(format!("cannot read the {what} from stdin: {e}")))?;
                Ok(text)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grace_follows_the_tasks_stop_timeout() {
        assert_eq!(grace_period(None, None), 2.0);
        assert_eq!(grace_period(None, Some(120.0)), 115.0);
        assert_eq!(grace_period(None, Some(3.0)), 1.0);
        assert_eq!(grace_period(Some(0.5), Some(120.0)), 0.5);
    }

    #[test]
    fn env_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(&path, "# comment\nA=1\nexport B = \"two words\"\n\nC='x=y'\n").unwrap();
        let vars = read_env_file(&path).unwrap();
        assert_eq!(vars["A"], "1");
        assert_eq!(vars["B"], "two words");
        assert_eq!(vars["C"], "x=y");
        std::fs::write(&path, "A=1\nnonsense\n").unwrap();
        assert!(read_env_file(&path).unwrap_err().to_string().contains("line 2"));
    }

    #[test]
    fn forms() {
        assert_eq!(Source::parse("-"), Source::Stdin);
        assert_eq!(Source::parse("@e.json"), Source::File("e.json".into()));
        assert_eq!(Source::parse("{}"), Source::Inline("{}".into()));
        let err = Source::parse("@/nonexistent/e.json").read("event").unwrap_err();
        assert!(err
            .to_string()
            .contains("cannot read the event file /nonexistent/e.json"));
    }
}
