//! The daemon's state: the store, the cookie layer and the volumes shared
//! by connections; opening the cache; the counters `Stats` reports; giving
//! back what a closed connection held.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use anyhow::Context;

use super::Config;
use super::connection::{Conn, CookieEntry};
use super::events::Outboxes;
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
            bad_frames: AtomicU64::new(0),
            coherent,
            outboxes: Outboxes::default(),
            shared_cookies: Mutex::new(HashMap::new()),
            next_conn_id: AtomicU64::new(1),
            stop: super::lifecycle::Stop::new().context("creating the shutdown eventfd")?,
        }))
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub(super) fn stats(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = Vec::new();
        for (k, n) in self.cache.stats().snapshot() {
            v.push((format!("fscache.{k}"), n));
        }
        let s = self.store.stats();
        let st = [
            ("reads", s.reads),
            ("read_bytes", s.read_bytes),
            ("read_hole_bytes", s.read_hole_bytes),
            ("writes", s.writes),
            ("write_bytes", s.write_bytes),
            ("checksum_errors", s.checksum_errors),
            ("io_errors", s.io_errors),
            ("regions_evicted", s.regions_evicted),
            ("bytes_evicted", s.bytes_evicted),
            ("objects_culled", s.objects_culled),
            ("checkpoints", s.checkpoints),
            ("flushes", s.flushes),
            ("nospace_events", s.nospace_events),
        ];
        for (k, n) in st {
            v.push((format!("store.{k}"), n));
        }
        let o = self.store.occupancy_summary();
        for (k, n) in [
            ("regions", u64::from(o.regions)),
            ("region_bytes", o.region_bytes),
            ("regions_free", u64::from(o.regions_free)),
            ("objects", o.objects),
            ("extents", o.extents),
            ("cached_bytes", o.live_bytes),
        ] {
            v.push((format!("space.{k}"), n));
        }
        let cb = self.coherent.stats();
        for (k, n) in [
            ("servers", cb.servers as u64),
            ("volumes", cb.volumes as u64),
            ("objects", cb.objects as u64),
            ("objects_in_use", cb.objects_in_use as u64),
            ("holds", cb.holds as u64),
            ("file_breaks", cb.file_breaks),
            ("volume_breaks", cb.volume_breaks),
            ("server_breaks", cb.server_breaks),
            ("zaps", cb.zaps),
            ("break_visits", cb.break_visits),
        ] {
            v.push((format!("callback.{k}"), n));
        }
        v.push((
            "daemon.withdrawn".into(),
            u64::from(self.cache.withdrawn().is_some()),
        ));
        v.push((
            "daemon.connections".into(),
            self.connections.load(Ordering::Relaxed),
        ));
        v.push((
            "daemon.requests".into(),
            self.requests.load(Ordering::Relaxed),
        ));
        v.push((
            "daemon.bad_frames".into(),
            self.bad_frames.load(Ordering::Relaxed),
        ));
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
