//! Run a job file against the embedded store (`target=daemon`: see
//! [`super::daemon`]).
//!
//! Per cache file or device (`filename`): open it, formatting it first
//! (with force) when it holds no ringcache cache, and creating or growing a
//! regular file so the jobs' objects fit without culling. Per job: one
//! object of `size` bytes in the volume `bench`, keyed by the job name,
//! prefilled (untimed) when the job reads; an object of the same size left
//! fully cached by an earlier run is reused, like a file fio laid out
//! before.
//!
//! Per job clone (numjobs of them), iodepth I/Os in flight:
//! - read-only jobs: one thread and a [`ReadQueue`], which sends each read
//!   to the engine as it is queued; the thread reaps whichever complete,
//!   tops the device's queue up again, then checks and counts them;
//! - jobs that write: one thread per in-flight I/O (iodepth threads per
//!   clone), each calling [`Store::write`] (or [`Store::read`] for the
//!   read share of a mixed job). The store has no asynchronous write call,
//!   and a write returns only once its data is on the device, so a thread
//!   per in-flight write is what keeps iodepth writes in flight; the
//!   threads of a clone draw offsets from one shared counter.
//!
//! Jobs of one group run at the same time; groups run one after the other.
//! Latency is taken per I/O, from just before the call that queues it to
//! its completion, into an HDR histogram per thread (merged afterwards);
//! I/Os that start during ramp_time are done but not counted. A read that
//! finds no cached data (a hole: the data was culled) is counted as a miss
//! and left out of the figures.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringcache_ondisk::superblock::{Geometry, GeometryParams};

use super::BenchError;
use super::jobfile::{Job, JobFile, Target};
use super::offsets::{Offsets, splitmix};
use super::report::{DirReport, JobReport, LatStats, Report};
use super::units::{fmt_bytes_bin, fmt_count};
use crate::io::{self, EngineKind, OpenOptions};
use crate::store::{
    CullThresholds, FormatOptions, ObjectId, ReadQueue, Segment, Store, StoreConfig, StoreError,
    StoreStats, format,
};

/// The volume that holds the benchmark's objects.
pub const VOLUME: &[u8] = b"bench";

/// Histogram range: 1 ns to 60 s, 3 significant digits (longer I/Os are
/// recorded as 60 s; their exact value still counts in max and mean).
const HIST_MAX_NS: u64 = 60_000_000_000;

/// Most threads one job may start for writes (iodepth x numjobs).
pub const MAX_WRITE_THREADS: u32 = 256;

/// Prefill writes of this size.
pub(super) const PREFILL_CHUNK: u64 = 1 << 20;

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

fn store_err(context: impl Into<String>) -> impl FnOnce(StoreError) -> BenchError {
    let context = context.into();
    move |source| BenchError::Store { context, source }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let context = context.into();
    move |source| BenchError::Io { context, source }
}

/// Bytes of data a cache of this geometry holds before culling starts
/// (brun percent of regions kept free, one region open, one header block
/// per region).
fn usable_bytes(g: &Geometry) -> u64 {
    let regions = u64::from(g.region_count);
    let reserve = (regions * u64::from(CullThresholds::default().brun)).div_ceil(100) + 1;
    regions.saturating_sub(reserve) * (g.region_bytes - 4096)
}

/// Size of a cache file that holds `data` bytes of objects without culling.
pub fn device_bytes_for(data: u64) -> u64 {
    const MIB: u64 = 1 << 20;
    let round = |v: u64| v.div_ceil(MIB) * MIB;
    let mut d = round(data + data / 5 + 16 * MIB);
    loop {
        if let Ok(g) = Geometry::plan(d, GeometryParams::default())
            && usable_bytes(&g) >= data
        {
            return d;
        }
        d = round(d + d / 10);
    }
}

/// One cache file or device and the store on it.
struct Device {
    path: PathBuf,
    store: Store,
    engine_name: &'static str,
}

fn note(opts: &RunOptions, msg: &str) {
    if opts.notes {
        eprintln!("ringcache bench: {msg}");
    }
}

fn open_engine(
    path: &Path,
    kind: EngineKind,
) -> Result<std::sync::Arc<dyn io::IoEngine>, BenchError> {
    io::open(
        path,
        &OpenOptions {
            engine: kind,
            ..Default::default()
        },
    )
    .map_err(io_err(format!("opening {}", path.display())))
}

/// Open the cache on `path`, formatting (and creating or growing a regular
/// file) when it holds no cache.
fn open_device(
    path: &Path,
    data_bytes: u64,
    kind: EngineKind,
    opts: &RunOptions,
    notes: &mut Vec<String>,
) -> Result<Device, BenchError> {
    let want = device_bytes_for(data_bytes);
    let meta = std::fs::metadata(path);
    let is_block = meta
        .as_ref()
        .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()));
    if meta.is_err() {
        note(
            opts,
            &format!(
                "creating {} ({})",
                path.display(),
                fmt_bytes_bin(want as f64)
            ),
        );
        crate::util::create_backing_file(path, want)
            .map_err(io_err(format!("creating {}", path.display())))?;
    }
    let engine = open_engine(path, kind)?;
    let store = match Store::open(engine.clone(), StoreConfig::default()) {
        Ok(s) => s,
        Err(StoreError::NotACache(_)) => {
            drop(engine);
            if !is_block && std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) < want {
                crate::util::create_backing_file(path, want)
                    .map_err(io_err(format!("growing {}", path.display())))?;
            }
            note(
                opts,
                &format!(
                    "formatting {} as a ringcache cache (it held none)",
                    path.display()
                ),
            );
            let engine = open_engine(path, kind)?;
            format(
                engine.as_ref(),
                &FormatOptions {
                    tag: "bench".into(),
                    force: true,
                    ..Default::default()
                },
            )
            .map_err(store_err(format!("formatting {}", path.display())))?;
            Store::open(engine, StoreConfig::default())
                .map_err(store_err(format!("opening {}", path.display())))?
        }
        Err(e) => {
            return Err(BenchError::Store {
                context: format!(
                    "opening {} (a damaged cache is not reformatted: check it with `ringcache fsck`, or format it with `ringcache format --force`)",
                    path.display()
                ),
                source: e,
            });
        }
    };
    let usable = usable_bytes(&store.superblock().geometry);
    if usable < data_bytes {
        let msg = format!(
            "the cache on {} holds {} before culling, the jobs' objects are {}: some data will be culled and reads of it counted as misses",
            path.display(),
            fmt_bytes_bin(usable as f64),
            fmt_bytes_bin(data_bytes as f64)
        );
        note(opts, &msg);
        notes.push(msg);
    }
    let engine_name = store.engine().name();
    Ok(Device {
        path: path.to_path_buf(),
        store,
        engine_name,
    })
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

    pub(super) fn record(&mut self, ns: u64, bytes: u64) {
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
    pub(super) fn report_over(&self, runtime: Duration) -> DirReport {
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
        let percentiles = super::report::FIO_PERCENTILES
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

    pub(super) fn merge(&mut self, o: &ThreadStats) {
        self.read.merge(&o.read);
        self.write.merge(&o.write);
        self.misses += o.misses;
        self.last = self.last.max(o.last);
    }
}

/// Live counters of one job, for the progress line.
#[derive(Default)]
pub(super) struct Live {
    pub(super) read_ios: AtomicU64,
    pub(super) read_bytes: AtomicU64,
    pub(super) write_ios: AtomicU64,
    pub(super) write_bytes: AtomicU64,
}

/// What the threads of one clone share.
struct JobClone<'a> {
    store: &'a Store,
    id: ObjectId,
    job: &'a Job,
    offsets: Offsets,
    /// I/Os started before this are not counted.
    ramp_end: Instant,
    /// No I/O starts at or after this.
    deadline: Option<Instant>,
    /// Counted I/Os to do (size / bs), when not time_based.
    budget: Option<u64>,
    /// Next I/O index (offsets), shared by the clone's threads.
    next: AtomicU64,
    /// Counted I/Os started so far.
    counted: AtomicU64,
    live: &'a Live,
    /// Set when any thread failed: everyone stops.
    abort: &'a AtomicBool,
    seed: u64,
}

impl JobClone<'_> {
    /// Whether one more I/O may start now, and whether it counts.
    fn admit(&self, now: Instant) -> Option<bool> {
        if self.abort.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| now >= d) {
            return None;
        }
        let measured = now >= self.ramp_end;
        if measured
            && let Some(b) = self.budget
            && self.counted.fetch_add(1, Ordering::Relaxed) >= b
        {
            return None;
        }
        Some(measured)
    }
}

fn is_hit(segs: &[Segment], len: u64) -> bool {
    segs.iter().all(|s| matches!(s, Segment::Data { .. }))
        && segs.iter().map(Segment::len).sum::<u64>() == len
}

/// A read-only clone: one thread keeping iodepth reads at the device
/// through a ReadQueue.
fn run_reader(c: &JobClone<'_>) -> Result<ThreadStats, BenchError> {
    let qd = c.job.iodepth as usize;
    let bs = c.job.bs;
    let mut st = ThreadStats::new();
    let mut q = ReadQueue::new(c.store);
    let now = Instant::now();
    // Per slot: when its read started and whether it counts. `qd` reads
    // at the device, and as many done but not yet taken.
    let mut started: Vec<(Instant, bool)> = vec![(now, false); 2 * qd];
    let mut free: Vec<usize> = (0..2 * qd).rev().collect();
    let mut out = Vec::with_capacity(qd);
    let mut issuing = true;
    let mut reaped = false;
    let mut next = 0u64;
    let result = (|| {
        loop {
            // Top up the device's queue first, also right after a reap, so
            // that it does not wait while finished reads are checked.
            while issuing
                && q.io_in_flight() < qd
                && let Some(slot) = free.pop()
            {
                let now = Instant::now();
                let Some(measured) = c.admit(now) else {
                    free.push(slot);
                    issuing = false;
                    break;
                };
                if let Some(s) = started.get_mut(slot) {
                    *s = (now, measured);
                }
                q.submit(slot as u64, c.id, c.offsets.at(next), bs)
                    .map_err(store_err(format!("job {:?}: read", c.job.name)))?;
                next += 1;
            }
            if !reaped {
                if q.in_flight() == 0 {
                    return Ok(());
                }
                q.reap();
                reaped = true;
                continue;
            }
            reaped = false;
            q.take(&mut out);
            let now = Instant::now();
            let (mut ios, mut bytes) = (0u64, 0u64);
            for (slot, r) in out.drain(..) {
                let segs = r.map_err(store_err(format!("job {:?}: read", c.job.name)))?;
                let slot = slot as usize;
                free.push(slot);
                let (t0, measured) = started.get(slot).copied().unwrap_or((now, false));
                if !is_hit(&segs, bs) {
                    if measured {
                        st.misses += 1;
                    }
                    continue;
                }
                ios += 1;
                bytes += bs;
                if measured {
                    st.read.record((now - t0).as_nanos() as u64, bs);
                    st.last = Some(now);
                }
            }
            c.live.read_ios.fetch_add(ios, Ordering::Relaxed);
            c.live.read_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    })();
    if result.is_err() {
        c.abort.store(true, Ordering::Relaxed);
        // Let what is in flight complete before the queue goes away.
        while q.in_flight() > 0 {
            q.wait(&mut out);
            out.clear();
        }
    }
    result.map(|()| st)
}

/// One in-flight slot of a clone that writes: synchronous reads and
/// writes, one at a time.
fn run_slot(c: &JobClone<'_>, slot: u32) -> Result<ThreadStats, BenchError> {
    let bs = c.job.bs;
    let read_pct = u32::from(c.job.rw.read_percent(c.job.rwmixread));
    let mut rng = ChaCha8Rng::seed_from_u64(splitmix(c.seed ^ u64::from(slot)));
    let mut data = vec![0u8; bs as usize];
    rng.fill(data.as_mut_slice());
    let mut st = ThreadStats::new();
    let r = (|| {
        loop {
            let t0 = Instant::now();
            let Some(measured) = c.admit(t0) else {
                return Ok(());
            };
            let off = c.offsets.at(c.next.fetch_add(1, Ordering::Relaxed));
            let is_read = read_pct == 100 || (read_pct > 0 && rng.random_range(0..100) < read_pct);
            if is_read {
                let t0 = Instant::now();
                let segs = c
                    .store
                    .read(c.id, off, bs)
                    .map_err(store_err(format!("job {:?}: read at {off}", c.job.name)))?;
                let t1 = Instant::now();
                if !is_hit(&segs, bs) {
                    st.misses += u64::from(measured);
                    continue;
                }
                c.live.read_ios.fetch_add(1, Ordering::Relaxed);
                c.live.read_bytes.fetch_add(bs, Ordering::Relaxed);
                if measured {
                    st.read.record((t1 - t0).as_nanos() as u64, bs);
                    st.last = Some(t1);
                }
            } else {
                // Vary the data a little so no two writes are alike.
                if let Some(b) = data.first_mut() {
                    *b = b.wrapping_add(1);
                }
                let t0 = Instant::now();
                c.store
                    .write(c.id, off, &data)
                    .map_err(store_err(format!("job {:?}: write at {off}", c.job.name)))?;
                let t1 = Instant::now();
                c.live.write_ios.fetch_add(1, Ordering::Relaxed);
                c.live.write_bytes.fetch_add(bs, Ordering::Relaxed);
                if measured {
                    st.write.record((t1 - t0).as_nanos() as u64, bs);
                    st.last = Some(t1);
                }
            }
        }
    })();
    if r.is_err() {
        c.abort.store(true, Ordering::Relaxed);
    }
    r.map(|()| st)
}

/// The object of job `job` ready to run: created, and prefilled when the
/// job reads.
fn prepare_object(
    dev: &Device,
    job: &Job,
    key: &str,
    opts: &RunOptions,
    progress: bool,
) -> Result<(ObjectId, Option<Duration>), BenchError> {
    let store = &dev.store;
    let ctx = |what: &str| format!("job {:?}: {what}", job.name);
    let vol = store
        .volume(VOLUME, true)
        .map_err(store_err(ctx("volume")))?;
    let reads = job.rw.read_percent(job.rwmixread) > 0;
    if let Some(info) = store
        .lookup(vol, key.as_bytes())
        .map_err(store_err(ctx("lookup")))?
    {
        let full = store
            .occupancy(info.id)
            .map_err(store_err(ctx("occupancy")))?
            == vec![(0, job.size)];
        if info.size == job.size && (full || !reads) {
            return Ok((info.id, None));
        }
        store
            .delete(info.id)
            .map_err(store_err(ctx("delete old object")))?;
    }
    let id = store
        .create(vol, key.as_bytes(), b"", job.size)
        .map_err(store_err(ctx("create object")))?;
    if !reads {
        return Ok((id, None));
    }
    note(
        opts,
        &format!(
            "prefilling {} of job {:?} on {}",
            fmt_bytes_bin(job.size as f64),
            job.name,
            dev.path.display()
        ),
    );
    let t = Instant::now();
    let bar = progress.then(|| {
        let b = indicatif::ProgressBar::with_draw_target(
            Some(job.size),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "prefill {prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        ) {
            b.set_style(style.progress_chars("=> "));
        }
        b.set_prefix(job.name.clone());
        b
    });
    let next = AtomicU64::new(0);
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(2, 4);
    let mut chunk = vec![0u8; PREFILL_CHUNK as usize];
    ChaCha8Rng::seed_from_u64(id).fill(chunk.as_mut_slice());
    let chunk = &chunk;
    let next = &next;
    let bar = &bar;
    std::thread::scope(|s| -> Result<(), BenchError> {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(move || -> Result<(), BenchError> {
                    loop {
                        let off = next.fetch_add(PREFILL_CHUNK, Ordering::Relaxed);
                        if off >= job.size {
                            return Ok(());
                        }
                        let len = (job.size - off).min(PREFILL_CHUNK) as usize;
                        store
                            .write(id, off, &chunk[..len])
                            .map_err(store_err(format!("job {:?}: prefill", job.name)))?;
                        if let Some(b) = bar {
                            b.inc(len as u64);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| BenchError::Panicked)??;
        }
        Ok(())
    })?;
    store
        .flush()
        .map_err(store_err(ctx("flush after prefill")))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok((id, Some(t.elapsed())))
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
            .unwrap_or_else(|| crate::daemon::Config::embedded().socket);
        return super::daemon::run(file, &socket, progress);
    }
    let started_unix_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
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
            let job = p.job;
            let ramp_end = start + job.ramp_time;
            let blocks = job.size / job.bs;
            (0..job.numjobs)
                .map(|ci| {
                    let seed = splitmix(((ji as u64) << 32) ^ u64::from(ci) ^ p.id);
                    JobClone {
                        store: &p.dev.store,
                        id: p.id,
                        job,
                        offsets: Offsets::new(blocks, job.bs, job.rw.is_random(), seed),
                        ramp_end,
                        deadline: job.runtime.map(|r| ramp_end + r),
                        budget: (!job.time_based).then_some(blocks),
                        next: AtomicU64::new(0),
                        counted: AtomicU64::new(0),
                        live,
                        abort: &abort,
                        seed,
                    }
                })
                .collect()
        })
        .collect();

    // Per job, per clone: the merged stats of its threads.
    type CloneResult = Result<ThreadStats, BenchError>;
    let done = AtomicBool::new(false);
    let results: Vec<Vec<CloneResult>> = std::thread::scope(|s| {
        let monitor = progress.then(|| {
            let names: Vec<&str> = prepared.iter().map(|p| p.job.name.as_str()).collect();
            let total = prepared
                .iter()
                .filter_map(|p| p.job.runtime.map(|r| r + p.job.ramp_time))
                .max();
            let (lives, done) = (&lives, &done);
            s.spawn(move || show_progress(&names, lives, done, start, total))
        });
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
        let results = handles
            .into_iter()
            .map(|job_clones| {
                job_clones
                    .into_iter()
                    .map(|threads| {
                        let mut merged = ThreadStats::new();
                        let mut err = None;
                        for h in threads {
                            match h.join() {
                                Ok(Ok(st)) => merged.merge(&st),
                                Ok(Err(e)) => {
                                    err.get_or_insert(e);
                                }
                                Err(_) => {
                                    err.get_or_insert(BenchError::Panicked);
                                }
                            }
                        }
                        err.map_or(Ok(merged), Err)
                    })
                    .collect()
            })
            .collect();
        done.store(true, Ordering::Relaxed);
        if let Some(m) = monitor {
            m.thread().unpark();
            let _ = m.join();
        }
        results
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

/// The progress line: elapsed time and the rates of the last half second.
pub(super) fn show_progress(
    names: &[&str],
    lives: &[Live],
    done: &AtomicBool,
    start: Instant,
    total: Option<Duration>,
) {
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg}") {
        bar.set_style(style);
    }
    let sum = |f: fn(&Live) -> &AtomicU64| -> u64 {
        lives.iter().map(|l| f(l).load(Ordering::Relaxed)).sum()
    };
    let mut prev = (0u64, 0u64, 0u64, 0u64);
    let mut prev_t = Instant::now();
    let label = names.join(", ");
    let tick = Duration::from_millis(500);
    while !done.load(Ordering::Relaxed) {
        std::thread::park_timeout(tick);
        let now = Instant::now();
        let dt = (now - prev_t).as_secs_f64().max(1e-3);
        let cur = (
            sum(|l| &l.read_ios),
            sum(|l| &l.read_bytes),
            sum(|l| &l.write_ios),
            sum(|l| &l.write_bytes),
        );
        let rate = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / dt;
        let when = match total {
            Some(t) => format!(
                "{:.0}s/{:.0}s",
                (now - start).as_secs_f64(),
                t.as_secs_f64()
            ),
            None => format!("{:.0}s", (now - start).as_secs_f64()),
        };
        bar.set_message(format!(
            "[{label}] {when}  read {} IOPS {}/s  write {} IOPS {}/s",
            fmt_count(rate(cur.0, prev.0)),
            fmt_bytes_bin(rate(cur.1, prev.1)),
            fmt_count(rate(cur.2, prev.2)),
            fmt_bytes_bin(rate(cur.3, prev.3)),
        ));
        bar.tick();
        prev = cur;
        prev_t = now;
    }
    bar.finish_and_clear();
}
