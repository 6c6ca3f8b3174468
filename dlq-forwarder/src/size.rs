//! The task's size from the function's: Lambda gives a function CPU in proportion to its
//! memory (one vCPU at 1,769 MB, six at 10,240 MB); the task gets the smallest valid
//! Fargate combination holding the function's memory plus the runner's, with at least
//! that CPU share.

/// What the runner (and its code cache, HTTP buffers) needs beside the function.
pub const RUNNER_OVERHEAD_MB: u32 = 256;
/// The memory at which Lambda gives a function one full vCPU.
pub const MB_PER_VCPU: f64 = 1769.0;

/// Fargate's valid task sizes: CPU units, and the memory range (MB) and step for each.
const FARGATE: &[(u32, u32, u32, u32)] = &[
    (256, 512, 2048, 512),
    (512, 1024, 4096, 1024),
    (1024, 2048, 8192, 1024),
    (2048, 4096, 16384, 1024),
    (4096, 8192, 30720, 1024),
    (8192, 16384, 61440, 4096),
    (16384, 32768, 122880, 8192),
];

/// A Fargate task size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSize {
    /// CPU units (1024 per vCPU).
    pub cpu: u32,
    /// Memory in MB.
    pub memory: u32,
}

/// `IMMORTAL_MIN_MEMORY` / `IMMORTAL_MAX_MEMORY`: bounds on the task's memory (MB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SizeLimits {
    /// At least this much.
    pub min_memory: Option<u32>,
    /// At most this much (the largest valid size under it wins when the function needs more).
    pub max_memory: Option<u32>,
}

/// Every valid size, smallest first.
fn sizes() -> impl Iterator<Item = TaskSize> {
    FARGATE.iter().flat_map(|&(cpu, low, high, step)| {
        (low..=high)
            .step_by(step as usize)
            // A quarter vCPU takes 0.5, 1 or 2 GB, not 1.5.
            .filter(move |memory| cpu != 256 || *memory != 1536)
            .map(move |memory| TaskSize { cpu, memory })
    })
}

/// The task for a function configured with `memory_mb`.
///
/// ```
/// use immortal_dlq_forwarder::size::{for_function, SizeLimits, TaskSize};
/// assert_eq!(for_function(128, &SizeLimits::default()), TaskSize { cpu: 256, memory: 512 });
/// assert_eq!(for_function(10240, &SizeLimits::default()), TaskSize { cpu: 8192, memory: 16384 });
/// ```
pub fn for_function(memory_mb: u32, limits: &SizeLimits) -> TaskSize {
    let cpu_share = (f64::from(memory_mb) / MB_PER_VCPU * 1024.0).ceil() as u32;
    let mut memory = memory_mb.saturating_add(RUNNER_OVERHEAD_MB);
    if let Some(min) = limits.min_memory {
        memory = memory.max(min);
    }
    let fits = |s: &TaskSize| limits.max_memory.is_none_or(|max| s.memory <= max);
    sizes()
        .filter(|s| s.memory >= memory && s.cpu >= cpu_share)
        .find(fits)
        .or_else(|| sizes().filter(fits).last())
        .unwrap_or(TaskSize { cpu: 256, memory: 512 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_holds_only_fargates_combinations() {
        let all: Vec<TaskSize> = sizes().collect();
        assert!(all.contains(&TaskSize { cpu: 256, memory: 512 }));
        assert!(all.contains(&TaskSize { cpu: 256, memory: 2048 }));
        assert!(!all.contains(&TaskSize { cpu: 256, memory: 3072 }));
        assert!(all.contains(&TaskSize {
            cpu: 4096,
            memory: 30720
        }));
        assert!(
            !all.contains(&TaskSize {
                cpu: 8192,
                memory: 18432
            }),
            "4 GB steps"
        );
        assert!(all.contains(&TaskSize {
            cpu: 8192,
            memory: 20480
        }));
        assert!(all.contains(&TaskSize {
            cpu: 16384,
            memory: 122880
        }));
        assert_eq!(all.len(), 3 + 4 + 7 + 13 + 23 + 12 + 12);
    }

    #[test]
    fn functions_get_their_memory_and_lambdas_cpu_share() {
        let none = SizeLimits::default();
        assert_eq!(
            for_function(128, &none),
            TaskSize { cpu: 256, memory: 512 },
            "the smallest"
        );
        assert_eq!(for_function(512, &none), TaskSize { cpu: 512, memory: 1024 });
        assert_eq!(
            for_function(1769, &none),
            TaskSize {
                cpu: 1024,
                memory: 2048
            },
            "one vCPU"
        );
        assert!(!sizes().any(|s| s == TaskSize { cpu: 256, memory: 1536 }));
        assert_eq!(
            for_function(3008, &none),
            TaskSize {
                cpu: 2048,
                memory: 4096
            }
        );
        let big = for_function(10240, &none);
        assert!(
            big.memory >= 10240 + RUNNER_OVERHEAD_MB && big.cpu >= 6 * 1024,
            "{big:?}"
        );
    }

    #[test]
    fn limits_clamp_the_memory() {
        let floor = SizeLimits {
            min_memory: Some(4096),
            max_memory: None,
        };
        assert_eq!(for_function(128, &floor), TaskSize { cpu: 512, memory: 4096 });
        let ceiling = SizeLimits {
            min_memory: None,
            max_memory: Some(8192),
        };
        assert_eq!(
            for_function(10240, &ceiling),
            TaskSize {
                cpu: 4096,
                memory: 8192
            },
            "the largest under the ceiling, with the most CPU there"
        );
    }
}
