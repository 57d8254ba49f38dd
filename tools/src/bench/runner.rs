//! Run a job file: the embedded target here, `target=daemon` in
//! [`super::daemon`].
//!
//! [`run`] opens each cache file or device (`filename`) once
//! ([`super::setup`]), then runs the jobs group by group: jobs of one group
//! run at the same time, groups one after the other. [`run_group`] makes
//! each job's object ready ([`super::prefill`]), starts numjobs clones per
//! job, each keeping iodepth I/Os in flight ([`super::workers`]), and turns
//! what they measured into report entries ([`super::stats`]). I/Os that
//! start during ramp_time are done but not counted. Every cache is closed
//! cleanly at the end, even after a failed job.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

use ringcache::store::{ObjectId, StoreStats};

use super::jobfile::{Job, JobFile, Target};
use super::offsets::splitmix;
use super::prefill::prepare_object;
use super::progress::{Live, join, scope_with_progress};
use super::report::{JobReport, Report, now_unix_ms};
use super::schedule::Schedule;
use super::setup::{Device, open_device};
use super::stats::{ThreadStats, job_reports, stats_delta};
use super::workers::{JobClone, run_reader, run_slot};
use super::{BenchError, store_err};

pub use super::prefill::VOLUME;
pub use super::setup::device_bytes_for;

/// Most threads one job may start for writes (iodepth x numjobs).
pub const MAX_WRITE_THREADS: u32 = 256;

/// How a run goes, beyond the job file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Use this cache file or device for every job (like fio's
    /// `--filename`), instead of the jobs' `filename=`.
    pub filename: Option<PathBuf>,
    /// Overrides the job file's `[ringcache] target=`.
    pub target: Option<Target>,
    /// The daemon's socket for `target=daemon`; overrides the job file's
    /// `[ringcache] socket=` (default: the embedded default's,
    /// `./ringcache-data/ringcached.sock`).
    pub socket: Option<PathBuf>,
    /// Draw a progress line on stderr while running; only honoured when
    /// stderr is a terminal.
    pub progress: bool,
    /// Say on stderr what is being set up (format, prefill).
    pub notes: bool,
}

/// Run every job of `file`.
pub fn run(file: &JobFile, opts: &RunOptions) -> Result<Report, BenchError> {
    let target = opts.target.unwrap_or(file.target);
    let progress = opts.progress && std::io::stderr().is_terminal();
    if target == Target::Daemon {
        let socket = opts
            .socket
            .clone()
            .or_else(|| file.socket.clone())
            .unwrap_or_else(|| ringcache::daemon::Config::embedded().socket);
        return super::daemon::run(file, &socket, progress);
    }
    let started_unix_ms = now_unix_ms();
    let mut notes = Vec::new();

    // Which device each job runs on; each device opened once.
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut job_dev = Vec::with_capacity(file.jobs.len());
    for job in &file.jobs {
        let Some(path) = opts.filename.clone().or_else(|| job.filename.clone()) else {
            return Err(BenchError::Job {
                job: job.name.clone(),
                line: job.line,
                why: "no filename= (the cache file or device to run on) and no --filename".into(),
            });
        };
        let slots = job.numjobs * job.iodepth;
        if job.rw.read_percent(job.rwmixread) < 100 && slots > MAX_WRITE_THREADS {
            return Err(BenchError::Job {
                job: job.name.clone(),
                line: job.line,
                why: format!(
                    "iodepth x numjobs = {slots}: jobs that write use a thread per in-flight I/O, at most {MAX_WRITE_THREADS}"
                ),
            });
        }
        let i = match paths.iter().position(|p| *p == path) {
            Some(i) => i,
            None => {
                paths.push(path);
                paths.len() - 1
            }
        };
        job_dev.push(i);
    }
    let mut devices = Vec::with_capacity(paths.len());
    for (i, path) in paths.iter().enumerate() {
        let jobs_here = file.jobs.iter().zip(&job_dev).filter(|&(_, &d)| d == i);
        let data: u64 = jobs_here.clone().map(|(j, _)| j.size).sum();
        let kind = jobs_here.map(|(j, _)| j.engine).next().unwrap_or_default();
        devices.push(open_device(path, data, kind, opts, &mut notes)?);
    }

    // Object keys: the job name, made unique when names repeat.
    let mut keys: Vec<String> = Vec::with_capacity(file.jobs.len());
    for job in &file.jobs {
        let mut key = job.name.clone();
        let mut n = 1;
        while keys.contains(&key) {
            n += 1;
            key = format!("{}#{n}", job.name);
        }
        keys.push(key);
    }

    let mut reports = Vec::new();
    let groups = file.jobs.iter().map(|j| j.group).max().unwrap_or(0);
    let mut result = Ok(());
    for g in 0..=groups {
        let members: Vec<usize> = (0..file.jobs.len())
            .filter(|&i| file.jobs.get(i).is_some_and(|j| j.group == g))
            .collect();
        if let Err(e) = run_group(
            file,
            &members,
            &job_dev,
            &keys,
            &devices,
            opts,
            progress,
            &mut reports,
        ) {
            result = Err(e);
            break;
        }
    }
    // Close every cache cleanly, even after a failed job.
    for d in devices {
        let path = d.path.clone();
        let r = d
            .store
            .close()
            .map_err(store_err(format!("closing {}", path.display())));
        if result.is_ok() {
            result = r;
        }
    }
    result?;
    Ok(Report {
        jobs: reports,
        global_options: file.global_options.clone(),
        started_unix_ms,
        target,
        notes,
    })
}

/// Prepare and run the jobs `members` (one group) together.
#[allow(clippy::too_many_arguments)]
fn run_group(
    file: &JobFile,
    members: &[usize],
    job_dev: &[usize],
    keys: &[String],
    devices: &[Device],
    opts: &RunOptions,
    progress: bool,
    reports: &mut Vec<JobReport>,
) -> Result<(), BenchError> {
    struct Prepared<'a> {
        job: &'a Job,
        dev: &'a Device,
        id: ObjectId,
        prefill: Option<Duration>,
    }
    let mut prepared = Vec::with_capacity(members.len());
    for &i in members {
        let (Some(job), Some(dev), Some(key)) = (
            file.jobs.get(i),
            job_dev.get(i).and_then(|&d| devices.get(d)),
            keys.get(i),
        ) else {
            continue;
        };
        let (id, prefill) = prepare_object(dev, job, key, opts, progress)?;
        prepared.push(Prepared {
            job,
            dev,
            id,
            prefill,
        });
    }

    let abort = AtomicBool::new(false);
    let lives: Vec<Live> = prepared.iter().map(|_| Live::default()).collect();
    let stats_before: Vec<StoreStats> = prepared.iter().map(|p| p.dev.store.stats()).collect();
    let start = Instant::now();
    let clones: Vec<Vec<JobClone<'_>>> = prepared
        .iter()
        .zip(&lives)
        .enumerate()
        .map(|(ji, (p, live))| {
            (0..p.job.numjobs)
                .map(|ci| {
                    let seed = splitmix(((ji as u64) << 32) ^ u64::from(ci) ^ p.id);
                    JobClone {
                        store: &p.dev.store,
                        id: p.id,
                        job: p.job,
                        schedule: Schedule::new(p.job, start, seed, &abort),
                        next: AtomicU64::new(0),
                        live,
                        seed,
                    }
                })
                .collect()
        })
        .collect();

    // Per job, per clone: the merged stats of its threads.
    type CloneResult = Result<ThreadStats, BenchError>;
    let jobs: Vec<&Job> = prepared.iter().map(|p| p.job).collect();
    let results: Vec<Vec<CloneResult>> = scope_with_progress(progress, &jobs, &lives, start, |s| {
        let handles: Vec<Vec<Vec<_>>> = clones
            .iter()
            .map(|job_clones| {
                job_clones
                    .iter()
                    .map(|c| {
                        if c.job.rw.read_percent(c.job.rwmixread) == 100 {
                            vec![s.spawn(move || run_reader(c))]
                        } else {
                            (0..c.job.iodepth)
                                .map(|slot| s.spawn(move || run_slot(c, slot)))
                                .collect()
                        }
                    })
                    .collect()
            })
            .collect();
        handles
            .into_iter()
            .map(|job_clones| {
                job_clones
                    .into_iter()
                    .map(|threads| {
                        let mut merged = ThreadStats::new();
                        let mut err = None;
                        for h in threads {
                            match join(h) {
                                Ok(st) => merged.merge(&st),
                                Err(e) => {
                                    err.get_or_insert(e);
                                }
                            }
                        }
                        err.map_or(Ok(merged), Err)
                    })
                    .collect()
            })
            .collect()
    });
    let elapsed = start.elapsed();

    for ((p, job_results), before) in prepared.iter().zip(results).zip(&stats_before) {
        let store_stats = stats_delta(before, &p.dev.store.stats());
        let job = p.job;
        let ramp_end = start + job.ramp_time;
        let mut per_clone = Vec::with_capacity(job_results.len());
        for r in job_results {
            per_clone.push(r?);
        }
        let clones: Vec<(&ThreadStats, Instant)> =
            per_clone.iter().map(|st| (st, ramp_end)).collect();
        job_reports(
            reports,
            job,
            &clones,
            elapsed,
            p.prefill,
            p.dev.engine_name,
            &store_stats,
        );
    }
    Ok(())
}
