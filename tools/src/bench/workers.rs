//! The embedded target's worker threads: iodepth I/Os in flight per job
//! clone, against the store in this process.
//!
//! - Read-only jobs: one thread per clone and a [`ReadQueue`], which sends
//!   each read to the engine as it is queued; the thread reaps whichever
//!   complete, tops the device's queue up again, then checks and counts
//!   them ([`run_reader`]).
//! - Jobs that write: one thread per in-flight I/O (iodepth threads per
//!   clone), each calling [`Store::write`] (or [`Store::read`] for the read
//!   share of a mixed job) ([`run_slot`]). The store has no asynchronous
//!   write call, and a write returns only once its data is on the device,
//!   so a thread per in-flight write is what keeps iodepth writes in
//!   flight; the threads of a clone draw offsets from one shared counter.
//!
//! Latency is taken per I/O, from just before the call that queues it to
//! its completion. A read that finds no cached data (a hole: the data was
//! culled) is counted as a miss and left out of the figures.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ringcache::store::{ObjectId, ReadQueue, Segment, Store};

use super::jobfile::Job;
use super::offsets::splitmix;
use super::progress::Live;
use super::schedule::{Mix, Schedule};
use super::stats::{Dir, ThreadStats};
use super::{BenchError, store_err};

/// What the threads of one clone share.
pub(super) struct JobClone<'a> {
    pub(super) store: &'a Store,
    pub(super) id: ObjectId,
    pub(super) job: &'a Job,
    pub(super) schedule: Schedule<'a>,
    /// Next I/O index (offsets), shared by the clone's threads.
    pub(super) next: AtomicU64,
    pub(super) live: &'a Live,
    pub(super) seed: u64,
}

fn is_hit(segs: &[Segment], len: u64) -> bool {
    segs.iter().all(|s| matches!(s, Segment::Data { .. }))
        && segs.iter().map(Segment::len).sum::<u64>() == len
}

/// A read-only clone: one thread keeping iodepth reads at the device
/// through a ReadQueue.
pub(super) fn run_reader(c: &JobClone<'_>) -> Result<ThreadStats, BenchError> {
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
                let Some(measured) = c.schedule.admit(now) else {
                    free.push(slot);
                    issuing = false;
                    break;
                };
                if let Some(s) = started.get_mut(slot) {
                    *s = (now, measured);
                }
                q.submit(slot as u64, c.id, c.schedule.offsets.at(next), bs)
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
                    st.record(Dir::Read, (now - t0).as_nanos() as u64, bs, now);
                }
            }
            c.live.add(Dir::Read, ios, bytes);
        }
    })();
    if result.is_err() {
        c.schedule.abort();
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
pub(super) fn run_slot(c: &JobClone<'_>, slot: u32) -> Result<ThreadStats, BenchError> {
    let bs = c.job.bs;
    let mut mix = Mix::new(c.job, splitmix(c.seed ^ u64::from(slot)));
    let mut st = ThreadStats::new();
    let r = (|| {
        loop {
            let t0 = Instant::now();
            let Some(measured) = c.schedule.admit(t0) else {
                return Ok(());
            };
            let off = c
                .schedule
                .offsets
                .at(c.next.fetch_add(1, Ordering::Relaxed));
            if mix.next_is_read() {
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
                c.live.add(Dir::Read, 1, bs);
                if measured {
                    st.record(Dir::Read, (t1 - t0).as_nanos() as u64, bs, t1);
                }
            } else {
                let data = mix.next_write();
                let t0 = Instant::now();
                c.store
                    .write(c.id, off, data)
                    .map_err(store_err(format!("job {:?}: write at {off}", c.job.name)))?;
                let t1 = Instant::now();
                c.live.add(Dir::Write, 1, bs);
                if measured {
                    st.record(Dir::Write, (t1 - t0).as_nanos() as u64, bs, t1);
                }
            }
        }
    })();
    if r.is_err() {
        c.schedule.abort();
    }
    r.map(|()| st)
}
