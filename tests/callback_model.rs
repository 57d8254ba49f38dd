//! The callback layer against a reference model of a file server and its
//! network, in deterministic interleavings drawn from a seed.
//!
//! Several clients share one coherent cache (the real [`Coherent`] over
//! the cookie layer over the store on the sim engine). A simulated file
//! server knows every file's data version (content is derived from (file,
//! version), so a read shows which version its bytes belong to), grants
//! promises, and sends breaks when a promised file changes, when it breaks
//! a volume or all its promises; it restarts (new epoch, promises
//! forgotten, no breaks sent) and volumes move between servers. Replies
//! and breaks travel on a network that reorders, drops and duplicates
//! them; the clock is injected and advanced in steps, so a dropped break
//! is covered by promise expiry only.
//!
//! The invariant, checked on every read (and on the version every valid
//! answer names): no read returns data of a version older than the
//! server's version at the moment the read was validated, once the cache
//! has been told of the change (a break of the file, its volume or its
//! server delivered after the change, or a new epoch) or the promise that
//! could cover the old version has expired (it was issued before the
//! change, so it expires at most one promise duration after it, minus the
//! margin). Also: the bytes read are all of the version named; a reply
//! overtaken by a break is refused; data is only cached under its own
//! version; every break zaps exactly the holders the model expects, once;
//! holds never leak.
//!
//! `CALLBACK_MODEL_SEED=N` replays one seed (a failure prints it);
//! `CALLBACK_MODEL_SEEDS=N` sets how many seeds run; `CALLBACK_MODEL_TRACE=1`
//! prints every step of a replayed seed.

mod callback_common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callback_common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringcache::callback::{
    CallbackConfig, CallbackError, Coherent, CoherentRead, FetchToken, ObjectRef, Promise,
    Revalidated, ServerId, Validity, Zap, ZapReason,
};
use ringcache::cookie::{Cookie, Fscache, FscacheConfig, Volume, WriteOutcome};

const FILES: usize = 6;
const VOLUMES: usize = 2;
const SERVERS: usize = 2;
const CLIENTS: u64 = 3;
const BLOCK: u64 = 4096;
const PROMISE: Duration = Duration::from_secs(60);
const MARGIN: Duration = Duration::from_secs(10);

#[cfg(debug_assertions)]
const DEFAULT_SEEDS: u64 = 40;
#[cfg(not(debug_assertions))]
const DEFAULT_SEEDS: u64 = 500;
const STEPS: u64 = 4000;

fn vol_of(f: usize) -> usize {
    f % VOLUMES
}

fn vol_key(v: usize) -> String {
    format!("vol{v}")
}

fn server_id(s: usize) -> ServerId {
    ServerId::new(format!("fs{s}").as_bytes()).expect("server id")
}

fn tag_of(c: u64, f: usize) -> u32 {
    (c as u32) * 100 + f as u32
}

#[derive(Debug, Clone)]
enum Break {
    File(usize),
    Volume(usize),
    Server(usize),
}

/// A request in flight: its token, the record it was taken for, and the
/// reply the server produced when the request was issued.
#[derive(Debug, Clone)]
struct Fetch {
    file: usize,
    obj: ObjectRef,
    token: FetchToken,
    /// Model step at which the token was taken (and the request issued).
    token_step: u64,
    issued: Instant,
    version: u64,
    server: usize,
    epoch: u64,
    /// Which block of data the reply carries, if any.
    block: Option<u64>,
}

/// A reply's data waiting to be written to the cache.
#[derive(Debug, Clone)]
struct PendingWrite {
    file: usize,
    token: FetchToken,
    token_step: u64,
    version: u64,
    block: u64,
}

struct CachedFile {
    cookie: Arc<Cookie>,
    obj: ObjectRef,
}

struct World {
    co: Coherent,
    volumes: Vec<Arc<Volume>>,
    files: Vec<CachedFile>,
    // ---- the server side
    version: [u64; FILES],
    /// changes[f][k]: (step, clock) of the change from version k+1 to k+2.
    changes: Vec<Vec<(u64, Instant)>>,
    epoch: [u64; SERVERS],
    location: [usize; VOLUMES],
    /// Promised to the cache until, as the server recorded it.
    promised: [Option<Instant>; FILES],
    // ---- the network
    breaks: Vec<Break>,
    fetches: Vec<Vec<Fetch>>,
    writes: Vec<Vec<PendingWrite>>,
    // ---- what the cache was told, mirrored
    /// The last step at which the cache bumped a counter relevant to f.
    told: [u64; FILES],
    mirror_epoch: [Option<u64>; SERVERS],
    mirror_location: [Option<usize>; VOLUMES],
    /// The version the record's data is labelled with.
    label: [Option<u64>; FILES],
    holds: BTreeMap<usize, BTreeMap<u64, u32>>,
    // ---- time
    step: u64,
    start: Instant,
    now: Instant,
    // ---- coverage of the interesting outcomes
    stats: BTreeMap<&'static str, u64>,
}

type Check = Result<(), String>;

impl World {
    fn new() -> World {
        let store = sim_store();
        let cache = Arc::new(Fscache::new(store, FscacheConfig::default()));
        let co = Coherent::new(cache, CallbackConfig { margin: MARGIN });
        let volumes: Vec<Arc<Volume>> = (0..VOLUMES)
            .map(|v| co.cache().acquire_volume(&vol_key(v), b"").expect("volume"))
            .collect();
        let files = (0..FILES)
            .map(|f| {
                let (cookie, obj) = co
                    .acquire_cookie(
                        &volumes[vol_of(f)],
                        format!("f{f}").as_bytes(),
                        None,
                        2 * BLOCK,
                    )
                    .expect("cookie");
                co.cache().use_cookie(&cookie, false);
                CachedFile { cookie, obj }
            })
            .collect();
        let start = Instant::now();
        World {
            co,
            volumes,
            files,
            version: [1; FILES],
            changes: vec![Vec::new(); FILES],
            epoch: [1; SERVERS],
            location: std::array::from_fn(|v| v % SERVERS),
            promised: [None; FILES],
            breaks: Vec::new(),
            fetches: vec![Vec::new(); CLIENTS as usize],
            writes: vec![Vec::new(); CLIENTS as usize],
            told: [0; FILES],
            mirror_epoch: [None; SERVERS],
            mirror_location: [None; VOLUMES],
            label: [None; FILES],
            holds: BTreeMap::new(),
            step: 0,
            start,
            now: start,
            stats: BTreeMap::new(),
        }
    }

    fn count(&mut self, what: &'static str) {
        *self.stats.entry(what).or_default() += 1;
    }

    /// The cache's view: the files whose volume it believes is on `s`.
    fn mirror_files_on(&self, s: usize) -> Vec<usize> {
        (0..FILES)
            .filter(|&f| self.mirror_location[vol_of(f)] == Some(s))
            .collect()
    }

    fn tell(&mut self, files: &[usize]) {
        for &f in files {
            self.told[f] = self.step;
        }
    }

    fn expected_zaps(&self, files: &[usize], reason: ZapReason) -> Vec<(u64, u32, ZapReason)> {
        let mut v = Vec::new();
        for &f in files {
            if let Some(hs) = self.holds.get(&f) {
                v.extend(hs.iter().map(|(&h, &t)| (h, t, reason)));
            }
        }
        v
    }

    fn check_zaps(&self, what: &str, got: &[Zap], mut want: Vec<(u64, u32, ZapReason)>) -> Check {
        let mut got: Vec<_> = got.iter().map(|z| (z.holder, z.tag, z.reason)).collect();
        got.sort();
        want.sort();
        if got != want {
            return Err(format!("{what}: zaps {got:?}, expected {want:?}"));
        }
        Ok(())
    }

    /// Whether a token taken at `token_step` for f predates what the cache
    /// was told since.
    fn broken_since(&self, f: usize, token_step: u64) -> bool {
        self.told[f] > token_step
    }

    /// The invariant, for a version `dv` the cache vouched for at this step.
    fn check_fresh(&self, f: usize, dv: u64, what: &str) -> Check {
        let s = self.version[f];
        if dv > s {
            return Err(format!(
                "{what}: file {f} version {dv} is newer than the server's {s}"
            ));
        }
        if dv == s {
            return Ok(());
        }
        let (change_step, change_clock) = self.changes[f][(dv - 1) as usize];
        if self.told[f] > change_step {
            return Err(format!(
                "{what}: file {f} served at version {dv}, server at {s}; the cache was told of the change (step {change_step}) at step {}",
                self.told[f]
            ));
        }
        if self.now + MARGIN >= change_clock + PROMISE {
            return Err(format!(
                "{what}: file {f} served at version {dv}, server at {s}; every promise for {dv} expired (change at {:?}, now {:?})",
                change_clock - self.start,
                self.now - self.start
            ));
        }
        Ok(())
    }

    fn deliver(&mut self, b: Break) -> Check {
        match b {
            Break::File(f) => {
                let z = self.co.break_files(&[self.files[f].obj]);
                self.check_zaps(
                    "file break",
                    &z,
                    self.expected_zaps(&[f], ZapReason::FileBreak),
                )?;
                self.tell(&[f]);
            }
            Break::Volume(v) => {
                let z = self.co.break_volume(vol_key(v).as_bytes());
                let files: Vec<usize> = (0..FILES).filter(|&f| vol_of(f) == v).collect();
                self.check_zaps(
                    "volume break",
                    &z,
                    self.expected_zaps(&files, ZapReason::VolumeBreak),
                )?;
                self.tell(&files);
            }
            Break::Server(s) => {
                let z = self.co.break_server(&server_id(s));
                let files = if self.mirror_epoch[s].is_some() {
                    self.mirror_files_on(s)
                } else {
                    Vec::new()
                };
                self.check_zaps(
                    "server break",
                    &z,
                    self.expected_zaps(&files, ZapReason::ServerBreak),
                )?;
                self.tell(&files);
            }
        }
        Ok(())
    }

    /// The cache applies the server identity and epoch of a reply.
    fn declare(&mut self, v: usize, s: usize, epoch: u64) -> Check {
        let z = self
            .co
            .declare_server(vol_key(v).as_bytes(), &server_id(s), epoch);
        let mut want = Vec::new();
        let mut told = Vec::new();
        if self.mirror_epoch[s].is_some_and(|e| e != epoch) {
            let on = self.mirror_files_on(s);
            want.extend(self.expected_zaps(&on, ZapReason::ServerBreak));
            told.extend(on);
            self.count("epoch change seen");
        }
        self.mirror_epoch[s] = Some(epoch);
        let old = self.mirror_location[v];
        if old != Some(s) {
            if old.is_some() {
                let files: Vec<usize> = (0..FILES).filter(|&f| vol_of(f) == v).collect();
                want.extend(self.expected_zaps(&files, ZapReason::VolumeBreak));
                told.extend(files);
                self.count("volume move seen");
            }
            self.mirror_location[v] = Some(s);
        }
        self.check_zaps("declare_server", &z, want)?;
        self.tell(&told);
        Ok(())
    }

    fn fetch(&mut self, rng: &mut ChaCha8Rng, c: u64, f: usize) {
        let obj = self.files[f].obj;
        let token = self.co.begin_fetch(obj);
        let server = self.location[vol_of(f)];
        // The server answers as of now, and promises until now + PROMISE.
        let until = self.now + PROMISE;
        self.promised[f] = Some(self.promised[f].map_or(until, |p| p.max(until)));
        let block = match rng.random_range(0..4) {
            0 => None,
            1 => Some(0),
            _ => Some(rng.random_range(0..2)),
        };
        self.fetches[c as usize].push(Fetch {
            file: f,
            obj,
            token,
            token_step: self.step,
            issued: self.now,
            version: self.version[f],
            server,
            epoch: self.epoch[server],
            block,
        });
    }

    fn reply(&mut self, rng: &mut ChaCha8Rng, c: u64) -> Check {
        let list = &mut self.fetches[c as usize];
        if list.is_empty() {
            return Ok(());
        }
        // Mostly in order, sometimes overtaken by a later one.
        let at = if rng.random_bool(0.7) {
            0
        } else {
            rng.random_range(0..list.len())
        };
        let r = list.remove(at);
        let f = r.file;
        self.declare(vol_of(f), r.server, r.epoch)?;
        let file = &self.files[f];
        let (cookie, obj) = (file.cookie.clone(), file.obj);
        let promise = Promise {
            expires_at: r.issued + PROMISE,
            data_version: r.version,
        };
        let must_break = r.obj != obj || self.broken_since(f, r.token_step);
        let res = self
            .co
            .revalidate(&cookie, obj, r.token, promise, 2 * BLOCK, Some(c));
        match res {
            Err(CallbackError::Broken) => self.count("revalidate broken"),
            Err(e) => return Err(format!("revalidate: {e}")),
            Ok(_) if must_break => {
                return Err(format!(
                    "file {f}: a reply overtaken by a break was accepted (token step {}, told at {})",
                    r.token_step, self.told[f]
                ));
            }
            Ok(Revalidated::Kept) => {
                if self.label[f] != Some(r.version) {
                    return Err(format!(
                        "file {f}: kept at version {} but the data is of {:?}",
                        r.version, self.label[f]
                    ));
                }
                self.count("revalidate kept");
            }
            Ok(Revalidated::Changed {
                zaps,
                promise_installed,
            }) => {
                if self.label[f] == Some(r.version) {
                    return Err(format!("file {f}: changed to the version it had"));
                }
                let mut want = self.expected_zaps(&[f], ZapReason::Invalidated);
                want.retain(|z| z.0 != c);
                self.check_zaps("invalidation", &zaps, want)?;
                if !promise_installed {
                    return Err(format!(
                        "file {f}: promise not installed with nothing broken"
                    ));
                }
                self.label[f] = Some(r.version);
                self.count("revalidate changed");
            }
        }
        // The reply's data goes to the cache now or later, whatever the
        // revalidation said (a careless client): the layer must judge it.
        if let Some(block) = r.block {
            let w = PendingWrite {
                file: f,
                token: r.token,
                token_step: r.token_step,
                version: r.version,
                block,
            };
            if rng.random_bool(0.5) {
                self.write(w)?;
            } else {
                self.writes[c as usize].push(w);
            }
        }
        Ok(())
    }

    fn write(&mut self, w: PendingWrite) -> Check {
        let f = w.file;
        let file = &self.files[f];
        let (cookie, obj) = (file.cookie.clone(), file.obj);
        let data = content(f as u64, w.version, 2 * BLOCK);
        let at = (w.block * BLOCK) as usize;
        let chunk = &data[at..at + BLOCK as usize];
        let token_dead = w.token.object() != obj || self.broken_since(f, w.token_step);
        match self
            .co
            .write_fetched(&cookie, obj, w.token, w.version, w.block * BLOCK, chunk)
        {
            Ok(WriteOutcome::Written) => {
                if token_dead {
                    return Err(format!(
                        "file {f}: data fetched under a broken token was cached"
                    ));
                }
                if self.label[f] != Some(w.version) {
                    return Err(format!(
                        "file {f}: data of version {} cached under {:?}",
                        w.version, self.label[f]
                    ));
                }
                self.count("write written");
            }
            Ok(WriteOutcome::Dropped) => self.count("write dropped"),
            Ok(WriteOutcome::Stale) => self.count("write stale"),
            Err(CallbackError::Broken) => self.count("write refused"),
            Err(e) => return Err(format!("write_fetched: {e}")),
        }
        Ok(())
    }

    fn read(&mut self, c: u64, f: usize) -> Check {
        let _ = c;
        let file = &self.files[f];
        let (cookie, obj) = (file.cookie.clone(), file.obj);
        let v = self.co.validate(obj, self.now);
        if let Validity::Valid { data_version } = v {
            self.check_fresh(f, data_version, "validate")?;
        }
        let out = self
            .co
            .read(&cookie, obj, 0, 2 * BLOCK, self.now)
            .map_err(|e| format!("read: {e}"))?;
        match out {
            CoherentRead::Data {
                data_version,
                segments,
            } => {
                self.check_fresh(f, data_version, "read")?;
                let want = content(f as u64, data_version, 2 * BLOCK);
                let got = seg_bytes(&segments);
                if got.len() != want.len() {
                    return Err(format!("file {f}: read {} bytes", got.len()));
                }
                let mut any = false;
                for (i, b) in got.iter().enumerate() {
                    if let Some(b) = b {
                        any = true;
                        if *b != want[i] {
                            return Err(format!(
                                "file {f}: byte {i} is not of version {data_version}: the data is mislabelled"
                            ));
                        }
                    }
                }
                self.count(if any { "read data" } else { "read holes" });
            }
            CoherentRead::NoData { data_version } => {
                self.check_fresh(f, data_version, "read (no data)")?;
                self.count("read nodata");
            }
            CoherentRead::Revalidate => self.count("read revalidate"),
            CoherentRead::Stale => self.count("read stale"),
        }
        Ok(())
    }

    fn change(&mut self, f: usize) {
        self.changes[f].push((self.step, self.now));
        self.version[f] += 1;
        if self.promised[f].take().is_some_and(|p| p > self.now) {
            self.breaks.push(Break::File(f));
        }
    }

    fn forget_promises_on(&mut self, files: impl Iterator<Item = usize>) {
        for f in files {
            self.promised[f] = None;
        }
    }

    fn reacquire(&mut self, rng: &mut ChaCha8Rng, f: usize) -> Check {
        let old = &self.files[f];
        self.co
            .relinquish_cookie(&old.cookie, old.obj, rng.random_bool(0.3));
        // The netfs opens the file again knowing some version of it.
        let dv = match rng.random_range(0..3) {
            0 => None,
            1 => self.label[f],
            _ => Some(self.version[f]),
        };
        let (cookie, obj) = self
            .co
            .acquire_cookie(
                &self.volumes[vol_of(f)],
                format!("f{f}").as_bytes(),
                dv,
                2 * BLOCK,
            )
            .map_err(|e| format!("reacquire: {e}"))?;
        self.co.cache().use_cookie(&cookie, false);
        self.files[f] = CachedFile { cookie, obj };
        self.label[f] = dv;
        self.holds.remove(&f);
        // A new record: every token and promise before it is dead.
        self.tell(&[f]);
        self.count("reacquire");
        Ok(())
    }

    fn one_step(&mut self, rng: &mut ChaCha8Rng, trace: bool) -> Check {
        self.step += 1;
        let c = rng.random_range(0..CLIENTS);
        let f = rng.random_range(0..FILES);
        let roll = rng.random_range(0..1000);
        if trace {
            eprintln!(
                "step {} t={:?} client {c} file {f} roll {roll} versions {:?} labels {:?} breaks {:?}",
                self.step,
                self.now - self.start,
                self.version,
                self.label,
                self.breaks
            );
        }
        match roll {
            0..=149 => self.fetch(rng, c, f),
            150..=359 => self.reply(rng, c)?,
            360..=449 => {
                let list = &mut self.writes[c as usize];
                if !list.is_empty() {
                    let w = list.swap_remove(rng.random_range(0..list.len()));
                    self.write(w)?;
                }
            }
            450..=649 | 980..=996 => self.read(c, f)?,
            650..=709 => self.change(f),
            710..=714 => {
                let v = vol_of(f);
                self.breaks.push(Break::Volume(v));
                self.forget_promises_on((0..FILES).filter(|&g| vol_of(g) == v));
            }
            715..=719 => {
                let s = self.location[vol_of(f)];
                self.breaks.push(Break::Server(s));
                let loc = self.location;
                self.forget_promises_on((0..FILES).filter(|&g| loc[vol_of(g)] == s));
            }
            720..=722 => {
                // A restart: a new epoch, promises forgotten, no breaks.
                let s = self.location[vol_of(f)];
                self.epoch[s] += 1;
                let loc = self.location;
                self.forget_promises_on((0..FILES).filter(|&g| loc[vol_of(g)] == s));
                self.count("server restart");
            }
            723 => {
                // The volume moves; its old server forgets its promises.
                let v = vol_of(f);
                self.location[v] = (self.location[v] + 1) % SERVERS;
                self.forget_promises_on((0..FILES).filter(|&g| vol_of(g) == v));
                self.count("volume move");
            }
            724..=799 => {
                if !self.breaks.is_empty() {
                    let b = self
                        .breaks
                        .swap_remove(rng.random_range(0..self.breaks.len()));
                    self.deliver(b)?;
                    self.count("break delivered");
                }
            }
            800..=819 => {
                if !self.breaks.is_empty() {
                    self.breaks
                        .swap_remove(rng.random_range(0..self.breaks.len()));
                    self.count("break dropped");
                }
            }
            820..=829 => {
                if !self.breaks.is_empty() {
                    let b = self.breaks[rng.random_range(0..self.breaks.len())].clone();
                    self.breaks.push(b);
                    self.count("break duplicated");
                }
            }
            830..=839 => {
                let list = &mut self.fetches[c as usize];
                if !list.is_empty() {
                    list.swap_remove(rng.random_range(0..list.len()));
                    self.count("reply lost");
                }
            }
            840..=899 => {
                self.now += Duration::from_millis(rng.random_range(0..=15_000));
            }
            900..=969 => {
                let obj = self.files[f].obj;
                if rng.random_bool(0.6) {
                    self.co
                        .hold(obj, c, tag_of(c, f))
                        .map_err(|e| format!("hold: {e}"))?;
                    self.holds.entry(f).or_default().insert(c, tag_of(c, f));
                } else {
                    let had = self
                        .holds
                        .get_mut(&f)
                        .is_some_and(|h| h.remove(&c).is_some());
                    if self.co.unhold(obj, c) != had {
                        return Err(format!("unhold of file {f} by {c}: model says held={had}"));
                    }
                }
            }
            970..=979 => {
                let want: usize = self.holds.values().filter(|h| h.contains_key(&c)).count();
                let got = self.co.drop_holder(c);
                for h in self.holds.values_mut() {
                    h.remove(&c);
                }
                if got != want {
                    return Err(format!("drop_holder({c}) dropped {got}, model held {want}"));
                }
            }
            _ => self.reacquire(rng, f)?,
        }
        self.holds.retain(|_, h| !h.is_empty());
        if self.step.is_multiple_of(256) {
            self.co.check_consistency()?;
            let s = self.co.stats();
            let holds: usize = self.holds.values().map(BTreeMap::len).sum();
            if s.holds != holds || s.objects_in_use != self.holds.len() || s.invalidating != 0 {
                return Err(format!(
                    "stats {s:?}, model holds {holds} on {} files",
                    self.holds.len()
                ));
            }
        }
        Ok(())
    }
}

fn run(seed: u64, trace: bool) -> Result<BTreeMap<&'static str, u64>, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut w = World::new();
    for _ in 0..STEPS {
        w.one_step(&mut rng, trace)
            .map_err(|e| format!("seed {seed} step {}: {e}", w.step))?;
    }
    let used: BTreeSet<usize> = w.holds.keys().copied().collect();
    for c in 0..CLIENTS {
        w.co.drop_holder(c);
    }
    let s = w.co.stats();
    if s.holds != 0 || s.holders != 0 || s.objects_in_use != 0 {
        return Err(format!(
            "seed {seed}: holds left after every holder went: {s:?} ({used:?})"
        ));
    }
    Ok(w.stats)
}

#[test]
fn callback_layer_matches_the_reference_model() {
    let trace = std::env::var_os("CALLBACK_MODEL_TRACE").is_some();
    let seeds: Vec<u64> = match std::env::var("CALLBACK_MODEL_SEED") {
        Ok(s) => vec![s.parse().expect("CALLBACK_MODEL_SEED must be a number")],
        Err(_) => {
            let n = std::env::var("CALLBACK_MODEL_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(DEFAULT_SEEDS);
            (0..n).collect()
        }
    };
    let started = Instant::now();
    let mut total: BTreeMap<&'static str, u64> = BTreeMap::new();
    for &seed in &seeds {
        match run(seed, trace) {
            Ok(stats) => {
                for (k, v) in stats {
                    *total.entry(k).or_default() += v;
                }
            }
            Err(e) => panic!(
                "{e}\nreplay with CALLBACK_MODEL_SEED={seed} (CALLBACK_MODEL_TRACE=1 for every step)"
            ),
        }
    }
    eprintln!(
        "{} seeds x {STEPS} steps = {} operations in {:?}; outcomes: {total:?}",
        seeds.len(),
        seeds.len() as u64 * STEPS,
        started.elapsed()
    );
    // The interesting outcomes all happened, or the model tests little.
    if seeds.len() > 1 {
        for k in [
            "read data",
            "read revalidate",
            "read nodata",
            "revalidate kept",
            "revalidate changed",
            "revalidate broken",
            "write written",
            "write refused",
            "break delivered",
            "break dropped",
            "epoch change seen",
            "volume move seen",
            "reacquire",
        ] {
            assert!(
                total.get(k).copied().unwrap_or(0) > 0,
                "no {k:?} in {total:?}"
            );
        }
    }
}
