//! The socket server. See the module docs of `daemon`.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc, watch};

use super::{Config, FRAME_TIMEOUT, MAX_INFLIGHT, MAX_INFLIGHT_BYTES};
use crate::cookie::{
    CacheError, Cookie, Fscache, FscacheConfig, ReadOutcome, Volume, WriteOutcome,
};
use crate::io::{self, OpenOptions};
use crate::proto::{self, Op, ProtoError, REPLY, Reader, SEG_DATA, SEG_HOLE, Status, Writer};
use crate::store::{FormatOptions, Segment, Store, StoreConfig, StoreError, format};

/// The running service: the store, the cookie layer, the shared volumes.
pub struct Daemon {
    cfg: Config,
    store: Arc<Store>,
    cache: Arc<Fscache>,
    /// Volumes acquired by any connection: key -> (volume, connections).
    volumes: Mutex<HashMap<Vec<u8>, SharedVolume>>,
    self_uid: u32,
    connections: AtomicU64,
    requests: AtomicU64,
    bad_frames: AtomicU64,
}

/// A volume shared by connections: the volume and how many hold it.
type SharedVolume = (Arc<Volume>, u32);

/// Ask a running daemon to shut down cleanly.
#[derive(Clone)]
pub struct ShutdownHandle(watch::Sender<bool>);

impl ShutdownHandle {
    /// Begin the clean shutdown.
    pub fn shutdown(&self) {
        let _ = self.0.send(true);
    }
}

struct CookieEntry {
    cookie: Arc<Cookie>,
    volume: u32,
    uses: u32,
}

#[derive(Default)]
struct Conn {
    next_handle: u32,
    /// Volume handles -> volume keys.
    volumes: HashMap<u32, Vec<u8>>,
    cookies: HashMap<u32, CookieEntry>,
}

impl Conn {
    fn handle(&mut self) -> u32 {
        self.next_handle = self.next_handle.wrapping_add(1).max(1);
        self.next_handle
    }
}

struct Peer {
    uid: u32,
    gid: u32,
}

/// A reply: status and body.
struct Reply {
    status: Status,
    body: Writer,
}

impl Reply {
    fn ok(body: Writer) -> Reply {
        Reply {
            status: Status::Ok,
            body,
        }
    }
    fn status(s: Status) -> Reply {
        Reply {
            status: s,
            body: Writer::new(),
        }
    }
}

fn bad(_: ProtoError) -> Reply {
    Reply::status(Status::BadRequest)
}

fn from_cache_error(e: &CacheError) -> Status {
    match e {
        CacheError::Busy(_) => Status::Busy,
        CacheError::Invalid(_) => Status::Invalid,
        CacheError::Relinquished | CacheError::VolumeRelinquished => Status::BadHandle,
        CacheError::Store(s) => from_store_error(s),
    }
}

fn from_store_error(e: &StoreError) -> Status {
    match e {
        StoreError::Invalid(_) => Status::Range,
        StoreError::NoSpace => Status::NoSpace,
        StoreError::Failed(_) | StoreError::Io(_) | StoreError::Corrupt(_) => Status::Failed,
        StoreError::Stale => Status::Stale,
        StoreError::Exists => Status::Busy,
        StoreError::NoSuchObject | StoreError::NoSuchVolume => Status::BadHandle,
        StoreError::NotACache(_) => Status::Internal,
    }
}

impl Daemon {
    /// Open (creating and formatting on first use) the cache of `cfg`.
    pub fn open(cfg: Config) -> anyhow::Result<Arc<Daemon>> {
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
        tracing::info!(device = %cfg.device.display(), engine = engine_name, report = ?store.recovery_report(), "cache open");
        let cache = Arc::new(Fscache::new(
            store.clone(),
            FscacheConfig {
                lru_timeout: cfg.lru_timeout,
            },
        ));
        Ok(Arc::new(Daemon {
            cfg,
            store,
            cache,
            volumes: Mutex::new(HashMap::new()),
            self_uid: own_uid(),
            connections: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            bad_frames: AtomicU64::new(0),
        }))
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn stats(&self) -> Vec<(String, u64)> {
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
            ("regions_free", u64::from(o.regions_free)),
            ("objects", o.objects),
            ("extents", o.extents),
            ("cached_bytes", o.live_bytes),
        ] {
            v.push((format!("space.{k}"), n));
        }
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

    fn cookie_of(conn: &Mutex<Conn>, r: &mut Reader<'_>) -> Result<Arc<Cookie>, Reply> {
        let h = r.u32().map_err(bad)?;
        let c = conn.lock().unwrap_or_else(|e| e.into_inner());
        c.cookies
            .get(&h)
            .map(|e| e.cookie.clone())
            .ok_or(Reply::status(Status::BadHandle))
    }

    /// Handle one request (blocking).
    fn handle(&self, conn: &Mutex<Conn>, peer: &Peer, op: Op, payload: &[u8]) -> Reply {
        let mut r = Reader::new(payload);
        let res: Result<Reply, Reply> = (|| match op {
            Op::Hello => Err(Reply::status(Status::BadRequest)),
            Op::Ping => {
                r.end().map_err(bad)?;
                Ok(Reply::ok(Writer::new()))
            }
            Op::Stats => {
                r.end().map_err(bad)?;
                let stats = self.stats();
                let mut w = Writer::new().u32(stats.len() as u32);
                for (k, v) in stats {
                    w = w.u8(k.len() as u8).bytes(k.as_bytes()).u64(v);
                }
                Ok(Reply::ok(w))
            }
            Op::AcquireVolume => {
                let key_len = r.u16().map_err(bad)? as usize;
                let aux_len = r.u16().map_err(bad)? as usize;
                let key = r.bytes(key_len).map_err(bad)?;
                let aux = r.bytes(aux_len).map_err(bad)?;
                r.end().map_err(bad)?;
                let key_str =
                    std::str::from_utf8(key).map_err(|_| Reply::status(Status::Invalid))?;
                if key.is_empty()
                    || key.len() > ringcache_ondisk::VOLUME_KEY_MAX
                    || key.iter().any(|&b| !(0x21..0x7f).contains(&b) || b == b'/')
                {
                    return Err(Reply::status(Status::Invalid));
                }
                if !self.cfg.allows(key_str, peer.uid, peer.gid, self.self_uid) {
                    tracing::warn!(uid = peer.uid, volume = key_str, "volume access denied");
                    return Err(Reply::status(Status::Denied));
                }
                {
                    let mut vols = self.volumes.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some((_, n)) = vols.get_mut(key) {
                        *n += 1;
                    } else {
                        let v = self
                            .cache
                            .acquire_volume(key_str, aux)
                            .map_err(|e| Reply::status(from_cache_error(&e)))?;
                        vols.insert(key.to_vec(), (v, 1));
                    }
                }
                let mut c = conn.lock().unwrap_or_else(|e| e.into_inner());
                let h = c.handle();
                c.volumes.insert(h, key.to_vec());
                Ok(Reply::ok(Writer::new().u32(h)))
            }
            Op::RelinquishVolume => {
                let h = r.u32().map_err(bad)?;
                let invalidate = r.u8().map_err(bad)? != 0;
                r.end().map_err(bad)?;
                let key = {
                    let mut c = conn.lock().unwrap_or_else(|e| e.into_inner());
                    if c.cookies.values().any(|e| e.volume == h) {
                        return Err(Reply::status(Status::Busy));
                    }
                    c.volumes
                        .remove(&h)
                        .ok_or(Reply::status(Status::BadHandle))?
                };
                self.release_volume(&key, invalidate);
                Ok(Reply::ok(Writer::new()))
            }
            Op::AcquireCookie => {
                let vh = r.u32().map_err(bad)?;
                let key_len = r.u16().map_err(bad)? as usize;
                let aux_len = r.u16().map_err(bad)? as usize;
                let size = r.u64().map_err(bad)?;
                let key = r.bytes(key_len).map_err(bad)?;
                let aux = r.bytes(aux_len).map_err(bad)?;
                r.end().map_err(bad)?;
                let vkey = {
                    let c = conn.lock().unwrap_or_else(|e| e.into_inner());
                    c.volumes
                        .get(&vh)
                        .cloned()
                        .ok_or(Reply::status(Status::BadHandle))?
                };
                let vol = {
                    let vols = self.volumes.lock().unwrap_or_else(|e| e.into_inner());
                    vols.get(&vkey)
                        .map(|(v, _)| v.clone())
                        .ok_or(Reply::status(Status::BadHandle))?
                };
                let cookie = self
                    .cache
                    .acquire_cookie(&vol, key, aux, size)
                    .map_err(|e| Reply::status(from_cache_error(&e)))?;
                let mut c = conn.lock().unwrap_or_else(|e| e.into_inner());
                let h = c.handle();
                c.cookies.insert(
                    h,
                    CookieEntry {
                        cookie,
                        volume: vh,
                        uses: 0,
                    },
                );
                Ok(Reply::ok(Writer::new().u32(h)))
            }
            Op::RelinquishCookie => {
                let h = r.u32().map_err(bad)?;
                let retire = r.u8().map_err(bad)? != 0;
                r.end().map_err(bad)?;
                let e = {
                    let mut c = conn.lock().unwrap_or_else(|e| e.into_inner());
                    c.cookies
                        .remove(&h)
                        .ok_or(Reply::status(Status::BadHandle))?
                };
                for _ in 0..e.uses {
                    self.cache.unuse_cookie(&e.cookie, None, None);
                }
                self.cache.relinquish_cookie(&e.cookie, retire);
                Ok(Reply::ok(Writer::new()))
            }
            Op::UseCookie => {
                let h = r.u32().map_err(bad)?;
                let will_modify = r.u8().map_err(bad)? != 0;
                r.end().map_err(bad)?;
                let cookie = {
                    let mut c = conn.lock().unwrap_or_else(|e| e.into_inner());
                    let e = c
                        .cookies
                        .get_mut(&h)
                        .ok_or(Reply::status(Status::BadHandle))?;
                    e.uses += 1;
                    e.cookie.clone()
                };
                self.cache.use_cookie(&cookie, will_modify);
                Ok(Reply::ok(Writer::new()))
            }
            Op::UnuseCookie => {
                let h = r.u32().map_err(bad)?;
                let flags = r.u8().map_err(bad)?;
                let aux_len = r.u16().map_err(bad)? as usize;
                let size = r.u64().map_err(bad)?;
                let aux = r.bytes(aux_len).map_err(bad)?;
                r.end().map_err(bad)?;
                if aux.len() > ringcache_ondisk::AUX_MAX {
                    return Err(Reply::status(Status::Invalid));
                }
                let cookie = {
                    let mut c = conn.lock().unwrap_or_else(|e| e.into_inner());
                    let e = c
                        .cookies
                        .get_mut(&h)
                        .ok_or(Reply::status(Status::BadHandle))?;
                    if e.uses == 0 {
                        return Err(Reply::status(Status::Invalid));
                    }
                    e.uses -= 1;
                    e.cookie.clone()
                };
                self.cache.unuse_cookie(
                    &cookie,
                    (flags & 1 != 0).then_some(aux),
                    (flags & 2 != 0).then_some(size),
                );
                Ok(Reply::ok(Writer::new()))
            }
            Op::Read => {
                let cookie = Self::cookie_of(conn, &mut r)?;
                let len = r.u32().map_err(bad)? as u64;
                let offset = r.u64().map_err(bad)?;
                r.end().map_err(bad)?;
                if len as usize > proto::MAX_DATA || offset.checked_add(len).is_none() {
                    return Err(Reply::status(Status::Range));
                }
                let opn = self.cache.begin_operation(&cookie, false);
                match opn.read(offset, len) {
                    Ok(ReadOutcome::Data(segs)) => {
                        let mut w = Writer::new().u32(segs.len() as u32);
                        for s in &segs {
                            let kind = if matches!(s, Segment::Data { .. }) {
                                SEG_DATA
                            } else {
                                SEG_HOLE
                            };
                            w = w.u8(kind).u8(0).u16(0).u32(s.len() as u32).u64(s.offset());
                        }
                        for s in &segs {
                            if let Segment::Data { data, .. } = s {
                                w = w.bytes(data);
                            }
                        }
                        Ok(Reply::ok(w))
                    }
                    Ok(ReadOutcome::NoData) => Err(Reply::status(Status::NoData)),
                    Ok(ReadOutcome::Stale) => Err(Reply::status(Status::Stale)),
                    Err(e) => Err(Reply::status(from_cache_error(&e))),
                }
            }
            Op::Write => {
                let cookie = Self::cookie_of(conn, &mut r)?;
                let len = r.u32().map_err(bad)? as usize;
                let offset = r.u64().map_err(bad)?;
                let data = r.bytes(len).map_err(bad)?;
                r.end().map_err(bad)?;
                if offset.checked_add(len as u64).is_none() {
                    return Err(Reply::status(Status::Range));
                }
                let opn = self.cache.begin_operation(&cookie, true);
                match opn.write(offset, data) {
                    Ok(WriteOutcome::Written) => Ok(Reply::ok(Writer::new())),
                    Ok(WriteOutcome::Dropped) => Err(Reply::status(Status::Dropped)),
                    Ok(WriteOutcome::Stale) => Err(Reply::status(Status::Stale)),
                    Err(e) => Err(Reply::status(from_cache_error(&e))),
                }
            }
            Op::PrepareToWrite => {
                let cookie = Self::cookie_of(conn, &mut r)?;
                r.end().map_err(bad)?;
                self.cache.prepare_to_write(&cookie);
                Ok(Reply::ok(Writer::new()))
            }
            Op::Invalidate => {
                let cookie = Self::cookie_of(conn, &mut r)?;
                let aux_len = r.u16().map_err(bad)? as usize;
                let _pad = r.u16().map_err(bad)?;
                let size = r.u64().map_err(bad)?;
                let aux = r.bytes(aux_len).map_err(bad)?;
                r.end().map_err(bad)?;
                self.cache
                    .invalidate(&cookie, aux, size)
                    .map_err(|e| Reply::status(from_cache_error(&e)))?;
                Ok(Reply::ok(Writer::new()))
            }
            Op::Resize => {
                let cookie = Self::cookie_of(conn, &mut r)?;
                let _pad = r.u32().map_err(bad)?;
                let size = r.u64().map_err(bad)?;
                r.end().map_err(bad)?;
                self.cache
                    .resize(&cookie, size)
                    .map_err(|e| Reply::status(from_cache_error(&e)))?;
                Ok(Reply::ok(Writer::new()))
            }
            Op::QueryOccupancy => {
                let cookie = Self::cookie_of(conn, &mut r)?;
                r.end().map_err(bad)?;
                let opn = self.cache.begin_operation(&cookie, false);
                let occ = opn
                    .query_occupancy()
                    .map_err(|e| Reply::status(from_cache_error(&e)))?;
                let mut w = Writer::new().u32(occ.len() as u32);
                for (o, l) in occ {
                    w = w.u64(o).u64(l);
                }
                Ok(Reply::ok(w))
            }
        })();
        res.unwrap_or_else(|e| e)
    }

    fn release_volume(&self, key: &[u8], invalidate: bool) {
        let mut vols = self.volumes.lock().unwrap_or_else(|e| e.into_inner());
        let Some((v, n)) = vols.get_mut(key) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            let v = v.clone();
            vols.remove(key);
            drop(vols);
            if let Err(e) = self.cache.relinquish_volume(&v, invalidate) {
                tracing::warn!(error = %e, "relinquishing a volume");
            }
        }
    }

    /// Release everything a connection held.
    fn cleanup(&self, conn: &Mutex<Conn>) {
        let conn = std::mem::take(&mut *conn.lock().unwrap_or_else(|e| e.into_inner()));
        for (_, e) in conn.cookies {
            for _ in 0..e.uses {
                self.cache.unuse_cookie(&e.cookie, None, None);
            }
            self.cache.relinquish_cookie(&e.cookie, false);
        }
        for (_, key) in conn.volumes {
            self.release_volume(&key, false);
        }
    }
}

fn own_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

/// Read exactly `buf.len()` bytes, giving up after `limit`.
async fn read_within<R: tokio::io::AsyncRead + Unpin>(
    s: &mut R,
    buf: &mut [u8],
    limit: Duration,
) -> std::io::Result<()> {
    match tokio::time::timeout(limit, s.read_exact(buf)).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "frame not completed in time",
        )),
    }
}

async fn serve_connection(d: Arc<Daemon>, stream: UnixStream, mut stop: watch::Receiver<bool>) {
    let peer = match stream.peer_cred() {
        Ok(c) => Peer {
            uid: c.uid(),
            gid: c.gid(),
        },
        Err(e) => {
            tracing::warn!(error = %e, "no peer credentials: closing");
            return;
        }
    };
    d.connections.fetch_add(1, Ordering::Relaxed);
    let (rd, mut wr) = stream.into_split();
    // Pipelined requests arrive many to a read: take them from a buffer.
    let mut rd = tokio::io::BufReader::with_capacity(256 << 10, rd);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(MAX_INFLIGHT * 2);
    let writer = tokio::spawn(async move {
        while let Some(buf) = rx.recv().await {
            if wr.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
    let conn = Arc::new(Mutex::new(Conn::default()));
    let inflight = Arc::new(Semaphore::new(MAX_INFLIGHT));
    let inflight_bytes = Arc::new(Semaphore::new(MAX_INFLIGHT_BYTES));
    let mut greeted = false;
    loop {
        let mut head = [0u8; 16];
        // Wait for the first byte of a frame as long as the client likes
        // (or until shutdown); the rest must follow promptly.
        let first = tokio::select! {
            r = rd.read(&mut head[..1]) => r,
            _ = stop.changed() => break,
        };
        match first {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if read_within(&mut rd, &mut head[1..], FRAME_TIMEOUT)
            .await
            .is_err()
        {
            d.bad_frames.fetch_add(1, Ordering::Relaxed);
            break;
        }
        let h = match proto::parse_header(&head) {
            Ok(h) => h,
            Err(e) => {
                // A framing error: nothing after it can be trusted.
                tracing::debug!(error = %e, "bad frame: closing connection");
                d.bad_frames.fetch_add(1, Ordering::Relaxed);
                break;
            }
        };
        let mut payload = vec![0u8; h.payload_len];
        if read_within(&mut rd, &mut payload, FRAME_TIMEOUT)
            .await
            .is_err()
        {
            d.bad_frames.fetch_add(1, Ordering::Relaxed);
            break;
        }
        d.requests.fetch_add(1, Ordering::Relaxed);
        if !greeted {
            let ok = h.op == Op::Hello as u16 && {
                let mut r = Reader::new(&payload);
                let magic = r.bytes(8).ok();
                let version = r.u32().ok();
                match (magic, version) {
                    (Some(m), Some(v)) if m == proto::MAGIC => {
                        if v != proto::VERSION {
                            let body = Writer::new()
                                .u16(Status::Version as u16)
                                .u16(0)
                                .u32(proto::VERSION)
                                .finish();
                            let _ = tx.send(proto::frame(h.op | REPLY, h.id, &body)).await;
                            false
                        } else {
                            true
                        }
                    }
                    _ => false,
                }
            };
            if !ok {
                if h.op != Op::Hello as u16 {
                    let body = Writer::new().u16(Status::BadRequest as u16).u16(0).finish();
                    let _ = tx.send(proto::frame(h.op | REPLY, h.id, &body)).await;
                }
                d.bad_frames.fetch_add(1, Ordering::Relaxed);
                break;
            }
            greeted = true;
            let body = Writer::new()
                .u16(Status::Ok as u16)
                .u16(0)
                .u32(proto::VERSION)
                .u32(proto::MAX_FRAME as u32)
                .u32(MAX_INFLIGHT as u32)
                .u32(proto::MAX_DATA as u32)
                .finish();
            if tx
                .send(proto::frame(h.op | REPLY, h.id, &body))
                .await
                .is_err()
            {
                break;
            }
            continue;
        }
        if h.id == 0 {
            // Id 0 marks events: a request may not use it.
            let body = Writer::new().u16(Status::BadRequest as u16).u16(0).finish();
            if tx.send(proto::frame(h.op | REPLY, 0, &body)).await.is_err() {
                break;
            }
            continue;
        }
        let Some(op) = Op::from_u16(h.op) else {
            let body = Writer::new().u16(Status::UnknownOp as u16).u16(0).finish();
            if tx
                .send(proto::frame(h.op | REPLY, h.id, &body))
                .await
                .is_err()
            {
                break;
            }
            continue;
        };
        // Back-pressure: stop reading until a slot and the bytes are free.
        let Ok(slot) = inflight.clone().acquire_owned().await else {
            break;
        };
        let bytes = payload.len().clamp(1, MAX_INFLIGHT_BYTES) as u32;
        let Ok(bytes_permit) = inflight_bytes.clone().acquire_many_owned(bytes).await else {
            break;
        };
        let (d2, conn2, tx2) = (d.clone(), conn.clone(), tx.clone());
        let peer2 = Peer {
            uid: peer.uid,
            gid: peer.gid,
        };
        let id = h.id;
        tokio::spawn(async move {
            let reply =
                tokio::task::spawn_blocking(move || d2.handle(&conn2, &peer2, op, &payload))
                    .await
                    .unwrap_or_else(|_| Reply::status(Status::Internal));
            let mut body = Writer::new().u16(reply.status as u16).u16(0).finish();
            body.extend_from_slice(&reply.body.finish());
            let _ = tx2.send(proto::frame(op as u16 | REPLY, id, &body)).await;
            drop(slot);
            drop(bytes_permit);
        });
    }
    // Wait for the requests in flight (they release their accesses), then
    // give back everything this client held.
    let _all = inflight.acquire_many(MAX_INFLIGHT as u32).await;
    let (d2, conn2) = (d.clone(), conn.clone());
    let _ = tokio::task::spawn_blocking(move || d2.cleanup(&conn2)).await;
    drop(tx);
    let _ = writer.await;
    d.connections.fetch_sub(1, Ordering::Relaxed);
}

/// One descriptor per client: raise the soft limit to the hard one.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(error = %e, "cannot raise the open file limit");
    }
}

/// Send `READY=1` to systemd when run under it.
fn sd_notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let r = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|a| sock.send_to_addr(b"READY=1", &a))
    } else {
        sock.send_to(b"READY=1", Path::new(&path))
    };
    if let Err(e) = r {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// Run the daemon until SIGTERM/SIGINT (or `shutdown`), then shut down
/// cleanly: stop accepting, finish requests in flight, release every
/// client's cookies, flush and checkpoint, mark the cache clean.
/// `on_ready` is called once the socket accepts connections.
pub fn run(
    cfg: Config,
    on_ready: impl FnOnce(ShutdownHandle) + Send + 'static,
) -> anyhow::Result<()> {
    raise_fd_limit();
    let daemon = Daemon::open(cfg)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(128)
        .enable_all()
        .build()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let handle = ShutdownHandle(stop_tx);
    let d = daemon.clone();
    rt.block_on(async move {
        let sock = &d.cfg.socket;
        if sock.exists() {
            // A stale socket from a crashed daemon: refuse if one answers.
            if std::os::unix::net::UnixStream::connect(sock).is_ok() {
                anyhow::bail!("{} is served by another daemon", sock.display());
            }
            std::fs::remove_file(sock).with_context(|| format!("removing stale {}", sock.display()))?;
        }
        if let Some(dir) = sock.parent()
            && !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        let listener = UnixListener::bind(sock).with_context(|| format!("binding {}", sock.display()))?;
        std::fs::set_permissions(sock, std::fs::Permissions::from_mode(d.cfg.socket_mode))?;
        tracing::info!(socket = %sock.display(), "ready");
        sd_notify_ready();
        on_ready(handle.clone());
        // LRU: discard idle cookies once a second.
        let lru = {
            let d = d.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.changed() => break,
                    }
                    let (cache, store) = (d.cache.clone(), d.store.clone());
                    let _ = tokio::task::spawn_blocking(move || {
                        cache.lru_scan(Instant::now());
                        // Data does not stay volatile for more than a second.
                        if let Err(e) = store.flush_if_dirty() {
                            tracing::warn!(error = %e, "periodic flush failed");
                        }
                    })
                    .await;
                }
            })
        };
        let signals = {
            let handle = handle.clone();
            tokio::spawn(async move {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
                tokio::select! {
                    _ = async { if let Some(t) = term.as_mut() { t.recv().await; } else { std::future::pending::<()>().await } } => {}
                    _ = async { if let Some(i) = int.as_mut() { i.recv().await; } else { std::future::pending::<()>().await } } => {}
                }
                tracing::info!("signal received: shutting down");
                handle.shutdown();
            })
        };
        let mut conns = tokio::task::JoinSet::new();
        let mut stop = stop_rx.clone();
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((s, _)) => {
                        conns.spawn(serve_connection(d.clone(), s, stop_rx.clone()));
                    }
                    Err(e) => tracing::warn!(error = %e, "accept failed"),
                },
                _ = stop.changed() => break,
            }
            // Reap finished connections now and then.
            while conns.try_join_next().is_some() {}
        }
        drop(listener);
        let _ = std::fs::remove_file(sock);
        // Connections finish their requests in flight and clean up.
        let deadline = tokio::time::sleep(Duration::from_secs(10));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                r = conns.join_next() => if r.is_none() { break },
                _ = &mut deadline => {
                    tracing::warn!("connections did not finish in time");
                    break;
                }
            }
        }
        lru.abort();
        signals.abort();
        Ok(())
    })?;
    drop(rt);
    let store = daemon.store.clone();
    drop(daemon);
    match Arc::try_unwrap(store) {
        Ok(s) => s.close().context("closing the cache")?,
        Err(s) => {
            s.checkpoint().context("checkpointing the cache")?;
            tracing::warn!("store still referenced at shutdown: checkpointed, not marked clean");
        }
    }
    tracing::info!("shut down cleanly");
    Ok(())
}
