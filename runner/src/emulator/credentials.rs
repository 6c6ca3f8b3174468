//! The function's own credentials: its execution role, assumed by the runner and served
//! to the bootstrap the way every AWS SDK reads container credentials
//! (`AWS_CONTAINER_CREDENTIALS_FULL_URI` on loopback, with an authorization token),
//! renewed well before they expire for as long as the run lasts.
//!
//! Lambda hands a function static keys, but a role assumed from another role's
//! credentials (role chaining) lasts an hour at most, and a run here may last days: so
//! no static keys are set. Code that reads `AWS_ACCESS_KEY_ID`/`AWS_SESSION_TOKEN`
//! itself, instead of through its SDK's default chain, finds none and should use the
//! SDK's credential provider.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use immortal_handler_sdk::aws::describe_error;
use tokio::net::TcpListener;
use tokio::sync::Mutex;

/// How long an assumed session lasts: role chaining allows an hour at most.
pub(crate) const SESSION: Duration = Duration::from_secs(3600);
/// The variable every SDK reads the credentials endpoint from.
pub(crate) const FULL_URI_VAR: &str = "AWS_CONTAINER_CREDENTIALS_FULL_URI";
/// The variable with the token the endpoint expects in `Authorization`.
pub(crate) const TOKEN_VAR: &str = "AWS_CONTAINER_AUTHORIZATION_TOKEN";

/// Whose credentials the function's code gets (`--function-role`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FunctionRole {
    /// Its execution role (`Configuration.Role`), assumed: as itself.
    Assume,
    /// Whatever the runner has (the user's own, locally).
    Inherit,
    /// This role, assumed (a local run as the function).
    Arn(String),
}

impl FunctionRole {
    /// Parses `assume`, `inherit` or a role ARN.
    pub(crate) fn parse(text: &str) -> Result<FunctionRole, UnknownRole> {
        match text {
            "assume" => Ok(FunctionRole::Assume),
            "inherit" => Ok(FunctionRole::Inherit),
            arn if arn.starts_with("arn:") && arn.contains(":role/") => Ok(FunctionRole::Arn(arn.to_owned())),
            other => Err(UnknownRole(other.to_owned())),
        }
    }
}

/// A `--function-role` value that is none of the three.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not assume, inherit or a role ARN (arn:aws:iam::ACCOUNT:role/NAME)")]
pub(crate) struct UnknownRole(pub(crate) String);

/// Why the function's role could not be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CredentialsError {
    /// STS refused: the role does not trust the runner, or (under the overflow stack,
    /// whose runner may assume only roles tagged so) lacks the `immortal:enabled` tag.
    #[error("cannot assume the function's role {role}: {reason}. Let the runner assume it: add to the role's trust policy {statement}, and tag the role immortal:enabled=true (the overflow stack's runner may assume only roles tagged so)")]
    Refused {
        /// The role.
        role: String,
        /// STS's answer.
        reason: String,
        /// The statement to add.
        statement: String,
    },
    /// STS did not answer for now (throttled, 5xx, unreachable), after the SDK's retries.
    #[error("cannot assume the function's role {role} for now: {reason}")]
    Unavailable {
        /// The role.
        role: String,
        /// STS's answer.
        reason: String,
    },
    /// STS failed otherwise.
    #[error("cannot assume the function's role {role}: {reason}")]
    Failed {
        /// The role.
        role: String,
        /// Why.
        reason: String,
    },
    /// The loopback endpoint could not start.
    #[error("cannot serve the function's credentials on 127.0.0.1: {0}")]
    Serve(std::io::Error),
}

/// A set of temporary credentials.
#[derive(Debug, Clone)]
struct Keys {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    /// When the runner renews them (and what the SDK is told they expire).
    expires: SystemTime,
}

/// The assumed role and the endpoint serving it.
pub(crate) struct FunctionCredentials {
    url: String,
    token: String,
    source: Arc<Source>,
    server: tokio::task::JoinHandle<()>,
}

struct Source {
    sts: aws_sdk_sts::Client,
    role: String,
    session: String,
    lifetime: Duration,
    keys: Mutex<Keys>,
}

impl FunctionCredentials {
    /// Assumes `role` as session `session` (refused → the trust statement to add), and
    /// starts serving it. `lifetime` shortens how long a served set lives before
    /// renewal (default: the session's hour).
    pub(crate) async fn assume(
        sdk: &aws_config::SdkConfig,
        role: &str,
        session: &str,
        lifetime: Option<Duration>,
    ) -> Result<FunctionCredentials, CredentialsError> {
        let sts = aws_sdk_sts::Client::new(sdk);
        let lifetime = lifetime.unwrap_or(SESSION).min(SESSION);
        let keys = assume(&sts, role, session, lifetime).await?;
        tracing::info!(
            role,
            session,
            lifetime_s = lifetime.as_secs(),
            "the function's role is assumed"
        );
        let source = Arc::new(Source {
            sts,
            role: role.to_owned(),
            session: session.to_owned(),
            lifetime,
            keys: Mutex::new(keys),
        });
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(CredentialsError::Serve)?;
        let url = format!("http://{}/", listener.local_addr().map_err(CredentialsError::Serve)?);
        let token = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let expected = Arc::new(token.clone());
        let served = source.clone();
        let server = tokio::spawn(async move {
            let source = served;
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (source, expected) = (source.clone(), expected.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| serve(source.clone(), expected.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(FunctionCredentials {
            url,
            token,
            source,
            server,
        })
    }

    /// The same credentials for the runner's own calls made as the function (its logs).
    pub(crate) fn provider(&self) -> aws_credential_types::provider::SharedCredentialsProvider {
        aws_credential_types::provider::SharedCredentialsProvider::new(AsFunction(self.source.clone()))
    }

    /// The variables that point the function's SDK at the endpoint.
    pub(crate) fn environment(&self) -> Vec<(String, String)> {
        vec![
            (FULL_URI_VAR.to_owned(), self.url.clone()),
            (TOKEN_VAR.to_owned(), self.token.clone()),
        ]
    }
}

impl Drop for FunctionCredentials {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The function's credentials as an SDK credentials provider.
#[derive(Clone)]
struct AsFunction(Arc<Source>);

impl std::fmt::Debug for AsFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AsFunction({})", self.0.role)
    }
}

impl aws_credential_types::provider::ProvideCredentials for AsFunction {
    fn provide_credentials<'a>(&'a self) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::new(async move {
            let keys = current(&self.0).await;
            Ok(aws_credential_types::Credentials::new(
                keys.access_key_id,
                keys.secret_access_key,
                Some(keys.session_token),
                Some(keys.expires),
                "immortal-function-role",
            ))
        })
    }
}

/// The current keys, renewed when less than a third of their life is left.
async fn current(source: &Source) -> Keys {
    let mut keys = source.keys.lock().await;
    let left = keys.expires.duration_since(SystemTime::now()).unwrap_or_default();
    if left < source.lifetime / 3 {
        match assume(&source.sts, &source.role, &source.session, source.lifetime).await {
            Ok(fresh) => {
                tracing::info!(role = %source.role, "the function's credentials were renewed");
                *keys = fresh;
            }
            // The old ones may still be good for a while: serve them, say so.
            Err(e) => tracing::warn!(error = %e, "cannot renew the function's credentials"),
        }
    }
    keys.clone()
}

/// One AssumeRole, with the refusal worded as what to fix.
async fn assume(
    sts: &aws_sdk_sts::Client,
    role: &str,
    session: &str,
    lifetime: Duration,
) -> Result<Keys, CredentialsError> {
    let out = match sts
        .assume_role()
        .role_arn(role)
        .role_session_name(session)
        .duration_seconds(SESSION.as_secs() as i32)
        .send()
        .await
    {
        Ok(out) => out,
        Err(err) => {
            let reason = describe_error(&err);
            if immortal_handler_sdk::aws::is_transient(&err) {
                return Err(CredentialsError::Unavailable {
                    role: role.to_owned(),
                    reason,
                });
            }
            let refused = err
                .as_service_error()
                .and_then(aws_sdk_sts::error::ProvideErrorMetadata::code)
                .is_some_and(|c| c == "AccessDenied" || c == "AccessDeniedException");
            if !refused {
                return Err(CredentialsError::Failed {
                    role: role.to_owned(),
                    reason,
                });
            }
            let principal = runner_role(sts)
                .await
                .unwrap_or_else(|| "<the runner's task role ARN>".to_owned());
            return Err(CredentialsError::Refused {
                role: role.to_owned(),
                reason,
                statement: trust_statement(&principal),
            });
        }
    };
    let creds = out.credentials.ok_or_else(|| CredentialsError::Failed {
        role: role.to_owned(),
        reason: "STS returned no credentials".into(),
    })?;
    let sts_expiry = SystemTime::try_from(creds.expiration).unwrap_or_else(|_| SystemTime::now() + SESSION);
    Ok(Keys {
        access_key_id: creds.access_key_id,
        secret_access_key: creds.secret_access_key,
        session_token: creds.session_token,
        expires: sts_expiry.min(SystemTime::now() + lifetime),
    })
}

/// The trust statement that lets `principal` assume a function's role.
pub(crate) fn trust_statement(principal: &str) -> String {
    serde_json::json!({"Effect": "Allow", "Principal": {"AWS": principal}, "Action": "sts:AssumeRole"}).to_string()
}

/// The runner's own role ARN (`arn:aws:iam::ACCOUNT:role/NAME`), from its session.
async fn runner_role(sts: &aws_sdk_sts::Client) -> Option<String> {
    let arn = sts.get_caller_identity().send().await.ok()?.arn?;
    // arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION → arn:aws:iam::ACCOUNT:role/NAME
    let (head, rest) = arn.split_once(":assumed-role/")?;
    let name = rest.split('/').next()?;
    Some(format!("{}:role/{name}", head.replacen(":sts:", ":iam:", 1)))
}

/// `GET /` with the token: the current keys.
async fn serve(
    source: Arc<Source>,
    expected: Arc<String>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, body: String| {
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("static response parts are valid")
    };
    let authorized = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == expected.as_bytes());
    if !authorized {
        return Ok(reply(
            StatusCode::FORBIDDEN,
            r#"{"message":"wrong or missing authorization token"}"#.into(),
        ));
    }
    let keys = current(&source).await;
    let body = serde_json::json!({
        "AccessKeyId": keys.access_key_id,
        "SecretAccessKey": keys.secret_access_key,
        "Token": keys.session_token,
        "Expiration": rfc3339(keys.expires),
        "RoleArn": source.role,
    });
    Ok(reply(StatusCode::OK, body.to_string()))
}

/// `2026-11-23T10:00:00Z`.
fn rfc3339(at: SystemTime) -> String {
    aws_smithy_types::DateTime::from(at)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_settings() {
        assert_eq!(FunctionRole::parse("assume"), Ok(FunctionRole::Assume));
        assert_eq!(FunctionRole::parse("inherit"), Ok(FunctionRole::Inherit));
        assert!(matches!(
            FunctionRole::parse("arn:aws:iam::123456789012:role/fn-role"),
            Ok(FunctionRole::Arn(_))
        ));
        assert!(FunctionRole::parse("fn-role").is_err());
        let statement: serde_json::Value = serde_json::from_str(&trust_statement("arn:aws:iam::1:role/r")).unwrap();
        assert_eq!(statement["Principal"]["AWS"], "arn:aws:iam::1:role/r");
        assert_eq!(statement["Action"], "sts:AssumeRole");
    }

    #[test]
    fn expirations_are_rfc3339() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40Z");
    }
}
