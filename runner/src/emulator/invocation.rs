//! One invocation, fully resolved: the envelope's context with every gap filled, and
//! what Lambda would tell the runtime about it (headers and environment).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use immortal_handler_sdk::container;
use immortal_handler_sdk::envelope::{Envelope, InvocationContext, Overflow};
use immortal_handler_sdk::function_ref::{ContextDefaults, FunctionRef};

/// How far ahead the deadline header points when there is no time limit (see
/// [`container::NO_DEADLINE_SECS`]).
pub(crate) const NO_DEADLINE: Duration = Duration::from_secs(container::NO_DEADLINE_SECS);

/// What is known about the function apart from the envelope (from the artifact name or GetFunction).
#[derive(Debug, Clone, Default)]
pub struct FunctionFacts {
    /// The function's name.
    pub(crate) name: Option<String>,
    /// The version that runs.
    pub(crate) version: Option<String>,
    /// The qualified ARN, as GetFunction reports it.
    pub(crate) arn: Option<String>,
    /// Configured memory.
    pub(crate) memory_mb: Option<u32>,
    /// Its log group (`LoggingConfig.LogGroup`), when not `/aws/lambda/NAME`.
    pub(crate) log_group: Option<String>,
}

/// An invocation with every field Lambda would have.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// The request id (the original one, kept).
    pub(crate) request_id: String,
    /// Qualified or unqualified function ARN as the caller invoked it.
    pub(crate) invoked_function_arn: String,
    /// Function name.
    pub(crate) function_name: String,
    /// Executed version.
    pub(crate) function_version: String,
    /// Memory in MB.
    pub(crate) memory_mb: u32,
    /// AWS region.
    pub(crate) region: String,
    /// X-Ray trace header.
    pub(crate) trace_id: Option<String>,
    /// Client context, JSON text.
    pub(crate) client_context: Option<String>,
    /// Cognito identity, JSON text.
    pub(crate) identity: Option<String>,
    /// Tenant id.
    pub(crate) tenant_id: Option<String>,
    /// CloudWatch log group.
    pub(crate) log_group: String,
    /// CloudWatch log stream.
    pub(crate) log_stream: String,
    /// Overflow details, when this is an overflow run.
    pub(crate) overflow: Option<Overflow>,
    /// The event, exact bytes.
    pub(crate) event: bytes::Bytes,
}

impl Invocation {
    /// Fills the gaps of `envelope.context` from the `function` it names (its
    /// `function_ref`, parsed once by the caller), then from `facts`, then `defaults`.
    pub fn resolve(
        envelope: &Envelope,
        function: Option<&FunctionRef>,
        facts: &FunctionFacts,
        defaults: &ContextDefaults,
    ) -> Invocation {
        let ctx = &envelope.context;
        // What the invocation says first; the artifact's name is only a guess.
        let function_name = ctx
            .function_name
            .clone()
            .or_else(|| function.map(|f| f.name.clone()))
            .or_else(|| facts.name.clone())
            .unwrap_or_else(|| "function".to_owned());
        let region = function
            .and_then(|f| f.region.clone())
            .unwrap_or_else(|| defaults.region.clone());
        let function_version = facts
            .version
            .clone()
            .or_else(|| ctx.function_version.clone())
            .unwrap_or_else(|| defaults.version.clone());
        let invoked_function_arn = ctx
            .invoked_function_arn
            .clone()
            .or_else(|| facts.arn.clone())
            .unwrap_or_else(|| FunctionRef::named(&function_name).arn(&region, &defaults.account));
        let log_group = ctx
            .log_group_name
            .clone()
            .or_else(|| facts.log_group.clone())
            .unwrap_or_else(|| format!("/aws/lambda/{function_name}"));
        let log_stream = ctx
            .log_stream_name
            .clone()
            .unwrap_or_else(|| default_log_stream(&function_version));
        Invocation {
            request_id: ctx
                .request_id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            invoked_function_arn,
            function_name,
            function_version,
            memory_mb: ctx.memory_limit_in_mb.or(facts.memory_mb).unwrap_or(defaults.memory_mb),
            region,
            trace_id: ctx.xray_trace_id.clone(),
            client_context: ctx.client_context.as_ref().map(|v| v.to_string()),
            identity: ctx.identity.as_ref().map(|v| v.to_string()),
            tenant_id: ctx.tenant_id.clone(),
            log_group,
            log_stream,
            overflow: ctx.overflow.clone(),
            event: bytes::Bytes::copy_from_slice(envelope.event.get().as_bytes()),
        }
    }
}

impl Invocation {
    /// The resolved context as an envelope context (every field filled).
    pub(crate) fn to_context(&self) -> InvocationContext {
        InvocationContext {
            request_id: Some(self.request_id.clone()),
            invoked_function_arn: Some(self.invoked_function_arn.clone()),
            function_name: Some(self.function_name.clone()),
            function_version: Some(self.function_version.clone()),
            memory_limit_in_mb: Some(self.memory_mb),
            xray_trace_id: self.trace_id.clone(),
            client_context: self
                .client_context
                .as_deref()
                .and_then(|c| serde_json::from_str(c).ok()),
            identity: self.identity.as_deref().and_then(|c| serde_json::from_str(c).ok()),
            tenant_id: self.tenant_id.clone(),
            log_group_name: Some(self.log_group.clone()),
            log_stream_name: Some(self.log_stream.clone()),
            overflow: self.overflow.clone(),
            extra: Default::default(),
        }
    }
}

/// `YYYY/MM/DD/[VERSION]<32 hex>`, Lambda's log stream name shape.
fn default_log_stream(version: &str) -> String {
    let date = &aws_smithy_types::DateTime::from(SystemTime::now())
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_else(|_| "1970-01-01".into())[..10];
    format!(
        "{}/[{version}]{}",
        date.replace('-', "/"),
        uuid::Uuid::new_v4().simple()
    )
}

/// Milliseconds since the epoch, `at` from now.
pub(crate) fn epoch_ms_after(after: Duration) -> u64 {
    (SystemTime::now() + after)
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults(region: &str) -> ContextDefaults {
        ContextDefaults {
            region: region.to_owned(),
            ..ContextDefaults::from_env()
        }
    }

    fn resolve(envelope: &Envelope, facts: &FunctionFacts, region: &str) -> Invocation {
        let function = envelope.context.function_ref().unwrap();
        Invocation::resolve(envelope, function.as_ref(), facts, &defaults(region))
    }

    #[test]
    fn defaults_fill_an_empty_context() {
        let envelope = Envelope::from_parts("{}", "").unwrap();
        let facts = FunctionFacts {
            name: Some("thumb".into()),
            ..Default::default()
        };
        let inv = resolve(&envelope, &facts, "eu-west-1");
        assert_eq!(inv.function_name, "thumb");
        assert_eq!(inv.function_version, "$LATEST");
        assert_eq!(inv.memory_mb, 128);
        assert_eq!(
            inv.invoked_function_arn,
            "arn:aws:lambda:eu-west-1:123456789012:function:thumb"
        );
        assert_eq!(inv.log_group, "/aws/lambda/thumb");
        assert!(inv.log_stream.contains("/[$LATEST]"), "{}", inv.log_stream);
        assert_eq!(inv.request_id.len(), 36);
    }

    #[test]
    fn context_wins_over_defaults() {
        let ctx = r#"{"request_id":"r-1","invoked_function_arn":"arn:aws:lambda:ap-south-1:1:function:f:live",
            "memory_limit_in_mb":1024,"client_context":{"custom":{"a":"b"}}}"#;
        let envelope = Envelope::from_parts("{}", ctx).unwrap();
        let inv = resolve(&envelope, &FunctionFacts::default(), "us-east-1");
        assert_eq!(inv.request_id, "r-1");
        assert_eq!(inv.function_name, "f");
        assert_eq!(inv.region, "ap-south-1");
        assert_eq!(inv.memory_mb, 1024);
        assert_eq!(inv.client_context.as_deref(), Some(r#"{"custom":{"a":"b"}}"#));
    }
}
