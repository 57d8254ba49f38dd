//! `callback`: what the callback layer costs.
//!
//! 1. Break-to-zap latency through the real `ringcached`: client B reports
//!    a file break, client A holds the file; the time from B sending the
//!    break to A holding the zap event (p50, p99), and B's round trip.
//! 2. A whole-server break with 1 000, 100 000 and 1 000 000 object records
//!    (every one acquired, 10 of them in use): the time per break, which
//!    must stay flat (a break is a counter bump plus a zap per object in
//!    use, never a walk of what is cached).
//! 3. `validate` added to a read of cached data: reads of 4 KiB through
//!    the cookie layer alone and through the callback layer (operation,
//!    validation, read) on the in-memory sim device, where a read costs
//!    least and so the validation's share is largest.
//!
//! Run: `cargo bench --bench callback -- [--dir DIR] [--breaks N]`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use ringcache::callback::{
    CallbackConfig, Callbacks, Coherent, CoherentRead, Promise, ServerId, Validity,
};
use ringcache::client::Client;
use ringcache::cookie::{Fscache, FscacheConfig, ReadOutcome};
use ringcache::io::sim::{SimEngine, SimFaults};
use ringcache::store::{FormatOptions, Store, StoreConfig, format};

fn main() -> Result<()> {
    let mut dir = std::env::temp_dir();
    let mut breaks: u64 = 2000;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dir = PathBuf::from(args.next().context("--dir needs a path")?),
            "--breaks" => breaks = args.next().context("--breaks needs N")?.parse()?,
            "--bench" => {}
            other => bail!("unknown argument {other:?} (--dir DIR, --breaks N)"),
        }
    }
    break_to_zap(&dir, breaks)?;
    let per_break = server_break_cost()?;
    let validate = validate_share()?;
    let (lo, hi) = per_break
        .iter()
        .fold((f64::MAX, 0f64), |(lo, hi), &(_, ns)| {
            (lo.min(ns), hi.max(ns))
        });
    println!(
        "summary: server break spread {:.2}x across 1k..1M records; validate adds {:+.1} % to a cached read",
        hi / lo,
        validate
    );
    Ok(())
}

/// A daemon in `dir`, killed when dropped.
struct Daemon {
    child: Child,
    socket: PathBuf,
    dir: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_daemon(parent: &Path) -> Result<Daemon> {
    let dir = parent.join(format!("ringcache-callback-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let socket = dir.join("rc.sock");
    let config = dir.join("ringcached.conf");
    std::fs::write(
        &config,
        format!(
            "dir {}\nsize 64M\nsocket {}\n",
            dir.display(),
            socket.display()
        ),
    )?;
    let child = Command::new(env!("CARGO_BIN_EXE_ringcached"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("starting ringcached")?;
    let d = Daemon { child, socket, dir };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = Client::connect(&d.socket)
            && c.ping().is_ok()
        {
            return Ok(d);
        }
        if Instant::now() > deadline {
            bail!("ringcached did not come up");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn break_to_zap(dir: &Path, breaks: u64) -> Result<()> {
    let d = start_daemon(dir)?;
    let mut a = Client::connect(&d.socket)?;
    let mut b = Client::connect(&d.socket)?;
    let va = a.acquire_volume(b"bench.export", b"")?;
    a.declare_server(va, b"bench-server", 1)?;
    let vb = b.acquire_volume(b"bench.export", b"")?;
    b.declare_server(vb, b"bench-server", 1)?;
    let ka = a.acquire_cookie(va, b"file", &1u64.to_le_bytes(), 4096)?;
    a.use_cookie(ka, false)?;
    let mut zap = Histogram::<u64>::new(3)?;
    let mut rtt = Histogram::<u64>::new(3)?;
    for _ in 0..breaks {
        let t0 = Instant::now();
        b.break_files(vb, &[b"file"])?;
        let t1 = Instant::now();
        let z = a
            .wait_zap(Duration::from_secs(5))?
            .context("no zap within 5 s")?;
        let t2 = Instant::now();
        if z.handle != ka.0 {
            bail!("zap for handle {} (expected {})", z.handle, ka.0);
        }
        rtt.record((t1 - t0).as_nanos() as u64)?;
        zap.record((t2 - t0).as_nanos() as u64)?;
    }
    println!("break to zap through ringcached ({breaks} breaks, one holder):");
    println!(
        "  break sent -> zap received: p50 {:.1} us, p99 {:.1} us",
        us(&zap, 0.5),
        us(&zap, 0.99)
    );
    println!(
        "  break round trip (answered when recorded): p50 {:.1} us, p99 {:.1} us",
        us(&rtt, 0.5),
        us(&rtt, 0.99)
    );
    Ok(())
}

/// Time per whole-server break, by record count.
fn server_break_cost() -> Result<Vec<(u64, f64)>> {
    const IN_USE: u64 = 10;
    const BREAKS: usize = 20_000;
    let server = ServerId::new(b"bench-server")?;
    let mut out = Vec::new();
    println!("whole-server break, {IN_USE} objects in use (median of 5 runs of {BREAKS} breaks):");
    for records in [1_000u64, 100_000, 1_000_000] {
        let mut reg = Callbacks::new(CallbackConfig::default());
        reg.declare_server(b"vol", &server, 1);
        let mut objs = Vec::with_capacity(records as usize);
        for i in 0..records {
            objs.push(reg.create(b"vol", format!("object-{i}").as_bytes(), Some(1)));
        }
        for (h, &obj) in objs.iter().take(IN_USE as usize).enumerate() {
            reg.hold(obj, 1, h as u32)?;
        }
        let mut runs = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let mut zaps = 0usize;
            for _ in 0..BREAKS {
                zaps += reg.break_server(&server).len();
            }
            let ns = t.elapsed().as_nanos() as f64 / BREAKS as f64;
            if zaps != BREAKS * IN_USE as usize {
                bail!("{zaps} zaps, expected {}", BREAKS * IN_USE as usize);
            }
            runs.push(ns);
        }
        runs.sort_by(f64::total_cmp);
        let ns = runs[runs.len() / 2];
        println!("  {records:>9} records: {:.2} us per break", ns / 1000.0);
        out.push((records, ns));
    }
    Ok(out)
}

/// Percent that validation adds to a cached 4 KiB read.
fn validate_share() -> Result<f64> {
    const READS: usize = 200_000;
    let device: u64 = (1 << 20) + 64 * (1 << 20);
    let sim = Arc::new(SimEngine::new(device, SimFaults::default()));
    format(
        sim.as_ref(),
        &FormatOptions {
            tag: "bench".into(),
            geometry: ringcache_ondisk::superblock::GeometryParams {
                region_bytes: Some(1 << 20),
                metalog_bytes: Some(256 << 10),
                ckpt_slot_bytes: Some(1 << 20),
            },
            force: false,
        },
    )?;
    let store = Arc::new(Store::open(sim, StoreConfig::default())?);
    let cache = Arc::new(Fscache::new(store, FscacheConfig::default()));
    let vol = cache.acquire_volume("bench", b"")?;
    let coherent = Coherent::new(cache.clone(), CallbackConfig::default());
    coherent.declare_server(b"bench", &ServerId::new(b"srv")?, 1);
    let (cookie, obj) = coherent.acquire_cookie(&vol, b"file", Some(1), 4096)?;
    cache.use_cookie(&cookie, false);
    let token = coherent.begin_fetch(obj);
    coherent.revalidate(
        &cookie,
        obj,
        token,
        Promise {
            expires_at: Instant::now() + Duration::from_secs(3600),
            data_version: 1,
        },
        4096,
        None,
    )?;
    let token = coherent.begin_fetch(obj);
    coherent.write_fetched(&cookie, obj, token, 1, 0, &[7; 4096])?;
    let plain = || -> Result<f64> {
        let t = Instant::now();
        for _ in 0..READS {
            let op = cache.begin_operation(&cookie, false);
            match op.read(0, 4096)? {
                ReadOutcome::Data(_) => {}
                other => bail!("cookie read: {other:?}"),
            }
        }
        Ok(t.elapsed().as_nanos() as f64 / READS as f64)
    };
    let checked = || -> Result<f64> {
        let t = Instant::now();
        for _ in 0..READS {
            match coherent.read(&cookie, obj, 0, 4096, Instant::now())? {
                CoherentRead::Data { .. } => {}
                other => bail!("coherent read: {other:?}"),
            }
        }
        Ok(t.elapsed().as_nanos() as f64 / READS as f64)
    };
    // The daemon's read path: the operation, then the gate (validation),
    // then the read.
    let gated = || -> Result<f64> {
        let t = Instant::now();
        for _ in 0..READS {
            let op = cache.begin_operation(&cookie, false);
            if !matches!(
                coherent.gate(obj, Instant::now()),
                Some(Validity::Valid { .. })
            ) {
                bail!("not valid");
            }
            match op.read(0, 4096)? {
                ReadOutcome::Data(_) => {}
                other => bail!("cookie read: {other:?}"),
            }
        }
        Ok(t.elapsed().as_nanos() as f64 / READS as f64)
    };
    // Alternate, seven each, and compare medians: the machine is shared.
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..7 {
        a.push(plain()?);
        b.push(gated()?);
        c.push(checked()?);
    }
    for v in [&mut a, &mut b, &mut c] {
        v.sort_by(f64::total_cmp);
    }
    let (pa, pb, pc) = (a[3], b[3], c[3]);
    let pct = (pb / pa - 1.0) * 100.0;
    println!("cached 4 KiB read on the sim device (median of 7 x {READS}):");
    println!(
        "  cookie layer alone:                 {:.3} us",
        pa / 1000.0
    );
    println!(
        "  + validation (the daemon's path):   {:.3} us ({pct:+.1} %)",
        pb / 1000.0
    );
    println!(
        "  Coherent::read (+ cookie check):    {:.3} us ({:+.1} %)",
        pc / 1000.0,
        (pc / pa - 1.0) * 100.0
    );
    Ok(pct)
}
