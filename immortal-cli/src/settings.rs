//! Where the overflow is: the `IMMORTAL_*` settings the forwarder reads, from this
//! process's environment, or with `--stack NAME` from the overflow stack's forwarder
//! itself (its `ForwarderArn` output, then that function's environment), so that the
//! CLI acts on exactly what the forwarder acts on.

use std::collections::BTreeMap;

use aws_config::SdkConfig;
use immortal_dlq_forwarder::config::Config;
use immortal_handler_sdk::aws::describe_error;
use immortal_handler_sdk::container::PAYLOAD_BUCKET_VAR;
use immortal_overflow::Lookup;

use crate::error::CliError;

/// The output of the overflow stack that names its forwarder.
pub const FORWARDER_OUTPUT: &str = "ForwarderArn";

/// The settings, by name.
pub struct Settings {
    vars: BTreeMap<String, String>,
    /// Where they came from, for error messages.
    from: String,
}

impl Settings {
    /// From the environment, or from `stack`'s forwarder.
    pub async fn load(stack: Option<&str>, sdk: &SdkConfig) -> Result<Settings, CliError> {
        let Some(stack) = stack else {
            return Ok(Settings {
                vars: std::env::vars().filter(|(k, _)| k.starts_with("IMMORTAL_")).collect(),
                from: "the environment (or give --stack NAME)".to_owned(),
            });
        };
        let cloudformation = aws_sdk_cloudformation::Client::new(sdk);
        let described = cloudformation
            .describe_stacks()
            .stack_name(stack)
            .send()
            .await
            .map_err(|e| CliError::aws(&format!("cannot read the stack {stack}"), &describe_error(&e)))?;
        let forwarder = described
            .stacks()
            .first()
            .and_then(|s| s.outputs().iter().find(|o| o.output_key() == Some(FORWARDER_OUTPUT)))
            .and_then(|o| o.output_value())
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "the stack {stack} has no {FORWARDER_OUTPUT} output: is it immortal's overflow stack (serverless.yml)?"
                ))
            })?
            .to_owned();
        let lambda = aws_sdk_lambda::Client::new(sdk);
        let config = lambda
            .get_function_configuration()
            .function_name(&forwarder)
            .send()
            .await
            .map_err(|e| CliError::aws(&format!("cannot read the forwarder {forwarder}"), &describe_error(&e)))?;
        let vars = config
            .environment()
            .and_then(|e| e.variables())
            .map(|v| v.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        Ok(Settings {
            vars,
            from: format!("the forwarder of the stack {stack}"),
        })
    }

    /// The payload bucket, which holds the ledger.
    pub fn bucket(&self) -> Result<String, CliError> {
        self.vars.get(PAYLOAD_BUCKET_VAR).cloned().ok_or_else(|| {
            CliError::Usage(format!(
                "{PAYLOAD_BUCKET_VAR} is not set in {}: set it to the overflow's payload bucket",
                self.from
            ))
        })
    }

    /// Everything the forwarder needs to stop and launch tasks.
    pub fn forwarder(&self) -> Result<Config, CliError> {
        Config::read(&Lookup::new(|name| self.vars.get(name).cloned()))
            .map_err(|e| CliError::Usage(format!("{e} (read from {})", self.from)))
    }
}
