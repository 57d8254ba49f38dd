//! Crash consistency of the object store, on the sim engine.
//!
//! The bug class this guards against: after a power cut the cache serves
//! bytes that were never written at that place, brings back an object that
//! was deleted or data from before an invalidation, or loses data that a
//! flush had acknowledged. Torn log blocks, torn checkpoints, half-written
//! region headers, stale log blocks from before an earlier crash, regions
//! reused by culling: all must end in a state the model allows.
//!
//! For each seed a random workload (creates, writes, overwrites, reads,
//! invalidations, deletes, dirty marks, flushes, checkpoints, enough writes
//! to make culling reuse regions) runs against the store while a model
//! tracks what may and what must be found after a crash. The device
//! crashes before a random operation; unflushed writes are kept, dropped or
//! torn per sector, from the seed. The store is reopened and checked
//! against the model, then the workload goes on from the recovered state
//! and crashes again (so the log of the first run must never be replayed
//! into the second).
//!
//! `RINGCACHE_CRASH_SEEDS=N` runs N seeds (default 520, two crashes each);
//! `RINGCACHE_CRASH_SEED=S` replays seed S alone. A failure prints its seed.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringcache::io::sim::{CrashModel, SimEngine, SimFaults};
use ringcache::store::{Segment, Store, StoreConfig, VolumeId};

const KEYS: usize = 6;
const OBJECT_BLOCKS: u64 = 24;
const BLOCK: usize = 4096;

#[derive(Clone, Debug, Default)]
struct BlockModel {
    /// Value acknowledged durable (by a flush) in this version.
    durable: Option<u64>,
    /// Values written since, which may or may not have survived.
    since: Vec<u64>,
}

#[derive(Clone, Debug)]
struct Version {
    /// None: the key is absent in this version.
    aux: Option<Vec<u8>>,
    blocks: BTreeMap<u64, BlockModel>,
    dirty_durable: bool,
}

#[derive(Clone, Debug)]
struct KeyModel {
    versions: Vec<Version>,
    /// Oldest version that may be found after a crash.
    min_version: usize,
    /// Store id of the current (last) version, if present in the store now.
    id: Option<u64>,
}

impl KeyModel {
    fn absent() -> Self {
        KeyModel {
            versions: vec![Version {
                aux: None,
                blocks: BTreeMap::new(),
                dirty_durable: false,
            }],
            min_version: 0,
            id: None,
        }
    }
    fn last(&mut self) -> &mut Version {
        self.versions.last_mut().expect("never empty")
    }
    /// Everything so far is durable.
    fn flushed(&mut self) {
        self.min_version = self.versions.len() - 1;
        for b in self.last().blocks.values_mut() {
            if let Some(&v) = b.since.last() {
                b.durable = Some(v);
            }
            b.since.clear();
        }
    }
}

struct Run {
    rng: ChaCha8Rng,
    keys: Vec<KeyModel>,
    next_value: u64,
    next_aux: u64,
    /// Op kind at which the crash hit, for the coverage summary.
    crash_op: Option<&'static str>,
    /// A region was evicted since the last flush: a durable value that was
    /// overwritten since may have been culled with its region.
    evicted_since_flush: bool,
}

fn block_of(value: u64) -> Vec<u8> {
    value.to_le_bytes().repeat(BLOCK / 8)
}

fn decode(block: &[u8]) -> Option<u64> {
    let v = u64::from_le_bytes(block.get(..8)?.try_into().ok()?);
    (block == block_of(v).as_slice()).then_some(v)
}

fn key_name(k: usize) -> Vec<u8> {
    format!("key-{k}").into_bytes()
}

impl Run {
    fn new(seed: u64) -> Self {
        Run {
            rng: ChaCha8Rng::seed_from_u64(seed),
            keys: (0..KEYS).map(|_| KeyModel::absent()).collect(),
            next_value: 1,
            next_aux: 1,
            crash_op: None,
            evicted_since_flush: false,
        }
    }

    fn fresh_aux(&mut self) -> Vec<u8> {
        self.next_aux += 1;
        format!("aux-{}", self.next_aux).into_bytes()
    }

    /// Run `steps` random operations; stop at the first error (the crash).
    /// Returns whether the run crashed, and checks live reads on the way.
    fn workload(
        &mut self,
        store: &Store,
        vol: VolumeId,
        steps: usize,
        sim: &SimEngine,
    ) -> Result<(), String> {
        for _ in 0..steps {
            let k = self.rng.random_range(0..KEYS);
            let roll = self.rng.random_range(0..100);
            let evicted_before = store.stats().regions_evicted;
            let (kind, r): (&'static str, Result<(), String>) = match (self.keys[k].id, roll) {
                (None, _) => {
                    let aux = self.fresh_aux();
                    match store.create(vol, &key_name(k), &aux, OBJECT_BLOCKS * BLOCK as u64) {
                        Ok(id) => {
                            let m = &mut self.keys[k];
                            m.versions.push(Version {
                                aux: Some(aux),
                                blocks: BTreeMap::new(),
                                dirty_durable: false,
                            });
                            m.id = Some(id);
                            ("create", Ok(()))
                        }
                        Err(e) => {
                            // The create may have reached the log anyway.
                            self.keys[k].versions.push(Version {
                                aux: Some(aux),
                                blocks: BTreeMap::new(),
                                dirty_durable: false,
                            });
                            ("create", Err(e.to_string()))
                        }
                    }
                }
                (Some(id), 0..=54) => {
                    let first = self.rng.random_range(0..OBJECT_BLOCKS);
                    let n = self.rng.random_range(1..=6).min(OBJECT_BLOCKS - first);
                    let values: Vec<u64> = (0..n).map(|i| self.next_value + i).collect();
                    self.next_value += n;
                    let data: Vec<u8> = values.iter().flat_map(|&v| block_of(v)).collect();
                    let r = store.write(id, first * BLOCK as u64, &data);
                    // Whether it failed or not, the values may be there.
                    let last = self.keys[k].last();
                    for (i, &v) in values.iter().enumerate() {
                        last.blocks
                            .entry(first + i as u64)
                            .or_default()
                            .since
                            .push(v);
                    }
                    let kind = if store.stats().regions_evicted > evicted_before {
                        "write+cull"
                    } else {
                        "write"
                    };
                    (kind, r.map_err(|e| e.to_string()))
                }
                (Some(id), 55..=69) => ("read", self.check_live(store, k, id)),
                (Some(id), 70..=76) => {
                    let aux = self.fresh_aux();
                    let r = store.invalidate(id, &aux, OBJECT_BLOCKS * BLOCK as u64);
                    let m = &mut self.keys[k];
                    if r.is_ok() {
                        m.flushed();
                    }
                    m.versions.push(Version {
                        aux: Some(aux),
                        blocks: BTreeMap::new(),
                        dirty_durable: false,
                    });
                    if r.is_ok() {
                        m.min_version = m.versions.len() - 1;
                    }
                    ("invalidate", r.map(|_| ()).map_err(|e| e.to_string()))
                }
                (Some(id), 77..=81) => {
                    let r = store.delete(id);
                    let m = &mut self.keys[k];
                    if r.is_ok() {
                        m.flushed();
                    }
                    m.versions.push(Version {
                        aux: None,
                        blocks: BTreeMap::new(),
                        dirty_durable: false,
                    });
                    m.id = None;
                    if r.is_ok() {
                        m.min_version = m.versions.len() - 1;
                    }
                    ("delete", r.map_err(|e| e.to_string()))
                }
                (Some(id), 82..=85) => {
                    // Marking an object that is dirty already is a no-op
                    // (the mark is durable already); otherwise it flushes.
                    let was_dirty = store.stat(id).map(|i| i.dirty).unwrap_or(false);
                    let r = store.set_dirty(id, true);
                    if r.is_ok() {
                        if !was_dirty {
                            self.keys[k].flushed();
                        }
                        self.keys[k].last().dirty_durable = true;
                    }
                    let kind = if was_dirty {
                        "set_dirty_again"
                    } else {
                        "set_dirty"
                    };
                    (kind, r.map_err(|e| e.to_string()))
                }
                (Some(_), 86..=94) => {
                    let r = store.flush();
                    if r.is_ok() {
                        for m in &mut self.keys {
                            m.flushed();
                        }
                    }
                    ("flush", r.map_err(|e| e.to_string()))
                }
                (Some(_), _) => {
                    let r = store.checkpoint();
                    if r.is_ok() {
                        for m in &mut self.keys {
                            m.flushed();
                        }
                    }
                    ("checkpoint", r.map_err(|e| e.to_string()))
                }
            };
            if store.stats().regions_evicted > evicted_before {
                self.evicted_since_flush = true;
            }
            if std::env::var_os("RINGCACHE_CRASH_TRACE").is_some() {
                eprintln!(
                    "op {} key {k} {kind} -> {:?} evicted={} model={:?}",
                    sim.op_count(),
                    r,
                    store.stats().regions_evicted,
                    self.keys[k].versions.last().map(|v| v.blocks.get(&3))
                );
            }
            if let Err(e) = r {
                if sim.crashed() {
                    self.crash_op = Some(kind);
                    return Ok(());
                }
                return Err(format!("{kind} failed without a crash: {e}"));
            }
            // Invalidate, delete and set_dirty flush too: everything before
            // them is durable.
            if matches!(
                kind,
                "invalidate" | "delete" | "set_dirty" | "flush" | "checkpoint"
            ) {
                for m in &mut self.keys {
                    m.flushed();
                }
                self.evicted_since_flush = false;
            }
        }
        Ok(())
    }

    /// Live reads must return exactly the latest value of every block.
    fn check_live(&self, store: &Store, k: usize, id: u64) -> Result<(), String> {
        let segs = store
            .read(id, 0, OBJECT_BLOCKS * BLOCK as u64)
            .map_err(|e| e.to_string())?;
        let m = &self.keys[k];
        let last = m.versions.last().expect("version");
        for s in &segs {
            if let Segment::Data { offset, data } = s {
                for (i, chunk) in data.chunks(BLOCK).enumerate() {
                    let b = offset / BLOCK as u64 + i as u64;
                    let want = last
                        .blocks
                        .get(&b)
                        .and_then(|x| x.since.last().copied().or(x.durable));
                    if decode(chunk) != want {
                        return Err(format!(
                            "live read of key {k} block {b}: got {:?}, want {want:?}",
                            decode(chunk)
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Check the recovered store against the model, then make the model
    /// describe what was found (recovery made it durable).
    fn check_recovered(
        &mut self,
        store: &Store,
        vol: VolumeId,
        pre_crash: &BTreeMap<usize, Vec<(u64, u64)>>,
    ) -> Result<(), String> {
        for k in 0..KEYS {
            let found = store.lookup(vol, &key_name(k)).map_err(|e| e.to_string())?;
            let m = &self.keys[k];
            let allowed = &m.versions[m.min_version..];
            let Some(info) = found else {
                if !allowed.iter().any(|v| v.aux.is_none()) {
                    return Err(format!("key {k}: durable object lost"));
                }
                self.keys[k] = KeyModel::absent();
                continue;
            };
            let Some(vi) = allowed
                .iter()
                .position(|v| v.aux.as_deref() == Some(&info.aux[..]))
            else {
                return Err(format!(
                    "key {k}: found version {:?} that is deleted, invalidated or unknown (allowed {:?})",
                    String::from_utf8_lossy(&info.aux),
                    allowed
                        .iter()
                        .map(|v| v
                            .aux
                            .as_ref()
                            .map(|a| String::from_utf8_lossy(a).into_owned()))
                        .collect::<Vec<_>>()
                ));
            };
            let v = &allowed[vi];
            if v.dirty_durable && !info.dirty {
                return Err(format!("key {k}: durable dirty mark lost"));
            }
            let is_durable_version = vi == 0 && m.versions.len() - 1 == m.min_version;
            let segs = store
                .read(info.id, 0, OBJECT_BLOCKS * BLOCK as u64)
                .map_err(|e| e.to_string())?;
            let mut present = BTreeMap::new();
            for s in &segs {
                if let Segment::Data { offset, data } = s {
                    for (i, chunk) in data.chunks(BLOCK).enumerate() {
                        let b = offset / BLOCK as u64 + i as u64;
                        let got = decode(chunk)
                            .ok_or_else(|| format!("key {k} block {b}: bytes of no write"))?;
                        let bm = v.blocks.get(&b);
                        let ok =
                            bm.is_some_and(|x| x.durable == Some(got) || x.since.contains(&got));
                        if !ok {
                            return Err(format!(
                                "key {k} block {b}: wrong bytes (value {got}, model {bm:?})"
                            ));
                        }
                        present.insert(b, got);
                    }
                }
            }
            if is_durable_version {
                let was_present = |b: u64| {
                    pre_crash.get(&k).is_some_and(|occ| {
                        occ.iter().any(|&(o, l)| {
                            o <= b * BLOCK as u64 && b * BLOCK as u64 + BLOCK as u64 <= o + l
                        })
                    })
                };
                for (b, bm) in &v.blocks {
                    let maybe_culled = self.evicted_since_flush && !bm.since.is_empty();
                    if bm.durable.is_some()
                        && was_present(*b)
                        && !maybe_culled
                        && !present.contains_key(b)
                    {
                        return Err(format!(
                            "key {k} block {b}: durable data lost (model {bm:?}; occupancy now {:?}, before {:?}; stats {:?})",
                            store.occupancy(info.id),
                            pre_crash.get(&k),
                            store.stats()
                        ));
                    }
                }
            }
            self.keys[k] = KeyModel {
                versions: vec![Version {
                    aux: Some(info.aux.clone()),
                    blocks: present
                        .into_iter()
                        .map(|(b, val)| {
                            (
                                b,
                                BlockModel {
                                    durable: Some(val),
                                    since: vec![],
                                },
                            )
                        })
                        .collect(),
                    dirty_durable: info.dirty,
                }],
                min_version: 0,
                id: Some(info.id),
            };
        }
        Ok(())
    }
}

fn config() -> StoreConfig {
    StoreConfig {
        max_objects: Some(1 << 20),
        ..Default::default()
    }
}

const STEPS: usize = 160;
/// 24 regions of 64 KiB: small enough that the workload makes culling
/// reuse regions.
const CRASH_DEVICE: u64 = (1 << 20) + 24 * (64 << 10);
const CYCLES: usize = 2;

/// One seed: CYCLES rounds of workload, crash, recover, check. Returns the
/// op kinds the crashes hit and the write kinds (sim hints) they hit.
fn run_seed(seed: u64) -> Result<Vec<(&'static str, Option<ringcache::io::IoHint>)>, String> {
    let mut image = {
        let sim = formatted_sim(CRASH_DEVICE, small_geometry(), SimFaults::default());
        sim.current_image()
    };
    let mut run = Run::new(seed);
    let mut hits = Vec::new();
    for cycle in 0..CYCLES {
        let cycle_seed = seed.wrapping_mul(1_000_003).wrapping_add(cycle as u64);
        // Dry run to count the operations of this cycle.
        let total_ops = {
            let sim = Arc::new(SimEngine::from_image(image.clone(), SimFaults::default()));
            let store = Store::open(sim.clone(), config()).map_err(|e| format!("dry open: {e}"))?;
            let vol = store.volume(b"vol", true).map_err(|e| e.to_string())?;
            let mut dry = Run {
                rng: ChaCha8Rng::seed_from_u64(cycle_seed),
                keys: run.keys.clone(),
                next_value: run.next_value,
                next_aux: run.next_aux,
                crash_op: None,
                evicted_since_flush: false,
            };
            let start = sim.op_count();
            dry.workload(&store, vol, STEPS, &sim)
                .map_err(|e| format!("dry run: {e}"))?;
            (start, sim.op_count())
        };
        let mut pick = ChaCha8Rng::seed_from_u64(cycle_seed ^ 0x5eed);
        let crash_at = pick.random_range(total_ops.0..total_ops.1.max(total_ops.0 + 1));
        let sim = Arc::new(SimEngine::from_image(
            image.clone(),
            SimFaults {
                seed: cycle_seed,
                crash_at_op: Some(crash_at),
                ..Default::default()
            },
        ));
        let store = Store::open(sim.clone(), config()).map_err(|e| format!("open: {e}"))?;
        let vol = store.volume(b"vol", true).map_err(|e| e.to_string())?;
        run.rng = ChaCha8Rng::seed_from_u64(cycle_seed);
        run.crash_op = None;
        run.workload(&store, vol, STEPS, &sim)?;
        let sim_hint = sim.crash_hint();
        hits.push((run.crash_op.unwrap_or("none"), sim_hint));
        let pre_crash: BTreeMap<usize, Vec<(u64, u64)>> = run
            .keys
            .iter()
            .enumerate()
            .filter_map(|(k, m)| m.id.and_then(|id| store.occupancy(id).ok()).map(|o| (k, o)))
            .collect();
        image = sim.crash_image(cycle_seed, CrashModel::default());
        drop(store);
        let sim = Arc::new(SimEngine::from_image(image.clone(), SimFaults::default()));
        let store =
            Store::open(sim.clone(), config()).map_err(|e| format!("recovery failed: {e}"))?;
        let vol = store.volume(b"vol", true).map_err(|e| e.to_string())?;
        run.check_recovered(&store, vol, &pre_crash).map_err(|e| {
            format!(
                "cycle {cycle} (crash before op {crash_at} in {:?}, write kind {:?}): {e}\nrecovery: {:?}",
                run.crash_op,
                sim_hint,
                store.recovery_report()
            )
        })?;
        // What recovery wrote is the base of the next cycle.
        drop(store);
        image = sim.current_image();
    }
    Ok(hits)
}

#[test]
fn crash_anywhere_recovers_to_an_allowed_state() {
    let seeds: Vec<u64> = match std::env::var("RINGCACHE_CRASH_SEED") {
        Ok(s) => vec![s.parse().expect("RINGCACHE_CRASH_SEED is a number")],
        Err(_) => {
            let n: u64 = std::env::var("RINGCACHE_CRASH_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(520);
            (0..n).collect()
        }
    };
    let mut by_op: BTreeMap<&str, u32> = BTreeMap::new();
    let mut by_write: BTreeMap<String, u32> = BTreeMap::new();
    let mut crashes = 0;
    for &seed in &seeds {
        match run_seed(seed) {
            Ok(hits) => {
                for (op, hint) in hits {
                    crashes += 1;
                    *by_op.entry(op).or_default() += 1;
                    *by_write.entry(format!("{hint:?}")).or_default() += 1;
                }
            }
            Err(e) => panic!("seed {seed} failed (replay with RINGCACHE_CRASH_SEED={seed}): {e}"),
        }
    }
    eprintln!("{crashes} crash points; by operation: {by_op:?}; by write kind: {by_write:?}");
    if seeds.len() >= 100 {
        assert!(crashes >= 1000, "at least 1000 crash points, got {crashes}");
        for op in ["write", "write+cull", "invalidate", "checkpoint", "flush"] {
            assert!(
                by_op.get(op).copied().unwrap_or(0) > 0,
                "no crash hit {op}: {by_op:?}"
            );
        }
        for hint in [
            "Some(Data)",
            "Some(Log)",
            "Some(Checkpoint)",
            "Some(RegionHeader)",
        ] {
            assert!(
                by_write.get(hint).copied().unwrap_or(0) > 0,
                "no crash hit a {hint} write: {by_write:?}"
            );
        }
    }
}
