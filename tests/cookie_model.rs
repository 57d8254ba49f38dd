//! The whole cookie state machine against a simple reference model.
//!
//! Random sequences of the cookie API (acquire, use, unuse with new
//! coherency data, read, write, invalidate, resize, LRU scan, relinquish
//! with and without retire) run against the real cookie layer over the
//! store; after every step the cookie's state, what a read returns and
//! what a write does must be what the model says. The model knows nothing
//! of locks or transitions: only what a netfs may observe.
//!
//! `RINGCACHE_MODEL_SEEDS=N` sets the number of seeds (default 300).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringcache::cookie::{
    CacheError, Cookie, CookieState, Fscache, FscacheConfig, ReadOutcome, WriteOutcome,
};
use ringcache::io::sim::SimFaults;
use ringcache::store::{Segment, Store, StoreConfig};

const KEYS: usize = 3;
const BLOCKS: u64 = 4;

/// What the cache holds for a key, as a netfs could tell.
#[derive(Clone, Debug, Default)]
struct Stored {
    aux: Vec<u8>,
    blocks: BTreeMap<u64, u8>,
}

#[derive(Clone, Debug)]
struct LiveCookie {
    cookie: Arc<Cookie>,
    aux: Vec<u8>,
    users: u32,
    bound: bool,
    no_data: bool,
    /// Invalidated while unbound: the invalidation applies at the next bind.
    pending_inval: bool,
}

#[derive(Default)]
struct Model {
    stored: BTreeMap<usize, Stored>,
    live: BTreeMap<usize, LiveCookie>,
}

fn key(k: usize) -> Vec<u8> {
    format!("key{k}").into_bytes()
}

impl Model {
    /// What a bind (lookup) does: positive if stored with the same aux.
    fn bind(&mut self, k: usize) {
        let lc = self.live.get_mut(&k).expect("live");
        let positive = !lc.pending_inval && self.stored.get(&k).is_some_and(|s| s.aux == lc.aux);
        lc.pending_inval = false;
        if !positive {
            self.stored.insert(
                k,
                Stored {
                    aux: lc.aux.clone(),
                    blocks: BTreeMap::new(),
                },
            );
        }
        lc.bound = true;
        lc.no_data = !positive;
    }
}

fn read_blocks(out: &ReadOutcome) -> Option<BTreeMap<u64, u8>> {
    match out {
        ReadOutcome::Data(segs) => {
            let mut m = BTreeMap::new();
            for s in segs {
                if let Segment::Data { offset, data } = s {
                    for (i, chunk) in data.chunks(4096).enumerate() {
                        assert!(chunk.iter().all(|&b| b == chunk[0]), "torn block");
                        m.insert(offset / 4096 + i as u64, chunk[0]);
                    }
                }
            }
            Some(m)
        }
        _ => None,
    }
}

fn run(seed: u64) -> Result<(), String> {
    let sim = formatted_sim(SMALL_DEVICE, small_geometry(), SimFaults::default());
    let store = Arc::new(Store::open(sim, StoreConfig::default()).unwrap());
    let cache = Fscache::new(store, FscacheConfig::default());
    let vol = cache.acquire_volume("model", b"").unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut m = Model::default();
    let mut next_val = 1u8;
    for step in 0..200 {
        let k = rng.random_range(0..KEYS);
        let roll = rng.random_range(0..100);
        let ctx = |what: &str| format!("seed {seed} step {step} key {k}: {what}");
        match (m.live.contains_key(&k), roll) {
            (false, _) => {
                let aux = vec![b'a' + rng.random_range(0..2u8)];
                let c = cache
                    .acquire_cookie(&vol, &key(k), &aux, BLOCKS * 4096)
                    .map_err(|e| ctx(&format!("acquire: {e}")))?;
                m.live.insert(
                    k,
                    LiveCookie {
                        cookie: c,
                        aux,
                        users: 0,
                        bound: false,
                        no_data: true,
                        pending_inval: false,
                    },
                );
            }
            (true, 0..=4) => {
                // A second acquire of a live key is refused.
                if !matches!(
                    cache.acquire_cookie(&vol, &key(k), b"a", 0),
                    Err(CacheError::Busy(_))
                ) {
                    return Err(ctx("duplicate acquire not refused"));
                }
            }
            (true, 5..=19) => {
                let lc = m.live.get_mut(&k).unwrap();
                cache.use_cookie(&lc.cookie, rng.random_bool(0.3));
                lc.users += 1;
                if !lc.bound {
                    m.bind(k);
                }
            }
            (true, 20..=29) => {
                let lc = m.live.get_mut(&k).unwrap();
                if lc.users > 0 {
                    let new_aux = rng
                        .random_bool(0.3)
                        .then(|| vec![b'a' + rng.random_range(0..2u8)]);
                    cache.unuse_cookie(&lc.cookie, new_aux.as_deref(), None);
                    lc.users -= 1;
                    if let Some(a) = new_aux {
                        lc.aux = a;
                    }
                }
            }
            (true, 30..=49) => {
                let lc = m.live.get(&k).unwrap().clone();
                let op = cache.begin_operation(&lc.cookie, false);
                let out = op.read(0, BLOCKS * 4096).map_err(|e| ctx(&e.to_string()))?;
                drop(op);
                let got = read_blocks(&out);
                let want = (lc.bound && !lc.no_data).then(|| m.stored[&k].blocks.clone());
                if got != want {
                    return Err(ctx(&format!("read {got:?}, model {want:?} ({lc:?})")));
                }
            }
            (true, 50..=69) => {
                let block = rng.random_range(0..BLOCKS);
                let v = next_val;
                next_val = next_val.wrapping_add(1).max(1);
                let lc = m.live.get(&k).unwrap().clone();
                let op = cache.begin_operation(&lc.cookie, true);
                let out = op
                    .write(block * 4096, &[v; 4096])
                    .map_err(|e| ctx(&e.to_string()))?;
                drop(op);
                let want = if lc.bound {
                    WriteOutcome::Written
                } else {
                    WriteOutcome::Dropped
                };
                if out != want {
                    return Err(ctx(&format!("write {out:?}, model {want:?}")));
                }
                if lc.bound {
                    m.stored.get_mut(&k).unwrap().blocks.insert(block, v);
                    m.live.get_mut(&k).unwrap().no_data = false;
                }
            }
            (true, 70..=76) => {
                let aux = vec![b'a' + rng.random_range(0..3u8)];
                let lc = m.live.get_mut(&k).unwrap();
                cache
                    .invalidate(&lc.cookie, &aux, BLOCKS * 4096)
                    .map_err(|e| ctx(&e.to_string()))?;
                lc.aux = aux.clone();
                lc.no_data = true;
                if lc.bound {
                    m.stored.insert(
                        k,
                        Stored {
                            aux,
                            blocks: BTreeMap::new(),
                        },
                    );
                } else {
                    lc.pending_inval = true;
                }
            }
            (true, 77..=84) => {
                cache.lru_scan(Instant::now() + Duration::from_secs(3600));
                for (kk, lc) in m.live.iter_mut() {
                    if lc.users == 0 && lc.bound {
                        lc.bound = false;
                        // Withdrawal records the cookie's coherency data.
                        if let Some(s) = m.stored.get_mut(kk) {
                            s.aux = lc.aux.clone();
                        }
                    }
                }
            }
            (true, _) => {
                let retire = rng.random_bool(0.4);
                let lc = m.live.remove(&k).unwrap();
                cache.relinquish_cookie(&lc.cookie, retire);
                if lc.cookie.state() != CookieState::Dropped {
                    return Err(ctx("not dropped after relinquish"));
                }
                if retire {
                    m.stored.remove(&k);
                } else if lc.bound
                    && let Some(s) = m.stored.get_mut(&k)
                {
                    s.aux = lc.aux.clone();
                }
            }
        }
        // States agree with the model.
        for (kk, lc) in &m.live {
            let st = lc.cookie.state();
            let want = if lc.bound {
                CookieState::Active
            } else {
                CookieState::Quiescent
            };
            if st != want {
                return Err(format!(
                    "seed {seed} step {step} key {kk}: state {st:?}, model {want:?}"
                ));
            }
            if lc.cookie.accesses() != 0 {
                return Err(format!("seed {seed} step {step} key {kk}: accesses leaked"));
            }
        }
    }
    for lc in m.live.values() {
        cache.relinquish_cookie(&lc.cookie, false);
    }
    cache
        .relinquish_volume(&vol, false)
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[test]
fn cookie_layer_matches_the_reference_model() {
    let n: u64 = std::env::var("RINGCACHE_MODEL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    for seed in 0..n {
        if let Err(e) = run(seed) {
            panic!("{e}");
        }
    }
}
