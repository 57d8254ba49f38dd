//! What the threads measure, and how it becomes the report's entries.
//!
//! Each thread keeps its own [`ThreadStats`] (counts, bytes, latency sums
//! and an HDR histogram per direction), merged per clone once the threads
//! are joined and per job with group_reporting. [`job_reports`] turns them
//! into `jobs[]` entries, the same for both targets; [`stats_delta`] is
//! what the store counted while a group ran.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringcache::store::StoreStats;

use super::jobfile::Job;
use super::report::{DirReport, FIO_PERCENTILES, JobReport, LatStats};

/// Histogram range: 1 ns to 60 s, 3 significant digits (longer I/Os are
/// recorded as 60 s; their exact value still counts in max and mean).
const HIST_MAX_NS: u64 = 60_000_000_000;

/// Which way an I/O went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dir {
    Read,
    Write,
}

/// Latency and volume of one direction, as accumulated by one thread.
pub(super) struct DirAcc {
    ios: u64,
    bytes: u64,
    min_ns: u64,
    max_ns: u64,
    sum_ns: u128,
    sum_sq_ns: u128,
    hist: Histogram<u64>,
}

impl DirAcc {
    fn new() -> DirAcc {
        DirAcc {
            ios: 0,
            bytes: 0,
            min_ns: u64::MAX,
            max_ns: 0,
            sum_ns: 0,
            sum_sq_ns: 0,
            #[allow(clippy::expect_used)] // constant, valid bounds
            hist: Histogram::new_with_bounds(1, HIST_MAX_NS, 3).expect("histogram bounds"),
        }
    }

    fn record(&mut self, ns: u64, bytes: u64) {
        self.ios += 1;
        self.bytes += bytes;
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
        self.sum_ns += u128::from(ns);
        self.sum_sq_ns += u128::from(ns) * u128::from(ns);
        self.hist.saturating_record(ns.max(1));
    }

    fn merge(&mut self, o: &DirAcc) {
        self.ios += o.ios;
        self.bytes += o.bytes;
        self.min_ns = self.min_ns.min(o.min_ns);
        self.max_ns = self.max_ns.max(o.max_ns);
        self.sum_ns += o.sum_ns;
        self.sum_sq_ns += o.sum_sq_ns;
        // Same bounds on both sides: cannot fail.
        let _ = self.hist.add(&o.hist);
    }

    /// The report of a direction that ran for `runtime` (none when it
    /// did no I/O).
    fn report_over(&self, runtime: Duration) -> DirReport {
        self.report(if self.ios > 0 {
            runtime
        } else {
            Duration::ZERO
        })
    }

    fn report(&self, runtime: Duration) -> DirReport {
        if self.ios == 0 {
            return DirReport::default();
        }
        let n = self.ios as f64;
        let mean = self.sum_ns as f64 / n;
        let var = if self.ios > 1 {
            ((self.sum_sq_ns as f64 - self.sum_ns as f64 * mean) / (n - 1.0)).max(0.0)
        } else {
            0.0
        };
        let percentiles = FIO_PERCENTILES
            .iter()
            .map(|&p| (p, self.hist.value_at_percentile(p).min(self.max_ns)))
            .collect();
        DirReport {
            ios: self.ios,
            bytes: self.bytes,
            runtime,
            lat: LatStats {
                n: self.ios,
                min_ns: self.min_ns,
                max_ns: self.max_ns,
                mean_ns: mean,
                stddev_ns: var.sqrt(),
                percentiles,
            },
        }
    }
}

/// What one thread measured.
pub(super) struct ThreadStats {
    pub(super) read: DirAcc,
    pub(super) write: DirAcc,
    pub(super) misses: u64,
    /// Completion time of the last counted I/O.
    pub(super) last: Option<Instant>,
}

impl ThreadStats {
    pub(super) fn new() -> ThreadStats {
        ThreadStats {
            read: DirAcc::new(),
            write: DirAcc::new(),
            misses: 0,
            last: None,
        }
    }

    /// A counted I/O of `dir`, of `bytes`, that took `ns` and completed
    /// at `at`.
    pub(super) fn record(&mut self, dir: Dir, ns: u64, bytes: u64, at: Instant) {
        match dir {
            Dir::Read => self.read.record(ns, bytes),
            Dir::Write => self.write.record(ns, bytes),
        }
        self.last = Some(at);
    }

    pub(super) fn merge(&mut self, o: &ThreadStats) {
        self.read.merge(&o.read);
        self.write.merge(&o.write);
        self.misses += o.misses;
        self.last = self.last.max(o.last);
    }
}

/// Report entries for `job`: one per clone, or one for them all with
/// group_reporting. `clones`: what each measured, and when its ramp ended
/// (its runtime runs from then to its last counted completion).
pub(super) fn job_reports(
    reports: &mut Vec<JobReport>,
    job: &Job,
    clones: &[(&ThreadStats, Instant)],
    elapsed: Duration,
    prefill: Option<Duration>,
    engine: &'static str,
    store: &StoreStats,
) {
    let window = |&(st, ramp_end): &(&ThreadStats, Instant)| {
        st.last
            .map(|l| l.saturating_duration_since(ramp_end))
            .unwrap_or_default()
    };
    let mut entry = |st: &ThreadStats, runtime: Duration, clones: u32| {
        reports.push(JobReport {
            name: job.name.clone(),
            groupid: job.group,
            clones,
            rw: job.rw,
            bs: job.bs,
            size: job.size,
            iodepth: job.iodepth,
            read: st.read.report_over(runtime),
            write: st.write.report_over(runtime),
            misses: st.misses,
            elapsed,
            prefill,
            engine,
            options: job.options.clone(),
            store: store.clone(),
        });
    };
    if job.group_reporting {
        let mut merged = ThreadStats::new();
        let mut runtime = Duration::ZERO;
        for c in clones {
            merged.merge(c.0);
            runtime = runtime.max(window(c));
        }
        entry(&merged, runtime, job.numjobs);
    } else {
        for c in clones {
            entry(c.0, window(c), 1);
        }
    }
}

/// Counters `after` less `before`.
pub(super) fn stats_delta(before: &StoreStats, after: &StoreStats) -> StoreStats {
    let d = |a: u64, b: u64| a.saturating_sub(b);
    StoreStats {
        reads: d(after.reads, before.reads),
        read_bytes: d(after.read_bytes, before.read_bytes),
        read_hole_bytes: d(after.read_hole_bytes, before.read_hole_bytes),
        writes: d(after.writes, before.writes),
        write_bytes: d(after.write_bytes, before.write_bytes),
        checksum_errors: d(after.checksum_errors, before.checksum_errors),
        read_races: d(after.read_races, before.read_races),
        io_errors: d(after.io_errors, before.io_errors),
        regions_evicted: d(after.regions_evicted, before.regions_evicted),
        bytes_evicted: d(after.bytes_evicted, before.bytes_evicted),
        objects_culled: d(after.objects_culled, before.objects_culled),
        checkpoints: d(after.checkpoints, before.checkpoints),
        log_blocks_written: d(after.log_blocks_written, before.log_blocks_written),
        flushes: d(after.flushes, before.flushes),
        nospace_events: d(after.nospace_events, before.nospace_events),
        stale_writes: d(after.stale_writes, before.stale_writes),
    }
}
