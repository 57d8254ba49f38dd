//! A simulated device for tests: an in-memory image that injects faults and
//! crashes, deterministically from a seed.
//!
//! The device keeps two images: what a reader sees now, and what would
//! survive a power cut (the state at the last completed flush). Writes since
//! the last flush are kept in order; [`SimEngine::crash_image`] decides for
//! each one, from the seed, whether it reached the media whole, not at all,
//! or torn at sector granularity. Faults: read, write and flush errors at a
//! rate or at given operation numbers, a crash before a given operation
//! (everything after it fails with [`IoError::Crashed`]), and a point after
//! which every operation fails (a dead device).
//!
//! Everything runs inline in `submit`, so the same seed and the same
//! sequence of requests replay the same run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{
    BufPool, Completion, CompletionQueue, IoBuf, IoEngine, IoError, IoHint, Op, OpKind, PoolConfig,
    check_request,
};

/// Sector size for torn writes.
pub const SECTOR_BYTES: usize = 512;

/// What to inject.
#[derive(Debug, Clone, Default)]
pub struct SimFaults {
    /// Seed of every random decision.
    pub seed: u64,
    /// Probability that a read fails.
    pub read_error_rate: f64,
    /// Probability that a write fails (and is not applied).
    pub write_error_rate: f64,
    /// Probability that a flush fails (and makes nothing durable).
    pub flush_error_rate: f64,
    /// Probability that a read succeeds with one bit of what it returns
    /// flipped (silent corruption on the way from the media).
    pub read_flip_rate: f64,
    /// Operation numbers (counting every op from 0) that fail.
    pub fail_ops: BTreeSet<u64>,
    /// Crash just before this operation number: it and all later ones fail.
    pub crash_at_op: Option<u64>,
    /// From this operation number on, every operation fails (dead device).
    pub dead_from_op: Option<u64>,
}

/// How unflushed writes fare in a crash.
#[derive(Debug, Clone, Copy)]
pub struct CrashModel {
    /// Probability that an unflushed write reached the media whole.
    pub keep: f64,
    /// Probability that it is torn (each sector old or new at random).
    pub tear: f64,
    // The rest is dropped.
}

impl Default for CrashModel {
    fn default() -> Self {
        CrashModel {
            keep: 0.4,
            tear: 0.3,
        }
    }
}

struct Pending {
    offset: u64,
    data: Vec<u8>,
}

struct State {
    current: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Pending>,
    op_count: u64,
    crashed: bool,
    crash_hint: Option<IoHint>,
    faults: SimFaults,
    rng: ChaCha8Rng,
    writes_by_hint: BTreeMap<&'static str, u64>,
    /// Reads returned with a bit flipped (`read_flip_rate`).
    flipped_reads: u64,
}

/// See the module docs.
pub struct SimEngine {
    state: Mutex<State>,
    device_bytes: u64,
    pool: BufPool,
}

fn hint_name(h: IoHint) -> &'static str {
    match h {
        IoHint::Data => "data",
        IoHint::Log => "log",
        IoHint::Checkpoint => "checkpoint",
        IoHint::Superblock => "superblock",
        IoHint::RegionHeader => "region-header",
        IoHint::Other => "other",
    }
}

impl SimEngine {
    /// A zero-filled device of `device_bytes` (rounded down to 4096).
    pub fn new(device_bytes: u64, faults: SimFaults) -> SimEngine {
        let n = (device_bytes & !4095) as usize;
        Self::from_image(vec![0; n], faults)
    }

    /// A device holding `image` (as if it had just been flushed).
    pub fn from_image(image: Vec<u8>, faults: SimFaults) -> SimEngine {
        let device_bytes = image.len() as u64;
        SimEngine {
            state: Mutex::new(State {
                durable: image.clone(),
                current: image,
                pending: Vec::new(),
                op_count: 0,
                crashed: false,
                crash_hint: None,
                rng: ChaCha8Rng::seed_from_u64(faults.seed),
                faults,
                writes_by_hint: BTreeMap::new(),
                flipped_reads: 0,
            }),
            device_bytes,
            pool: BufPool::new(&PoolConfig {
                classes: vec![(4096, 64), (64 << 10, 16)],
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replace the fault plan (the op counter keeps counting).
    pub fn set_faults(&self, faults: SimFaults) {
        let mut s = self.lock();
        s.rng = ChaCha8Rng::seed_from_u64(faults.seed);
        s.faults = faults;
    }

    /// Operations submitted so far.
    pub fn op_count(&self) -> u64 {
        self.lock().op_count
    }

    /// Reads returned with a bit flipped so far (`read_flip_rate`).
    pub fn flipped_reads(&self) -> u64 {
        self.lock().flipped_reads
    }

    /// Whether the simulated crash has happened.
    pub fn crashed(&self) -> bool {
        self.lock().crashed
    }

    /// The kind of write the crash point fell on, if it fell on a write.
    pub fn crash_hint(&self) -> Option<IoHint> {
        self.lock().crash_hint
    }

    /// Writes submitted so far, by what they were for.
    pub fn writes_by_hint(&self) -> BTreeMap<&'static str, u64> {
        self.lock().writes_by_hint.clone()
    }

    /// Crash now: later operations fail with [`IoError::Crashed`].
    pub fn crash_now(&self) {
        self.lock().crashed = true;
    }

    /// The image a machine would find after a power cut now: the durable
    /// image plus each unflushed write kept, dropped or torn per `model`,
    /// decided by `seed`.
    pub fn crash_image(&self, seed: u64, model: CrashModel) -> Vec<u8> {
        let s = self.lock();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut image = s.durable.clone();
        for p in &s.pending {
            let start = p.offset as usize;
            let Some(dst) = image.get_mut(start..start + p.data.len()) else {
                continue;
            };
            let roll: f64 = rng.random();
            if roll < model.keep {
                dst.copy_from_slice(&p.data);
            } else if roll < model.keep + model.tear {
                for (d, src) in dst
                    .chunks_mut(SECTOR_BYTES)
                    .zip(p.data.chunks(SECTOR_BYTES))
                {
                    if rng.random_bool(0.5) {
                        d.copy_from_slice(src);
                    }
                }
            }
        }
        image
    }

    /// The image as a reader sees it now.
    pub fn current_image(&self) -> Vec<u8> {
        self.lock().current.clone()
    }

    fn execute(&self, s: &mut State, op: &mut Op) -> Result<usize, IoError> {
        let n = s.op_count;
        s.op_count += 1;
        if s.faults.crash_at_op == Some(n) && !s.crashed {
            s.crashed = true;
            if op.kind == OpKind::Write {
                s.crash_hint = Some(op.hint);
            }
        }
        if s.crashed {
            return Err(IoError::Crashed);
        }
        check_request(op, self.device_bytes)?;
        if s.faults.dead_from_op.is_some_and(|d| n >= d) {
            return Err(IoError::Injected("dead device"));
        }
        let injected = s.faults.fail_ops.contains(&n);
        let off = op.offset as usize;
        let len = op.buf.len();
        match op.kind {
            OpKind::Read => {
                let rate = s.faults.read_error_rate;
                if injected || (rate > 0.0 && s.rng.random_bool(rate.min(1.0))) {
                    return Err(IoError::Injected("read"));
                }
                let src = s
                    .current
                    .get(off..off + len)
                    .ok_or_else(|| IoError::BadRequest("read past the image".into()))?;
                op.buf.copy_from_slice(src);
                let flip = s.faults.read_flip_rate;
                if len > 0 && flip > 0.0 && s.rng.random_bool(flip.min(1.0)) {
                    let bit = s.rng.random_range(0..len * 8);
                    op.buf[bit / 8] ^= 1 << (bit % 8);
                    s.flipped_reads += 1;
                }
                Ok(len)
            }
            OpKind::Write => {
                let rate = s.faults.write_error_rate;
                if injected || (rate > 0.0 && s.rng.random_bool(rate.min(1.0))) {
                    return Err(IoError::Injected("write"));
                }
                *s.writes_by_hint.entry(hint_name(op.hint)).or_default() += 1;
                let dst = s
                    .current
                    .get_mut(off..off + len)
                    .ok_or_else(|| IoError::BadRequest("write past the image".into()))?;
                dst.copy_from_slice(&op.buf);
                s.pending.push(Pending {
                    offset: op.offset,
                    data: op.buf.to_vec(),
                });
                Ok(len)
            }
            OpKind::Flush => {
                let rate = s.faults.flush_error_rate;
                if injected || (rate > 0.0 && s.rng.random_bool(rate.min(1.0))) {
                    return Err(IoError::Injected("flush"));
                }
                let pending = std::mem::take(&mut s.pending);
                for p in pending {
                    let a = p.offset as usize;
                    if let Some(d) = s.durable.get_mut(a..a + p.data.len()) {
                        d.copy_from_slice(&p.data);
                    }
                }
                Ok(0)
            }
        }
    }
}

impl IoEngine for SimEngine {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn device_bytes(&self) -> u64 {
        self.device_bytes
    }

    fn submit(&self, ops: &mut Vec<Op>, cq: &CompletionQueue) {
        let mut s = self.lock();
        for mut op in ops.drain(..) {
            let result = self.execute(&mut s, &mut op);
            cq.push(Completion {
                tag: op.tag,
                result,
                buf: op.buf,
            });
        }
    }

    fn alloc(&self, len: usize) -> IoBuf {
        self.pool.alloc(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{IoHint, flush, read_at, write_at};

    fn block(byte: u8) -> IoBuf {
        let mut b = IoBuf::new(4096);
        b.fill(byte);
        b
    }

    #[test]
    fn unflushed_writes_can_be_lost_flushed_ones_cannot() {
        let sim = SimEngine::new(1 << 20, SimFaults::default());
        write_at(&sim, 0, block(1), IoHint::Data).expect("write");
        flush(&sim).expect("flush");
        write_at(&sim, 4096, block(2), IoHint::Data).expect("write");
        assert_eq!(read_at(&sim, 4096, 4096, IoHint::Data).expect("read")[0], 2);
        let all_dropped = sim.crash_image(
            1,
            CrashModel {
                keep: 0.0,
                tear: 0.0,
            },
        );
        assert_eq!(all_dropped[0], 1);
        assert_eq!(all_dropped[4096], 0);
        let all_kept = sim.crash_image(
            1,
            CrashModel {
                keep: 1.0,
                tear: 0.0,
            },
        );
        assert_eq!(all_kept[4096], 2);
    }

    #[test]
    fn torn_writes_mix_sectors_and_replay_identically() {
        let sim = SimEngine::new(1 << 20, SimFaults::default());
        write_at(&sim, 0, block(7), IoHint::Data).expect("write");
        let torn = CrashModel {
            keep: 0.0,
            tear: 1.0,
        };
        let a = sim.crash_image(42, torn);
        let b = sim.crash_image(42, torn);
        assert_eq!(a, b, "same seed, same image");
        let new_sectors = a[..4096].chunks(SECTOR_BYTES).filter(|s| s[0] == 7).count();
        assert!(
            new_sectors > 0 && new_sectors < 8,
            "torn: {new_sectors}/8 sectors new"
        );
    }

    #[test]
    fn faults_at_given_ops_and_crash_point() {
        let sim = SimEngine::new(
            1 << 20,
            SimFaults {
                fail_ops: [1].into(),
                crash_at_op: Some(3),
                ..Default::default()
            },
        );
        write_at(&sim, 0, block(1), IoHint::Log).expect("write");
        assert!(matches!(
            write_at(&sim, 0, block(2), IoHint::Log),
            Err(IoError::Injected("write"))
        ));
        read_at(&sim, 0, 4096, IoHint::Other).expect("read");
        assert!(matches!(
            write_at(&sim, 0, block(3), IoHint::Checkpoint),
            Err(IoError::Crashed)
        ));
        assert_eq!(sim.crash_hint(), Some(IoHint::Checkpoint));
        assert!(matches!(flush(&sim), Err(IoError::Crashed)));
    }
}
