//! Property tests: the record parser takes any message without panicking; records
//! mutated from AWS's documented samples all reach the relaunch policy and get the
//! class their error says; an envelope's trip through a container's environment is
//! lossless.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

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

/// The error messages Lambda writes (and one a handler writes to overflow), each with
/// the class the relaunch policy must give it; anything else is a plain error.
fn error_message() -> impl Strategy<Value = (String, FailureClass)> {
    prop_oneof![
        (1u32..=900, "[0-9a-f-]{36}").prop_map(|(s, id)| (
            format!("RequestId: {id} Error: Task timed out after {s}.00 seconds"),
            FailureClass::Timeout
        )),
        "[A-Za-z ]{0,30}".prop_map(|m| (format!("Immortal.Overflow: {m}"), FailureClass::Overflow)),
        "[A-Za-z ]{0,30}".prop_map(|m| (format!("KeyError: {m}"), FailureClass::Error)),
    ]
}

/// A dead-letter message: AWS's documented shape (the fixture), with its event, request
/// id and error message drawn.
fn dead_letter(event: &Value, request_id: &str, error: &str) -> QueueMessage {
    let mut message: Value =
        serde_json::from_str(include_str!("../../handler-sdk/fixtures/sqs-dlq-timeout-new.json")).unwrap();
    message["body"] = Value::String(event.to_string());
    message["messageAttributes"]["RequestID"]["stringValue"] = Value::String(request_id.to_owned());
    message["messageAttributes"]["ErrorMessage"]["stringValue"] = Value::String(error.to_owned());
    serde_json::from_value(message).unwrap()
}

/// An OnFailure destination record: AWS's documented shape (the fixture), with its
/// payload, request id, error type and message drawn.
fn destination(event: &Value, request_id: &str, error_type: &str, error: &str) -> QueueMessage {
    let mut record: Value = serde_json::from_str(include_str!(
        "../../handler-sdk/fixtures/destination-retries-exhausted-timeout.json"
    ))
    .unwrap();
    record["requestContext"]["requestId"] = Value::String(request_id.to_owned());
    record["requestPayload"] = event.clone();
    record["responsePayload"] = serde_json::json!({"errorType": error_type, "errorMessage": error});
    QueueMessage {
        message_id: "m".into(),
        body: record.to_string(),
        attributes: BTreeMap::new(),
        queue_arn: None,
        sender_id: None,
        sent_ms: None,
    }
}

/// How many generated records reached the relaunch policy, of how many were drawn.
static DRAWN: AtomicUsize = AtomicUsize::new(0);
static CLASSIFIED: AtomicUsize = AtomicUsize::new(0);

proptest! {
    #[test]
    fn the_parser_never_panics(body in ".{0,200}", names in prop::collection::vec("[A-Za-z]{1,12}", 0..4), value in ".{0,30}") {
        // Anything at all: parsed or refused, never a panic (the near-valid records below
        // are what reach the policy).
        let attributes: BTreeMap<String, MessageAttribute> = names
            .into_iter()
            .map(|n| (n, MessageAttribute { data_type: "String".into(), string_value: Some(value.clone()) }))
            .collect();
        let message = QueueMessage { message_id: "m".into(), body, attributes, queue_arn: None, sender_id: None, sent_ms: None };
        let _refused_or_parsed = record::parse(&message).is_ok();
    }
}

/// Near-valid records, mutated from AWS's documented samples: every one parses, the
/// relaunch policy gives it the class its error says, and its envelope carries the
/// original event and request id. Asserts that (nearly) every drawn case got that far.
#[test]
fn documented_records_with_drawn_fields_reach_the_relaunch_policy_with_the_right_class() {
    let strategy = (
        json(),
        "[0-9a-f-]{36}",
        error_message(),
        any::<bool>(),
        prop_oneof![
            Just("Sandbox.Timedout"),
            Just("Immortal.Overflow"),
            Just("Runtime.Unknown")
        ],
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(200));
    runner
        .run(
            &strategy,
            |(event, request_id, (error, class), as_destination, error_type)| {
                DRAWN.fetch_add(1, Ordering::Relaxed);
                let (message, expected) = if as_destination {
                    // The destination's errorType decides first; its message second.
                    let expected = match error_type {
                        "Sandbox.Timedout" => FailureClass::Timeout,
                        _ if class == FailureClass::Timeout => FailureClass::Timeout,
                        "Immortal.Overflow" => FailureClass::Overflow,
                        _ => class,
                    };
                    (destination(&event, &request_id, error_type, &error), expected)
                } else {
                    (dead_letter(&event, &request_id, &error), class)
                };
                let parsed = record::parse(&message);
                prop_assert!(
                    parsed.is_ok(),
                    "a documented record with drawn fields parses: {:?}",
                    parsed.err()
                );
                let parsed = parsed.unwrap();
                prop_assert_eq!(FailureClass::of(&parsed), expected, "{}", error);
                CLASSIFIED.fetch_add(1, Ordering::Relaxed);
                let envelope = parsed.to_envelope(&message, Some(&FunctionRef::named("thumbnail")));
                prop_assert!(envelope.is_ok(), "{:?}", envelope.err());
                let envelope = envelope.unwrap();
                prop_assert_eq!(serde_json::from_str::<Value>(envelope.event.get()).unwrap(), event);
                prop_assert_eq!(envelope.context.request_id.as_deref(), Some(request_id.as_str()));
                Ok(())
            },
        )
        .unwrap();
    let (drawn, classified) = (DRAWN.load(Ordering::Relaxed), CLASSIFIED.load(Ordering::Relaxed));
    eprintln!("{classified} of {drawn} drawn records reached the relaunch policy");
    assert!(
        drawn >= 200 && classified * 10 >= drawn * 9,
        "{classified} of {drawn} reached the policy"
    );
}

proptest! {
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

        let stored = Carrier::Stored { at: immortal_handler_sdk::envelope::S3Location { bucket: "payloads".into(), key: format!("envelopes/{request_id}/attempt-1.json") }, digest: Some(immortal_overflow::ledger::digest(event_text.as_bytes())) };
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
