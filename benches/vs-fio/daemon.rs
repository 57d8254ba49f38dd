//! The daemon side (`--target daemon`, and the sweep's third column): a
//! real `ringcached` serving the file, filled through four connections
//! with pipelined writes and
//! read through one pipelined connection, its own CPU time read from
//! /proc.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::embedded::{fill_chunk, format_file, join_writers};
use crate::{FILL_BS, FILL_BYTES, ringcached_bin};

/// A ringcached serving the cache file, for `--target daemon`.
pub(crate) struct DaemonRun {
    child: std::process::Child,
    pub(crate) socket: PathBuf,
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
    pub(crate) fn start(file: &Path, dir: &Path) -> Result<DaemonRun> {
        // Formatted, and closed again before the daemon opens it.
        drop(format_file(file)?);
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

    pub(crate) fn stop(mut self) -> Result<()> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        self.child.wait()?;
        self.stopped = true;
        Ok(())
    }
}

/// Fill through the daemon: four connections (`RINGCACHE_FILL_CONNS`),
/// each with four 1 MiB writes in flight (`RINGCACHE_FILL_WINDOW`; the
/// daemon keeps up to 4 MiB of a connection's writes in flight), each
/// filling its own 64 MiB objects (a cookie is used by one client).
pub(crate) fn daemon_fill(d: &DaemonRun) -> Result<f64> {
    const PART: u64 = 64 << 20;
    let env = |name: &str, default: usize| -> usize {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or(default)
    };
    let conns = env("RINGCACHE_FILL_CONNS", 4) as u64;
    let window = env("RINGCACHE_FILL_WINDOW", 4);
    let chunk = fill_chunk();
    let parts = FILL_BYTES / PART;
    let t = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..conns)
            .map(|w| {
                let chunk = &chunk;
                s.spawn(move || -> Result<()> {
                    let mut c = ringcache::client::Client::connect(&d.socket)?;
                    let v = c.acquire_volume(b"bench", b"")?;
                    let answered = |c: &mut ringcache::client::Client| -> Result<()> {
                        let (_, st, _) = c.recv_any()?;
                        if st != ringcache::proto::Status::Ok {
                            bail!("daemon write: {st:?}");
                        }
                        Ok(())
                    };
                    for part in (w..parts).step_by(conns as usize) {
                        let k =
                            c.acquire_cookie(v, format!("part-{part}").as_bytes(), b"", PART)?;
                        c.use_cookie(k, false)?;
                        let mut outstanding = 0;
                        for off in (0..PART).step_by(FILL_BS) {
                            if outstanding == window {
                                answered(&mut c)?;
                                outstanding -= 1;
                            }
                            let body = ringcache::client::request::write(k, off, chunk)?;
                            c.send(ringcache::proto::Op::Write, &body)?;
                            outstanding += 1;
                        }
                        for _ in 0..outstanding {
                            answered(&mut c)?;
                        }
                        c.unuse_cookie(k, None, None)?;
                        c.relinquish_cookie(k, false)?;
                    }
                    Ok(())
                })
            })
            .collect();
        join_writers(workers)
    })?;
    let secs = t.elapsed().as_secs_f64();
    Ok(FILL_BYTES as f64 / (1 << 20) as f64 / secs)
}

/// Random 4 KiB reads through the daemon at queue depth `qd` on each of
/// `conns` connections, each on a thread of its own: (total IOPS, p50 us,
/// p99 us, daemon CPU us per op).
pub(crate) fn daemon_read(
    d: &DaemonRun,
    qd: usize,
    seconds: u64,
    conns: usize,
) -> Result<(f64, f64, f64, f64)> {
    let cpu0 = d.cpu_secs();
    let t = Instant::now();
    let deadline = t + Duration::from_secs(seconds);
    let (ios, hist) = std::thread::scope(|s| -> Result<_> {
        let readers: Vec<_> = (0..conns)
            .map(|n| s.spawn(move || connection_reads(d, qd, n, conns, deadline)))
            .collect();
        let mut ios = 0;
        let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
        for r in readers {
            let (n, h) = r
                .join()
                .map_err(|_| anyhow::anyhow!("a reader panicked"))??;
            ios += n;
            hist.add(&h)?;
        }
        Ok((ios, hist))
    })?;
    let secs = t.elapsed().as_secs_f64();
    let cpu = d.cpu_secs() - cpu0;
    Ok((
        ios as f64 / secs,
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        cpu * 1e6 / ios.max(1) as f64,
    ))
}

/// Connection `n` of `conns` of [`daemon_read`]: reads at depth `qd` until
/// `deadline`; how many, and their latencies (ns). A cookie is held by one
/// connection at a time, so each reads its own share of the fill's parts.
fn connection_reads(
    d: &DaemonRun,
    qd: usize,
    n: usize,
    conns: usize,
    deadline: Instant,
) -> Result<(u64, hdrhistogram::Histogram<u64>)> {
    use ringcache::client::{Client, ReadReply};
    let mut c = Client::connect(&d.socket)?;
    let v = c.acquire_volume(b"bench", b"")?;
    let parts = FILL_BYTES / (64 << 20);
    let cookies: Vec<_> = (0..parts)
        .filter(|p| *p as usize % conns == n)
        .map(|p| -> Result<_> {
            let k = c.acquire_cookie(v, format!("part-{p}").as_bytes(), b"", 64 << 20)?;
            c.use_cookie(k, false)?;
            Ok(k)
        })
        .collect::<Result<_>>()?;
    if cookies.is_empty() {
        bail!("more connections than parts of the fill");
    }
    let parts = cookies.len() as u64;
    let mut rng = ChaCha8Rng::seed_from_u64(3 + n as u64);
    let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut outstanding = std::collections::VecDeque::new();
    let mut ios = 0u64;
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
    for (id, _) in outstanding {
        let _ = c.recv(id)?;
    }
    Ok((ios, hist))
}
