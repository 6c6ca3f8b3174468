//! `immortal logs`: the function's own log lines of one invocation, from its log group,
//! every attempt's stream in turn (as the runner recorded them in the ledger); with
//! `--follow`, new lines as they come until the invocation ends.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use immortal_handler_sdk::aws::describe_error;
use immortal_overflow::ledger::Ledger;

use crate::error::CliError;
use crate::view;

/// How often `--follow` looks for new lines.
const POLL: Duration = Duration::from_secs(2);

/// Prints the lines of `request_id` to `out` (attempt headers go to stderr).
pub async fn print(
    logs: &aws_sdk_cloudwatchlogs::Client,
    ledger: &Ledger,
    request_id: &str,
    follow: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    // Per attempt: the token to read on from, once its stream has been read.
    let mut read_to: BTreeMap<u32, Option<String>> = BTreeMap::new();
    let mut said_none = false;
    loop {
        let entry = view::entry(ledger, request_id).await?;
        let attempts = view::attempts(&entry);
        let mut new_lines = 0;
        for attempt in &attempts {
            let (Some(group), Some(stream)) = (&attempt.facts.log_group, &attempt.facts.log_stream) else {
                continue;
            };
            if !read_to.contains_key(&attempt.attempt) {
                eprintln!("== attempt {} ({group} {stream})", attempt.attempt);
            }
            let token = read_to.entry(attempt.attempt).or_default();
            new_lines += read_on(logs, group, stream, token, out).await?;
        }
        if read_to.is_empty() && !said_none {
            eprintln!(
                "{request_id}: no attempt has recorded its log stream yet (it has not started running, or its runner wrote the function's lines to its own output: --function-logs stderr)"
            );
            said_none = true;
        }
        out.flush()
            .map_err(|e| CliError::Failed(format!("cannot write the lines: {e}")))?;
        if !follow || (entry.state.ended() && new_lines == 0) {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Prints the stream's lines after `token` and moves `token` on; how many it printed.
async fn read_on(
    logs: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    stream: &str,
    token: &mut Option<String>,
    out: &mut impl Write,
) -> Result<usize, CliError> {
    let mut printed = 0;
    loop {
        let page = match logs
            .get_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .start_from_head(true)
            .set_next_token(token.clone())
            .send()
            .await
        {
            Ok(page) => page,
            // The runner creates its stream with the first batch of lines.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                return Ok(printed)
            }
            Err(e) => {
                return Err(CliError::aws(
                    &format!("cannot read the log stream {group} {stream}"),
                    &describe_error(&e),
                ))
            }
        };
        for event in page.events() {
            if let Some(message) = event.message() {
                writeln!(out, "{}", message.trim_end_matches('\n'))
                    .map_err(|e| CliError::Failed(format!("cannot write the lines: {e}")))?;
                printed += 1;
            }
        }
        // CloudWatch Logs answers with the token it was given once nothing more is there.
        let next = page.next_forward_token().map(str::to_owned);
        let done = next.is_none() || next == *token || page.events().is_empty();
        *token = next.or(token.take());
        if done {
            return Ok(printed);
        }
    }
}
