//! Amazon Resource Names, split once: `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE`.
//! Every part of immortal that reads an ARN (functions, layers, queues, destinations)
//! goes through [`Arn::parse`] rather than counting colons itself.

/// An ARN's fields, borrowed from its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arn<'a> {
    /// `aws`, `aws-cn`, `aws-us-gov`...
    pub partition: &'a str,
    /// `lambda`, `sqs`, `sns`, `events`...
    pub service: &'a str,
    /// May be empty (global services).
    pub region: &'a str,
    /// May be empty.
    pub account: &'a str,
    /// Everything after the account, colons included (`function:NAME:QUALIFIER`).
    pub resource: &'a str,
}

impl<'a> Arn<'a> {
    /// Splits `text`; `None` unless it has the six fields of an ARN, with a partition, a
    /// service and a resource.
    ///
    /// ```
    /// use immortal_handler_sdk::arn::Arn;
    /// let arn = Arn::parse("arn:aws:lambda:eu-west-1:123456789012:function:thumb:live").unwrap();
    /// assert_eq!((arn.service, arn.account), ("lambda", "123456789012"));
    /// assert_eq!(arn.resource_parts(), ["function", "thumb", "live"]);
    /// assert!(Arn::parse("thumb").is_none());
    /// ```
    pub fn parse(text: &'a str) -> Option<Arn<'a>> {
        let mut fields = text.strip_prefix("arn:")?.splitn(5, ':');
        let arn = Arn {
            partition: fields.next()?,
            service: fields.next()?,
            region: fields.next()?,
            account: fields.next()?,
            resource: fields.next()?,
        };
        (!arn.partition.is_empty() && !arn.service.is_empty() && !arn.resource.is_empty()).then_some(arn)
    }

    /// The resource's `:`-separated parts: `["function", NAME, QUALIFIER]`,
    /// `["layer", NAME, VERSION]`, `[QUEUE]`.
    pub fn resource_parts(&self) -> Vec<&'a str> {
        self.resource.split(':').collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_refusals() {
        let q = Arn::parse("arn:aws-cn:sqs:cn-north-1:1:q").unwrap();
        assert_eq!(
            (q.partition, q.service, q.region, q.account, q.resource),
            ("aws-cn", "sqs", "cn-north-1", "1", "q")
        );
        let bus = Arn::parse("arn:aws:events:us-east-1:1:event-bus/default").unwrap();
        assert_eq!(bus.resource, "event-bus/default");
        let global = Arn::parse("arn:aws:iam::1:role/r").unwrap();
        assert_eq!((global.region, global.resource), ("", "role/r"));
        for bad in [
            "",
            "arn:",
            "arn:aws:sqs",
            "arn:aws:sqs:r:1",
            "arn:aws:sqs:r:1:",
            "arn::sqs:r:1:q",
            "https://x/1/q",
        ] {
            assert_eq!(Arn::parse(bad), None, "{bad}");
        }
    }
}
