//! `target=daemon`: the jobs through a running `ringcached`, with the
//! client library, as a network filesystem would use it.
//!
//! A cookie belongs to one connection, so each job clone has its own
//! connection and its own object (key `JOB.CLONE` in the volume `bench`, of
//! the job's `size`), prefilled (untimed, 1 MiB writes) when the job reads
//! and the object is not already fully cached. The clone keeps `iodepth`
//! requests pipelined on its connection and takes replies in whatever
//! order they come; latency is from queueing a request to its reply. The
//! daemon serves a connection's reads concurrently and its writes one
//! after the other, so a write job's depth is the client's, not the
//! device's. Clones of a group start their timed phase together.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ringcache::client::{Client, ClientError, CookieHandle, ReadReply, ReadSegment, request};
use ringcache::proto::{Op, Status};
use ringcache::store::StoreStats;

use super::BenchError;
use super::jobfile::{Job, JobFile, Target};
use super::offsets::splitmix;
use super::prefill::{PREFILL_CHUNK, VOLUME, prefill_chunk};
use super::progress::{Live, join, scope_with_progress};
use super::report::{Report, now_unix_ms};
use super::schedule::{Mix, Schedule};
use super::stats::{Dir, ThreadStats, job_reports, stats_delta};

fn client_err(context: impl Into<String>) -> impl FnOnce(ClientError) -> BenchError {
    let context = context.into();
    move |e| BenchError::Daemon {
        context,
        why: e.to_string(),
    }
}

/// What one clone measured, and when its timed phase began.
struct CloneRun {
    stats: ThreadStats,
    ramp_end: Instant,
    prefill: Option<Duration>,
}

/// Run every job of `file` through the daemon at `socket`.
pub(super) fn run(file: &JobFile, socket: &Path, progress: bool) -> Result<Report, BenchError> {
    let started_unix_ms = now_unix_ms();
    // Fail early, and clearly, when no daemon answers.
    let mut control = Client::connect(socket).map_err(client_err(format!(
        "connecting to ringcached at {} (is it running? --socket names another)",
        socket.display()
    )))?;
    let capacity = daemon_capacity(&mut control)?;
    let mut reports = Vec::new();
    let groups = file.jobs.iter().map(|j| j.group).max().unwrap_or(0);
    for g in 0..=groups {
        let members: Vec<&Job> = file.jobs.iter().filter(|j| j.group == g).collect();
        if members.is_empty() {
            continue;
        }
        check_fits(&members, capacity)?;
        let before = daemon_store_stats(&mut control)?;
        let clones: usize = members.iter().map(|j| j.numjobs as usize).sum();
        let barrier = Barrier::new(clones);
        let abort = AtomicBool::new(false);
        let lives: Vec<Live> = members.iter().map(|_| Live::default()).collect();
        let start = Instant::now();
        type CloneResult = Result<CloneRun, BenchError>;
        let results: Vec<Vec<CloneResult>> =
            scope_with_progress(progress, &members, &lives, start, |s| {
                let handles: Vec<Vec<_>> = members
                    .iter()
                    .zip(&lives)
                    .enumerate()
                    .map(|(ji, (&job, live))| {
                        (0..job.numjobs)
                            .map(|ci| {
                                let (barrier, abort) = (&barrier, &abort);
                                let seed = splitmix(
                                    ((g as u64) << 48) ^ ((ji as u64) << 32) ^ u64::from(ci),
                                );
                                s.spawn(move || {
                                    let r = run_clone(socket, job, ci, seed, barrier, abort, live);
                                    if r.is_err() {
                                        abort.store(true, Ordering::Relaxed);
                                    }
                                    r
                                })
                            })
                            .collect()
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|clones| clones.into_iter().map(join).collect())
                    .collect()
            });
        let elapsed = start.elapsed();
        let after = daemon_store_stats(&mut control)?;
        let store = stats_delta(&before, &after);
        for (job, runs) in members.iter().zip(results) {
            let mut per_clone = Vec::with_capacity(runs.len());
            for r in runs {
                per_clone.push(r?);
            }
            let prefill = per_clone.iter().filter_map(|c| c.prefill).max();
            let clones: Vec<(&ThreadStats, Instant)> =
                per_clone.iter().map(|c| (&c.stats, c.ramp_end)).collect();
            job_reports(
                &mut reports,
                job,
                &clones,
                elapsed,
                prefill,
                "daemon",
                &store,
            );
        }
    }
    Ok(Report {
        jobs: reports,
        global_options: file.global_options.clone(),
        started_unix_ms,
        target: Target::Daemon,
        notes: Vec::new(),
    })
}

/// The share of the daemon's data capacity the jobs running together may
/// fill: the rest is the culling's working room.
const FILL_LIMIT_PERCENT: u64 = 90;

/// The daemon's data capacity in bytes (regions × region size).
fn daemon_capacity(c: &mut Client) -> Result<u64, BenchError> {
    let stats = c
        .stats()
        .map_err(client_err("reading the daemon's counters"))?;
    let get = |k: &str| stats.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    match (get("space.regions"), get("space.region_bytes")) {
        (Some(n), Some(b)) => Ok(n.saturating_mul(b)),
        _ => Err(BenchError::Daemon {
            context: "reading the daemon's counters".into(),
            why: "no space.regions or space.region_bytes".into(),
        }),
    }
}

/// Every clone of a job writes (or prefills) its own object of the job's
/// size: the jobs that run together must fit in the cache, or writes are
/// dropped part way. Said before anything runs, with what to change.
fn check_fits(members: &[&Job], capacity: u64) -> Result<(), BenchError> {
    let total: u64 = members
        .iter()
        .map(|j| j.size.saturating_mul(u64::from(j.numjobs)))
        .sum();
    let limit = capacity / 100 * FILL_LIMIT_PERCENT;
    if total > limit {
        let names: Vec<&str> = members.iter().map(|j| j.name.as_str()).collect();
        return Err(BenchError::Daemon {
            context: format!("jobs {names:?}"),
            why: format!(
                "they need {} MiB (size x numjobs), more than {FILL_LIMIT_PERCENT}% of the \
                 daemon's cache ({} MiB): give the job file a smaller size= (at most {} MiB \
                 in all), or the daemon a larger cache (size in its configuration)",
                total >> 20,
                capacity >> 20,
                limit >> 20
            ),
        });
    }
    Ok(())
}

/// The daemon's `store.*` counters.
fn daemon_store_stats(c: &mut Client) -> Result<StoreStats, BenchError> {
    let mut s = StoreStats::default();
    for (name, v) in c
        .stats()
        .map_err(client_err("asking the daemon for its counters"))?
    {
        let Some(name) = name.strip_prefix("store.") else {
            continue;
        };
        let field = match name {
            "reads" => &mut s.reads,
            "read_bytes" => &mut s.read_bytes,
            "read_hole_bytes" => &mut s.read_hole_bytes,
            "writes" => &mut s.writes,
            "write_bytes" => &mut s.write_bytes,
            "checksum_errors" => &mut s.checksum_errors,
            "io_errors" => &mut s.io_errors,
            "regions_evicted" => &mut s.regions_evicted,
            "bytes_evicted" => &mut s.bytes_evicted,
            "objects_culled" => &mut s.objects_culled,
            "checkpoints" => &mut s.checkpoints,
            "flushes" => &mut s.flushes,
            "nospace_events" => &mut s.nospace_events,
            _ => continue,
        };
        *field = v;
    }
    Ok(s)
}

/// One clone: its connection, its object, its timed phase.
fn run_clone(
    socket: &Path,
    job: &Job,
    clone: u32,
    seed: u64,
    barrier: &Barrier,
    abort: &AtomicBool,
    live: &Live,
) -> Result<CloneRun, BenchError> {
    let ctx = |what: &str| format!("job {:?} clone {clone}: {what}", job.name);
    let prepared = prepare(socket, job, clone, &ctx);
    // Everyone reaches the barrier, failed or not, so nobody waits forever.
    barrier.wait();
    let (mut c, cookie, prefill) = prepared?;
    let schedule = Schedule::new(job, Instant::now(), seed, abort);
    let mut mix = Mix::new(job, splitmix(seed ^ 0x5eed));
    let mut st = ThreadStats::new();
    // Request id -> (queued at, counts, is a read).
    let mut outstanding: HashMap<u64, (Instant, bool, bool)> = HashMap::new();
    let mut next = 0u64;
    let mut issuing = true;
    let bs = job.bs;
    loop {
        while issuing && outstanding.len() < job.iodepth as usize {
            let now = Instant::now();
            let Some(measured) = schedule.admit(now) else {
                issuing = false;
                break;
            };
            let off = schedule.offsets.at(next);
            next += 1;
            let is_read = mix.next_is_read();
            let id = if is_read {
                c.queue(Op::Read, &request::read(cookie, off, bs as u32))
            } else {
                let body = request::write(cookie, off, mix.next_write())
                    .map_err(client_err(ctx("a write")))?;
                c.queue(Op::Write, &body)
            };
            outstanding.insert(id, (now, measured, is_read));
        }
        if outstanding.is_empty() {
            break;
        }
        let (id, status, body) = c.recv_any().map_err(client_err(ctx("reply")))?;
        let now = Instant::now();
        let Some((t0, measured, is_read)) = outstanding.remove(&id) else {
            return Err(BenchError::Daemon {
                context: ctx("reply"),
                why: format!("a reply to request {id}, which was not asked"),
            });
        };
        let ns = (now - t0).as_nanos() as u64;
        if is_read {
            let hit = match Client::parse_read(status, &body).map_err(client_err(ctx("read")))? {
                ReadReply::Data(segs) => {
                    segs.iter().all(|s| matches!(s, ReadSegment::Data { .. }))
                        && segs
                            .iter()
                            .map(|s| match s {
                                ReadSegment::Data { data, .. } => data.len() as u64,
                                ReadSegment::Hole { len, .. } => *len,
                            })
                            .sum::<u64>()
                            == bs
                }
                ReadReply::NoData | ReadReply::Stale | ReadReply::Revalidate => false,
            };
            if !hit {
                st.misses += u64::from(measured);
                continue;
            }
            live.add(Dir::Read, 1, bs);
            if measured {
                st.record(Dir::Read, ns, bs, now);
            }
        } else {
            if status != Status::Ok {
                return Err(BenchError::Daemon {
                    context: ctx("write"),
                    why: format!("the daemon answered {status:?}"),
                });
            }
            live.add(Dir::Write, 1, bs);
            if measured {
                st.record(Dir::Write, ns, bs, now);
            }
        }
    }
    c.unuse_cookie(cookie, None, None)
        .map_err(client_err(ctx("unuse")))?;
    c.relinquish_cookie(cookie, false)
        .map_err(client_err(ctx("relinquish")))?;
    Ok(CloneRun {
        stats: st,
        ramp_end: schedule.ramp_end,
        prefill,
    })
}

/// Connect, take the clone's cookie and fill its object when the job reads
/// and it is not fully cached yet.
fn prepare(
    socket: &Path,
    job: &Job,
    clone: u32,
    ctx: &dyn Fn(&str) -> String,
) -> Result<(Client, CookieHandle, Option<Duration>), BenchError> {
    let mut c = Client::connect(socket).map_err(client_err(ctx("connecting")))?;
    let v = c
        .acquire_volume(VOLUME, b"")
        .map_err(client_err(ctx("acquiring the volume")))?;
    let key = format!("{}.{clone}", job.name);
    let cookie = c
        .acquire_cookie(v, key.as_bytes(), b"", job.size)
        .map_err(client_err(ctx("acquiring its cookie")))?;
    c.use_cookie(cookie, true)
        .map_err(client_err(ctx("using its cookie")))?;
    if job.rw.read_percent(job.rwmixread) == 0 {
        return Ok((c, cookie, None));
    }
    let cached = c
        .query_occupancy(cookie)
        .map_err(client_err(ctx("occupancy")))?;
    if cached == vec![(0, job.size)] {
        return Ok((c, cookie, None));
    }
    let t = Instant::now();
    let chunk = prefill_chunk(u64::from(clone));
    let mut off = 0;
    let mut ids = std::collections::VecDeque::new();
    while off < job.size || !ids.is_empty() {
        while off < job.size && ids.len() < 4 {
            let len = (job.size - off).min(PREFILL_CHUNK) as usize;
            let body = request::write(cookie, off, &chunk[..len])
                .map_err(client_err(ctx("a prefill write")))?;
            ids.push_back(c.queue(Op::Write, &body));
            off += len as u64;
        }
        if let Some(id) = ids.pop_front() {
            let (st, _) = c.recv(id).map_err(client_err(ctx("prefill")))?;
            if st != Status::Ok {
                return Err(BenchError::Daemon {
                    context: ctx("prefill"),
                    why: format!(
                        "the daemon answered {st:?} (a cache too small for the jobs' objects?)"
                    ),
                });
            }
        }
    }
    Ok((c, cookie, Some(t.elapsed())))
}
