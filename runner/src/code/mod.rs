//! Gets the function ready to run: its code (local `--artifact`, or fetched from
//! Lambda), layers, configuration and environment.

pub(crate) mod artifact;
pub(crate) mod function;
pub(crate) mod image;
pub(crate) mod runtime;
pub(crate) mod runtime_folder;
pub(crate) mod task_root;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use immortal_handler_sdk::aws;
use immortal_handler_sdk::function_ref::{FunctionRef, LATEST};
use sha2::Digest as _;

use crate::code::artifact::{fetch::Fetcher, Cache};
use crate::code::function::{LogSettings, Package};
use crate::code::image::{ImageFunction, ImageStart};
use crate::code::runtime::{Runtime, RuntimeDir};
use crate::emulator::bootstrap::{CodeLayout, BOOTSTRAP};
use crate::emulator::invocation::FunctionFacts;
use crate::error::{CodeError, RunnerError};

/// Everything about the function except the invocation itself.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    /// Where the code and layers are.
    pub(crate) layout: CodeLayout,
    /// Name, version, ARN, memory.
    pub(crate) facts: FunctionFacts,
    /// `_HANDLER`.
    pub(crate) handler: String,
    /// The function's runtime, when known.
    pub(crate) runtime: Option<Runtime>,
    /// Its `LoggingConfig`.
    pub(crate) logging: LogSettings,
    /// The function's own environment variables.
    pub(crate) env: BTreeMap<String, String>,
    /// Its execution role, when known.
    pub(crate) role: Option<String>,
    /// Local code (`--artifact`), not the function's own from Lambda: the shell's
    /// variables reach it, as with cargo-lambda and SAM.
    pub(crate) local: bool,
}

/// Settings for getting code.
#[derive(Debug, Clone)]
pub(crate) struct CodeOptions {
    /// The code cache.
    pub(crate) cache: Cache,
    /// An explicit layers root.
    pub(crate) opt_dir: Option<PathBuf>,
    /// Layers for local code (`--layer`), in order.
    pub(crate) layers: Vec<LayerSource>,
    /// Per-archive unpacked size limit.
    pub(crate) max_unpacked: u64,
    /// Where managed runtimes come from, and where the code appears.
    pub(crate) runtime: RuntimeOptions,
}

/// How managed runtimes are served and where the function's code appears.
#[derive(Debug, Clone)]
pub(crate) struct RuntimeOptions {
    /// The runtime directory (`/var/runtime`), and the runtime the image holds.
    pub(crate) dir: RuntimeDir,
    /// `--runtime`: the runtime of local code (else the image's, if it declares one).
    pub(crate) runtime: Option<Runtime>,
    /// `--task-root`: a folder shown to the function as its task root (`/var/task` in
    /// the image), filled with the function's code before each run.
    pub(crate) task_root: Option<PathBuf>,
}

impl CodeOptions {
    /// The layout for code unpacked at `code` with layers at `opt`.
    fn layout(&self, code: PathBuf, opt_dir: Option<PathBuf>) -> Result<CodeLayout, CodeError> {
        let task_root = match &self.runtime.task_root {
            Some(root) => task_root::present(root, &code)?,
            None => code,
        };
        Ok(CodeLayout {
            task_root,
            opt_dir,
            runtime_dir: Some(self.runtime.dir.clone()),
            image: None,
        })
    }
}

/// A layer of local code (`--layer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LayerSource {
    /// A zip or an unpacked folder on this machine.
    Path(PathBuf),
    /// A layer version in Lambda.
    Arn(String),
}

impl LayerSource {
    /// `arn:...` is a layer version ARN; anything else a path.
    pub(crate) fn parse(text: &str) -> LayerSource {
        match text.starts_with("arn:") {
            true => LayerSource::Arn(text.to_owned()),
            false => LayerSource::Path(PathBuf::from(text)),
        }
    }
}

/// A local artifact: a zip (unpacked into the cache) or a folder, with its layers.
pub(crate) async fn local(artifact: &Path, options: &CodeOptions) -> Result<Prepared, RunnerError> {
    let (path, cache, limit) = (artifact.to_owned(), options.cache.clone(), options.max_unpacked);
    let task_root = tokio::task::spawn_blocking(move || artifact::local(&path, &cache, limit))
        .await
        .map_err(|e| RunnerError::Start(format!("unpacking panicked: {e}")))??;
    let opt_dir = match options.layers.is_empty() {
        true => options.opt_dir.clone(),
        false => Some(local_layers(&options.layers, options).await?),
    };
    Ok(Prepared {
        layout: options.layout(task_root, opt_dir)?,
        facts: FunctionFacts {
            name: Some(artifact_name(artifact)),
            ..Default::default()
        },
        handler: BOOTSTRAP.to_owned(),
        runtime: options
            .runtime
            .runtime
            .clone()
            .or_else(|| options.runtime.dir.declared_runtime().cloned()),
        logging: LogSettings::default(),
        env: BTreeMap::new(),
        role: None,
        local: true,
    })
}

/// Where the code comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CodeSource {
    /// `--artifact`: a zip, a folder or an executable on this machine.
    Local(PathBuf),
    /// The function's own code, from Lambda: `--function` (and `--qualifier`), else the
    /// function the envelope's context names.
    Remote {
        /// `--function`, parsed.
        function: Option<FunctionRef>,
        /// `--qualifier`: overrides the reference's own.
        qualifier: Option<String>,
    },
}

impl CodeSource {
    /// The code ready to run. `context_function` is the function the envelope names;
    /// `sdk` is only called when the code comes from Lambda.
    pub(crate) async fn prepare<F, Fut>(
        &self,
        context_function: Option<&FunctionRef>,
        options: &CodeOptions,
        sdk: F,
    ) -> Result<Prepared, RunnerError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = &'static aws_config::SdkConfig>,
    {
        match self {
            CodeSource::Local(path) => local(path, options).await,
            CodeSource::Remote { function, qualifier } => {
                let function = function_ref(function.as_ref(), qualifier.as_deref(), context_function)?;
                remote(&function, options, sdk().await).await
            }
        }
    }
}

/// Which function to fetch: `function` (and `qualifier`), else the context's.
pub(crate) fn function_ref(
    function: Option<&FunctionRef>,
    qualifier: Option<&str>,
    context_function: Option<&FunctionRef>,
) -> Result<FunctionRef, RunnerError> {
    let mut function = function.or(context_function).cloned().ok_or_else(|| {
        RunnerError::Usage(
            "no function to run: pass --artifact ZIP|DIR for local code, or --function NAME|ARN (or a context with invoked_function_arn) to fetch it from Lambda".into(),
        )
    })?;
    if let Some(q) = qualifier {
        function.qualifier = Some(q.to_owned());
    }
    Ok(function)
}

/// The function's own code, layers and configuration, from Lambda.
pub(crate) async fn remote(
    function: &FunctionRef,
    options: &CodeOptions,
    sdk: &aws_config::SdkConfig,
) -> Result<Prepared, RunnerError> {
    fetch(function, options, sdk).await?.present(options).await
}

/// The function's code and layers in the cache, and its configuration: everything but
/// showing them to it ([`Fetched::present`]), which a drain worker does only when no
/// other function's run could see the change.
pub(crate) async fn fetch(
    function: &FunctionRef,
    options: &CodeOptions,
    sdk: &aws_config::SdkConfig,
) -> Result<Fetched, RunnerError> {
    let lambda = function::client(sdk, function);
    let spec = function::get_function(&lambda, function).await?;
    tracing::info!(
        function = spec.facts.arn.as_deref().unwrap_or(&function.name),
        version = spec.facts.version.as_deref().unwrap_or(LATEST),
        runtime = spec.runtime.as_ref().map(Runtime::id).unwrap_or("?"),
        lambda_timeout_s = spec.timeout_s,
        layers = spec.layers.len(),
        "function found (its Lambda timeout is not enforced here)"
    );
    check_architecture(&function.name, &spec.architecture)?;
    let code = match &spec.code {
        Package::Zip(code) => code.clone(),
        Package::Image(image) => {
            let start = image_start(function, image, &spec.architecture, options, sdk).await?;
            return Ok(Fetched {
                spec,
                body: Body::Image(start),
            });
        }
    };
    let s3_endpoint = aws::endpoint_override("S3");
    let fetcher = Fetcher::new(Some(aws::s3_client(sdk)), s3_endpoint);
    let code = artifact::obtain(&fetcher, &code, &options.cache, "code", options.max_unpacked).await?;
    let mut layer_refs = Vec::with_capacity(spec.layers.len());
    for arn in &spec.layers {
        layer_refs.push(function::get_layer(&lambda, arn).await?);
    }
    let layers = artifact::obtain_layers(&fetcher, &layer_refs, &options.cache, options.max_unpacked).await?;
    Ok(Fetched {
        spec,
        body: Body::Zip { code, layers },
    })
}

/// What starts an image function in this container: its `ImageConfig`, completed from
/// the image's own configuration in ECR when it does not say everything.
async fn image_start(
    function: &FunctionRef,
    image: &ImageFunction,
    architecture: &str,
    options: &CodeOptions,
    sdk: &aws_config::SdkConfig,
) -> Result<ImageStart, RunnerError> {
    // A runner image holds a runtime, not the function's code.
    if options.runtime.dir.image_runtime.is_some() {
        return Err(CodeError::NotItsImage {
            function: function.label(),
            image: image.uri.clone(),
        }
        .into());
    }
    let config = &image.config;
    let own = if config.complete() {
        None
    } else {
        let http = reqwest::Client::new();
        match image::own_config(sdk, &image.uri, architecture, &http).await {
            Ok(own) => Some(own),
            // Only the working directory is missing: AWS's base images all use the task root.
            Err(e) if config.entry_point.is_some() && config.command.is_some() => {
                tracing::warn!(image = %image.uri, error = %e, working_dir = image::TASK_ROOT, "the image's WORKDIR is unknown; starting in the task root, as AWS's base images do (set ImageConfig.WorkingDirectory to say otherwise)");
                Some(image::OwnConfig {
                    working_dir: Some(image::TASK_ROOT.to_owned()),
                    ..Default::default()
                })
            }
            Err(e) => return Err(e.into()),
        }
    };
    let start = config.start(&image.uri, own.as_ref())?;
    tracing::info!(image = %image.uri, argv = ?start.argv, working_dir = %start.working_dir.display(), "a container-image function: nothing to download, its own image runs it");
    Ok(start)
}

/// A function's code and layers in the cache (or its image's entry point), not yet
/// shown to it.
pub(crate) struct Fetched {
    spec: function::FunctionSpec,
    body: Body,
}

/// A zip function's unpacked code and layers, or an image function's start.
enum Body {
    Zip { code: PathBuf, layers: artifact::Layers },
    Image(ImageStart),
}

impl Fetched {
    /// What the function will see: its code and its layer set (or its image). Two runs
    /// with the same identity may share the task root and the layers root.
    pub(crate) fn identity(&self) -> String {
        match &self.body {
            Body::Zip { code, layers } => format!("{}+{}", code.display(), layers.set_key),
            Body::Image(start) => format!("image:{}", start.image),
        }
    }

    /// Shows the code at the task root and the layers at the layers root, and returns
    /// the function ready to run. An image function's code is in the image already.
    pub(crate) async fn present(self, options: &CodeOptions) -> Result<Prepared, RunnerError> {
        let spec = self.spec;
        let (code, layers) = match self.body {
            Body::Zip { code, layers } => (code, layers),
            Body::Image(start) => {
                let opt = PathBuf::from(image::LAYERS_ROOT);
                return Ok(Prepared {
                    layout: CodeLayout {
                        task_root: PathBuf::from(image::TASK_ROOT),
                        opt_dir: opt.is_dir().then_some(opt),
                        runtime_dir: None,
                        image: Some(start.clone()),
                    },
                    facts: spec.facts,
                    handler: start.handler,
                    runtime: None,
                    logging: spec.logging,
                    env: spec.env,
                    role: spec.role,
                    local: false,
                });
            }
        };
        // With no layers, no layers root: or, when it is a fixed folder (/opt in the
        // image), an emptied one, so that no function sees another's layers.
        let opt_dir = if spec.layers.is_empty() && options.opt_dir.is_none() {
            None
        } else {
            Some(artifact::layers_root(&layers, &options.cache, options.opt_dir.as_deref()).await?)
        };
        Ok(Prepared {
            layout: options.layout(code, opt_dir)?,
            facts: spec.facts,
            handler: spec.handler.unwrap_or_else(|| BOOTSTRAP.to_owned()),
            runtime: spec.runtime,
            logging: spec.logging,
            env: spec.env,
            role: spec.role,
            local: false,
        })
    }
}

/// The layers root for local code's `--layer`s: each unpacked (zips into the cache, by
/// their SHA-256; ARNs fetched as a function's layers are), then merged in order.
async fn local_layers(layers: &[LayerSource], options: &CodeOptions) -> Result<PathBuf, RunnerError> {
    let mut dirs = Vec::with_capacity(layers.len());
    let mut identities = Vec::with_capacity(layers.len());
    for layer in layers {
        let (dir, identity) = match layer {
            LayerSource::Path(path) => {
                let (path, cache, limit) = (path.clone(), options.cache.clone(), options.max_unpacked);
                tokio::task::spawn_blocking(move || artifact::local_layer(&path, &cache, limit))
                    .await
                    .map_err(|e| RunnerError::Start(format!("unpacking panicked: {e}")))??
            }
            LayerSource::Arn(arn) => {
                let sdk = aws::shared().await;
                let lambda = aws_sdk_lambda::Client::new(sdk);
                let code = function::get_layer(&lambda, arn).await?;
                let fetcher = Fetcher::new(Some(aws::s3_client(sdk)), aws::endpoint_override("S3"));
                let dir = artifact::obtain(&fetcher, &code, &options.cache, "layer", options.max_unpacked).await?;
                (dir, code.sha256.clone())
            }
        };
        dirs.push(dir);
        identities.push(identity);
    }
    let layers = artifact::Layers {
        dirs,
        set_key: artifact::hex(&sha2::Sha256::digest(identities.join(",").as_bytes())),
    };
    tracing::info!(layers = layers.dirs.len(), "layers ready");
    Ok(artifact::layers_root(&layers, &options.cache, options.opt_dir.as_deref()).await?)
}

/// Lambda's name for this machine's CPU.
pub(crate) fn machine_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        other => other,
    }
}

fn check_architecture(function: &str, wanted: &str) -> Result<(), CodeError> {
    let machine = machine_architecture();
    if wanted == machine {
        return Ok(());
    }
    Err(CodeError::Architecture {
        function: function.to_owned(),
        wanted: wanted.to_owned(),
        machine: machine.to_owned(),
        fargate: if wanted == "arm64" { "ARM64" } else { "X86_64" }.to_owned(),
    })
}

/// The function name a local artifact suggests: `thumb.zip` → `thumb`; for cargo lambda's
/// `target/lambda/thumb/bootstrap.zip`, the folder's name.
pub(crate) fn artifact_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if stem == BOOTSTRAP || stem.is_empty() {
        if let Some(parent) = path
            .canonicalize()
            .ok()
            .as_deref()
            .and_then(|p| p.parent())
            .and_then(|p| p.file_name())
        {
            return parent.to_string_lossy().into_owned();
        }
    }
    if stem.is_empty() {
        "function".to_owned()
    } else {
        stem
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_names() {
        assert_eq!(artifact_name(Path::new("/x/thumb.zip")), "thumb");
        assert_eq!(artifact_name(Path::new("fn-dir")), "fn-dir");
    }

    #[test]
    fn architecture_mismatch_names_both() {
        let other = if machine_architecture() == "arm64" {
            "x86_64"
        } else {
            "arm64"
        };
        let err = check_architecture("thumb", other).unwrap_err().to_string();
        assert!(err.contains(other) && err.contains(machine_architecture()), "{err}");
        assert!(check_architecture("thumb", machine_architecture()).is_ok());
    }

    #[test]
    fn the_function_comes_from_the_flag_then_the_context() {
        let envelope = immortal_handler_sdk::Envelope::from_parts(
            "{}",
            r#"{"invoked_function_arn":"arn:aws:lambda:eu-west-1:1:function:f:live"}"#,
        )
        .unwrap();
        let context = envelope.context.function_ref().unwrap();
        let f = function_ref(None, None, context.as_ref()).unwrap();
        assert_eq!(
            (f.name.as_str(), f.qualifier.as_deref(), f.region.as_deref()),
            ("f", Some("live"), Some("eu-west-1"))
        );
        let f = function_ref(Some(&FunctionRef::named("g")), Some("3"), context.as_ref()).unwrap();
        assert_eq!((f.name.as_str(), f.qualifier.as_deref()), ("g", Some("3")));
        assert!(function_ref(None, None, None)
            .unwrap_err()
            .to_string()
            .contains("no function to run"));
    }
}
