//! What a run measured, printed as fio prints it: text, or JSON with fio's
//! field names (`docs/BENCH.md` lists them).
//!
//! This module holds what a run measured; `normal` renders it as fio's
//! text and `json` as fio's JSON.

mod json;
mod normal;

use std::time::{Duration, SystemTime};

use ringcache::store::StoreStats;

use super::jobfile::{RwMode, Target};

/// The percentiles fio reports by default (its `percentile_list`).
pub const FIO_PERCENTILES: [f64; 17] = [
    1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95,
    99.99,
];

/// `--output-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// fio's human-readable text.
    #[default]
    Normal,
    /// fio's JSON.
    Json,
}

impl std::str::FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<OutputFormat, String> {
        match s {
            "normal" => Ok(OutputFormat::Normal),
            "json" => Ok(OutputFormat::Json),
            other => Err(format!("unknown output format {other:?} (normal, json)")),
        }
    }
}

/// Completion latency of one direction, in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatStats {
    /// Samples (fio's `N`).
    pub n: u64,
    pub min_ns: u64,
    pub max_ns: u64,
    pub mean_ns: f64,
    /// Sample standard deviation.
    pub stddev_ns: f64,
    /// (percent, ns) for each of [`FIO_PERCENTILES`]; empty without samples.
    pub percentiles: Vec<(f64, u64)>,
}

/// One direction (read or write) of one job entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DirReport {
    /// I/Os counted (after ramp_time; misses excluded).
    pub ios: u64,
    pub bytes: u64,
    /// From the end of ramp_time to the last counted completion.
    pub runtime: Duration,
    pub lat: LatStats,
}

impl DirReport {
    /// Bytes per second over the runtime.
    pub fn bw_bytes(&self) -> f64 {
        let s = self.runtime.as_secs_f64();
        if s > 0.0 { self.bytes as f64 / s } else { 0.0 }
    }

    /// I/Os per second over the runtime.
    pub fn iops(&self) -> f64 {
        let s = self.runtime.as_secs_f64();
        if s > 0.0 { self.ios as f64 / s } else { 0.0 }
    }
}

/// One entry of `jobs[]`: a job clone, or a whole job with group_reporting.
#[derive(Debug, Clone, PartialEq)]
pub struct JobReport {
    pub name: String,
    pub groupid: usize,
    /// Clones this entry covers (fio's `jobs=` in the text header).
    pub clones: u32,
    pub rw: RwMode,
    pub bs: u64,
    pub size: u64,
    pub iodepth: u32,
    pub read: DirReport,
    pub write: DirReport,
    /// Reads that found no cached data, not counted in `read`.
    pub misses: u64,
    /// Wall time of the job's group, ramp_time included.
    pub elapsed: Duration,
    /// How long the untimed prefill took (`None`: none was needed).
    pub prefill: Option<Duration>,
    /// I/O engine underneath the store ("uring" or "psync").
    pub engine: &'static str,
    /// The job section's options as written.
    pub options: Vec<(String, String)>,
    /// What the store counted on this job's cache while the job's group
    /// ran (shared by the jobs of a group on the same file): checkpoints,
    /// flushes, evictions, checksum errors.
    pub store: StoreStats,
}

/// The outcome of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub jobs: Vec<JobReport>,
    pub global_options: Vec<(String, String)>,
    pub started_unix_ms: u64,
    pub target: Target,
    /// Things the user should know (a cache too small for the jobs, ...).
    pub notes: Vec<String>,
}

impl Report {
    /// Render in `format`.
    pub fn render(&self, format: OutputFormat) -> String {
        match format {
            OutputFormat::Normal => self.to_normal(),
            OutputFormat::Json => self.to_fio_json(),
        }
    }
}

/// Now, in milliseconds since the epoch (the report's start time).
pub(super) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
