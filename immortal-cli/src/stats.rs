//! `immortal stats`: how many invocations overflowed, how they ended, how long they ran,
//! how many attempts they took, and what their Fargate tasks cost at the sizes they ran
//! with.

use std::collections::BTreeMap;

use immortal_overflow::ledger::{Entry, State};
use serde::Serialize;

use crate::view::{attempts, Row};

/// Fargate's on-demand prices the cost is computed with, and where they come from.
pub struct Prices {
    /// Dollars per vCPU-hour.
    pub vcpu_hour: f64,
    /// Dollars per GB-hour of memory.
    pub gb_hour: f64,
    /// Billed per second with this minimum per task.
    pub minimum_ms: u64,
    /// Where the figures come from.
    pub source: &'static str,
}

/// AWS Fargate on demand, Linux/x86, US East (N. Virginia).
pub const FARGATE_US_EAST_1: Prices = Prices {
    vcpu_hour: 0.04048,
    gb_hour: 0.004445,
    minimum_ms: 60_000,
    source: "AWS Fargate on-demand prices, Linux/x86, us-east-1 ($0.04048 per vCPU-hour, $0.004445 per GB-hour, per second with a one-minute minimum: https://aws.amazon.com/fargate/pricing/); other regions cost up to 30% more, Fargate Spot up to 70% less",
};

/// Percentiles of a set of durations.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Durations {
    /// How many.
    pub count: usize,
    /// Median (ms), nearest rank.
    pub p50_ms: Option<u64>,
    /// 95th percentile (ms), nearest rank.
    pub p95_ms: Option<u64>,
    /// Longest (ms).
    pub max_ms: Option<u64>,
}

impl Durations {
    /// Of `values`, in any order.
    pub fn of(mut values: Vec<u64>) -> Durations {
        values.sort_unstable();
        let rank = |p: f64| -> Option<u64> {
            let n = values.len();
            (n > 0).then(|| values[((p * n as f64).ceil() as usize).clamp(1, n) - 1])
        };
        Durations {
            count: values.len(),
            p50_ms: rank(0.50),
            p95_ms: rank(0.95),
            max_ms: values.last().copied(),
        }
    }
}

/// One function's counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FunctionStats {
    /// Invocations.
    pub invocations: u64,
    /// By state.
    pub by_state: BTreeMap<&'static str, u64>,
    /// Their tasks' cost (dollars).
    pub cost_usd: f64,
}

/// What `stats` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Invocations counted.
    pub invocations: u64,
    /// By state (every state, zeros too).
    pub by_state: BTreeMap<&'static str, u64>,
    /// By function.
    pub by_function: BTreeMap<String, FunctionStats>,
    /// From the first start to the end, of the invocations that ended after running.
    pub durations: Durations,
    /// Container attempts in all.
    pub attempts: u64,
    /// The most any invocation took.
    pub max_attempts: u32,
    /// What their tasks cost (dollars), at the sizes they ran with.
    pub cost_usd: f64,
    /// Attempts whose size is not in the ledger (a drain worker's hand-over, entries
    /// written before sizes were kept): not in the cost.
    pub unpriced_attempts: u64,
    /// The prices used.
    pub prices: &'static str,
}

/// The statistics of `entries`.
pub fn of(entries: &[Entry], prices: &Prices) -> Stats {
    let mut by_state: BTreeMap<&'static str, u64> = State::ALL.iter().map(|s| (s.name(), 0)).collect();
    let mut by_function: BTreeMap<String, FunctionStats> = BTreeMap::new();
    let (mut durations, mut total_attempts, mut max_attempts, mut cost, mut unpriced) = (Vec::new(), 0, 0, 0.0, 0);
    for entry in entries {
        *by_state.entry(entry.state.name()).or_default() += 1;
        let function = immortal_overflow::metrics::function_name(&entry.function);
        let own = by_function.entry(function).or_default();
        own.invocations += 1;
        *own.by_state.entry(entry.state.name()).or_default() += 1;
        let row = Row::of(entry);
        if let (true, Some(ms)) = (entry.state.ended(), row.duration_ms) {
            durations.push(ms);
        }
        let all = attempts(entry);
        total_attempts += all.len() as u64;
        max_attempts = max_attempts.max(entry.attempt);
        for attempt in &all {
            match (attempt.facts.cpu, attempt.facts.memory_mb, attempt.ran_ms) {
                (Some(cpu), Some(memory), Some(ran)) => {
                    let hours = ran.max(prices.minimum_ms) as f64 / 3_600_000.0;
                    let dollars =
                        hours * (cpu as f64 / 1024.0 * prices.vcpu_hour + memory as f64 / 1024.0 * prices.gb_hour);
                    cost += dollars;
                    own.cost_usd += dollars;
                }
                // Launched but never ran: ECS bills from the image pull; a minute at most.
                (_, _, None) => {}
                _ => unpriced += 1,
            }
        }
    }
    Stats {
        invocations: entries.len() as u64,
        by_state,
        by_function,
        durations: Durations::of(durations),
        attempts: total_attempts,
        max_attempts,
        cost_usd: cost,
        unpriced_attempts: unpriced,
        prices: prices.source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let d = Durations::of((1..=100).collect());
        assert_eq!(
            (d.count, d.p50_ms, d.p95_ms, d.max_ms),
            (100, Some(50), Some(95), Some(100))
        );
        let one = Durations::of(vec![7]);
        assert_eq!((one.p50_ms, one.p95_ms, one.max_ms), (Some(7), Some(7), Some(7)));
        assert_eq!(Durations::of(Vec::new()).p50_ms, None);
    }
}
