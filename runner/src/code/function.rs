//! What Lambda knows about the function: `GetFunction` (code location, hash,
//! configuration) and `GetLayerVersion` for each of its layers.

use std::collections::BTreeMap;

use aws_sdk_lambda::error::SdkError;
use immortal_handler_sdk::arn::Arn;
use immortal_handler_sdk::aws::describe_error;
use immortal_handler_sdk::function_ref::{FunctionRef, LATEST};

use immortal_overflow::functions::{architecture_of, image_of};

use crate::code::image::{ImageConfig, ImageFunction};
use crate::code::runtime::Runtime;
use crate::emulator::invocation::FunctionFacts;
use crate::error::RunnerError;

/// A downloadable zip and the hash Lambda recorded for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CodeRef {
    /// What it is, for messages: `function thumb:$LATEST` or `layer ffmpeg:3`.
    pub(crate) what: String,
    /// Where to download it (a presigned S3 URL in AWS).
    pub(crate) location: String,
    /// base64 SHA-256 of the zip.
    pub(crate) sha256: String,
    /// Size in bytes, when known.
    pub(crate) size: Option<u64>,
}

impl CodeRef {
    /// The SHA-256 Lambda recorded, as bytes.
    pub(crate) fn digest(&self) -> Result<Vec<u8>, crate::error::CodeError> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(self.sha256.trim())
            .map_err(|_| crate::error::CodeError::HashMismatch {
                what: self.what.clone(),
                expected: self.sha256.clone(),
                actual: "(CodeSha256 is not base64)".into(),
            })
    }
}

/// The function as the runner needs it.
#[derive(Debug, Clone)]
pub(crate) struct FunctionSpec {
    /// Name, version, ARN, memory.
    pub(crate) facts: FunctionFacts,
    /// Configured handler (`_HANDLER`).
    pub(crate) handler: Option<String>,
    /// Its runtime (`None` for container images).
    pub(crate) runtime: Option<Runtime>,
    /// Its `LoggingConfig`.
    pub(crate) logging: LogSettings,
    /// Lambda timeout in seconds (reported, not enforced).
    pub(crate) timeout_s: Option<i32>,
    /// `x86_64` or `arm64`.
    pub(crate) architecture: String,
    /// `Environment.Variables`.
    pub(crate) env: BTreeMap<String, String>,
    /// The function's code: a zip, or its container image.
    pub(crate) code: Package,
    /// Layer version ARNs in the order Lambda applies them.
    pub(crate) layers: Vec<String>,
    /// Its execution role (`Configuration.Role`).
    pub(crate) role: Option<String>,
}

/// How a function's code is deployed.
#[derive(Debug, Clone)]
pub(crate) enum Package {
    /// A zip to download, verify and unpack.
    Zip(CodeRef),
    /// A container image the runner runs inside of.
    Image(ImageFunction),
}

/// A function's `LoggingConfig`, as far as the runtime sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LogSettings {
    /// `JSON` or `Text` (`AWS_LAMBDA_LOG_FORMAT`).
    pub(crate) format: Option<String>,
    /// The application log level (`AWS_LAMBDA_LOG_LEVEL`), for JSON logs.
    pub(crate) application_level: Option<String>,
    /// The log group, when not `/aws/lambda/NAME`.
    pub(crate) log_group: Option<String>,
}

/// A Lambda client for the region of `function` (an ARN's region wins over the default).
pub(crate) fn client(config: &aws_config::SdkConfig, function: &FunctionRef) -> aws_sdk_lambda::Client {
    let mut builder = aws_sdk_lambda::config::Builder::from(config);
    if let Some(region) = &function.region {
        builder = builder.region(aws_sdk_lambda::config::Region::new(region.clone()));
    }
    aws_sdk_lambda::Client::from_conf(builder.build())
}

/// Calls `GetFunction` and keeps what the runner uses.
pub(crate) async fn get_function(
    client: &aws_sdk_lambda::Client,
    function: &FunctionRef,
) -> Result<FunctionSpec, RunnerError> {
    let label = function.label();
    let name = function.api_name();
    let out = client
        .get_function()
        .function_name(name)
        .set_qualifier(function.qualifier.clone())
        .send()
        .await
        .map_err(|e| lambda_error("GetFunction", &label, e))?;
    let config = out
        .configuration
        .ok_or_else(|| RunnerError::Function(format!("GetFunction({label}) returned no configuration")))?;
    refuse_what_cannot_run(&label, &config)?;
    let code = out
        .code
        .ok_or_else(|| RunnerError::Function(format!("GetFunction({label}) returned no code location")))?;
    let version = config.version.clone();
    let what = format!("function {}:{}", function.name, version.as_deref().unwrap_or(LATEST));
    let code = package(&label, what, code, &config)?;
    let facts = FunctionFacts {
        name: config.function_name.clone(),
        version: version.clone(),
        arn: config.function_arn.clone(),
        memory_mb: config.memory_size.and_then(|m| u32::try_from(m).ok()),
        log_group: config.logging_config.as_ref().and_then(|l| l.log_group.clone()),
    };
    let architecture = architecture_of(&config);
    Ok(FunctionSpec {
        facts,
        handler: config.handler,
        runtime: config.runtime.map(|r| Runtime::new(r.as_str())),
        logging: config.logging_config.map(log_settings).unwrap_or_default(),
        timeout_s: config.timeout,
        architecture,
        env: config
            .environment
            .and_then(|e| e.variables)
            .map(|v| v.into_iter().collect())
            .unwrap_or_default(),
        code,
        layers: config
            .layers
            .unwrap_or_default()
            .into_iter()
            .filter_map(|l| l.arn)
            .collect(),
        role: config.role,
    })
}

/// The function's zip (location and hash), or its image (by digest when Lambda
/// resolved one) and `ImageConfig`.
fn package(
    label: &str,
    what: String,
    code: aws_sdk_lambda::types::FunctionCodeLocation,
    config: &aws_sdk_lambda::types::FunctionConfiguration,
) -> Result<Package, RunnerError> {
    if config.package_type.as_ref().map(|p| p.as_str()) == Some("Image") {
        let uri = image_of(config, &code)
            .ok_or_else(|| RunnerError::Function(format!("GetFunction({label}) returned no Code.ImageUri")))?;
        let image_config = config
            .image_config_response
            .as_ref()
            .and_then(|r| r.image_config.as_ref());
        // An empty list or string is a setting not made (some APIs answer so).
        let list = |v: Option<&Vec<String>>| v.filter(|v| !v.is_empty()).cloned();
        return Ok(Package::Image(ImageFunction {
            uri,
            config: ImageConfig {
                entry_point: list(image_config.and_then(|c| c.entry_point.as_ref())),
                command: list(image_config.and_then(|c| c.command.as_ref())),
                working_directory: image_config
                    .and_then(|c| c.working_directory.clone())
                    .filter(|d| !d.is_empty()),
            },
        }));
    }
    let location = code.location.ok_or_else(|| {
        RunnerError::Function(format!(
            "GetFunction({label}) returned no Code.Location (is it a zip function?)"
        ))
    })?;
    let sha256 = config
        .code_sha256
        .clone()
        .ok_or_else(|| RunnerError::Function(format!("GetFunction({label}) returned no CodeSha256")))?;
    Ok(Package::Zip(CodeRef {
        what,
        location,
        sha256,
        size: config.code_size.try_into().ok().filter(|s| *s > 0),
    }))
}

/// A configuration the runner cannot honour is refused, never half-run.
fn refuse_what_cannot_run(
    label: &str,
    config: &aws_sdk_lambda::types::FunctionConfiguration,
) -> Result<(), RunnerError> {
    if let Some(error) = config.environment.as_ref().and_then(|e| e.error.as_ref()) {
        return Err(RunnerError::Configuration(format!(
            "{label}'s environment variables could not be read ({}: {}); Lambda would not run it either: give the runner's role kms:Decrypt on the function's key, or fix the key",
            error.error_code.as_deref().unwrap_or("error"),
            error.message.as_deref().unwrap_or("no message"),
        )));
    }
    if let Some(mount) = config.file_system_configs.as_ref().and_then(|f| f.first()) {
        return Err(RunnerError::Configuration(format!(
            "{label} mounts an EFS file system at {}; the runner's task has no such mount, and would run it without its files",
            mount.local_mount_path
        )));
    }
    Ok(())
}

/// The function's `LoggingConfig`, as the runner uses it.
fn log_settings(config: aws_sdk_lambda::types::LoggingConfig) -> LogSettings {
    let format = config.log_format.map(|f| f.as_str().to_owned());
    // Lambda passes the level only with JSON logs: text logs have none.
    let json = format.as_deref() == Some("JSON");
    LogSettings {
        application_level: config
            .application_log_level
            .filter(|_| json)
            .map(|level| level.as_str().to_owned()),
        format,
        log_group: config.log_group,
    }
}

/// Calls `GetLayerVersion` with the name and version parsed from a layer version ARN.
pub(crate) async fn get_layer(client: &aws_sdk_lambda::Client, arn: &str) -> Result<CodeRef, RunnerError> {
    let (layer, version) = parse_layer_arn(arn)?;
    let out = client
        .get_layer_version()
        .layer_name(&layer)
        .version_number(version)
        .send()
        .await
        .map_err(|e| lambda_error("GetLayerVersion", arn, e))?;
    let content = out
        .content
        .ok_or_else(|| RunnerError::Function(format!("GetLayerVersion({arn}) returned no content")))?;
    let what = format!("layer {}:{version}", layer.rsplit(':').next().unwrap_or(&layer));
    Ok(CodeRef {
        what,
        location: content
            .location
            .ok_or_else(|| RunnerError::Function(format!("GetLayerVersion({arn}) returned no Content.Location")))?,
        sha256: content
            .code_sha256
            .ok_or_else(|| RunnerError::Function(format!("GetLayerVersion({arn}) returned no CodeSha256")))?,
        size: u64::try_from(content.code_size).ok().filter(|s| *s > 0),
    })
}

/// `arn:aws:lambda:REGION:ACCOUNT:layer:NAME:VERSION` → (the layer ARN, VERSION).
pub(crate) fn parse_layer_arn(arn: &str) -> Result<(String, i64), RunnerError> {
    let bad = || {
        RunnerError::Function(format!(
            "`{arn}` is not a layer version ARN (arn:aws:lambda:REGION:ACCOUNT:layer:NAME:VERSION)"
        ))
    };
    let parsed = Arn::parse(arn)
        .filter(|parsed| parsed.service == "lambda")
        .ok_or_else(bad)?;
    let ["layer", name, version] = parsed.resource_parts()[..] else {
        return Err(bad());
    };
    let version: i64 = version.parse().map_err(|_| bad())?;
    if name.is_empty() {
        return Err(bad());
    }
    let (layer, _) = arn.rsplit_once(':').ok_or_else(bad)?;
    Ok((layer.to_owned(), version))
}

/// A Lambda API failure, worded with what to check.
fn lambda_error<E>(call: &str, what: &str, err: SdkError<E, aws_sdk_lambda::config::http::HttpResponse>) -> RunnerError
where
    E: std::error::Error + aws_sdk_lambda::error::ProvideErrorMetadata + Send + Sync + 'static,
{
    let hint = match err.as_service_error().and_then(|e| e.code()) {
        Some("ResourceNotFoundException") => {
            " (check --function/--qualifier, or the context's invoked_function_arn, and the region)"
        }
        Some("AccessDeniedException") => {
            " (the runner's role needs lambda:GetFunction and lambda:GetLayerVersion on it)"
        }
        _ => "",
    };
    let failed = format!("{call}({what}) failed: {}{hint}", describe_error(&err));
    if immortal_handler_sdk::aws::is_transient(&err) {
        return RunnerError::Unavailable(format!(
            "{failed}; AWS did not answer for now, after {} tries",
            immortal_handler_sdk::aws::DEFAULT_MAX_ATTEMPTS
        ));
    }
    RunnerError::Function(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_arns() {
        let (layer, version) = parse_layer_arn("arn:aws:lambda:us-east-1:123456789012:layer:ffmpeg:3").unwrap();
        assert_eq!(
            (layer.as_str(), version),
            ("arn:aws:lambda:us-east-1:123456789012:layer:ffmpeg", 3)
        );
        assert!(parse_layer_arn("arn:aws:lambda:us-east-1:123456789012:function:f:3").is_err());
        assert!(parse_layer_arn("ffmpeg").is_err());
    }
}
