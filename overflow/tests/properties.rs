//! Property tests: the record parser and the relaunch policy take any message without
//! panicking, and an envelope's trip through a container's environment is lossless.

use std::collections::BTreeMap;

use immortal_handler_sdk::record::{self, MessageAttribute, QueueMessage};
use immortal_handler_sdk::{Envelope, FunctionRef};
use immortal_overflow::{Carrier, FailureClass, Lookup};
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
    fn the_parser_never_panics(body in ".{0,200}", names in prop::collection::vec("[A-Za-z]{1,12}", 0..4), value in ".{0,30}") {
        let attributes: BTreeMap<String, MessageAttribute> = names
            .into_iter()
            .map(|n| (n, MessageAttribute { data_type: "String".into(), string_value: Some(value.clone()) }))
            .collect();
        let message = QueueMessage { message_id: "m".into(), body, attributes, queue_arn: None };
        if let Ok(record) = record::parse(&message) {
            let _ = FailureClass::of(&record);
            let _ = record.to_envelope(&message, Some(&FunctionRef::named("f")));
        }
    }

    #[test]
    fn an_envelope_survives_the_trip_into_a_container(
        event in json(),
        pretty in any::<bool>(),
        request_id in "[a-z0-9-]{1,36}",
        extra in json(),
        overflow in proptest::option::of((1u32..9, "[A-Za-z.]{0,20}", ".{0,40}")),
    ) {
        let event_text = if pretty { serde_json::to_string_pretty(&event).unwrap() } else { event.to_string() };
        let mut context = serde_json::json!({"request_id": request_id, "custom_field": extra});
        if let Some((attempt, error_type, message)) = overflow {
            context["overflow"] = serde_json::json!({"attempt": attempt, "error_type": error_type, "error_message": message, "source": "dlq"});
        }
        let envelope = Envelope::from_parts(&event_text, &context.to_string()).unwrap();
        let environment: BTreeMap<String, String> = Carrier::inline(&envelope).to_environment().into_iter().collect();
        let carrier = Carrier::from_environment(&Lookup::new(|name| environment.get(name).cloned())).unwrap().unwrap();
        let again = block_on(carrier.open(|| async { unreachable!("inline needs no S3") })).unwrap();
        prop_assert_eq!(again.event.get(), event_text.trim());
        prop_assert_eq!(&again.context, &envelope.context);

        let stored = Carrier::Stored { at: Carrier::location("payloads", &request_id, "m-1"), digest: Some(immortal_overflow::ledger::digest(event_text.as_bytes())) };
        let environment: BTreeMap<String, String> = stored.to_environment().into_iter().collect();
        let back = Carrier::from_environment(&Lookup::new(|name| environment.get(name).cloned())).unwrap();
        prop_assert_eq!(back, Some(stored));
    }
}

/// Runs a future that never waits (an inline carrier opens without I/O).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}
