//! The ledger as people and scripts read it: one row per invocation (`ls`), every
//! attempt of one (`show`), and the time and duration formats both use. The JSON shapes
//! are a contract (docs/operate.md): fields are added, never renamed or removed.

use futures_util::stream::{self, StreamExt};
use immortal_overflow::ledger::{now_ms, AttemptFacts, Entry, Ledger, State};
use serde::Serialize;

use crate::error::CliError;

/// Entries read at once.
const READS_AT_ONCE: usize = 16;

/// Every entry last written since `since_ms`, newest first.
pub async fn entries(ledger: &Ledger, since_ms: u64) -> Result<Vec<Entry>, CliError> {
    let ids = ledger.entry_ids(since_ms).await?;
    let read: Vec<_> = stream::iter(ids)
        .map(|(id, _)| async move { ledger.read(&id).await })
        .buffer_unordered(READS_AT_ONCE)
        .collect()
        .await;
    let mut entries = Vec::new();
    for result in read {
        // Gone since it was listed (the lifecycle rule): nothing to show.
        if let Some(held) = result? {
            entries.push(held.entry);
        }
    }
    entries.sort_by_key(|e| std::cmp::Reverse((created(e), e.request_id.clone())));
    Ok(entries)
}

/// One invocation's entry, or the error that says there is none.
pub async fn entry(ledger: &Ledger, request_id: &str) -> Result<Entry, CliError> {
    ledger.read(request_id).await?.map(|held| held.entry).ok_or_else(|| {
        CliError::Unknown(format!(
            "the ledger has no invocation {request_id}: `immortal ls` lists the ones it has"
        ))
    })
}

/// When the ledger first held it (the first attempt's launch for older entries).
pub fn created(entry: &Entry) -> u64 {
    [entry.created_ms, first_attempt(entry).launched_ms]
        .into_iter()
        .find(|ms| *ms > 0)
        .unwrap_or(0)
}

fn first_attempt(entry: &Entry) -> &AttemptFacts {
    entry.history.first().map(|h| &h.facts).unwrap_or(&entry.current)
}

/// One attempt, as `show` lists them.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptView {
    /// Its number, from 1.
    pub attempt: u32,
    /// Its ECS task, if one was started.
    pub task: Option<String>,
    /// How it ended (`running` while it runs).
    pub state: String,
    /// Why it ended, when known: the stop code, exit code and reason, or the outcome.
    pub reason: Option<String>,
    /// Its times (ms since the epoch), size and log stream.
    #[serde(flatten)]
    pub facts: AttemptFacts,
    /// How long it ran (ms), or has been running.
    pub ran_ms: Option<u64>,
}

/// Every attempt of `entry`, the first first.
pub fn attempts(entry: &Entry) -> Vec<AttemptView> {
    let mut all: Vec<AttemptView> = entry
        .history
        .iter()
        .map(|h| AttemptView {
            attempt: h.attempt,
            task: h.task.clone(),
            state: "ended".to_owned(),
            reason: Some(h.reason.clone()),
            ran_ms: ran(&h.facts, true),
            facts: h.facts.clone(),
        })
        .collect();
    all.push(AttemptView {
        attempt: entry.attempt,
        task: entry.task.clone(),
        state: entry.state.name().to_owned(),
        reason: entry.reason.clone(),
        ran_ms: ran(&entry.current, entry.state.ended()),
        facts: entry.current.clone(),
    });
    all
}

/// How long an attempt ran: start to end, or to now while it runs.
fn ran(facts: &AttemptFacts, ended: bool) -> Option<u64> {
    let start = if facts.started_ms > 0 {
        facts.started_ms
    } else {
        facts.launched_ms
    };
    match (start, facts.ended_ms, ended) {
        (0, _, _) => None,
        (start, 0, false) => Some(now_ms().saturating_sub(start)),
        (_, 0, true) => None,
        (start, end, _) => Some(end.saturating_sub(start)),
    }
}

/// One row of `ls`.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The original request id.
    pub request_id: String,
    /// The function (its name, with a qualifier when the record had one).
    pub function: String,
    /// `launching`, `running`, `interrupted`, `succeeded`, `failed`, `exhausted`, `stopped`.
    pub state: &'static str,
    /// The current attempt.
    pub attempt: u32,
    /// When the ledger first held it (ms since the epoch).
    pub created_ms: u64,
    /// When its first attempt started running (ms since the epoch), if it did.
    pub started_ms: Option<u64>,
    /// When it ended (ms since the epoch), if it did.
    pub ended_ms: Option<u64>,
    /// From its first start to its end, or to now while it runs (ms).
    pub duration_ms: Option<u64>,
    /// Whether it has not ended.
    pub live: bool,
    /// The current attempt's task.
    pub task: Option<String>,
}

impl Row {
    /// The row of `entry`.
    pub fn of(entry: &Entry) -> Row {
        let started = std::iter::once(first_attempt(entry))
            .chain(entry.history.iter().map(|h| &h.facts))
            .chain(std::iter::once(&entry.current))
            .map(|f| f.started_ms)
            .find(|ms| *ms > 0);
        let ended = (entry.state.ended() && entry.current.ended_ms > 0).then_some(entry.current.ended_ms);
        let duration = match (started, ended, entry.state.ended()) {
            (Some(start), Some(end), _) => Some(end.saturating_sub(start)),
            (Some(start), None, false) => Some(now_ms().saturating_sub(start)),
            _ => None,
        };
        Row {
            request_id: entry.request_id.clone(),
            function: entry.function.clone(),
            state: entry.state.name(),
            attempt: entry.attempt,
            created_ms: created(entry),
            started_ms: started,
            ended_ms: ended,
            duration_ms: duration,
            live: !entry.state.ended(),
            task: entry.task.clone(),
        }
    }
}

/// Whether `entry` passes `ls`'s filters.
pub fn matches(entry: &Entry, state: Option<State>, function: Option<&str>) -> bool {
    state.is_none_or(|s| entry.state == s)
        && function
            .is_none_or(|f| entry.function == f || immortal_overflow::metrics::function_name(&entry.function) == f)
}

/// A table: a header, then rows, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = vec![line(header.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

/// `2026-12-07 21:30:05` (UTC), or `-` for 0.
pub fn time(ms: u64) -> String {
    if ms == 0 {
        return "-".to_owned();
    }
    let at = aws_smithy_types::DateTime::from_millis(ms as i64);
    at.fmt(aws_smithy_types::date_time::Format::DateTime)
        .map(|t| t.replace('T', " ").trim_end_matches('Z').chars().take(19).collect())
        .unwrap_or_else(|_| ms.to_string())
}

/// `850ms`, `12s`, `3m12s`, `1h02m`, `2d03h`.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// The last part of a task ARN (its id), shorter for tables.
pub fn task_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_times_read_as_people_write_them() {
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(12_000), "12s");
        assert_eq!(duration(192_000), "3m12s");
        assert_eq!(duration(3_720_000), "1h02m");
        assert_eq!(duration(183_600_000), "2d03h");
        assert_eq!(time(0), "-");
        assert_eq!(time(1_765_143_005_000), "2025-12-07 21:30:05");
        assert_eq!(task_id("arn:aws:ecs:us-east-1:1:task/c/abc"), "abc");
        let t = table(&["A", "LONGER"], &[vec!["wide cell".into(), "x".into()]]);
        assert_eq!(t, "A          LONGER\nwide cell  x");
    }
}
