//! A Lambda function reference, parsed once from a name or ARN and passed around as a
//! type; and the defaults that fill a context's gaps when nothing else says.

use crate::arn::Arn;
use crate::error::EnvelopeError;

/// The account id used in ARNs when nothing better is known (the documentation placeholder).
pub const DEFAULT_ACCOUNT: &str = "123456789012";
/// Lambda's default memory size.
pub const DEFAULT_MEMORY_MB: u32 = 128;
/// The unpublished version.
pub const LATEST: &str = "$LATEST";
/// The region when neither a reference nor the environment names one.
pub const DEFAULT_REGION: &str = "us-east-1";

/// What fills an invocation context's gaps when neither the envelope nor the function
/// configuration says: the one place these defaults live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextDefaults {
    /// `AWS_REGION`, else `AWS_DEFAULT_REGION`, else us-east-1.
    pub region: String,
    /// [`DEFAULT_ACCOUNT`].
    pub account: String,
    /// [`DEFAULT_MEMORY_MB`].
    pub memory_mb: u32,
    /// [`LATEST`].
    pub version: String,
}

impl ContextDefaults {
    /// The defaults for this process (the region from the standard variables).
    pub fn from_env() -> Self {
        let region = std::env::var("AWS_REGION")
            .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
            .ok()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| DEFAULT_REGION.to_owned());
        ContextDefaults {
            region,
            account: DEFAULT_ACCOUNT.to_owned(),
            memory_mb: DEFAULT_MEMORY_MB,
            version: LATEST.to_owned(),
        }
    }
}

/// A function reference split out of a Lambda function ARN or name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRef {
    /// The function's name (no qualifier).
    pub name: String,
    /// `$LATEST`, a version number or an alias, when the reference carried one.
    pub qualifier: Option<String>,
    /// The region, when the reference was an ARN.
    pub region: Option<String>,
    /// The account id, when the reference was an ARN.
    pub account: Option<String>,
}

impl FunctionRef {
    /// Parses `NAME`, `NAME:QUALIFIER`, or `arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`.
    ///
    /// ```
    /// use immortal_handler_sdk::function_ref::FunctionRef;
    /// let f = FunctionRef::parse("arn:aws:lambda:eu-west-1:123456789012:function:thumb:live").unwrap();
    /// assert_eq!((f.name.as_str(), f.qualifier.as_deref()), ("thumb", Some("live")));
    /// ```
    pub fn parse(text: &str) -> Result<Self, EnvelopeError> {
        let bad = || EnvelopeError::FunctionRef { value: text.to_owned() };
        if text.starts_with("arn:") {
            let arn = Arn::parse(text).filter(|arn| arn.service == "lambda").ok_or_else(bad)?;
            let (name, qualifier) = match arn.resource_parts()[..] {
                ["function", name] if !name.is_empty() => (name, None),
                ["function", name, qualifier] if !name.is_empty() => (name, Some(qualifier)),
                _ => return Err(bad()),
            };
            return Ok(FunctionRef {
                name: name.to_owned(),
                qualifier: qualifier.filter(|q| !q.is_empty()).map(str::to_owned),
                region: Some(arn.region.to_owned()).filter(|r| !r.is_empty()),
                account: Some(arn.account.to_owned()).filter(|a| !a.is_empty()),
            });
        }
        let mut split = text.splitn(2, ':');
        let name = split.next().unwrap_or_default();
        if name.is_empty() || name.contains('/') {
            return Err(bad());
        }
        Ok(FunctionRef {
            name: name.to_owned(),
            qualifier: split.next().map(str::to_owned).filter(|q| !q.is_empty()),
            region: None,
            account: None,
        })
    }

    /// A reference to function `name`, nothing else known.
    pub fn named(name: impl Into<String>) -> Self {
        FunctionRef {
            name: name.into(),
            qualifier: None,
            region: None,
            account: None,
        }
    }

    /// The ARN of this function in `default_region`/`default_account` (unless the
    /// reference names its own), qualified when a qualifier is known.
    pub fn arn(&self, default_region: &str, default_account: &str) -> String {
        let region = self.region.as_deref().unwrap_or(default_region);
        let account = self.account.as_deref().unwrap_or(default_account);
        match &self.qualifier {
            Some(q) => format!("arn:aws:lambda:{region}:{account}:function:{}:{q}", self.name),
            None => format!("arn:aws:lambda:{region}:{account}:function:{}", self.name),
        }
    }

    /// The ARN, gaps filled from `defaults`.
    pub fn arn_or_default(&self, defaults: &ContextDefaults) -> String {
        self.arn(&defaults.region, &defaults.account)
    }

    /// The `FunctionName` Lambda's API takes for it, unqualified (the qualifier goes
    /// apart): the full ARN when the reference names its region and account (another
    /// account's function), else the name.
    pub fn api_name(&self) -> String {
        match (&self.region, &self.account) {
            (Some(_), Some(_)) => FunctionRef {
                qualifier: None,
                ..self.clone()
            }
            .arn("", ""),
            _ => self.name.clone(),
        }
    }

    /// `NAME` or `NAME:QUALIFIER`, for messages.
    pub fn label(&self) -> String {
        match &self.qualifier {
            Some(q) => format!("{}:{q}", self.name),
            None => self.name.clone(),
        }
    }

    /// The qualifier when it names a version (`$LATEST` or a number), not an alias.
    pub fn version(&self) -> Option<&str> {
        self.qualifier
            .as_deref()
            .filter(|q| *q == LATEST || (!q.is_empty() && q.chars().all(|c| c.is_ascii_digit())))
    }
}

impl std::fmt::Display for FunctionRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_refs() {
        let f = FunctionRef::parse("thumb").unwrap();
        assert_eq!((f.name.as_str(), f.qualifier.clone()), ("thumb", None));
        assert_eq!(f, FunctionRef::named("thumb"));
        let f = FunctionRef::parse("thumb:7").unwrap();
        assert_eq!(f.qualifier.as_deref(), Some("7"));
        assert_eq!(f.version(), Some("7"));
        assert_eq!(f.arn("us-east-1", "1"), "arn:aws:lambda:us-east-1:1:function:thumb:7");
        let f = FunctionRef::parse("arn:aws:lambda:us-east-1:123456789012:function:thumb:$LATEST").unwrap();
        assert_eq!(f.qualifier.as_deref(), Some("$LATEST"));
        assert_eq!(
            f.arn("x", "y"),
            "arn:aws:lambda:us-east-1:123456789012:function:thumb:$LATEST"
        );
        assert_eq!(FunctionRef::parse("thumb:live").unwrap().version(), None, "an alias");
        assert!(FunctionRef::parse("arn:aws:s3:::bucket").is_err());
        assert!(FunctionRef::parse("").is_err());
    }
}
