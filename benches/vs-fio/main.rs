//! `vs-fio`: ringcache's embedded store beside fio, on the same file, in
//! the same run.
//!
//! Workloads: a sequential fill with 1 MiB writes (4 MiB in flight: fio
//! iodepth=4, ringcache four writer threads), and
//! 4 KiB random reads of cached data at queue depth 1 and 32. fio runs with
//! the io_uring engine and O_DIRECT on the raw file; ringcache formats the
//! same file as a cache, fills one object and reads it back through the
//! store (index lookup, crc32c check of every block). The machine is noisy,
//! so fio and ringcache run in alternation, `--reps` times each, and the
//! medians are compared. The last line is `ratio <min over workloads>`.
//!
//! It also reports the index's memory per cached extent (1M extents built
//! in an index, counted by a tracking allocator).
//!
//! Run: `cargo bench --bench vs-fio -- [--dir DIR] [--reps N] [--seconds S]`.
//!
//! `--sweep 1,4,16,32,64` instead runs `benches/jobs/randread-sweep.fio`
//! (4 KiB random reads) at each queue depth under fio, `ringcache bench` on the embedded store and
//! `ringcache bench` through `ringcached` (the library behind the
//! command), alternating fio and ringcache, and prints IOPS and p99
//! completion latency of all three with ratios to fio, then plots both
//! against the queue depth (`--plot FILE`, SVG; default
//! `target/vs-fio.svg`). Its last line is `ratio <min over depths of the
//! embedded store's IOPS ratio>`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringcache::io::{self, EngineKind, IoEngine, OpenOptions};
use ringcache::store::index::{Extent, Index};
use ringcache::store::{FormatOptions, ReadQueue, Store, StoreConfig, format};
use ringcache_ondisk::Record;
use ringcache_ondisk::superblock::{Geometry, GeometryParams};

#[global_allocator]
static ALLOC: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

#[cfg(feature = "foyer")]
#[path = "foyer.rs"]
mod foyer_side;

#[path = "../../tests/common/ringcached_bin.rs"]
mod ringcached_bin;

const FILE_BYTES: u64 = 2 << 30;
const FILL_BYTES: u64 = 1 << 30;
const FILL_BS: usize = 1 << 20;

struct Opts {
    dir: PathBuf,
    reps: usize,
    seconds: u64,
    /// `embedded` (the store in this process) or `daemon` (ringcached
    /// through the client library).
    target: String,
    /// Queue depths of the sweep (`--sweep`): fio, embedded and daemon at
    /// each, from the same job files.
    sweep: Option<Vec<u32>>,
    /// Where the sweep's plot goes.
    plot: PathBuf,
    /// Add foyer as a third column (needs `--features foyer`).
    with_foyer: bool,
}

fn parse_args() -> Result<Opts> {
    let mut o = Opts {
        dir: std::env::temp_dir(),
        reps: 3,
        seconds: 5,
        target: "embedded".into(),
        sweep: None,
        plot: PathBuf::from("target/vs-fio.svg"),
        with_foyer: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => o.dir = PathBuf::from(args.next().context("--dir needs a path")?),
            "--reps" => o.reps = args.next().context("--reps needs N")?.parse()?,
            "--seconds" => o.seconds = args.next().context("--seconds needs S")?.parse()?,
            "--target" => {
                o.target = args.next().context("--target needs embedded or daemon")?;
                if o.target != "embedded" && o.target != "daemon" {
                    bail!("--target is embedded or daemon, not {:?}", o.target);
                }
            }
            "--sweep" => {
                let list = args
                    .next()
                    .context("--sweep needs depths, e.g. 1,4,16,32,64")?;
                let depths = list
                    .split(',')
                    .map(|d| d.trim().parse::<u32>())
                    .collect::<Result<Vec<_>, _>>()
                    .context("--sweep takes queue depths separated by commas")?;
                if depths.is_empty() || depths.contains(&0) {
                    bail!("--sweep depths must be at least 1");
                }
                o.sweep = Some(depths);
            }
            "--plot" => o.plot = PathBuf::from(args.next().context("--plot needs a path")?),
            "--with-foyer" => {
                if cfg!(not(feature = "foyer")) {
                    bail!(
                        "--with-foyer needs foyer built in: cargo bench --features foyer --bench vs-fio -- --with-foyer"
                    );
                }
                o.with_foyer = true;
            }
            "--bench" => {} // passed by cargo bench
            other => bail!(
                "unknown argument {other:?} (--dir DIR, --reps N, --seconds S, --target T, --sweep D,D,.., --plot FILE, --with-foyer)"
            ),
        }
    }
    Ok(o)
}

/// Run fio on `file` with `args` and parse its JSON output.
fn fio_json(file: &Path, args: &[&std::ffi::OsStr]) -> Result<serde_json::Value> {
    let out = Command::new("fio")
        .arg(format!("--filename={}", file.display()))
        .arg("--output-format=json")
        .args(args)
        .output()
        .context("running fio (is it installed?)")?;
    if !out.status.success() {
        bail!("fio failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // fio may print notes before the JSON.
    let start = text.find('{').context("no JSON from fio")?;
    Ok(serde_json::from_str(&text[start..])?)
}

fn fio(file: &Path, args: &[&str]) -> Result<serde_json::Value> {
    let mut all: Vec<&std::ffi::OsStr> = ["--name=vsfio", "--ioengine=io_uring", "--direct=1"]
        .iter()
        .map(std::ffi::OsStr::new)
        .collect();
    all.extend(args.iter().map(std::ffi::OsStr::new));
    fio_json(file, &all)
}

fn fio_read_iops(file: &Path, qd: u32, seconds: u64) -> Result<f64> {
    let v = fio(
        file,
        &[
            "--rw=randread",
            "--bs=4k",
            &format!("--iodepth={qd}"),
            &format!("--size={FILL_BYTES}"),
            &format!("--runtime={seconds}"),
            "--time_based",
        ],
    )?;
    v["jobs"][0]["read"]["iops"]
        .as_f64()
        .context("fio read iops")
}

fn fio_fill_mibps(file: &Path) -> Result<f64> {
    let v = fio(
        file,
        &[
            "--rw=write",
            "--bs=1M",
            "--iodepth=4",
            &format!("--size={FILL_BYTES}"),
            "--end_fsync=1",
        ],
    )?;
    let bw = v["jobs"][0]["write"]["bw_bytes"]
        .as_f64()
        .context("fio write bw")?;
    Ok(bw / (1 << 20) as f64)
}

fn open_engine(file: &Path) -> Result<Arc<dyn IoEngine>> {
    let e = io::open(
        file,
        &OpenOptions {
            engine: EngineKind::Auto,
            ..Default::default()
        },
    )?;
    if e.name() != "uring" {
        eprintln!(
            "note: io_uring unavailable, ringcache runs on the {} engine",
            e.name()
        );
    }
    Ok(e)
}

/// Format the file, fill one object; returns MiB/s of the fill.
fn rc_fill(file: &Path) -> Result<f64> {
    let engine = open_engine(file)?;
    format(
        engine.as_ref(),
        &FormatOptions {
            force: true,
            ..Default::default()
        },
    )?;
    let store = Store::open(engine, StoreConfig::default())?;
    let vol = store.volume(b"bench", true)?;
    let id = store.create(vol, b"fill", b"", FILL_BYTES)?;
    // Four writers of 1 MiB each: 4 MiB in flight, as fio's iodepth=4.
    let chunk: Vec<u8> = (0..FILL_BS).map(|i| (i % 251) as u8).collect();
    let next = std::sync::atomic::AtomicU64::new(0);
    let t = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    loop {
                        let off =
                            next.fetch_add(FILL_BS as u64, std::sync::atomic::Ordering::Relaxed);
                        if off >= FILL_BYTES {
                            return Ok(());
                        }
                        store.write(id, off, &chunk)?;
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
        }
        Ok(())
    })?;
    store.flush()?;
    let secs = t.elapsed().as_secs_f64();
    store.close()?;
    Ok(FILL_BYTES as f64 / (1 << 20) as f64 / secs)
}

/// Random 4 KiB reads of the filled object at queue depth `qd`.
fn rc_read_iops(file: &Path, qd: usize, seconds: u64) -> Result<f64> {
    let store = Store::open(open_engine(file)?, StoreConfig::default())?;
    let vol = store.volume(b"bench", false)?;
    let info = store
        .lookup(vol, b"fill")?
        .context("filled object missing")?;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let blocks = FILL_BYTES / 4096;
    let mut q = ReadQueue::new(&store);
    let mut done = Vec::with_capacity(qd);
    let mut ios = 0u64;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let t = Instant::now();
    loop {
        // Keep `qd` reads at the device; replace the finished ones before
        // checking them (as fio requeues before it looks at completions).
        q.reap();
        while q.io_in_flight() < qd {
            let off = rng.random_range(0..blocks) * 4096;
            q.submit(ios, info.id, off, 4096)?;
        }
        q.take(&mut done);
        for (_, r) in done.drain(..) {
            let segs = r?;
            if segs.len() != 1 || !matches!(segs[0], ringcache::store::Segment::Data { .. }) {
                bail!("a read of cached data missed");
            }
            ios += 1;
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    // Drain what is in flight before closing.
    while q.in_flight() > 0 {
        q.wait(&mut done);
        done.clear();
    }
    drop(q);
    drop(store);
    Ok(ios as f64 / secs)
}

/// A ringcached serving the cache file, for `--target daemon`.
struct DaemonRun {
    child: std::process::Child,
    socket: PathBuf,
    stopped: bool,
}

impl Drop for DaemonRun {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl DaemonRun {
    /// Format `file` and start ringcached on it.
    fn start(file: &Path, dir: &Path) -> Result<DaemonRun> {
        {
            let engine = open_engine(file)?;
            format(
                engine.as_ref(),
                &FormatOptions {
                    force: true,
                    ..Default::default()
                },
            )?;
        }
        let socket = dir.join("ringcache-vs-fio.sock");
        let config = dir.join("ringcache-vs-fio.conf");
        std::fs::write(
            &config,
            format!("device {}\nsocket {}\n", file.display(), socket.display()),
        )?;
        let child = Command::new(ringcached_bin::path())
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("starting ringcached")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while ringcache::client::Client::connect(&socket)
            .and_then(|mut c| c.ping())
            .is_err()
        {
            if Instant::now() > deadline {
                bail!("ringcached did not come up");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(DaemonRun {
            child,
            socket,
            stopped: false,
        })
    }

    /// CPU seconds the daemon used so far (user + system).
    fn cpu_secs(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
        // utime and stime (fields 14 and 15 of /proc/PID/stat), 100 a second.
        (ticks(11) + ticks(12)) / 100.0
    }

    fn stop(mut self) -> Result<()> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        self.child.wait()?;
        self.stopped = true;
        Ok(())
    }
}

/// Fill through the daemon: four connections writing 1 MiB at a time,
/// each filling its own 64 MiB objects (a cookie is used by one client).
fn daemon_fill(d: &DaemonRun) -> Result<f64> {
    const PART: u64 = 64 << 20;
    let chunk: Vec<u8> = (0..FILL_BS).map(|i| (i % 251) as u8).collect();
    let parts = FILL_BYTES / PART;
    let t = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..4u64)
            .map(|w| {
                let chunk = &chunk;
                s.spawn(move || -> Result<()> {
                    let mut c = ringcache::client::Client::connect(&d.socket)?;
                    let v = c.acquire_volume(b"bench", b"")?;
                    for part in (w..parts).step_by(4) {
                        let k =
                            c.acquire_cookie(v, format!("part-{part}").as_bytes(), b"", PART)?;
                        c.use_cookie(k, false)?;
                        for off in (0..PART).step_by(FILL_BS) {
                            let st = c.write(k, off, chunk)?;
                            if st != ringcache::proto::Status::Ok {
                                bail!("daemon write: {st:?}");
                            }
                        }
                        c.unuse_cookie(k, None, None)?;
                        c.relinquish_cookie(k, false)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
        }
        Ok(())
    })?;
    let secs = t.elapsed().as_secs_f64();
    Ok(FILL_BYTES as f64 / (1 << 20) as f64 / secs)
}

/// Random 4 KiB reads through the daemon at queue depth `qd` on one
/// connection: (IOPS, p50 us, p99 us, daemon CPU us per op).
fn daemon_read(d: &DaemonRun, qd: usize, seconds: u64) -> Result<(f64, f64, f64, f64)> {
    use ringcache::client::{Client, ReadReply};
    let mut c = Client::connect(&d.socket)?;
    let v = c.acquire_volume(b"bench", b"")?;
    let parts = FILL_BYTES / (64 << 20);
    let cookies: Vec<_> = (0..parts)
        .map(|p| -> Result<_> {
            let k = c.acquire_cookie(v, format!("part-{p}").as_bytes(), b"", 64 << 20)?;
            c.use_cookie(k, false)?;
            Ok(k)
        })
        .collect::<Result<_>>()?;
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut outstanding = std::collections::VecDeque::new();
    let mut ios = 0u64;
    let cpu0 = d.cpu_secs();
    let t = Instant::now();
    let deadline = t + Duration::from_secs(seconds);
    loop {
        while outstanding.len() < qd {
            let p = rng.random_range(0..parts) as usize;
            let off = rng.random_range(0..(64u64 << 20) / 4096) * 4096;
            let id = c.queue(
                ringcache::proto::Op::Read,
                &Client::read_request(cookies[p], off, 4096),
            );
            outstanding.push_back((id, Instant::now()));
        }
        let Some((id, sent)) = outstanding.pop_front() else {
            break;
        };
        let (st, body) = c.recv(id)?;
        hist.record(sent.elapsed().as_nanos().max(1) as u64)?;
        match Client::parse_read(st, &body)? {
            ReadReply::Data(_) => ios += 1,
            other => bail!("a read of cached data through the daemon missed: {other:?}"),
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    for (id, _) in outstanding {
        let _ = c.recv(id)?;
    }
    let cpu = d.cpu_secs() - cpu0;
    Ok((
        ios as f64 / secs,
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        cpu * 1e6 / ios.max(1) as f64,
    ))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Bytes of index memory per extent, with 1M 4 KiB extents in 1000 objects.
fn index_bytes_per_extent() -> f64 {
    let g = Geometry::plan(
        64 << 30,
        GeometryParams {
            region_bytes: Some(64 << 20),
            ..Default::default()
        },
    )
    .expect("geometry");
    let mut ix = Index::new(g);
    ix.apply(&Record::Volume {
        volume_id: 1,
        key: b"v",
    });
    const OBJECTS: u64 = 1000;
    const PER: u64 = 1000;
    for o in 0..OBJECTS {
        ix.apply(&Record::Object {
            object_id: o + 1,
            volume_id: 1,
            data_gen: 1,
            size: 1 << 40,
            flags: 0,
            key: format!("object-{o}").as_bytes(),
            aux: b"",
        });
    }
    let before = ALLOC.allocated();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for i in 0..OBJECTS * PER {
        let o = i % OBJECTS + 1;
        // Every other block, so no two extents touch: worst case.
        let block = (i / OBJECTS) * 2;
        let region = rng.random_range(0..g.region_count);
        ix.insert_extent(
            o,
            block * 4096,
            Extent {
                len: 4096,
                region,
                region_off: 4096,
            },
        );
    }
    let after = ALLOC.allocated();
    (after - before) as f64 / (OBJECTS * PER) as f64
}

/// One run: its figure (MiB/s or IOPS), CPU seconds per GiB moved, and
/// peak resident memory in MiB (0 where not measured).
#[derive(Clone, Copy)]
struct Sample {
    value: f64,
    cpu_s_per_gib: f64,
    peak_mib: f64,
}

impl Sample {
    fn plain(value: f64) -> Sample {
        Sample {
            value,
            cpu_s_per_gib: 0.0,
            peak_mib: 0.0,
        }
    }
}

#[derive(Clone, Copy)]
enum Side {
    Fio,
    Rc,
    Foyer,
}

/// The runs of one workload, per side.
#[derive(Default)]
struct Sides {
    fio: Vec<Sample>,
    rc: Vec<Sample>,
    foyer: Vec<Sample>,
}

impl Sides {
    fn of(&self, s: Side) -> &[Sample] {
        match s {
            Side::Fio => &self.fio,
            Side::Rc => &self.rc,
            Side::Foyer => &self.foyer,
        }
    }

    fn median(&self, s: Side) -> f64 {
        let mut v: Vec<f64> = self.of(s).iter().map(|x| x.value).collect();
        if v.is_empty() {
            f64::NAN
        } else {
            median(&mut v)
        }
    }

    /// Median CPU seconds per GiB and peak MiB.
    fn cost(&self, s: Side) -> (f64, f64) {
        let mut cpu: Vec<f64> = self.of(s).iter().map(|x| x.cpu_s_per_gib).collect();
        let mut peak: Vec<f64> = self.of(s).iter().map(|x| x.peak_mib).collect();
        if cpu.is_empty() {
            return (f64::NAN, f64::NAN);
        }
        (median(&mut cpu), median(&mut peak))
    }
}

/// CPU seconds (user + system) this process has used.
fn self_cpu_secs() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF)
        .map(|u| {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or(0.0)
}

/// Run `f` in this process and measure it: CPU per GiB (of `gib(value)`)
/// and the peak resident memory (the high-water mark is reset first).
fn in_process(f: impl FnOnce() -> Result<f64>, gib: impl Fn(f64) -> f64) -> Result<Sample> {
    // "5" resets VmHWM, the peak RSS (Linux 4.0 and later).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let cpu0 = self_cpu_secs();
    let value = f()?;
    let cpu = self_cpu_secs() - cpu0;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    Ok(Sample {
        value,
        cpu_s_per_gib: cpu / gib(value).max(1e-9),
        peak_mib: peak_kib / 1024.0,
    })
}

/// Run `f`, which runs a child process (fio), and measure the child: CPU
/// per GiB and its peak resident memory.
fn in_child(f: impl FnOnce() -> Result<f64>, gib: impl Fn(f64) -> f64) -> Result<Sample> {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = || {
        getrusage(UsageWho::RUSAGE_CHILDREN).map(|u| {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            (t(u.user_time()) + t(u.system_time()), u.max_rss() as f64)
        })
    };
    let (cpu0, _) = usage()?;
    let value = f()?;
    let (cpu1, max_rss_kib) = usage()?;
    Ok(Sample {
        value,
        cpu_s_per_gib: (cpu1 - cpu0) / gib(value).max(1e-9),
        // The largest child so far: the fio runs are alike.
        peak_mib: max_rss_kib / 1024.0,
    })
}

fn main() -> Result<()> {
    let o = parse_args()?;
    let file = o.dir.join("ringcache-vs-fio.img");
    ringcache::util::create_backing_file(&file, FILE_BYTES)?;
    // Allocate every block of the file once, so neither side pays for
    // allocating writes or reads holes.
    fio(
        &file,
        &[
            "--rw=write",
            "--bs=1M",
            "--iodepth=8",
            &format!("--size={FILE_BYTES}"),
        ],
    )?;

    if let Some(depths) = o.sweep.clone() {
        let r = sweep(&o, &file, &depths);
        let _ = std::fs::remove_file(&file);
        return r;
    }

    // Per workload and side: the runs' figures and what they cost.
    let mut fill = Sides::default();
    let mut qd1 = Sides::default();
    let mut qd32 = Sides::default();
    let mut lat = Vec::new();
    let read_gib = |iops: f64| iops * o.seconds as f64 * 4096.0 / (1u64 << 30) as f64;
    let fill_gib = FILL_BYTES as f64 / (1u64 << 30) as f64;
    for rep in 0..o.reps {
        fill.fio
            .push(in_child(|| fio_fill_mibps(&file), |_| fill_gib)?);
        if o.target == "daemon" {
            let d = DaemonRun::start(&file, &o.dir)?;
            fill.rc.push(Sample::plain(daemon_fill(&d)?));
            qd1.fio
                .push(in_child(|| fio_read_iops(&file, 1, o.seconds), read_gib)?);
            let r1 = daemon_read(&d, 1, o.seconds)?;
            qd1.rc.push(Sample::plain(r1.0));
            qd32.fio
                .push(in_child(|| fio_read_iops(&file, 32, o.seconds), read_gib)?);
            let r32 = daemon_read(&d, 32, o.seconds)?;
            qd32.rc.push(Sample::plain(r32.0));
            lat.push((r1, r32));
            d.stop()?;
        } else {
            fill.rc.push(in_process(|| rc_fill(&file), |_| fill_gib)?);
            qd1.fio
                .push(in_child(|| fio_read_iops(&file, 1, o.seconds), read_gib)?);
            qd1.rc
                .push(in_process(|| rc_read_iops(&file, 1, o.seconds), read_gib)?);
            qd32.fio
                .push(in_child(|| fio_read_iops(&file, 32, o.seconds), read_gib)?);
            qd32.rc
                .push(in_process(|| rc_read_iops(&file, 32, o.seconds), read_gib)?);
        }
        #[cfg(feature = "foyer")]
        if o.with_foyer {
            // foyer's fill stores half as many 4 KiB values (see
            // support/foyer.rs); its MiB/s is of values stored.
            let foyer_gib = (foyer_side::VALUES * 4096) as f64 / (1u64 << 30) as f64;
            let f = foyer_side::FoyerRun::open(&file)?;
            fill.foyer.push(in_process(|| f.fill(), |_| foyer_gib)?);
            for (side, qd) in [(&mut qd1, 1), (&mut qd32, 32)] {
                let mut misses = 0;
                side.foyer.push(in_process(
                    || {
                        let (iops, m) = f.read(qd, o.seconds)?;
                        misses = m;
                        Ok(iops)
                    },
                    read_gib,
                )?);
                if misses > 0 {
                    eprintln!("note: foyer found nothing for {misses} reads at qd {qd}");
                }
            }
            f.close()?;
        }
        eprintln!(
            "rep {rep}: fill {:.0}/{:.0} MiB/s, qd1 {:.0}/{:.0} IOPS, qd32 {:.0}/{:.0} IOPS (fio/ringcache)",
            fill.fio[rep].value,
            fill.rc[rep].value,
            qd1.fio[rep].value,
            qd1.rc[rep].value,
            qd32.fio[rep].value,
            qd32.rc[rep].value
        );
    }
    let rows = [
        ("seq fill 1M, MiB/s", &fill),
        ("randread 4k qd1, IOPS", &qd1),
        ("randread 4k qd32, IOPS", &qd32),
    ];
    let foyer = o.with_foyer;
    println!(
        "{:<26} {:>12} {:>12} {:>7}{}",
        "workload (medians)",
        "fio",
        "ringcache",
        "ratio",
        if foyer {
            format!(" {:>12} {:>7}", "foyer", "ratio")
        } else {
            String::new()
        }
    );
    let mut min_ratio = f64::INFINITY;
    for (name, side) in rows {
        let (mf, mr) = (side.median(Side::Fio), side.median(Side::Rc));
        let ratio = mr / mf;
        min_ratio = min_ratio.min(ratio);
        let extra = if foyer {
            let my = side.median(Side::Foyer);
            format!(" {my:>12.0} {:>7.2}", my / mf)
        } else {
            String::new()
        };
        println!("{name:<26} {mf:>12.0} {mr:>12.0} {ratio:>7.2}{extra}");
    }
    if o.target != "daemon" {
        println!(
            "{:<26} {:>20} {:>20}{}",
            "cost (medians)",
            "fio cpu/GiB, peak",
            "ringcache",
            if foyer {
                format!(" {:>20}", "foyer")
            } else {
                String::new()
            }
        );
        for (name, side) in rows {
            let cell = |which: Side| {
                let (cpu, peak) = side.cost(which);
                format!("{cpu:>8.2} s {peak:>6.0} MiB")
            };
            println!(
                "{name:<26} {:>20} {:>20}{}",
                cell(Side::Fio),
                cell(Side::Rc),
                if foyer {
                    format!(" {:>20}", cell(Side::Foyer))
                } else {
                    String::new()
                }
            );
        }
    }
    println!("target: {}", o.target);
    for (i, (r1, r32)) in lat.iter().enumerate() {
        println!(
            "daemon rep {i}: qd1 p50 {:.1} us p99 {:.1} us cpu {:.1} us/op; qd32 p50 {:.1} us p99 {:.1} us cpu {:.1} us/op",
            r1.1, r1.2, r1.3, r32.1, r32.2, r32.3
        );
    }
    println!(
        "index memory per extent: {:.1} bytes",
        index_bytes_per_extent()
    );
    let _ = std::fs::remove_file(&file);
    println!("ratio {min_ratio:.2}");
    Ok(())
}

/// The sweep's job file at queue depth `qd`: `benches/jobs/randread-sweep.fio`
/// with its `iodepth=` and `runtime=` lines set.
fn sweep_job(qd: u32, seconds: u64) -> String {
    include_str!("../jobs/randread-sweep.fio")
        .lines()
        .map(|l| {
            if l.starts_with("iodepth=") {
                format!("iodepth={qd}")
            } else if l.starts_with("runtime=") {
                format!("runtime={seconds}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// (IOPS, p99 µs) of a fio run of `job` on `file`.
fn fio_job(file: &Path, job: &Path) -> Result<(f64, f64)> {
    let v = fio_json(file, &[job.as_os_str()])?;
    let read = &v["jobs"][0]["read"];
    let iops = read["iops"].as_f64().context("fio read iops")?;
    let p99 = read["clat_ns"]["percentile"]["99.000000"]
        .as_f64()
        .context("fio read p99")?;
    Ok((iops, p99 / 1000.0))
}

/// (IOPS, p99 µs) of `ringcache bench` running `job`.
fn rc_job(job: &str, file: &Path, socket: Option<&Path>) -> Result<(f64, f64)> {
    use ringcache_tools::bench::{JobFile, RunOptions, Target, run};
    let f = JobFile::parse(job)?;
    let opts = RunOptions {
        filename: Some(file.to_path_buf()),
        target: Some(if socket.is_some() {
            Target::Daemon
        } else {
            Target::Embedded
        }),
        socket: socket.map(Path::to_path_buf),
        ..Default::default()
    };
    let report = run(&f, &opts)?;
    let j = report.jobs.first().context("no job in the report")?;
    if j.misses > 0 {
        bail!("{} reads of cached data missed", j.misses);
    }
    let secs = j.read.runtime.as_secs_f64().max(1e-9);
    let p99 = j
        .read
        .lat
        .percentiles
        .iter()
        .find(|(p, _)| (*p - 99.0).abs() < 1e-9)
        .map(|&(_, ns)| ns as f64 / 1000.0)
        .context("no p99 in the report")?;
    Ok((j.read.ios as f64 / secs, p99))
}

/// Per depth and side, the runs' (IOPS, p99 µs).
type Runs = Vec<Vec<(f64, f64)>>;

fn medians(runs: &Runs) -> Vec<(f64, f64)> {
    runs.iter()
        .map(|r| {
            let mut iops: Vec<f64> = r.iter().map(|x| x.0).collect();
            let mut p99: Vec<f64> = r.iter().map(|x| x.1).collect();
            (median(&mut iops), median(&mut p99))
        })
        .collect()
}

/// fio, the embedded store and the daemon at each queue depth of `depths`.
fn sweep(o: &Opts, file: &Path, depths: &[u32]) -> Result<()> {
    let jobs: Vec<(String, PathBuf)> = depths
        .iter()
        .map(|&qd| {
            let text = sweep_job(qd, o.seconds);
            let path = o.dir.join(format!("ringcache-vs-fio-qd{qd}.fio"));
            std::fs::write(&path, &text).map(|()| (text, path))
        })
        .collect::<std::io::Result<_>>()?;
    let n = depths.len();
    let (mut fio_e, mut emb, mut fio_d, mut dae): (Runs, Runs, Runs, Runs) = (
        vec![Vec::new(); n],
        vec![Vec::new(); n],
        vec![Vec::new(); n],
        vec![Vec::new(); n],
    );
    for rep in 0..o.reps {
        for (i, (text, path)) in jobs.iter().enumerate() {
            fio_e[i].push(fio_job(file, path)?);
            emb[i].push(rc_job(text, file, None)?);
            eprintln!(
                "rep {rep} qd {}: fio {:.0} IOPS, embedded {:.0} IOPS",
                depths[i], fio_e[i][rep].0, emb[i][rep].0
            );
        }
    }
    // The daemon formats the file as its own cache, so it comes second.
    let d = DaemonRun::start(file, &o.dir)?;
    for rep in 0..o.reps {
        for (i, (text, path)) in jobs.iter().enumerate() {
            fio_d[i].push(fio_job(file, path)?);
            dae[i].push(rc_job(text, file, Some(&d.socket))?);
            eprintln!(
                "rep {rep} qd {}: fio {:.0} IOPS, daemon {:.0} IOPS",
                depths[i], fio_d[i][rep].0, dae[i][rep].0
            );
        }
    }
    d.stop()?;
    for (_, path) in &jobs {
        let _ = std::fs::remove_file(path);
    }
    // fio's figure per depth: the median over both phases.
    let fio: Runs = fio_e
        .into_iter()
        .zip(fio_d)
        .map(|(mut a, b)| {
            a.extend(b);
            a
        })
        .collect();
    let (fio, emb, dae) = (medians(&fio), medians(&emb), medians(&dae));
    println!(
        "{:>7} {:>11} {:>11} {:>6} {:>11} {:>6}   {:>9} {:>9} {:>9}",
        "iodepth",
        "fio IOPS",
        "embedded",
        "ratio",
        "daemon",
        "ratio",
        "fio p99",
        "emb p99",
        "dmn p99"
    );
    let mut min_ratio = f64::INFINITY;
    for (i, qd) in depths.iter().enumerate() {
        let (f, e, d) = (fio[i], emb[i], dae[i]);
        min_ratio = min_ratio.min(e.0 / f.0);
        println!(
            "{qd:>7} {:>11.0} {:>11.0} {:>6.2} {:>11.0} {:>6.2}   {:>7.0}us {:>7.0}us {:>7.0}us",
            f.0,
            e.0,
            e.0 / f.0,
            d.0,
            d.0 / f.0,
            f.1,
            e.1,
            d.1
        );
    }
    plot(&o.plot, depths, &fio, &emb, &dae)?;
    println!("plot: {}", o.plot.display());
    println!("ratio {min_ratio:.2}");
    Ok(())
}

/// A line of the plot: its name, its (IOPS, p99 µs) per depth, its colour.
type PlotLine<'a> = (&'a str, &'a [(f64, f64)], plotters::style::RGBColor);

/// IOPS and p99 latency against the queue depth, one line per side.
fn plot(
    path: &Path,
    depths: &[u32],
    fio: &[(f64, f64)],
    emb: &[(f64, f64)],
    dae: &[(f64, f64)],
) -> Result<()> {
    use plotters::prelude::*;
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let panels = root.split_evenly((1, 2));
    let x_max = f64::from(depths.iter().copied().max().unwrap_or(1)).max(2.0);
    let sides: [PlotLine<'_>; 3] = [
        ("fio (io_uring, O_DIRECT)", fio, BLACK),
        ("ringcache embedded", emb, BLUE),
        ("ringcache via ringcached", dae, RED),
    ];
    for (panel, (title, y_of, unit)) in panels.iter().zip([
        ("4 KiB random read: IOPS", 0usize, "IOPS"),
        ("4 KiB random read: p99 completion latency", 1, "µs"),
    ]) {
        let pick = |v: &(f64, f64)| if y_of == 0 { v.0 } else { v.1 };
        let y_max = sides
            .iter()
            .flat_map(|(_, v, _)| v.iter().map(pick))
            .fold(1.0f64, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d((1f64..x_max).log_scale(), 0f64..y_max)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("iodepth")
            .y_desc(unit)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .light_line_style(WHITE)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for (name, values, color) in &sides {
            let pts: Vec<(f64, f64)> = depths
                .iter()
                .zip(values.iter())
                .map(|(&d, v)| (f64::from(d), pick(v)))
                .collect();
            let color = *color;
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
