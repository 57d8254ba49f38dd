//! What a job clone does next, the same for both targets: whether one more
//! I/O may start and whether it counts ([`Schedule`]: ramp_time, runtime,
//! the size / bs budget, an abort by another thread), where it goes (its
//! [`Offsets`]), and whether it reads or writes, with what data ([`Mix`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::jobfile::Job;
use super::offsets::Offsets;

/// When a clone's I/Os may start, and which of them count.
pub(super) struct Schedule<'a> {
    /// Which block the i-th I/O touches.
    pub(super) offsets: Offsets,
    /// I/Os started before this are not counted.
    pub(super) ramp_end: Instant,
    /// No I/O starts at or after this.
    deadline: Option<Instant>,
    /// Counted I/Os to do (size / bs), when not time_based.
    budget: Option<u64>,
    /// Counted I/Os started so far, shared by the clone's threads.
    counted: AtomicU64,
    /// Set when any thread failed: everyone stops.
    abort: &'a AtomicBool,
}

impl<'a> Schedule<'a> {
    /// The schedule of a clone of `job` whose ramp starts at `start`, its
    /// offsets drawn with `seed`.
    pub(super) fn new(job: &Job, start: Instant, seed: u64, abort: &'a AtomicBool) -> Schedule<'a> {
        let ramp_end = start + job.ramp_time;
        let blocks = job.size / job.bs;
        Schedule {
            offsets: Offsets::new(blocks, job.bs, job.rw.is_random(), seed),
            ramp_end,
            deadline: job.runtime.map(|r| ramp_end + r),
            budget: (!job.time_based).then_some(blocks),
            counted: AtomicU64::new(0),
            abort,
        }
    }

    /// Whether one more I/O may start now, and whether it counts.
    pub(super) fn admit(&self, now: Instant) -> Option<bool> {
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

    /// Stop every thread of the clone (this one failed).
    pub(super) fn abort(&self) {
        self.abort.store(true, Ordering::Relaxed);
    }
}

/// One thread's choice between reading and writing (by the job's read
/// percent), and the block it writes.
pub(super) struct Mix {
    read_pct: u32,
    rng: ChaCha8Rng,
    data: Vec<u8>,
}

impl Mix {
    /// The mix of `job`, its random choices and data drawn from `seed`.
    pub(super) fn new(job: &Job, seed: u64) -> Mix {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut data = vec![0u8; job.bs as usize];
        rng.fill(data.as_mut_slice());
        Mix {
            read_pct: u32::from(job.rw.read_percent(job.rwmixread)),
            rng,
            data,
        }
    }

    /// Whether the next I/O reads.
    pub(super) fn next_is_read(&mut self) -> bool {
        self.read_pct == 100 || (self.read_pct > 0 && self.rng.random_range(0..100) < self.read_pct)
    }

    /// The data of the next write.
    pub(super) fn next_write(&mut self) -> &[u8] {
        // Vary the data a little so no two writes are alike.
        if let Some(b) = self.data.first_mut() {
            *b = b.wrapping_add(1);
        }
        &self.data
    }
}
