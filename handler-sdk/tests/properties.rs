//! Property tests: the envelope survives any round trip, and the record parser keeps
//! dead-letter events byte for byte.

use immortal_handler_sdk::record::{self, MessageAttribute, QueueMessage, Record};
use immortal_handler_sdk::{Envelope, FunctionRef};
use proptest::prelude::*;
use serde_json::Value;

/// Arbitrary JSON values, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn envelopes_round_trip(event in json(), request_id in "[a-z0-9-]{1,36}", extra in json(), memory in proptest::option::of(128u32..10240)) {
        let context = serde_json::json!({"request_id": request_id, "memory_limit_in_mb": memory, "custom_field": extra});
        let envelope = Envelope::from_parts(&event.to_string(), &context.to_string()).unwrap();
        let again = Envelope::from_json(&envelope.to_json()).unwrap();
        let text = event.to_string();
        prop_assert_eq!(again.event.get(), text.trim());
        prop_assert_eq!(&again.context, &envelope.context);
        prop_assert_eq!(&again.context.extra["custom_field"], &extra);
    }

    #[test]
    fn dead_letter_events_are_kept_byte_for_byte(event in json(), request_id in "[a-f0-9-]{1,36}", code in 100i64..600) {
        let body = serde_json::to_string_pretty(&event).unwrap();
        let attr = |t: &str, v: String| MessageAttribute { data_type: t.into(), string_value: Some(v) };
        let message = QueueMessage {
            message_id: "m".into(),
            body: body.clone(),
            attributes: [("RequestID".to_owned(), attr("String", request_id.clone())), ("ErrorCode".to_owned(), attr("Number", code.to_string()))].into(),
            queue_arn: Some("arn:aws:sqs:us-east-1:123456789012:q".into()),
            sender_id: None,
            sent_ms: None,
        };
        let record = record::parse(&message).unwrap();
        prop_assert!(matches!(record, Record::DeadLetter(_)));
        let envelope = record.to_envelope(&message, Some(&FunctionRef::named("thumb"))).unwrap();
        prop_assert_eq!(envelope.event.get(), body.trim());
        prop_assert_eq!(envelope.context.request_id.as_deref(), Some(request_id.as_str()));
    }
}
