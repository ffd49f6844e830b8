//! Capacity groups and admission: whether a tenant's job fits its quota in a tier. Separate from
//! placement: a job admitted may still wait for room, and one refused never reaches placement.

use std::fmt;

use paved_types::units::format_memory;

use crate::cluster::{Resources, Tier};

/// An amount of what quotas count. Also used for the quota itself: the most a group may hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Usage {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub tasks: u64,
}

/// A tenant's quota in one tier. Critical groups are reserved capacity (their tasks preempt
/// flex ones to get it); flex groups cap what a tenant may run opportunistically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapacityGroup {
    pub tenant: String,
    pub tier: Tier,
    pub quota: Usage,
}

/// A submission over its group's quota: every exceeded dimension, with figures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "tenant `{tenant}` tier {tier}: {}; raise the quota with `paved tenants quota` or lower instances{}",
    list(exceeded, "; "),
    lower_hint(exceeded)
)]
pub struct QuotaError {
    pub tenant: String,
    pub tier: Tier,
    pub exceeded: Vec<Exceeded>,
}

/// One dimension over quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    pub dimension: Dimension,
    pub quota: u64,
    pub in_use: u64,
    pub asked: u64,
}

/// What a quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dimension {
    Cpu,
    Memory,
    Tasks,
}

/// Admits `asked` on top of `in_use` if it stays within `group`'s quota in every dimension;
/// otherwise names each dimension it would exceed. `in_use` should count the group's admitted
/// tasks whether placed or pending; a job that scales up asks only for the difference.
pub fn check_quota(group: &CapacityGroup, in_use: Usage, asked: Usage) -> Result<(), QuotaError> {
    let dimensions = [
        (
            Dimension::Cpu,
            group.quota.cpu_millis,
            in_use.cpu_millis,
            asked.cpu_millis,
        ),
        (
            Dimension::Memory,
            group.quota.memory_bytes,
            in_use.memory_bytes,
            asked.memory_bytes,
        ),
        (Dimension::Tasks, group.quota.tasks, in_use.tasks, asked.tasks),
    ];
    let exceeded: Vec<Exceeded> = dimensions
        .into_iter()
        .filter(|&(_, quota, in_use, asked)| asked > 0 && in_use.saturating_add(asked) > quota)
        .map(|(dimension, quota, in_use, asked)| Exceeded {
            dimension,
            quota,
            in_use,
            asked,
        })
        .collect();
    if exceeded.is_empty() {
        return Ok(());
    }
    Err(QuotaError {
        tenant: group.tenant.clone(),
        tier: group.tier,
        exceeded,
    })
}

impl QuotaError {
    /// Stable: scripts match on it.
    pub fn code(&self) -> &'static str {
        "quota_exceeded"
    }

    /// Retrying the same submission cannot help until the quota or the usage changes.
    pub fn retryable(&self) -> bool {
        false
    }
}

impl Usage {
    /// What `count` tasks of `resources` each amount to.
    pub fn of(resources: Resources, count: u64) -> Usage {
        Usage {
            cpu_millis: resources.cpu_millis.saturating_mul(count),
            memory_bytes: resources.memory_bytes.saturating_mul(count),
            tasks: count,
        }
    }

    pub fn plus(self, other: Usage) -> Usage {
        Usage {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
            tasks: self.tasks.saturating_add(other.tasks),
        }
    }

    pub fn minus(self, other: Usage) -> Usage {
        Usage {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
            tasks: self.tasks.saturating_sub(other.tasks),
        }
    }
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v| self.dimension.format(v);
        write!(
            f,
            "{} quota {}, in use {}, job asks {} more",
            self.dimension,
            show(self.quota),
            show(self.in_use),
            show(self.asked)
        )
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dimension::Cpu => "cpu",
            Dimension::Memory => "memory",
            Dimension::Tasks => "tasks",
        })
    }
}

impl Dimension {
    /// A value the way manifests write it: cores, binary sizes, plain counts.
    fn format(self, value: u64) -> String {
        match self {
            Dimension::Cpu => format_cores(value),
            Dimension::Memory => format_memory(value),
            Dimension::Tasks => value.to_string(),
        }
    }
}

/// Millicores as cores: "4 cores", "0.5 cores", "1 core".
fn format_cores(millis: u64) -> String {
    let unit = if millis == 1000 { "core" } else { "cores" };
    if millis.is_multiple_of(1000) {
        return format!("{} {unit}", millis / 1000);
    }
    let fraction = format!("{:03}", millis % 1000);
    format!("{}.{} {unit}", millis / 1000, fraction.trim_end_matches('0'))
}

fn list(items: &[Exceeded], separator: &str) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(separator)
}

/// ", cpu or memory": what besides instances the job could ask less of.
fn lower_hint(items: &[Exceeded]) -> String {
    let per_task: Vec<String> = items
        .iter()
        .filter(|e| e.dimension != Dimension::Tasks)
        .map(|e| e.dimension.to_string())
        .collect();
    match per_task.as_slice() {
        [] => String::new(),
        [one] => format!(" or {one}"),
        many => format!(", {}", many.join(" or ")),
    }
}
