//! The attached functions' own dead-letter queues: every queue of the account tagged
//! with the function it belongs to ([`FUNCTION_TAG`]) and [`ENABLED_TAG`]`=true`, as
//! serverless-immortal's `via: deadLetter` creates them. Drain mode drains them beside
//! the queues it is configured with, and its scaler counts them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use immortal_handler_sdk::aws::{self, CallFailed};
use immortal_handler_sdk::container::{ENABLED_TAG, FUNCTION_TAG};
use tokio::task::JoinSet;

/// How long a queue's verdict (attached or not) is remembered: a queue tagged later is
/// found within this long, and a warm scaler reads each queue's tags once per period.
const REMEMBERED: Duration = Duration::from_secs(600);

/// Tag reads at once, the first time many queues are seen.
const READS_AT_ONCE: usize = 16;

/// Whether tags make a queue an attached function's dead-letter queue.
///
/// ```
/// use std::collections::HashMap;
/// use immortal_overflow::attached_queues::is_attached;
/// let tags = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>();
/// assert!(is_attached(&tags(&[("immortal:function", "report"), ("immortal:enabled", "true")])));
/// assert!(!is_attached(&tags(&[("immortal:enabled", "true")])), "the hand-off queue names no function");
/// assert!(!is_attached(&tags(&[("immortal:function", "report")])), "not enabled");
/// ```
pub fn is_attached(tags: &HashMap<String, String>) -> bool {
    tags.get(FUNCTION_TAG).is_some_and(|f| !f.is_empty()) && tags.get(ENABLED_TAG).is_some_and(|v| v == "true")
}

/// Finds the attached dead-letter queues (ListQueues, then ListQueueTags for each queue
/// not seen lately).
pub struct AttachedQueues {
    sqs: aws_sdk_sqs::Client,
    seen: Mutex<HashMap<String, (bool, Instant)>>,
}

impl AttachedQueues {
    /// A finder over `sqs`'s account and region.
    pub fn new(sqs: aws_sdk_sqs::Client) -> Self {
        AttachedQueues {
            sqs,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// The URLs of the attached dead-letter queues, in ListQueues' order. A queue whose
    /// tags cannot be read is left out.
    pub async fn list(&self) -> Result<Vec<String>, CallFailed> {
        let urls = self.all_queues().await?;
        let unknown: Vec<String> = {
            let seen = self.seen.lock().expect("seen lock");
            urls.iter()
                .filter(|url| seen.get(*url).is_none_or(|(_, at)| at.elapsed() >= REMEMBERED))
                .cloned()
                .collect()
        };
        for chunk in unknown.chunks(READS_AT_ONCE) {
            let mut reads = JoinSet::new();
            for url in chunk {
                let (sqs, url) = (self.sqs.clone(), url.clone());
                reads.spawn(async move {
                    let tags = sqs.list_queue_tags().queue_url(&url).send().await;
                    (url, tags)
                });
            }
            while let Some(Ok((url, tags))) = reads.join_next().await {
                let attached = match tags {
                    Ok(tags) => is_attached(&tags.tags.unwrap_or_default()),
                    // Asked again at the next listing.
                    Err(e) if aws::is_transient(&e) => {
                        tracing::warn!(queue = %url, error = %aws::describe_error(&e), "cannot read the queue's tags for now; it is not drained until they are read");
                        continue;
                    }
                    // Deleted since, or not ours (the roles may read only tagged queues).
                    Err(_) => false,
                };
                self.seen
                    .lock()
                    .expect("seen lock")
                    .insert(url, (attached, Instant::now()));
            }
        }
        let seen = self.seen.lock().expect("seen lock");
        Ok(urls
            .into_iter()
            .filter(|url| seen.get(url).is_some_and(|(attached, _)| *attached))
            .collect())
    }

    async fn all_queues(&self) -> Result<Vec<String>, CallFailed> {
        let (mut urls, mut next) = (Vec::new(), None);
        loop {
            let page = self
                .sqs
                .list_queues()
                .max_results(1000)
                .set_next_token(next)
                .send()
                .await
                .map_err(|e| CallFailed::new("ListQueues", &e))?;
            urls.extend(page.queue_urls.unwrap_or_default());
            next = page.next_token;
            if next.is_none() {
                return Ok(urls);
            }
        }
    }
}

/// `configured` then the `attached` queues not among them.
///
/// ```
/// use immortal_overflow::attached_queues::with_attached;
/// let all = with_attached(&["q/a".into(), "q/b".into()], vec!["q/b".into(), "q/c".into()]);
/// assert_eq!(all, ["q/a", "q/b", "q/c"]);
/// ```
pub fn with_attached(configured: &[String], attached: Vec<String>) -> Vec<String> {
    let mut all = configured.to_vec();
    for url in attached {
        if !all.contains(&url) {
            all.push(url);
        }
    }
    all
}
