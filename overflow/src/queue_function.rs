//! Which function a dead-letter queue belongs to: the configured map, else the queue's
//! `immortal:function` tag (read once per queue, cached), parsed into a [`FunctionRef`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use immortal_handler_sdk::aws::CallFailed;
use immortal_handler_sdk::container::FUNCTION_TAG;
use immortal_handler_sdk::record::QueueArn;
use immortal_handler_sdk::FunctionRef;

/// How long a queue without the tag is remembered as such (so adding the tag takes
/// effect without a cold start).
const UNTAGGED_TTL: Duration = Duration::from_secs(60);

/// Resolves queue ARNs to functions.
pub struct QueueFunctions {
    map: BTreeMap<String, FunctionRef>,
    sqs: aws_sdk_sqs::Client,
    cache: Mutex<HashMap<String, (Option<FunctionRef>, Instant)>>,
}

impl QueueFunctions {
    /// A resolver with the configured `map` first.
    pub fn new(map: BTreeMap<String, FunctionRef>, sqs: aws_sdk_sqs::Client) -> Self {
        QueueFunctions {
            map,
            sqs,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The function for `queue_arn`, `None` when the queue names none.
    pub async fn function_for(&self, queue_arn: &str) -> Result<Option<FunctionRef>, QueueFunctionError> {
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

    async fn read_tag(&self, queue_arn: &str) -> Result<Option<FunctionRef>, QueueFunctionError> {
        let queue = QueueArn::parse(queue_arn).ok_or_else(|| QueueFunctionError::NotAQueue(queue_arn.to_owned()))?;
        let name = &queue.name;
        let url = self
            .sqs
            .get_queue_url()
            .queue_name(name)
            .queue_owner_aws_account_id(&queue.account)
            .send()
            .await
            .map_err(|e| CallFailed::new(format!("GetQueueUrl({name})"), &e))?
            .queue_url
            .ok_or_else(|| CallFailed {
                call: format!("GetQueueUrl({name})"),
                detail: "no URL returned".to_owned(),
            })?;
        let tags = self
            .sqs
            .list_queue_tags()
            .queue_url(&url)
            .send()
            .await
            .map_err(|e| CallFailed::new(format!("ListQueueTags({url})"), &e))?;
        let Some(function) = tags
            .tags
            .and_then(|t| t.get(FUNCTION_TAG).cloned())
            .filter(|f| !f.is_empty())
        else {
            return Ok(None);
        };
        FunctionRef::parse(&function)
            .map(Some)
            .map_err(|source| QueueFunctionError::BadTag {
                queue: queue_arn.to_owned(),
                source,
            })
    }
}

/// Why a dead-letter queue's function could not be found.
#[derive(Debug, thiserror::Error)]
pub enum QueueFunctionError {
    /// The message's queue is not named by an SQS queue ARN.
    #[error("`{0}` is not an SQS queue ARN")]
    NotAQueue(String),
    /// SQS failed a call.
    #[error(transparent)]
    Call(#[from] CallFailed),
    /// The queue's tag does not name a function.
    #[error("the {FUNCTION_TAG} tag of {queue} is unusable: {source}")]
    BadTag {
        /// The queue.
        queue: String,
        /// Why the tag's value is no function.
        source: immortal_handler_sdk::EnvelopeError,
    },
}
