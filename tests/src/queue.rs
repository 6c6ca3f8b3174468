//! SQS the way Lambda's event source mapping uses it: receive a batch, hand it to a
//! function as an SQS event, delete what the function did not report as failed.

use std::collections::HashMap;

use aws_config::SdkConfig;
use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};
use serde_json::{json, Value};

/// The sender moto's SQS stamps on every message, whoever sent it (`DEFAULT_SENDER_ID`
/// in moto/sqs/models.py). The tests' forwarders and drain workers trust it as an
/// operator (`IMMORTAL_TRUSTED_SENDERS`), since the emulator cannot say who sent what;
/// the tests of the sender check leave it out and craft the senders instead.
pub const EMULATOR_SENDER: &str = "AIDAIT2UOQQY3AUEKVGXU";

/// A queue in the emulator.
#[derive(Clone)]
pub struct Queue {
    /// The client.
    pub sqs: aws_sdk_sqs::Client,
    /// Its URL.
    pub url: String,
    /// Its ARN.
    pub arn: String,
}

impl Queue {
    /// Creates queue `name` with `tags` and queue `attributes`.
    pub async fn create(
        sdk: &SdkConfig,
        name: &str,
        tags: &[(&str, &str)],
        attributes: &[(QueueAttributeName, &str)],
    ) -> Queue {
        let sqs = aws_sdk_sqs::Client::new(sdk);
        let mut create = sqs.create_queue().queue_name(name);
        for (k, v) in tags {
            create = create.tags(*k, *v);
        }
        for (k, v) in attributes {
            create = create.attributes(k.clone(), *v);
        }
        let url = create.send().await.expect("create queue").queue_url.unwrap();
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap()[&QueueAttributeName::QueueArn]
            .clone();
        Queue { sqs, url, arn }
    }

    /// Sends a dead-letter message as Lambda does: the event as the body, plus
    /// `RequestID`, `ErrorCode` (Number) and `ErrorMessage` attributes.
    pub async fn send_dead_letter(&self, event: &str, request_id: &str, error_message: &str) -> String {
        let attr = |data_type: &str, value: &str| {
            MessageAttributeValue::builder()
                .data_type(data_type)
                .string_value(value)
                .build()
                .unwrap()
        };
        self.sqs
            .send_message()
            .queue_url(&self.url)
            .message_body(event)
            .message_attributes("RequestID", attr("String", request_id))
            .message_attributes("ErrorCode", attr("Number", "200"))
            .message_attributes("ErrorMessage", attr("String", error_message))
            .send()
            .await
            .expect("send dead letter")
            .message_id
            .unwrap()
    }

    /// Sends a plain message.
    pub async fn send(&self, body: &str) -> String {
        self.sqs
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .send()
            .await
            .expect("send")
            .message_id
            .unwrap()
    }

    /// Receives up to `max` messages with every attribute.
    pub async fn receive(&self, max: i32, wait_seconds: i32) -> Vec<Message> {
        self.sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max)
            .wait_time_seconds(wait_seconds)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("receive")
            .messages
            .unwrap_or_default()
    }

    /// The SQS event Lambda would hand a function for `messages`.
    pub fn lambda_event(&self, messages: &[Message]) -> Value {
        let records: Vec<Value> = messages
            .iter()
            .map(|m| {
                let attributes: HashMap<String, String> = m
                    .attributes
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v))
                    .collect();
                let message_attributes: serde_json::Map<String, Value> = m
                    .message_attributes
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| {
                        (k, json!({"stringValue": v.string_value, "stringListValues": [], "binaryListValues": [], "dataType": v.data_type}))
                    })
                    .collect();
                json!({
                    "messageId": m.message_id, "receiptHandle": m.receipt_handle, "body": m.body,
                    "attributes": attributes, "messageAttributes": message_attributes,
                    "md5OfBody": m.md5_of_body, "md5OfMessageAttributes": m.md5_of_message_attributes,
                    "eventSource": "aws:sqs", "eventSourceARN": self.arn, "awsRegion": "us-east-1"
                })
            })
            .collect();
        json!({ "Records": records })
    }

    /// Deletes the messages the function's batch response did not list as failures;
    /// returns the ids it kept.
    pub async fn settle(&self, messages: &[Message], response: &Value) -> Vec<String> {
        let failed: Vec<String> = response["batchItemFailures"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let done: Vec<_> = messages
            .iter()
            .filter(|m| !failed.contains(m.message_id.as_ref().unwrap()))
            .collect();
        if !done.is_empty() {
            let mut delete = self.sqs.delete_message_batch().queue_url(&self.url);
            for (i, m) in done.iter().enumerate() {
                delete = delete.entries(
                    aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(m.receipt_handle.clone().unwrap())
                        .build()
                        .unwrap(),
                );
            }
            let out = delete.send().await.expect("delete batch");
            assert!(out.failed.is_empty(), "deletes failed: {:?}", out.failed);
        }
        failed
    }

    /// Makes the `failed` ones among `messages` visible again at once.
    pub async fn release(&self, messages: &[Message], failed: &[String]) {
        for m in messages
            .iter()
            .filter(|m| failed.contains(m.message_id.as_ref().unwrap()))
        {
            let _ = self
                .sqs
                .change_message_visibility()
                .queue_url(&self.url)
                .receipt_handle(m.receipt_handle.clone().unwrap())
                .visibility_timeout(0)
                .send()
                .await;
        }
    }

    /// Every message on the queue now, taken off it, each body as JSON.
    pub async fn take_all(&self) -> Vec<Value> {
        let mut taken = Vec::new();
        loop {
            let messages = self.receive(10, 1).await;
            if messages.is_empty() {
                return taken;
            }
            taken.extend(
                messages
                    .iter()
                    .map(|m| serde_json::from_str(m.body().unwrap_or_default()).expect("a JSON body")),
            );
            self.settle(&messages, &json!({"batchItemFailures": []})).await;
        }
    }

    /// Visible plus in-flight messages.
    pub async fn depth(&self) -> usize {
        let attrs = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap_or_default();
        let n = |k: QueueAttributeName| attrs.get(&k).and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
        n(QueueAttributeName::ApproximateNumberOfMessages)
            + n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
    }
}

/// Lambda's OnFailure record for a timed-out invocation of `function_arn`.
pub fn timeout_record(request_id: &str, function_arn: &str, event: &Value) -> String {
    json!({
        "version": "1.0", "timestamp": "2026-11-22T10:00:00.000Z",
        "requestContext": {"requestId": request_id, "functionArn": format!("{function_arn}:$LATEST"), "condition": "RetriesExhausted", "approximateInvokeCount": 1},
        "requestPayload": event,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {"errorType": "Sandbox.Timedout", "errorMessage": format!("RequestId: {request_id} Error: Task timed out after 3.00 seconds")}
    })
    .to_string()
}
