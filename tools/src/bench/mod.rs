//! `ringcache bench`: fio job files run against the store.
//!
//! - [`jobfile`]: a parser for fio's job-file syntax (`[global]` and job
//!   sections; rw, bs, size, iodepth, numjobs, runtime, time_based,
//!   ramp_time, rwmixread, filename and a few more), with fio's size and
//!   time suffixes. Unknown options are warnings that name the option and
//!   its line; bad values are errors that name both.
//! - [`runner`]: runs each job against the embedded store on a cache file
//!   or device, numjobs clones per job, each keeping iodepth I/Os in
//!   flight, with completion latencies in an HDR histogram; or, with
//!   `target=daemon`, through a running `ringcached` (one connection per
//!   job clone, iodepth requests pipelined on it). Its parts: `setup` (the
//!   cache files), `prefill` (the jobs' objects), `workers` (the embedded
//!   target's threads), `daemon` (the daemon target), `schedule` (what a
//!   clone does next, both targets), `stats` (what the threads measured)
//!   and `progress` (the threads of a group and the progress line).
//! - [`report`]: fio-like text output and fio-compatible JSON, so scripts
//!   that read fio's `--output-format=json` read ours.
//!
//! `docs/BENCH.md` is the user-facing contract: which options are
//! understood, what each JSON field means, and where ringcache differs
//! from fio.

mod daemon;
pub mod jobfile;
mod offsets;
mod prefill;
mod progress;
pub mod report;
pub mod runner;
mod schedule;
mod setup;
mod stats;
pub mod units;
mod workers;

pub use jobfile::{Job, JobFile, RwMode, Target, Warning};
pub use report::{DirReport, JobReport, LatStats, OutputFormat, Report};
pub use runner::{RunOptions, run};

use ringcache::store::StoreError;

/// What can go wrong in a benchmark: the job file, or the run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A line that is neither a section header, an option nor a comment,
    /// or an option outside any section.
    #[error("line {line}: {why}")]
    Syntax { line: usize, why: String },
    /// An option with a value it cannot take.
    #[error("line {line}: bad value for {option}: {value:?}: {why}")]
    BadValue {
        line: usize,
        option: String,
        value: String,
        why: String,
    },
    /// A job that cannot run as written (no size, bs larger than size, ...).
    #[error("job {job:?} (line {line}): {why}")]
    Job {
        job: String,
        line: usize,
        why: String,
    },
    /// The job file holds no job section.
    #[error("the job file has no job section (only [global] or [ringcache])")]
    NoJobs,
    /// The daemon (`target=daemon`) refused, failed or could not be
    /// reached.
    #[error("{context}: {why}")]
    Daemon { context: String, why: String },
    /// The operating system refused something (creating the cache file, ...).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The store failed an operation.
    #[error("{context}: {source}")]
    Store {
        context: String,
        #[source]
        source: StoreError,
    },
    /// A worker thread panicked (a bug).
    #[error("a benchmark thread panicked")]
    Panicked,
}

/// `map_err` for a store call: the error with what was being done.
fn store_err(context: impl Into<String>) -> impl FnOnce(StoreError) -> BenchError {
    let context = context.into();
    move |source| BenchError::Store { context, source }
}

/// `map_err` for an I/O call: the error with what was being done.
fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let context = context.into();
    move |source| BenchError::Io { context, source }
}
