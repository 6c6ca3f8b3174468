//! One AWS SDK configuration for handlers and for every part of immortal: the default
//! credential and region chain, `AWS_ENDPOINT_URL*` honoured, rustls on ring, and
//! patient retries.

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

/// Attempts per AWS call (first try included) unless `AWS_MAX_ATTEMPTS` says otherwise.
/// Standard retry mode backs off exponentially with jitter on throttling and 5xx.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// Loads the SDK configuration the way the AWS CLI would (environment, profiles,
/// container and instance credentials).
pub async fn load() -> SdkConfig {
    loader().load().await
}

/// The process's one SDK configuration, loaded on first use (clients made from it share
/// its credential cache and HTTP connections).
pub async fn shared() -> &'static SdkConfig {
    static SHARED: tokio::sync::OnceCell<SdkConfig> = tokio::sync::OnceCell::const_new();
    SHARED.get_or_init(load).await
}

/// The loader behind [`load`], for callers that set more (tests point it at an emulator).
pub fn loader() -> aws_config::ConfigLoader {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if std::env::var_os("AWS_MAX_ATTEMPTS").is_none() {
        loader = loader.retry_config(RetryConfig::standard().with_max_attempts(DEFAULT_MAX_ATTEMPTS));
    }
    loader
}

/// The endpoint override for `service` (e.g. `S3`), as the SDK reads it:
/// `AWS_ENDPOINT_URL_<SERVICE>`, else `AWS_ENDPOINT_URL`.
pub fn endpoint_override(service: &str) -> Option<String> {
    std::env::var(format!("AWS_ENDPOINT_URL_{}", service.to_ascii_uppercase()))
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .ok()
        .filter(|url| !url.is_empty())
}

/// An S3 client; path-style addressing when the endpoint is overridden (local
/// emulators cannot resolve `bucket.127.0.0.1`).
pub fn s3_client(config: &SdkConfig) -> aws_sdk_s3::Client {
    let builder = aws_sdk_s3::config::Builder::from(config).force_path_style(endpoint_override("S3").is_some());
    aws_sdk_s3::Client::from_conf(builder.build())
}

/// An AWS call that failed: which (with what it was about), and AWS's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{call} failed: {detail}")]
pub struct CallFailed {
    /// The call, e.g. `ListTasks(immortal)`.
    pub call: String,
    /// AWS's answer, described (and, where it helps, the permission it needs).
    pub detail: String,
}

impl CallFailed {
    /// `call` failed with `err`.
    pub fn new<E, R>(call: impl Into<String>, err: &aws_sdk_s3::error::SdkError<E, R>) -> Self
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        CallFailed {
            call: call.into(),
            detail: describe_error(err),
        }
    }
}

/// Whether an AWS call's failure may pass by itself (after the SDK's own retries): it was
/// throttled, AWS failed (5xx), or the request did not get an answer (timeout,
/// connection). A refusal (access denied, not found, invalid) is not.
pub fn is_transient<E>(err: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> bool
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
{
    use aws_sdk_s3::error::SdkError;
    const TRANSIENT_CODES: &[&str] = &[
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "ProvisionedThroughputExceededException",
        "SlowDown",
        "ServiceException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "RequestTimeout",
        "RequestTimeoutException",
    ];
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            status == 429 || status >= 500 || service.err().code().is_some_and(|code| TRANSIENT_CODES.contains(&code))
        }
        _ => false,
    }
}

/// An AWS call's failure on one line: `Code: message` for service errors, the cause
/// chain for transport errors.
pub fn describe_error<E, R>(err: &aws_sdk_s3::error::SdkError<E, R>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if let Some(service) = err.as_service_error() {
        if let Some(code) = service.code() {
            return format!("{code}: {}", service.message().unwrap_or("(no message)"));
        }
    }
    crate::error_document::message_with_causes(err)
}
