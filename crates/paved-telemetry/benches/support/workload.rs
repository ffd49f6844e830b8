//! A deterministic workload shared by the benchmarks and `tests/memory.rs`: per-task series as
//! the agent reports them, with values that move the way cgroup readings do.
//!
//! Each task has four series, tagged tenant/job/task/node:
//! - `paved_task_cpu_seconds_total`: a counter read from cgroup v2's `usage_usec` (microsecond
//!   resolution), each task using 0.01 to 1 core with ±20 % noise per step;
//! - `paved_task_memory_bytes`: page-aligned, 16 to 512 MiB, moving by up to ±256 pages in 70 %
//!   of the steps;
//! - `paved_task_memory_peak_bytes`: the highest memory so far;
//! - `paved_task_pids`: 1 to 40, changing by one in 2 % of the steps.
#![allow(dead_code)] // each user takes what it needs

use paved_telemetry::Labels;

pub const METRICS: [&str; 4] = [
    "paved_task_cpu_seconds_total",
    "paved_task_memory_bytes",
    "paved_task_memory_peak_bytes",
    "paved_task_pids",
];

/// One task's state.
pub struct Task {
    pub labels: Labels,
    cpu_usec: u64,
    cores: f64,
    memory_pages: i64,
    peak_pages: i64,
    pids: i64,
}

/// A splitmix64 generator: deterministic, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as i64
    }
}

impl Task {
    pub fn new(i: usize, jobs: usize, rng: &mut Rng) -> Self {
        let job = format!("job-{}", i % jobs);
        let labels = Labels::from_pairs([
            ("tenant", format!("tenant-{}", i % 7)),
            ("job", job.clone()),
            ("task", format!("{job}-{i:05x}")),
            ("node", format!("node-{}", i % 13)),
        ]);
        let memory_pages = rng.range(4096, 131_072);
        Task {
            labels,
            cpu_usec: rng.next_u64() % 1_000_000_000,
            cores: 0.01 + rng.unit(),
            memory_pages,
            peak_pages: memory_pages,
            pids: rng.range(1, 40),
        }
    }

    /// Advances one 10 s step; returns the four values in [`METRICS`] order.
    pub fn step(&mut self, rng: &mut Rng) -> [f64; 4] {
        let used = self.cores * 10e6 * (0.8 + 0.4 * rng.unit());
        self.cpu_usec += used as u64;
        if rng.unit() < 0.7 {
            self.memory_pages = (self.memory_pages + rng.range(-256, 256)).max(1);
        }
        self.peak_pages = self.peak_pages.max(self.memory_pages);
        if rng.unit() < 0.02 {
            self.pids = (self.pids + if rng.unit() < 0.5 { -1 } else { 1 }).max(1);
        }
        [
            self.cpu_usec as f64 / 1e6,
            (self.memory_pages * 4096) as f64,
            (self.peak_pages * 4096) as f64,
            self.pids as f64,
        ]
    }
}

/// `tasks` tasks over `jobs` jobs, seeded.
pub fn tasks(tasks: usize, jobs: usize, seed: u64) -> (Vec<Task>, Rng) {
    let mut rng = Rng::new(seed);
    let tasks = (0..tasks).map(|i| Task::new(i, jobs, &mut rng)).collect();
    (tasks, rng)
}
