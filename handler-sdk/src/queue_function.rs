//! Which function a dead-letter queue belongs to: the configured map, else the queue's
//! `immortal:function` tag (read once per queue, cached).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::aws::describe_error;
use crate::container::FUNCTION_TAG;

/// How long a queue without the tag is remembered as such (so adding the tag takes
/// effect without a cold start).
const UNTAGGED_TTL: Duration = Duration::from_secs(60);

/// Parses `queueArn=function,...` (IMMORTAL_FUNCTION_MAP).
pub fn parse_function_map(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (queue, function) = pair
            .split_once('=')
            .filter(|(q, f)| q.starts_with("arn:") && !f.is_empty())
            .ok_or_else(|| {
                format!(
                    "`{pair}`: use queueArn=function, e.g. arn:aws:sqs:us-east-1:123456789012:thumbnail-dlq=thumbnail"
                )
            })?;
        map.insert(queue.to_owned(), function.to_owned());
    }
    Ok(map)
}

/// Resolves queue ARNs to functions.
pub struct QueueFunctions {
    map: BTreeMap<String, String>,
    sqs: aws_sdk_sqs::Client,
    cache: Mutex<HashMap<String, (Option<String>, Instant)>>,
}

impl QueueFunctions {
    /// A resolver with the configured `map` first.
    pub fn new(map: BTreeMap<String, String>, sqs: aws_sdk_sqs::Client) -> Self {
        QueueFunctions {
            map,
            sqs,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The function for `queue_arn`, `None` when the queue names none.
    pub async fn function_for(&self, queue_arn: &str) -> Result<Option<String>, String> {
        if let Some(function) = self.map.get(queue_arn) {
            return Ok(Some(function.clone()));
        }
        if let Some((function, at)) = self.cache.lock().expect("cache lock").get(queue_arn) {
            if function.is_some() || at.elapsed() < UNTAGGED_TTL {
                return Ok(function.clone());
            }
        }
        let function = self.read_tag(queue_arn).await?;
        self.cache
            .lock()
            .expect("cache lock")
            .insert(queue_arn.to_owned(), (function.clone(), Instant::now()));
        Ok(function)
    }

    async fn read_tag(&self, queue_arn: &str) -> Result<Option<String>, String> {
        let parts: Vec<&str> = queue_arn.split(':').collect();
        let [_, _, "sqs", _, account, name] = parts.as_slice() else {
            return Err(format!("`{queue_arn}` is not an SQS queue ARN"));
        };
        let url = self
            .sqs
            .get_queue_url()
            .queue_name(*name)
            .queue_owner_aws_account_id(*account)
            .send()
            .await
            .map_err(|e| format!("GetQueueUrl({name}) failed: {}", describe_error(&e)))?
            .queue_url
            .ok_or_else(|| format!("GetQueueUrl({name}) returned no URL"))?;
        let tags = self
            .sqs
            .list_queue_tags()
            .queue_url(&url)
            .send()
            .await
            .map_err(|e| format!("ListQueueTags({url}) failed: {}", describe_error(&e)))?;
        Ok(tags
            .tags
            .and_then(|t| t.get(FUNCTION_TAG).cloned())
            .filter(|f| !f.is_empty()))
    }
}
