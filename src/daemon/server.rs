//! The daemon's state: the store, the cookie layer and the volumes shared
//! by connections; opening the cache; the counters `Stats` reports; giving
//! back what a closed connection held.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use anyhow::Context;

use super::Config;
use super::connection::{Conn, CookieEntry};
use super::events::Outboxes;
use super::metrics::{OpLatency, Stat, StatKind, fscache_meaning};
use crate::callback::{CallbackConfig, Coherent, ObjectRef};
use crate::cookie::{Cookie, Fscache, FscacheConfig, Volume};
use crate::io::{self, OpenOptions};
use crate::store::{FormatOptions, RecoveryReport, Store, StoreConfig, format};

/// The running service: the store, the cookie layer, the shared volumes.
pub struct Daemon {
    pub(super) cfg: Config,
    pub(super) store: Arc<Store>,
    pub(super) cache: Arc<Fscache>,
    /// Volumes acquired by any connection, by key. The lock is never held
    /// across store I/O: a volume being acquired or relinquished is
    /// `Changing` meanwhile, and `volumes_changed` wakes whoever waits for it.
    pub(super) volumes: Mutex<HashMap<Vec<u8>, VolumeSlot>>,
    pub(super) volumes_changed: Condvar,
    pub(super) self_uid: u32,
    pub(super) connections: AtomicU64,
    pub(super) requests: AtomicU64,
    /// Submissions of read I/O from connections (the reads of requests
    /// that arrived together go in one).
    pub(super) read_submissions: AtomicU64,
    /// The most writes one connection has had in flight at once.
    pub(super) most_writes_in_flight: AtomicUsize,
    /// Times the allocator's free pages were given back, and the
    /// microseconds that took (in all, and the longest).
    pub(super) heap_trims: AtomicU64,
    pub(super) heap_trim_us: AtomicU64,
    pub(super) heap_trim_us_most: AtomicU64,
    pub(super) bad_frames: AtomicU64,
    /// The callback layer: promises and breaks over `cache`.
    pub(super) coherent: Coherent,
    /// Where zap events go, by connection id.
    pub(super) outboxes: Outboxes,
    /// Cookies of volumes declared for a file server, shared by the
    /// connections that acquire them: (volume key, key) -> the cookie.
    pub(super) shared_cookies: Mutex<HashMap<SharedKey, SharedCookie>>,
    /// Connection ids (the callback layer's holder ids); never reused.
    pub(super) next_conn_id: AtomicU64,
    /// Shutdown, as the connections see it.
    pub(super) stop: super::lifecycle::Stop,
    /// Request latency by op, for the metrics.
    pub(super) latency: OpLatency,
}

/// A volume in the daemon's registry.
pub(super) enum VolumeSlot {
    /// Acquired: the volume and how many connection handles hold it.
    Held(Arc<Volume>, u32),
    /// Being acquired or relinquished in the store by one thread: others
    /// wait for it instead of holding the registry lock across its I/O.
    Changing,
}

/// (volume key, object key) of a shared cookie.
pub(super) type SharedKey = (Vec<u8>, Vec<u8>);

/// A cookie of a callback volume, shared by every connection that acquires
/// its key: several clients of one host cache one export together, and a
/// break zaps all of them.
pub(super) struct SharedCookie {
    pub(super) cookie: Arc<Cookie>,
    pub(super) obj: ObjectRef,
    /// Connections' handles on it.
    pub(super) refs: u32,
}

impl Daemon {
    /// Give the allocator's free pages back to the system (the periodic
    /// pass, every `heap_trim`), counting it and its time.
    pub(super) fn trim_heap(&self) {
        let t = Instant::now();
        let released = crate::heap::release_free_pages();
        let us = t.elapsed().as_micros() as u64;
        self.heap_trims.fetch_add(1, Ordering::Relaxed);
        self.heap_trim_us.fetch_add(us, Ordering::Relaxed);
        self.heap_trim_us_most.fetch_max(us, Ordering::Relaxed);
        tracing::debug!(released, us, "gave the allocator's free pages back");
    }

    /// Open (creating and formatting on first use) the cache of `cfg`.
    pub fn open(cfg: Config) -> anyhow::Result<Arc<Daemon>> {
        Self::open_with(cfg, |store| store)
    }

    /// [`Daemon::open`], with the cookie layer over `backend(store)` (tests
    /// put a gate between the two).
    pub(super) fn open_with(
        cfg: Config,
        backend: impl FnOnce(Arc<Store>) -> Arc<dyn crate::cookie::CacheBackend>,
    ) -> anyhow::Result<Arc<Daemon>> {
        let mut fresh = false;
        if let Some(bytes) = cfg.create_bytes
            && !cfg.device.exists()
        {
            crate::util::create_backing_file(&cfg.device, bytes)
                .with_context(|| format!("creating {}", cfg.device.display()))?;
            fresh = true;
        }
        let engine = io::open(
            &cfg.device,
            &OpenOptions {
                engine: cfg.engine,
                ..Default::default()
            },
        )
        .with_context(|| format!("opening {}", cfg.device.display()))?;
        if fresh {
            format(
                engine.as_ref(),
                &FormatOptions {
                    tag: cfg.tag.clone(),
                    ..Default::default()
                },
            )?;
            tracing::info!(device = %cfg.device.display(), "formatted a new cache");
        }
        Self::open_on_engine(cfg, engine, backend)
    }

    /// The daemon over an open device (`engine`, holding a formatted
    /// cache); `cfg.device` only names it in messages.
    pub(super) fn open_on_engine(
        cfg: Config,
        engine: Arc<dyn io::IoEngine>,
        backend: impl FnOnce(Arc<Store>) -> Arc<dyn crate::cookie::CacheBackend>,
    ) -> anyhow::Result<Arc<Daemon>> {
        let engine_name = engine.name();
        let store = Arc::new(
            Store::open(
                engine,
                StoreConfig {
                    cull: cfg.cull,
                    ..Default::default()
                },
            )
            .with_context(|| format!("opening the cache on {}", cfg.device.display()))?,
        );
        log_recovery(&cfg.device, engine_name, store.recovery_report());
        let cache = Arc::new(Fscache::new(
            backend(store.clone()),
            FscacheConfig {
                lru_timeout: cfg.lru_timeout,
            },
        ));
        let coherent = Coherent::new(
            cache.clone(),
            CallbackConfig {
                margin: cfg.callback_margin,
            },
        );
        Ok(Arc::new(Daemon {
            cfg,
            store,
            cache,
            volumes: Mutex::new(HashMap::new()),
            volumes_changed: Condvar::new(),
            self_uid: own_uid(),
            connections: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            read_submissions: AtomicU64::new(0),
            most_writes_in_flight: AtomicUsize::new(0),
            heap_trims: AtomicU64::new(0),
            heap_trim_us: AtomicU64::new(0),
            heap_trim_us_most: AtomicU64::new(0),
            bad_frames: AtomicU64::new(0),
            coherent,
            outboxes: Outboxes::default(),
            shared_cookies: Mutex::new(HashMap::new()),
            next_conn_id: AtomicU64::new(1),
            stop: super::lifecycle::Stop::new().context("creating the shutdown eventfd")?,
            latency: OpLatency::default(),
        }))
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The daemon's counters, in a stable order: what `Stats` reports
    /// and the metrics' counters and gauges.
    pub(super) fn stats(&self) -> Vec<Stat> {
        use StatKind::{Counter, Gauge};
        let mut v: Vec<Stat> = Vec::new();
        let mut group = |prefix: &str, stats: &[(&str, u64, StatKind, &'static str)]| {
            for &(k, value, kind, help) in stats {
                v.push(Stat {
                    name: format!("{prefix}.{k}"),
                    value,
                    kind,
                    help,
                });
            }
        };
        let fscache: Vec<_> = self
            .cache
            .stats()
            .snapshot()
            .into_iter()
            .map(|(k, n)| {
                let (kind, help) = fscache_meaning(k);
                (k, n, kind, help)
            })
            .collect();
        group("fscache", &fscache);
        let s = self.store.stats();
        group(
            "store",
            &[
                ("reads", s.reads, Counter, "Reads served by the store"),
                (
                    "read_bytes",
                    s.read_bytes,
                    Counter,
                    "Bytes of data read from the device",
                ),
                (
                    "read_hole_bytes",
                    s.read_hole_bytes,
                    Counter,
                    "Bytes of reads answered as holes (nothing cached, or a block that failed its check)",
                ),
                ("writes", s.writes, Counter, "Writes stored"),
                (
                    "write_bytes",
                    s.write_bytes,
                    Counter,
                    "Bytes of data written",
                ),
                (
                    "checksum_errors",
                    s.checksum_errors,
                    Counter,
                    "Blocks whose checksum failed on read (served as misses)",
                ),
                ("io_errors", s.io_errors, Counter, "Device I/O errors"),
                (
                    "regions_evicted",
                    s.regions_evicted,
                    Counter,
                    "Regions freed by eviction",
                ),
                (
                    "bytes_evicted",
                    s.bytes_evicted,
                    Counter,
                    "Cached bytes dropped by region eviction",
                ),
                (
                    "objects_culled",
                    s.objects_culled,
                    Counter,
                    "Objects culled to stay under the object limit",
                ),
                (
                    "checkpoints",
                    s.checkpoints,
                    Counter,
                    "Index checkpoints written",
                ),
                ("flushes", s.flushes, Counter, "Flushes to the device"),
                (
                    "nospace_events",
                    s.nospace_events,
                    Counter,
                    "Times a writer found no free region or object slot (and waited or failed)",
                ),
            ],
        );
        let o = self.store.occupancy_summary();
        group(
            "space",
            &[
                (
                    "regions",
                    u64::from(o.regions),
                    Gauge,
                    "Data regions of the cache",
                ),
                ("region_bytes", o.region_bytes, Gauge, "Bytes of one region"),
                (
                    "regions_free",
                    u64::from(o.regions_free),
                    Gauge,
                    "Regions holding no data",
                ),
                ("objects", o.objects, Gauge, "Objects in the index"),
                ("extents", o.extents, Gauge, "Extents in the index"),
                (
                    "cached_bytes",
                    o.live_bytes,
                    Gauge,
                    "Bytes of live cached data",
                ),
            ],
        );
        let cb = self.coherent.stats();
        group(
            "callback",
            &[
                ("servers", cb.servers as u64, Gauge, "File servers declared"),
                (
                    "volumes",
                    cb.volumes as u64,
                    Gauge,
                    "Volumes declared for a file server",
                ),
                (
                    "objects",
                    cb.objects as u64,
                    Gauge,
                    "Object records of the callback layer",
                ),
                (
                    "objects_in_use",
                    cb.objects_in_use as u64,
                    Gauge,
                    "Object records some connection holds",
                ),
                (
                    "holds",
                    cb.holds as u64,
                    Gauge,
                    "(object, connection) holds",
                ),
                (
                    "file_breaks",
                    cb.file_breaks,
                    Counter,
                    "Callback breaks of single files",
                ),
                (
                    "volume_breaks",
                    cb.volume_breaks,
                    Counter,
                    "Callback breaks of whole volumes",
                ),
                (
                    "server_breaks",
                    cb.server_breaks,
                    Counter,
                    "Callback breaks of whole servers, new epochs included",
                ),
                ("zaps", cb.zaps, Counter, "Zap events queued to connections"),
                (
                    "break_visits",
                    cb.break_visits,
                    Counter,
                    "Object records that breaks looked at",
                ),
            ],
        );
        if let Some(u) = self.store.engine().uring_stats() {
            group(
                "io",
                &[
                    ("enters", u.enters, Counter, "Calls to io_uring_enter"),
                    (
                        "sqes_submitted",
                        u.sqes_submitted,
                        Counter,
                        "SQEs those calls submitted",
                    ),
                    (
                        "max_sqes_per_enter",
                        u.max_sqes_per_enter,
                        Gauge,
                        "The most SQEs one io_uring_enter submitted",
                    ),
                    (
                        "fixed_sqes",
                        u.fixed_sqes,
                        Counter,
                        "Reads and writes with a registered buffer",
                    ),
                    (
                        "plain_sqes",
                        u.plain_sqes,
                        Counter,
                        "Reads and writes with an unregistered buffer",
                    ),
                    (
                        "driver_waits",
                        u.driver_waits,
                        Counter,
                        "Waits for completions while another thread drove the ring",
                    ),
                ],
            );
        }
        group(
            "daemon",
            &[
                (
                    "withdrawn",
                    u64::from(self.cache.withdrawn().is_some()),
                    Gauge,
                    "1 once the cache is withdrawn after persistent device errors",
                ),
                (
                    "connections",
                    self.connections.load(Ordering::Relaxed),
                    Gauge,
                    "Clients connected (in-process sessions included)",
                ),
                (
                    "requests",
                    self.requests.load(Ordering::Relaxed),
                    Counter,
                    "Requests received",
                ),
                (
                    "read_submissions",
                    self.read_submissions.load(Ordering::Relaxed),
                    Counter,
                    "Submissions of connections' read and write I/O (requests that arrived together go in one)",
                ),
                (
                    "writes_in_flight_most",
                    self.most_writes_in_flight.load(Ordering::Relaxed) as u64,
                    Gauge,
                    "The most writes one connection has had in flight at once (pipelined writes)",
                ),
                (
                    "heap_trims",
                    self.heap_trims.load(Ordering::Relaxed),
                    Counter,
                    "Times the allocator's free pages were given back to the system (heap_trim)",
                ),
                (
                    "heap_trim_us",
                    self.heap_trim_us.load(Ordering::Relaxed),
                    Counter,
                    "Microseconds spent giving the allocator's free pages back, in all",
                ),
                (
                    "heap_trim_us_most",
                    self.heap_trim_us_most.load(Ordering::Relaxed),
                    Gauge,
                    "The longest time one giving back of free pages took, in microseconds",
                ),
                (
                    "bad_frames",
                    self.bad_frames.load(Ordering::Relaxed),
                    Counter,
                    "Connections closed for a bad frame or a refused greeting",
                ),
            ],
        );
        v
    }
}

impl Daemon {
    pub(super) fn release_volume(&self, key: &[u8], invalidate: bool) {
        let mut vols = lock(&self.volumes);
        let Some(VolumeSlot::Held(v, n)) = vols.get_mut(key) else {
            return;
        };
        *n -= 1;
        if *n > 0 {
            return;
        }
        let v = v.clone();
        // Changing until the store is done with it: an acquire of the key
        // meanwhile waits (the cookie layer would still call it acquired).
        vols.insert(key.to_vec(), VolumeSlot::Changing);
        drop(vols);
        if let Err(e) = self.cache.relinquish_volume(&v, invalidate) {
            tracing::warn!(error = %e, "relinquishing a volume");
        }
        lock(&self.volumes).remove(key);
        self.volumes_changed.notify_all();
    }

    /// Take a handle's hold on the volume `key`, acquiring it in the cookie
    /// layer (and the store) if no connection holds it, without the
    /// registry lock held across that.
    pub(super) fn hold_volume(
        &self,
        key: &[u8],
        key_str: &str,
        aux: &[u8],
    ) -> crate::cookie::Result<()> {
        let mut vols = lock(&self.volumes);
        loop {
            match vols.get_mut(key) {
                Some(VolumeSlot::Held(_, n)) => {
                    *n += 1;
                    return Ok(());
                }
                Some(VolumeSlot::Changing) => {
                    vols = self
                        .volumes_changed
                        .wait(vols)
                        .unwrap_or_else(|e| e.into_inner());
                }
                None => break,
            }
        }
        vols.insert(key.to_vec(), VolumeSlot::Changing);
        drop(vols);
        let r = self.cache.acquire_volume(key_str, aux);
        let mut vols = lock(&self.volumes);
        match &r {
            Ok(v) => vols.insert(key.to_vec(), VolumeSlot::Held(v.clone(), 1)),
            Err(_) => vols.remove(key),
        };
        drop(vols);
        self.volumes_changed.notify_all();
        r.map(|_| ())
    }

    /// The volume `key` if some handle holds it.
    pub(super) fn held_volume(&self, key: &[u8]) -> Option<Arc<Volume>> {
        match lock(&self.volumes).get(key) {
            Some(VolumeSlot::Held(v, _)) => Some(v.clone()),
            _ => None,
        }
    }

    /// Give back a connection's handle on a cookie: end its uses, drop its
    /// hold, and relinquish the cookie when no connection has it any more
    /// (`retire` is honoured by the last one only).
    pub(super) fn release_cookie(&self, conn_id: u64, e: CookieEntry, retire: bool) {
        for _ in 0..e.uses {
            self.cache.unuse_cookie(&e.cookie, None, None);
        }
        let Some(obj) = e.obj else {
            self.cache.relinquish_cookie(&e.cookie, retire);
            return;
        };
        self.coherent.unhold(obj, conn_id);
        let last = {
            let mut shared = lock(&self.shared_cookies);
            let key = (e.cookie.volume().key().to_vec(), e.cookie.key().to_vec());
            match shared.get_mut(&key) {
                Some(s) if s.obj == obj => {
                    s.refs -= 1;
                    let last = s.refs == 0;
                    if last {
                        shared.remove(&key);
                    }
                    last
                }
                _ => true,
            }
        };
        if last {
            self.coherent.untrack(obj);
            self.cache.relinquish_cookie(&e.cookie, retire);
        }
    }

    /// Release everything a connection held.
    pub(super) fn cleanup(&self, conn: &Mutex<Conn>) {
        let conn = std::mem::take(&mut *conn.lock().unwrap_or_else(|e| e.into_inner()));
        self.outboxes.unregister(conn.id);
        self.coherent.drop_holder(conn.id);
        for (_, e) in conn.cookies {
            self.release_cookie(conn.id, e, false);
        }
        for (_, key) in conn.volumes {
            self.release_volume(&key, false);
        }
    }
}

/// Say how the cache was found: one line at INFO when all is well, and a
/// WARN for what recovery had to drop or repair. Where log replay stopped
/// is only news at DEBUG: a log ends at a block never written (or one of
/// an older lap), which is how every log ends.
fn log_recovery(device: &std::path::Path, engine: &str, r: &RecoveryReport) {
    tracing::info!(
        device = %device.display(),
        engine,
        clean_shutdown = r.clean_shutdown,
        log_blocks_replayed = r.log_blocks_replayed,
        log_records_replayed = r.log_records_replayed,
        "cache open"
    );
    tracing::debug!(log_stop = %r.log_stop, checkpoint = ?r.checkpoint, "recovery");
    if let Some(why) = &r.reset {
        tracing::warn!(why = %why, "the index was reset to empty");
    }
    if r.regions_dropped > 0 {
        tracing::warn!(
            regions = r.regions_dropped,
            "regions whose header did not match their extents: their data dropped"
        );
    }
    for e in r.superblock_errors.iter().chain(&r.checkpoint_errors) {
        tracing::warn!(error = %e, "a copy did not verify (the other was used)");
    }
    if r.dirty_objects > 0 {
        tracing::info!(
            objects = r.dirty_objects,
            "objects modified locally when the cache went down: discarded at their next lookup"
        );
    }
}

pub(super) fn own_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
