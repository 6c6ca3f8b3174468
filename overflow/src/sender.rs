//! Who sent a record, and whether that may run the function it names. Anyone allowed to
//! send to a shared overflow queue (every attached function's role is) could otherwise
//! name another function and have it run, as itself, with any event; Lambda itself
//! would ask for `lambda:InvokeFunction` on it.
//!
//! SQS stamps each message with its sender (`SenderId`): for a role session,
//! `ROLE_ID:SESSION`. Lambda sends a function's dead-letter messages and destination
//! records with the function's execution role (in sessions of its own, `awslambda_...`).
//! So a record runs function F only when its sender is a session of F's own role
//! (`ROLE_ID:*`), or an operator listed in `IMMORTAL_TRUSTED_SENDERS` (e.g. for a
//! redrive by hand). Functions that share one role share this trust too.
//! Everything else is refused: not run, left for the parking queue, logged with the
//! sender and the function it claimed.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use immortal_handler_sdk::arn::Arn;
use immortal_handler_sdk::aws::CallFailed;
use immortal_handler_sdk::container::TRUSTED_SENDERS_VAR;
use immortal_handler_sdk::FunctionRef;

use crate::functions::Functions;

/// Why a record may not run the function it names.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    /// The message carries no sender.
    #[error(
        "the message carries no SenderId; only the function's own role (or {TRUSTED_SENDERS_VAR}) may ask for a run"
    )]
    Unknown,
    /// Someone else sent it.
    #[error("sent by {sender}, not by a session of the function's own role ({role_id}:...) nor a sender in {TRUSTED_SENDERS_VAR}")]
    NotTheFunction {
        /// Who sent it.
        sender: String,
        /// The unique id of the function's role.
        role_id: String,
    },
    /// The function's role could not be looked up.
    #[error("cannot tell whether the sender may run it: {0}")]
    Lookup(#[from] CallFailed),
    /// The function's configuration names no usable role.
    #[error("the function's role `{0}` is not a role ARN")]
    NoRole(String),
}

impl SenderError {
    /// Whether the record is refused for good (`false`: the lookup failed, try again).
    pub fn refused(&self) -> bool {
        !matches!(self, SenderError::Lookup(_))
    }
}

/// Checks senders against the functions they name.
pub struct Senders {
    trusted: BTreeSet<String>,
    functions: Arc<Functions>,
    iam: aws_sdk_iam::Client,
    /// Role ARN → its unique id (fixed for a role's life).
    role_ids: Mutex<HashMap<String, String>>,
}

impl Senders {
    /// A checker trusting `trusted` (unique ids or `ROLE_ID:SESSION`s) besides each
    /// function's own role (looked up in `functions`), with an IAM client from `sdk`.
    pub fn new(sdk: &aws_config::SdkConfig, functions: Arc<Functions>, trusted: BTreeSet<String>) -> Self {
        Senders {
            trusted,
            functions,
            iam: aws_sdk_iam::Client::new(sdk),
            role_ids: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `sender` may run `function`.
    pub async fn authenticate(&self, sender: Option<&str>, function: &FunctionRef) -> Result<(), SenderError> {
        let sender = sender.filter(|s| !s.is_empty()).ok_or(SenderError::Unknown)?;
        if is_trusted(&self.trusted, sender) {
            return Ok(());
        }
        let role = self.role_of(function).await?;
        let role_id = self.role_id(&role).await?;
        if is_session_of(sender, &role_id) {
            Ok(())
        } else {
            Err(SenderError::NotTheFunction {
                sender: sender.to_owned(),
                role_id,
            })
        }
    }

    async fn role_of(&self, function: &FunctionRef) -> Result<String, SenderError> {
        let facts = self.functions.facts(function).await?;
        facts.role.clone().ok_or_else(|| SenderError::NoRole(String::new()))
    }

    async fn role_id(&self, role: &str) -> Result<String, SenderError> {
        if let Some(id) = self.role_ids.lock().expect("role ids lock").get(role) {
            return Ok(id.clone());
        }
        let name = role_name(role).ok_or_else(|| SenderError::NoRole(role.to_owned()))?;
        let id = self
            .iam
            .get_role()
            .role_name(name)
            .send()
            .await
            .map_err(|e| {
                let mut failed = CallFailed::new(format!("GetRole({name})"), &e);
                failed
                    .detail
                    .push_str(" (the role that reads the queue needs iam:GetRole on the functions' roles)");
                failed
            })?
            .role
            .map(|r| r.role_id)
            .ok_or_else(|| SenderError::NoRole(role.to_owned()))?;
        self.role_ids
            .lock()
            .expect("role ids lock")
            .insert(role.to_owned(), id.clone());
        Ok(id)
    }
}

/// Whether `sender` is a session of the role whose unique id is `role_id`.
pub fn is_session_of(sender: &str, role_id: &str) -> bool {
    sender
        .split_once(':')
        .is_some_and(|(principal, _)| principal == role_id)
}

/// Whether `sender` is listed: by itself, or by its principal's id (any session).
pub fn is_trusted(trusted: &BTreeSet<String>, sender: &str) -> bool {
    let principal = sender.split_once(':').map_or(sender, |(id, _)| id);
    trusted.contains(sender) || trusted.contains(principal)
}

/// `arn:aws:iam::ACCOUNT:role/PATH/NAME` → `NAME`.
fn role_name(role: &str) -> Option<&str> {
    let arn = Arn::parse(role).filter(|arn| arn.service == "iam")?;
    arn.resource
        .strip_prefix("role/")?
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
}

/// Parses `IMMORTAL_TRUSTED_SENDERS`: comma-separated unique ids (`AIDA...`, `AROA...`)
/// or `ROLE_ID:SESSION`s.
pub fn parse_trusted(text: &str) -> Result<BTreeSet<String>, std::convert::Infallible> {
    Ok(text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sender_lambda_uses_and_the_ones_listed() {
        // As Lambda sends a dead-letter message, a destination record, and as the
        // function's own code would.
        for sender in [
            "AROAEXAMPLE:awslambda_123_20261122101532123",
            "AROAEXAMPLE:awslambda",
            "AROAEXAMPLE:thumb",
        ] {
            assert!(is_session_of(sender, "AROAEXAMPLE"), "{sender}");
        }
        for sender in [
            "AROAOTHER:awslambda",
            "AROAEXAMPLE",
            "AROAEXAMPLEX:thumb",
            "AIDAEXAMPLE",
        ] {
            assert!(!is_session_of(sender, "AROAEXAMPLE"), "{sender}");
        }
        let trusted = parse_trusted(" AIDAOPERATOR , AROAREDRIVE:alice ,").unwrap();
        assert!(is_trusted(&trusted, "AIDAOPERATOR"));
        assert!(is_trusted(&trusted, "AIDAOPERATOR:any-session"));
        assert!(is_trusted(&trusted, "AROAREDRIVE:alice"));
        assert!(!is_trusted(&trusted, "AROAREDRIVE:mallory"), "only the session listed");
        assert!(!is_trusted(&trusted, "AROAEXAMPLE:thumb"));
        assert!(!is_trusted(&BTreeSet::new(), "AIDAOPERATOR"));
    }

    #[test]
    fn role_names() {
        assert_eq!(role_name("arn:aws:iam::1:role/thumb-role"), Some("thumb-role"));
        assert_eq!(
            role_name("arn:aws:iam::1:role/service/path/thumb-role"),
            Some("thumb-role")
        );
        assert_eq!(role_name("arn:aws:iam::1:user/alice"), None);
        assert_eq!(role_name("arn:aws:sqs:r:1:role/x"), None);
    }
}
