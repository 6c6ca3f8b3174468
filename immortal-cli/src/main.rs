//! `immortal`: see and steer the invocations the overflow relaunched, from the ledger in
//! the payload bucket: list them, show one with every attempt, read its function's log
//! lines, stop a running one, replay an ended one, and count what ran and what it cost.
//!
//! Thin over the libraries: the ledger is `immortal-overflow`'s, stop and replay are the
//! forwarder's own (`immortal-dlq-forwarder::steer`), so the CLI acts exactly as the
//! forwarder and the reconciler do.

mod error;
mod logs;
mod settings;
mod stats;
mod view;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use immortal_dlq_forwarder::forward::Forwarder;
use immortal_dlq_forwarder::reconcile::Reconciled;
use immortal_handler_sdk::aws;
use immortal_handler_sdk::container::STOPPED_ERROR_TYPE;
use immortal_overflow::ledger::{now_ms, Ledger, State};

use crate::error::CliError;
use crate::settings::Settings;
use crate::view::{duration, table, task_id, time, Row};

/// See and steer the invocations immortal relaunched.
///
/// Reads the overflow's settings (IMMORTAL_PAYLOAD_BUCKET, and for stop and replay what
/// the forwarder needs to start tasks) from the environment, or with --stack from the
/// overflow stack's forwarder. AWS credentials and region come from the usual chain
/// (AWS_PROFILE, AWS_REGION...).
#[derive(Debug, Parser)]
#[command(name = "immortal", version, about, long_about)]
struct Cli {
    /// Read the settings from this overflow stack (its ForwarderArn output, then that
    /// function's environment) instead of the environment.
    #[arg(long, global = true, value_name = "NAME")]
    stack: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One row per relaunched invocation, newest first.
    Ls {
        /// Only those in this state (launching, running, interrupted, succeeded, failed,
        /// exhausted, stopped).
        #[arg(long, value_name = "STATE")]
        state: Option<State>,
        /// Only this function's (its name).
        #[arg(long, value_name = "NAME")]
        function: Option<String>,
        /// Only those the ledger wrote in this long (e.g. 30m, 24h, 7d).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        since: Option<Duration>,
        /// JSON (an array of rows: docs/operate.md) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One invocation: its ledger entry, every attempt (task, times, how it ended, log
    /// stream), its envelope and where its outcome goes.
    Show {
        /// The original request id.
        request_id: String,
        /// JSON (docs/operate.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The function's own log lines of one invocation, every attempt's.
    Logs {
        /// The original request id.
        request_id: String,
        /// Keep printing new lines until the invocation ends.
        #[arg(long, short)]
        follow: bool,
    },
    /// Stop a running invocation: end it in the ledger (nothing relaunches it), stop its
    /// task, and send its failure record (errorType Immortal.Stopped).
    Stop {
        /// The original request id.
        request_id: String,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run an ended invocation again (failed, exhausted or stopped; succeeded with
    /// --force) as its next attempt, from its stored event and context.
    Replay {
        /// The original request id.
        request_id: String,
        /// Replay a succeeded invocation too.
        #[arg(long)]
        force: bool,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Counts by state and function, durations, attempts, and the Fargate cost of the
    /// runs at the sizes they ran with.
    Stats {
        /// Only invocations the ledger wrote in this long (e.g. 24h, 7d).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        since: Option<Duration>,
        /// JSON (docs/operate.md) instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// The time `since` ago (ms since the epoch), 0 for "since always".
fn since_ms(since: Option<Duration>) -> u64 {
    since
        .map(|d| now_ms().saturating_sub(d.as_millis() as u64))
        .unwrap_or(0)
}

/// `90s`, `30m`, `24h`, `7d`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is no duration: a number and s, m, h or d (30m, 24h, 7d)"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "`{text}` is no duration: a number and s, m, h or d (30m, 24h, 7d)"
            ))
        }
    };
    Ok(Duration::from_secs(n * seconds))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if std::env::var_os("RUST_LOG").is_none() {
        // The libraries' progress lines are for services; a person wants the result
        // (set while the runtime has no other thread).
        std::env::set_var("RUST_LOG", "warn");
    }
    immortal_handler_sdk::logging::init_cli();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("immortal: {e}");
            ExitCode::from(e.code() as u8)
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let sdk = aws::load().await;
    let settings = Settings::load(cli.stack.as_deref(), &sdk).await?;
    let ledger = || -> Result<Ledger, CliError> { Ok(Ledger::new(aws::s3_client(&sdk), settings.bucket()?)) };
    let forwarder = || -> Result<Forwarder, CliError> { Ok(Forwarder::new(settings.forwarder()?, &sdk)) };
    let mut out = std::io::stdout().lock();
    let print = |out: &mut std::io::StdoutLock<'_>, text: String| {
        writeln!(out, "{text}").map_err(|e| CliError::Failed(format!("cannot write the output: {e}")))
    };
    match cli.command {
        Command::Ls {
            state,
            function,
            since,
            json,
        } => {
            let since_ms = since_ms(since);
            let entries = view::entries(&ledger()?, since_ms).await?;
            let rows: Vec<Row> = entries
                .iter()
                .filter(|e| view::matches(e, state, function.as_deref()))
                .map(Row::of)
                .collect();
            if json {
                return print(&mut out, serde_json::to_string_pretty(&rows).expect("rows serialize"));
            }
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.request_id.clone(),
                        r.function.clone(),
                        r.state.to_owned(),
                        r.attempt.to_string(),
                        time(r.created_ms),
                        match (r.duration_ms, r.live) {
                            (Some(ms), true) => format!("running for {}", duration(ms)),
                            (Some(ms), false) => format!("took {}", duration(ms)),
                            (None, _) => "-".to_owned(),
                        },
                        r.task.as_deref().map(task_id).unwrap_or("-").to_owned(),
                    ]
                })
                .collect();
            let header = [
                "REQUEST ID",
                "FUNCTION",
                "STATE",
                "ATTEMPT",
                "CREATED (UTC)",
                "DURATION",
                "TASK",
            ];
            print(&mut out, table(&header, &cells))
        }
        Command::Show { request_id, json } => {
            let entry = view::entry(&ledger()?, &request_id).await?;
            let attempts = view::attempts(&entry);
            let config = settings.forwarder().ok();
            let destination = |which: fn(&immortal_overflow::OverflowSettings) -> Option<String>| {
                config.as_ref().and_then(|c| which(&c.overflow))
            };
            let on_success = destination(|o| o.on_success.as_ref().map(|t| t.to_string()));
            let on_failure = destination(|o| o.on_failure.as_ref().map(|t| t.to_string()));
            if json {
                let doc = serde_json::json!({
                    "request_id": entry.request_id,
                    "function": entry.function,
                    "state": entry.state.name(),
                    "attempt": entry.attempt,
                    "row": Row::of(&entry),
                    "attempts": attempts,
                    "envelope": {"location": entry.envelope, "sha256": entry.digest},
                    "outcome_destination": {"on_success": on_success, "on_failure": on_failure},
                    "entry": entry,
                });
                return print(
                    &mut out,
                    serde_json::to_string_pretty(&doc).expect("a document serializes"),
                );
            }
            let row = Row::of(&entry);
            let mut lines = vec![
                format!("request id   {}", entry.request_id),
                format!("function     {}", entry.function),
                format!("state        {} (attempt {})", entry.state.name(), entry.attempt),
                format!("created      {}", time(row.created_ms)),
            ];
            if let Some(ms) = row.duration_ms {
                lines.push(format!(
                    "{}     {}",
                    if row.live { "running" } else { "took   " },
                    duration(ms)
                ));
            }
            if let Some(reason) = &entry.reason {
                lines.push(format!("reason       {reason}"));
            }
            lines.push(format!("envelope     {} (sha256 {})", entry.envelope, entry.digest));
            lines.push(format!(
                "outcomes     success → {}, failure → {}",
                on_success.as_deref().unwrap_or("(none set)"),
                on_failure.as_deref().unwrap_or("(none set)")
            ));
            lines.push(String::new());
            let cells: Vec<Vec<String>> = attempts
                .iter()
                .map(|a| {
                    vec![
                        a.attempt.to_string(),
                        a.state.clone(),
                        a.task.as_deref().map(task_id).unwrap_or("-").to_owned(),
                        time(a.facts.started_ms.max(a.facts.launched_ms)),
                        time(a.facts.ended_ms),
                        a.ran_ms.map(duration).unwrap_or_else(|| "-".into()),
                        match (&a.facts.log_group, &a.facts.log_stream) {
                            (Some(g), Some(s)) => format!("{g} {s}"),
                            _ => "-".into(),
                        },
                        a.reason.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            let header = [
                "ATTEMPT",
                "STATE",
                "TASK",
                "STARTED",
                "ENDED",
                "RAN",
                "LOGS",
                "HOW IT ENDED",
            ];
            lines.push(table(&header, &cells));
            print(&mut out, lines.join("\n"))
        }
        Command::Logs { request_id, follow } => {
            let logs = aws_sdk_cloudwatchlogs::Client::new(&sdk);
            logs::print(&logs, &ledger()?, &request_id, follow, &mut out).await
        }
        Command::Stop { request_id, json } => {
            let by = std::env::var("USER").unwrap_or_else(|_| "someone".into());
            let stopped = forwarder()?.stop(&request_id, &by).await?;
            if json {
                return print(&mut out, serde_json::to_string_pretty(&stopped).expect("serializes"));
            }
            print(
                &mut out,
                format!(
                    "stopped {} at attempt {}{}; failure record ({STOPPED_ERROR_TYPE}) {}",
                    stopped.request_id,
                    stopped.attempt,
                    stopped
                        .task
                        .as_deref()
                        .map(|t| format!(" (task {t})"))
                        .unwrap_or_default(),
                    match &stopped.record_sent_to {
                        Some(to) => format!("sent to {to}"),
                        None => "not sent: no failure destination (IMMORTAL_ON_FAILURE) is set".into(),
                    }
                ),
            )
        }
        Command::Replay {
            request_id,
            force,
            json,
        } => match forwarder()?.replay(&request_id, force).await? {
            Reconciled::Relaunched {
                request_id,
                attempt,
                task_arn,
            } => {
                if json {
                    let doc = serde_json::json!({"request_id": request_id, "attempt": attempt, "task": task_arn});
                    return print(&mut out, serde_json::to_string_pretty(&doc).expect("serializes"));
                }
                print(
                    &mut out,
                    format!("replayed {request_id} as attempt {attempt} in task {task_arn}"),
                )
            }
            other => Err(CliError::Failed(format!("unexpected: {other:?}"))),
        },
        Command::Stats { since, json } => {
            let since_ms = since_ms(since);
            let entries = view::entries(&ledger()?, since_ms).await?;
            let stats = stats::of(&entries, &stats::FARGATE_US_EAST_1);
            if json {
                return print(&mut out, serde_json::to_string_pretty(&stats).expect("serializes"));
            }
            let mut lines = vec![format!(
                "{} invocations{}",
                stats.invocations,
                if since_ms > 0 {
                    format!(" since {} UTC", time(since_ms))
                } else {
                    String::new()
                }
            )];
            let states: Vec<&str> = State::ALL.iter().map(|s| s.name()).collect();
            let mut header = vec!["FUNCTION", "INVOCATIONS"];
            header.extend(&states);
            header.push("COST (USD)");
            let mut cells: Vec<Vec<String>> = stats
                .by_function
                .iter()
                .map(|(name, f)| {
                    let mut row = vec![name.clone(), f.invocations.to_string()];
                    row.extend(
                        states
                            .iter()
                            .map(|s| f.by_state.get(s).copied().unwrap_or(0).to_string()),
                    );
                    row.push(format!("{:.4}", f.cost_usd));
                    row
                })
                .collect();
            let mut total = vec!["(all)".to_owned(), stats.invocations.to_string()];
            total.extend(states.iter().map(|s| stats.by_state[s].to_string()));
            total.push(format!("{:.4}", stats.cost_usd));
            cells.push(total);
            lines.push(table(&header, &cells));
            let d = &stats.durations;
            let opt = |ms: Option<u64>| ms.map(duration).unwrap_or_else(|| "-".into());
            lines.push(format!(
                "durations    p50 {}  p95 {}  max {}  (of {} ended after running)",
                opt(d.p50_ms),
                opt(d.p95_ms),
                opt(d.max_ms),
                d.count
            ));
            lines.push(format!(
                "attempts     {} in all, at most {} for one invocation",
                stats.attempts, stats.max_attempts
            ));
            lines.push(format!("cost         ${:.4} at {}", stats.cost_usd, stats.prices));
            if stats.unpriced_attempts > 0 {
                lines.push(format!(
                    "             ({} attempts without a recorded size are not counted)",
                    stats.unpriced_attempts
                ));
            }
            print(&mut out, lines.join("\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed_and_durations_parse() {
        Cli::command().debug_assert();
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_duration("7w").unwrap_err().contains("30m, 24h, 7d"));
        assert!(parse_duration("h").is_err());
        let cli = Cli::try_parse_from(["immortal", "ls", "--state", "running", "--since", "24h"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Ls {
                state: Some(State::Running),
                ..
            }
        ));
        let bad = Cli::try_parse_from(["immortal", "ls", "--state", "asleep"])
            .unwrap_err()
            .to_string();
        assert!(bad.contains("use one of launching, running"), "{bad}");
    }
}
