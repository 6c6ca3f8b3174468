//! The command line.

pub(crate) mod mode;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use immortal_handler_sdk::container;

use crate::code::artifact::unpack::LAMBDA_UNPACKED_LIMIT;
use crate::code::runtime::DEFAULT_RUNTIME_DIR;
use crate::emulator::credentials::FunctionRole;
use crate::emulator::function_logs::LogDestination;
use crate::exit::EXIT_CODES_HELP;

/// Run an AWS Lambda function's own `bootstrap` with its original event and context,
/// with no time limit.
///
/// The runner serves the Lambda Runtime API on 127.0.0.1, starts the function's
/// unmodified bootstrap with Lambda's environment, hands it the event, and prints
/// the response on stdout (logs go to stderr). Without a subcommand it invokes.
///
///   local code:   runner --artifact bootstrap.zip --event @event.json
///   Lambda code:  runner --event @event.json --context @context.json
///                 (fetches the function named by the context's invoked_function_arn)
///   ECS task:     IMMORTAL_EVENT and IMMORTAL_CONTEXT (or IMMORTAL_ENVELOPE_URL)
///                 replace --event and --context; with IMMORTAL_QUEUE_URL set and no
///                 subcommand, the runner drains instead
///   drain worker: runner drain --queue URL
///   warm a cache: runner fetch --function NAME
#[derive(Debug, Clone, Parser)]
#[command(name = "runner", version, after_help = EXIT_CODES_HELP, max_term_width = 100, verbatim_doc_comment,
          args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do (default: invoke).
    #[command(subcommand)]
    pub(crate) command: Option<Command>,

    /// `invoke`'s arguments, when no subcommand is given.
    #[command(flatten)]
    pub(crate) invoke: InvokeArgs,
}

impl Cli {
    /// The command line, with the image's environment-driven default: no subcommand
    /// and `IMMORTAL_QUEUE_URL` set (the drain task definition) means `drain`.
    pub fn from_env_and_args() -> Cli {
        let drain_task = std::env::var_os(container::QUEUE_URL_VAR).is_some_and(|v| !v.is_empty());
        Cli::parse_from(with_default_mode(std::env::args_os().collect(), drain_task))
    }

    /// The subcommand, `invoke` when none was given.
    pub(crate) fn chosen(self) -> Command {
        self.command.unwrap_or(Command::Invoke(self.invoke))
    }
}

/// `args` with `drain` as the subcommand when `drain_task` and the command line names
/// no subcommand (and asks for no help or version, which the top level answers).
fn with_default_mode(mut args: Vec<std::ffi::OsString>, drain_task: bool) -> Vec<std::ffi::OsString> {
    let first = args.get(1).and_then(|a| a.to_str()).unwrap_or_default();
    let named = <Cli as clap::CommandFactory>::command()
        .get_subcommands()
        .any(|c| c.get_name() == first)
        || ["help", "-h", "--help", "-V", "--version"].contains(&first);
    if drain_task && !named {
        args.insert(1.min(args.len()), "drain".into());
    }
    args
}

/// The runner's modes.
#[derive(Debug, Clone, Subcommand)]
pub(crate) enum Command {
    /// Run one invocation: local code or the function's own from Lambda (the default).
    Invoke(InvokeArgs),
    /// Run the messages of overflow queues (dead-letter messages or destination records)
    /// as they come, deleting each once it has an outcome; exit when every queue stays
    /// empty for --idle-timeout.
    Drain(DrainArgs),
    /// Only fetch, verify and unpack the code and layers into the cache, print the task
    /// root, and exit (e.g. to warm the cache in an image build). Needs no event.
    Fetch(FetchArgs),
    /// Look after the code cache.
    Cache(CacheArgs),
    /// Local runtime folders for managed runtimes (what /var/runtime is in AWS's base
    /// images).
    Runtime(RuntimeArgs),
}

/// Local runtime folders.
#[derive(Debug, Clone, Args)]
pub(crate) struct RuntimeArgs {
    #[command(subcommand)]
    pub(crate) action: RuntimeAction,
}

/// What to do with a runtime folder.
#[derive(Debug, Clone, Subcommand)]
pub(crate) enum RuntimeAction {
    /// Make a runtime folder for python3.X or nodejsNN.x from the package registries:
    /// the runtime interface client, the SDK Lambda's runtime ships (boto3; for Node.js
    /// the @aws-sdk/* packages given with --with), and a bootstrap that puts the
    /// layers' python/ or nodejs/ folders on the import path as Lambda does. Needs the
    /// runtime's interpreter (python3.X, node NN) and pip or npm. Prints the folder.
    #[command(
        after_help = "Examples:\n  runner runtime install python3.12\n  runner --artifact fn.zip --runtime python3.12 --handler lambda_function.lambda_handler --event '{}'\n  runner runtime install nodejs20.x --with @aws-sdk/client-sqs --dir ./rt-node\n  runner --artifact fn.zip --runtime-dir ./rt-node --handler index.handler --event '{}'"
    )]
    Install(InstallArgs),
}

/// `runner runtime install`.
#[derive(Debug, Clone, Args)]
pub(crate) struct InstallArgs {
    /// The runtime: python3.X (e.g. python3.12) or nodejsNN.x (e.g. nodejs20.x).
    #[arg(value_name = "RUNTIME")]
    pub(crate) runtime: String,

    /// The folder to make (replaced when it holds something else). Default:
    /// runtimes/RUNTIME in the code cache, which a run of `--runtime RUNTIME` uses
    /// without --runtime-dir.
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,

    /// One more package for the folder (repeat it): a pip requirement for Python, an
    /// npm package for Node.js (e.g. @aws-sdk/client-sqs@3.1164.0).
    #[arg(long = "with", value_name = "PACKAGE")]
    pub(crate) with: Vec<String>,

    /// The interpreter the bootstrap starts (python3.X, node). Default: the first one
    /// of the runtime's version on PATH (or, for Python, installed by pyenv).
    #[arg(long, value_name = "PATH")]
    pub(crate) interpreter: Option<PathBuf>,

    /// The code cache (for the default --dir). Default: ~/.cache/immortal.
    #[arg(long, value_name = "DIR", env = container::CACHE_DIR_VAR, hide_env_values = true)]
    pub(crate) cache_dir: Option<PathBuf>,
}

/// The code cache.
#[derive(Debug, Clone, Args)]
pub(crate) struct CacheArgs {
    #[command(subcommand)]
    pub(crate) action: CacheAction,
}

/// What to do with the code cache.
#[derive(Debug, Clone, Subcommand)]
pub(crate) enum CacheAction {
    /// Remove cached code, layers and layer sets: beyond the N most recently used of
    /// each kind (--keep), or not used for a while (--older-than). What a running
    /// runner uses is never removed.
    Prune(PruneArgs),
}

/// `runner cache prune`.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("rule").required(true).multiple(true).args(["keep", "older_than"])))]
pub(crate) struct PruneArgs {
    /// Keep the N most recently used entries of each kind (code, layer, layer set,
    /// bootstrap).
    #[arg(long, value_name = "N")]
    pub(crate) keep: Option<usize>,

    /// Remove what was not used for this long (e.g. 7d, 12h, 30m).
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    pub(crate) older_than: Option<std::time::Duration>,

    /// Say what would be removed; remove nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,

    /// The cache. Default: ~/.cache/immortal.
    #[arg(long, value_name = "DIR", env = container::CACHE_DIR_VAR, hide_env_values = true)]
    pub(crate) cache_dir: Option<PathBuf>,
}

/// One invocation.
#[derive(Debug, Clone, Args)]
pub(crate) struct InvokeArgs {
    /// A code zip (as `cargo lambda build --output-format zip` makes), an unpacked
    /// folder holding `bootstrap`, or the bootstrap executable itself. Without it, the
    /// code is fetched from Lambda (GetFunction).
    #[arg(long, value_name = "ZIP|DIR|EXE")]
    pub(crate) artifact: Option<PathBuf>,

    /// A layer for the local code (repeat it, in the function's order): a zip, an
    /// unpacked folder, or a layer version ARN (fetched with GetLayerVersion). Merged
    /// as Lambda merges layers into /opt, a later one's files over an earlier one's.
    #[arg(long = "layer", value_name = "ZIP|DIR|ARN", requires = "artifact")]
    pub(crate) layers: Vec<String>,

    /// Run a handler exported from a cdylib (immortal_handler_sdk::export_handler!)
    /// in-process instead of a bootstrap: same envelope, outputs and exit codes.
    #[arg(long, value_name = "LIB.so", conflicts_with_all = ["artifact", "function", "qualifier"])]
    pub(crate) lib: Option<PathBuf>,

    /// The event: inline JSON, @FILE, or - for stdin. Without it (and without
    /// --envelope), the container's IMMORTAL_EVENT or IMMORTAL_ENVELOPE_URL.
    #[arg(long, value_name = "JSON|@FILE|-")]
    pub(crate) event: Option<String>,

    /// The invocation context: inline JSON, @FILE, or - for stdin (else IMMORTAL_CONTEXT).
    /// Missing fields get defaults (a fresh request id, the function's name, $LATEST,
    /// 128 MB...); the fields are listed in the context table of docs/configuration.md.
    #[arg(long, value_name = "JSON|@FILE|-")]
    pub(crate) context: Option<String>,

    /// A whole envelope ({"event":...,"context":...}): s3://BUCKET/KEY, @FILE or -.
    /// Takes the place of --event and --context.
    #[arg(long, value_name = "URL|@FILE|-", conflicts_with_all = ["event", "context"])]
    pub(crate) envelope: Option<String>,

    /// The function to fetch (name, NAME:QUALIFIER or ARN). Default: the context's
    /// invoked_function_arn, else its function_name.
    #[arg(long, value_name = "NAME|ARN", conflicts_with = "artifact")]
    pub(crate) function: Option<String>,

    /// Version or alias to fetch; overrides the one in the ARN.
    #[arg(long, value_name = "QUALIFIER", conflicts_with = "artifact")]
    pub(crate) qualifier: Option<String>,

    /// Write the response (or error JSON) here instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,

    #[command(flatten)]
    pub(crate) run: RunArgs,

    #[command(flatten)]
    pub(crate) code: CodeArgs,

    #[command(flatten)]
    pub(crate) outcomes: OutcomeArgs,
}

/// A drain worker.
#[derive(Debug, Clone, Args)]
pub(crate) struct DrainArgs {
    /// The overflow queues to drain (repeat the flag or separate with commas).
    #[arg(long, value_name = "QUEUE_URL", env = container::QUEUE_URL_VAR, hide_env_values = true, value_delimiter = ',', required_unless_present = "attached")]
    pub(crate) queue: Vec<String>,

    /// Also drain every attached function's own dead-letter queue: each queue of the
    /// account tagged immortal:function and immortal:enabled=true (serverless-immortal's
    /// via: deadLetter), looked for at start and every five minutes.
    #[arg(
        long,
        env = container::DRAIN_ATTACHED_VAR,
        hide_env_values = true,
        num_args = 0..=1,
        value_name = "true|false",
        default_value = "false",
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub(crate) attached: bool,

    /// Messages run at once: runs of one function version share the task; another
    /// function's message waits for them to end (its task root and layers differ).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        env = container::CONCURRENCY_VAR,
        hide_env_values = true
    )]
    pub(crate) concurrency: usize,

    /// Exit after the queues have been empty this long.
    #[arg(long, value_name = "SECONDS", default_value = "60", env = container::IDLE_TIMEOUT_VAR, hide_env_values = true, value_parser = parse_seconds)]
    pub(crate) idle_timeout: f64,

    /// How long a running message stays invisible per heartbeat (default: the
    /// queue's visibility timeout).
    #[arg(
        long,
        value_name = "SECONDS",
        env = container::VISIBILITY_TIMEOUT_VAR,
        hide_env_values = true
    )]
    pub(crate) visibility_timeout: Option<i32>,

    /// After a message has run this long, hand it to the ledger in the
    /// payload bucket (which then owns it) and delete it from its queue, before SQS's
    /// 12-hour limit on a message's invisibility would deliver it a second time.
    #[arg(long, value_name = "SECONDS", default_value = "41400", env = container::HANDOVER_AFTER_VAR, hide_env_values = true, value_parser = parse_seconds)]
    pub(crate) handover_after: f64,

    /// Which failures are run (timeout, overflow, error, expired, all;
    /// default timeout,overflow), as the forwarder's IMMORTAL_RELAUNCH.
    #[arg(long, value_name = "CLASSES", env = container::RELAUNCH_VAR, hide_env_values = true)]
    pub(crate) relaunch: Option<String>,

    /// queueArn=function pairs for dead-letter queues without the
    /// immortal:function tag, as the forwarder's IMMORTAL_FUNCTION_MAP.
    #[arg(long, value_name = "PAIRS", env = container::FUNCTION_MAP_VAR, hide_env_values = true)]
    pub(crate) function_map: Option<String>,

    /// Who besides each function's own role may send a record that runs it: unique ids
    /// of IAM principals, or ROLE_ID:SESSION, comma-separated; as the forwarder's
    /// IMMORTAL_TRUSTED_SENDERS.
    #[arg(long, value_name = "IDS", env = container::TRUSTED_SENDERS_VAR, hide_env_values = true)]
    pub(crate) trusted_senders: Option<String>,

    /// Where to hand the records this worker's image cannot run (a function of another
    /// runtime or architecture): a queue the forwarder launches from, which starts them
    /// in a task of the right image. Without it they end as failure records.
    #[arg(long, value_name = "QUEUE_URL", env = container::HAND_OFF_QUEUE_URL_VAR, hide_env_values = true)]
    pub(crate) hand_off_queue: Option<String>,

    #[command(flatten)]
    pub(crate) run: RunArgs,

    #[command(flatten)]
    pub(crate) code: CodeArgs,

    #[command(flatten)]
    pub(crate) outcomes: OutcomeArgs,
}

/// Fetching code only.
#[derive(Debug, Clone, Args)]
pub(crate) struct FetchArgs {
    /// A code zip (as `cargo lambda build --output-format zip` makes), an unpacked
    /// folder holding `bootstrap`, or the bootstrap executable itself. Without it, the
    /// code is fetched from Lambda (GetFunction).
    #[arg(long, value_name = "ZIP|DIR|EXE")]
    pub(crate) artifact: Option<PathBuf>,

    /// The function to fetch (name, NAME:QUALIFIER or ARN). Default: the context's
    /// invoked_function_arn, else its function_name.
    #[arg(long, value_name = "NAME|ARN", conflicts_with = "artifact")]
    pub(crate) function: Option<String>,

    /// Version or alias to fetch; overrides the one in the ARN.
    #[arg(long, value_name = "QUALIFIER", conflicts_with = "artifact")]
    pub(crate) qualifier: Option<String>,

    /// The invocation context (only which function it names matters here): inline JSON, @FILE, or - for stdin (else IMMORTAL_CONTEXT).
    /// Missing fields get defaults (a fresh request id, the function's name, $LATEST,
    /// 128 MB...); the fields are listed in the context table of docs/configuration.md.
    #[arg(long, value_name = "JSON|@FILE|-")]
    pub(crate) context: Option<String>,

    /// A whole envelope ({"event":...,"context":...}): s3://BUCKET/KEY, @FILE or -.
    /// Takes the place of --context.
    #[arg(long, value_name = "URL|@FILE|-", conflicts_with = "context")]
    pub(crate) envelope: Option<String>,

    #[command(flatten)]
    pub(crate) code: CodeArgs,
}

/// How the function runs: as whom, with what, for how long.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "How the function runs")]
pub(crate) struct RunArgs {
    /// The value of _HANDLER. Default: the function's configured handler, else "bootstrap".
    #[arg(long, value_name = "HANDLER")]
    pub(crate) handler: Option<String>,

    /// Whose credentials the function gets: `assume` (its own execution role, assumed
    /// and served to it on loopback, renewed for as long as it runs; the image's
    /// default), `inherit` (the runner's own: a local run as yourself, the default
    /// here), or a role ARN to assume (a local run as the function).
    #[arg(long, value_name = "assume|inherit|ARN", default_value = "inherit", env = container::FUNCTION_ROLE_VAR, hide_env_values = true, value_parser = FunctionRole::parse)]
    pub(crate) function_role: FunctionRole,

    /// Renew the function's assumed credentials after this long (default: the role
    /// session's hour, the most a role assumed by a role gets).
    #[arg(long, value_name = "SECONDS", env = container::CREDENTIALS_LIFETIME_VAR, hide_env_values = true, value_parser = parse_seconds)]
    pub(crate) credentials_lifetime: Option<f64>,

    /// A variable for the function (KEY=VALUE; repeatable), over its configured ones.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub(crate) env: Vec<(String, String)>,

    /// Variables for the function from a dotenv file (KEY=VALUE lines, # comments),
    /// over its configured ones; --env wins over the file.
    ///
    /// Which of the shell's own variables the function sees: with local code
    /// (--artifact) or --function-role inherit, all of them except the envelope's
    /// IMMORTAL_EVENT, IMMORTAL_CONTEXT and IMMORTAL_ENVELOPE_URL, as cargo-lambda and
    /// SAM pass them; when it runs as itself
    /// (assume or a role ARN, on Lambda's code), only AWS_REGION, AWS_DEFAULT_REGION,
    /// LANG and the SDK's AWS_ENDPOINT_URL* overrides. Always on top: its configured
    /// variables, then Lambda's reserved ones.
    #[arg(long, value_name = "FILE", verbatim_doc_comment)]
    pub(crate) env_file: Option<PathBuf>,

    /// Run each function as a user of its own through this setuid `immortal-sandbox`
    /// (set by the image); without it, functions run as the runner's user.
    #[arg(long, value_name = "PATH", env = container::SANDBOX_VAR, hide_env_values = true)]
    pub(crate) sandbox: Option<PathBuf>,

    /// /tmp belongs to this runner alone (set by the image): what a function leaves
    /// there is removed before the next runs. Otherwise the runner removes only the
    /// scratch folders it made.
    #[arg(long, env = container::OWN_TMP_VAR, hide_env_values = true)]
    pub(crate) own_tmp: bool,

    /// Where the function's output goes: `cloudwatch` (its own log group, a stream
    /// named like Lambda's, with START/END/REPORT lines; the image's default) or
    /// `stderr` (the runner's, the default here). The runner's own logs stay on stderr.
    #[arg(long, value_name = "cloudwatch|stderr", default_value = "stderr", env = container::FUNCTION_LOGS_VAR, hide_env_values = true, value_parser = LogDestination::parse)]
    pub(crate) function_logs: LogDestination,

    /// Start no extensions: the executables in the layers' `extensions/` folder are
    /// left alone (otherwise each is started before the runtime and served the
    /// Extensions and Telemetry APIs, as in Lambda). Also IMMORTAL_EXTENSIONS=off.
    #[arg(long)]
    pub(crate) no_extensions: bool,

    /// Log a "still running" line (time so far, peak memory) this often during a run;
    /// 0 for none.
    #[arg(long, value_name = "SECONDS", default_value = "60", env = container::HEARTBEAT_VAR, hide_env_values = true, value_parser = parse_seconds_or_none)]
    pub(crate) heartbeat: f64,

    /// `on` (default) or `off`: as --no-extensions.
    #[arg(long, value_name = "on|off", env = container::EXTENSIONS_VAR, hide_env_values = true, hide = true, value_parser = ["on", "off"])]
    pub(crate) extensions: Option<String>,

    /// Emulate Lambda's limit: at the deadline the bootstrap is killed and the result is
    /// Lambda's Sandbox.Timedout error (exit 5). Default: no limit.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub(crate) timeout: Option<f64>,

    /// How long the bootstrap may take to exit after SIGTERM before it gets SIGKILL.
    /// Default: the task's stop timeout less 5 s for the runner itself, else 2.
    #[arg(long, value_name = "SECONDS", env = container::GRACE_PERIOD_VAR, hide_env_values = true, value_parser = parse_seconds)]
    pub(crate) grace_period: Option<f64>,

    /// The container's stopTimeout: how long ECS waits between SIGTERM and SIGKILL (set
    /// by the task definition).
    #[arg(long, value_name = "SECONDS", env = container::STOP_TIMEOUT_VAR, hide_env_values = true, value_parser = parse_seconds)]
    pub(crate) stop_timeout: Option<f64>,
}

/// Where the code, its layers and its runtime are.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Code")]
pub(crate) struct CodeArgs {
    /// Where a managed runtime's own bootstrap is (/var/runtime in AWS's base images).
    /// Used when the code has no bootstrap of its own and no layer brings one, as the
    /// Runtime Interface Emulator does; becomes LAMBDA_RUNTIME_DIR.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_RUNTIME_DIR, env = container::RUNTIME_DIR_VAR, hide_env_values = true)]
    pub(crate) runtime_dir: PathBuf,

    /// The runtime of local code (e.g. python3.12, nodejs22.x), for AWS_EXECUTION_ENV.
    /// Default: the runner image's runtime. Functions fetched from Lambda use their own.
    #[arg(long, value_name = "RUNTIME")]
    pub(crate) runtime: Option<String>,

    /// The runtime the runner's image holds; set by the image. A function of another
    /// managed runtime is refused, naming the image to use.
    #[arg(long, value_name = "RUNTIME", env = container::IMAGE_RUNTIME_VAR, hide_env_values = true)]
    pub(crate) image_runtime: Option<String>,

    /// Show the function its code at this path (LAMBDA_TASK_ROOT and its working
    /// directory), as Lambda shows it at /var/task: a folder the runner owns (created
    /// when missing), emptied and filled with the code's tree before the run (hard links
    /// to the cache). /var/task in the image. Default: the code's own folder in the cache.
    #[arg(long, value_name = "DIR", env = container::TASK_ROOT_VAR, hide_env_values = true)]
    pub(crate) task_root: Option<PathBuf>,

    /// Where unpacked code is cached, by SHA-256. Default: ~/.cache/immortal.
    #[arg(long, value_name = "DIR", env = container::CACHE_DIR_VAR, hide_env_values = true)]
    pub(crate) cache_dir: Option<PathBuf>,

    /// The layers root (/opt in Lambda). Default: a folder in the cache per layer set.
    #[arg(long, value_name = "DIR", env = container::OPT_DIR_VAR, hide_env_values = true)]
    pub(crate) opt_dir: Option<PathBuf>,

    /// Refuse code or layer zips that unpack to more than this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = LAMBDA_UNPACKED_LIMIT, env = container::MAX_UNPACKED_SIZE_VAR, hide_env_values = true)]
    pub(crate) max_unpacked_size: u64,
}

/// Where outcome records go.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Outcomes")]
pub(crate) struct OutcomeArgs {
    /// Where a success's destination record goes: an SQS queue URL or ARN, an SNS topic
    /// ARN, or an EventBridge bus ARN.
    #[arg(long, value_name = "DEST", env = container::ON_SUCCESS_VAR, hide_env_values = true)]
    pub(crate) on_success: Option<String>,

    /// Where a failure's destination record (RetriesExhausted) goes; as --on-success.
    #[arg(long, value_name = "DEST", env = container::ON_FAILURE_VAR, hide_env_values = true)]
    pub(crate) on_failure: Option<String>,

    /// Where records too large for their destination are stored (sent as a pointer).
    #[arg(long, value_name = "BUCKET", env = container::PAYLOAD_BUCKET_VAR, hide_env_values = true)]
    pub(crate) payload_bucket: Option<String>,
}

/// A command-line value of the wrong shape (clap prints it with the flag's name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadValue {
    /// Not `KEY=VALUE`.
    #[error("`{0}` is not KEY=VALUE")]
    KeyValue(String),
    /// Not a positive number of seconds.
    #[error("`{0}` is not a positive number of seconds")]
    Seconds(String),
    /// Not a number of seconds, nor 0.
    #[error("`{0}` is not a number of seconds (0 for none)")]
    SecondsOrNone(String),
    /// Not an age.
    #[error("`{0}` is not an age: a number and s, m, h or d (90s, 30m, 12h, 7d)")]
    Age(String),
}

fn parse_key_value(text: &str) -> Result<(String, String), BadValue> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(BadValue::KeyValue(text.to_owned())),
    }
}

fn parse_seconds_or_none(text: &str) -> Result<f64, BadValue> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok(s),
        _ => Err(BadValue::SecondsOrNone(text.to_owned())),
    }
}

/// `90s`, `30m`, `12h`, `7d`.
fn parse_age(text: &str) -> Result<std::time::Duration, BadValue> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(BadValue::Age(text.to_owned())),
    };
    let n: u64 = number.parse().map_err(|_| BadValue::Age(text.to_owned()))?;
    Ok(std::time::Duration::from_secs(n * seconds))
}

fn parse_seconds(text: &str) -> Result<f64, BadValue> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 => Ok(s),
        _ => Err(BadValue::Seconds(text.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_lists_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("128+N"), "{help}");
        assert!(help.contains(container::EVENT_VAR), "{help}");
        assert!(help.contains("drain") && help.contains("fetch"), "{help}");
    }

    /// Without a subcommand the runner invokes, as its users' scripts expect; each mode
    /// takes only its own flags.
    #[test]
    fn modes_are_subcommands_and_invoke_is_the_default() {
        let parse = |args: &[&str]| Cli::try_parse_from(std::iter::once("runner").chain(args.iter().copied()));
        let chosen = |args: &[&str]| parse(args).unwrap().chosen();
        assert!(matches!(
            chosen(&["--artifact", "fn.zip", "--event", "{}"]),
            Command::Invoke(InvokeArgs {
                artifact: Some(_),
                event: Some(_),
                ..
            })
        ));
        assert!(matches!(
            chosen(&["invoke", "--event", "{}"]),
            Command::Invoke(InvokeArgs { event: Some(_), .. })
        ));
        match chosen(&["drain", "--queue", "https://q/1,https://q/2", "--concurrency", "3"]) {
            Command::Drain(args) => assert_eq!((args.queue.len(), args.concurrency), (2, 3)),
            other => panic!("{other:?}"),
        }
        // The attached queues alone: no --queue needed.
        match chosen(&["drain", "--attached"]) {
            Command::Drain(args) => assert!(args.attached && args.queue.is_empty()),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            chosen(&["fetch", "--function", "thumb"]),
            Command::Fetch(FetchArgs { function: Some(_), .. })
        ));
        // The drain task definition: IMMORTAL_QUEUE_URL and drain's own flags, no
        // subcommand.
        let args = |list: &[&str]| list.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        let drained = with_default_mode(args(&["runner", "--idle-timeout", "2"]), true);
        assert_eq!(drained, args(&["runner", "drain", "--idle-timeout", "2"]));
        for kept in [&["runner", "fetch"][..], &["runner", "--help"], &["runner"]] {
            let expected = if kept.len() == 1 {
                args(&["runner", "drain"])
            } else {
                args(kept)
            };
            assert_eq!(with_default_mode(args(kept), true), expected, "{kept:?}");
            assert_eq!(with_default_mode(args(kept), false), args(kept), "{kept:?}");
        }
        for wrong in [
            &["--event", "{}", "drain", "--queue", "q"][..],
            &["drain", "--event", "{}", "--queue", "q"],
            &["fetch", "--event", "{}"],
        ] {
            assert!(parse(wrong).is_err(), "{wrong:?}");
        }
    }
}
