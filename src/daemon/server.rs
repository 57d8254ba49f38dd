//! The socket server. See the module docs of `daemon`.

use std::collections::HashMap;
use std::io::{IoSlice, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{Config, FRAME_TIMEOUT, MAX_INFLIGHT, SHUTDOWN_GRACE};
use crate::cookie::{
    CacheError, Cookie, Fscache, FscacheConfig, Operation, ReadOutcome, Volume, WriteOutcome,
};
use crate::io::{self, Completion, CompletionQueue, IoBuf, OpenOptions};
use crate::proto::{self, Op, ProtoError, REPLY, Reader, SEG_DATA, SEG_HOLE, Status, Writer};
use crate::store::{
    FormatOptions, PendingRead, ReadAt, Segment, StartedRead, Store, StoreConfig, StoreError,
    format, read_key_of,
};

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
pub struct ShutdownHandle(Arc<Lifecycle>);

impl ShutdownHandle {
    /// Begin the clean shutdown.
    pub fn shutdown(&self) {
        self.0.stop();
    }
}

/// What the accept loop, the housekeeping thread and shutdown share.
struct Lifecycle {
    stopping: AtomicBool,
    /// Signalled when `stopping` is set (wakes housekeeping early).
    stopped: Condvar,
    sleep: Mutex<()>,
    /// The listening socket, shut down to wake the accept loop.
    listener: Mutex<Option<UnixListener>>,
}

impl Lifecycle {
    fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(l) = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            // Makes a blocked accept(2) return at once.
            let _ = nix::sys::socket::shutdown(l.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        }
        let _g = self.sleep.lock().unwrap_or_else(|e| e.into_inner());
        self.stopped.notify_all();
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Sleep for `d` or until shutdown begins; returns whether it began.
    fn sleep(&self, d: Duration) -> bool {
        let g = self.sleep.lock().unwrap_or_else(|e| e.into_inner());
        if self.stopping() {
            return true;
        }
        let _ = self
            .stopped
            .wait_timeout(g, d)
            .unwrap_or_else(|e| e.into_inner());
        self.stopping()
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

    /// Handle one request other than a read (blocking).
    fn handle(&self, conn: &Mutex<Conn>, peer: &Peer, op: Op, payload: &[u8]) -> Reply {
        let mut r = Reader::new(payload);
        let res: Result<Reply, Reply> = (|| match op {
            // The connection loop answers these itself.
            Op::Hello | Op::Read => Err(Reply::status(Status::BadRequest)),
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
                if ringcache_ondisk::check_volume_key(key).is_err() {
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a connection's frames stopped.
enum FrameEnd {
    /// The peer closed (or shutdown) between frames.
    Closed,
    /// A frame that cannot be trusted: bad header, cut short, or not
    /// completed within [`FRAME_TIMEOUT`].
    Bad,
}

/// Bytes a connection's frame reader keeps: pipelined requests arrive many
/// to a read(2); a larger frame grows it for as long as it is read.
const READ_BUF_BYTES: usize = 64 << 10;

/// Frames from a connection, read in large pieces: pipelined requests
/// arrive many to a read(2).
struct FrameReader {
    stream: UnixStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// A read timeout is set on the socket (only while a frame is part
    /// way in).
    timeout_set: bool,
}

impl FrameReader {
    fn new(stream: UnixStream) -> FrameReader {
        FrameReader {
            stream,
            buf: vec![0; READ_BUF_BYTES],
            start: 0,
            end: 0,
            timeout_set: false,
        }
    }

    /// Read more bytes, making room for `need` buffered ones first.
    /// Returns the bytes read (0 at end of stream).
    fn fill(&mut self, need: usize) -> std::io::Result<usize> {
        if self.start > 0 && (self.end == self.buf.len() || self.start + need > self.buf.len()) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if need > self.buf.len() {
            self.buf.resize(need, 0);
        }
        let end = self.end;
        let n = loop {
            match self.stream.read(&mut self.buf[end..]) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        self.end += n;
        Ok(n)
    }

    /// Have `n` bytes buffered, waiting until `deadline` at most.
    fn want(&mut self, n: usize, deadline: Instant) -> Result<(), FrameEnd> {
        while self.end - self.start < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
                return Err(FrameEnd::Bad);
            }
            self.timeout_set = true;
            match self.fill(n) {
                Ok(0) | Err(_) => return Err(FrameEnd::Bad),
                Ok(_) => {}
            }
        }
        Ok(())
    }

    /// The next frame: waits for its first byte as long as the peer likes,
    /// then gives the rest [`FRAME_TIMEOUT`].
    fn next(&mut self) -> Result<(proto::Header, Vec<u8>), FrameEnd> {
        if self.start == self.end {
            if self.timeout_set {
                if self.stream.set_read_timeout(None).is_err() {
                    return Err(FrameEnd::Bad);
                }
                self.timeout_set = false;
            }
            match self.fill(1) {
                Ok(0) | Err(_) => return Err(FrameEnd::Closed),
                Ok(_) => {}
            }
        }
        let deadline = Instant::now() + FRAME_TIMEOUT;
        self.want(16, deadline)?;
        let mut head = [0u8; 16];
        head.copy_from_slice(&self.buf[self.start..self.start + 16]);
        let h = proto::parse_header(&head).map_err(|e| {
            // A framing error: nothing after it can be trusted.
            tracing::debug!(error = %e, "bad frame: closing connection");
            FrameEnd::Bad
        })?;
        self.want(16 + h.payload_len, deadline)?;
        let at = self.start + 16;
        let payload = self.buf[at..at + h.payload_len].to_vec();
        self.start = at + h.payload_len;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            // A large write grew the buffer: give the memory back.
            if self.buf.len() > READ_BUF_BYTES {
                self.buf.truncate(READ_BUF_BYTES);
                self.buf.shrink_to_fit();
            }
        }
        Ok((h, payload))
    }
}

/// One reply frame with a status and a body.
fn reply_frame(op: u16, id: u64, status: Status, body: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(4 + body.len());
    payload.extend_from_slice(&(status as u16).to_le_bytes());
    payload.extend_from_slice(&0u16.to_le_bytes());
    payload.extend_from_slice(body);
    proto::frame(op | REPLY, id, &payload)
}

/// The write side of a connection, shared by its reader (control replies)
/// and its completion thread (read replies); whole frames at a time.
struct ReplyWriter {
    stream: Mutex<UnixStream>,
    /// A write failed: the peer is gone, later replies are dropped.
    broken: AtomicBool,
}

impl ReplyWriter {
    fn send(&self, bytes: &[u8]) {
        self.send_vectored(&mut [IoSlice::new(bytes)]);
    }

    fn send_vectored(&self, mut slices: &mut [IoSlice<'_>]) {
        if self.broken.load(Ordering::Relaxed) {
            return;
        }
        let mut s = lock(&self.stream);
        while !slices.is_empty() {
            match s.write_vectored(slices) {
                Ok(0) => {
                    self.broken.store(true, Ordering::Relaxed);
                    return;
                }
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.broken.store(true, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}

/// A read of one connection between its reader thread, which starts it,
/// and its completion thread, which finishes and answers it.
struct ConnRead<'d> {
    id: u64,
    read: PendingRead,
    /// Holds the cookie's access gate until the read is answered.
    op: Operation<'d>,
}

#[derive(Default)]
struct ReadTable<'d> {
    reads: slab::Slab<ConnRead<'d>>,
    /// The reader is done: the completion thread exits once `reads` is
    /// empty.
    closing: bool,
}

/// Reads in flight on one connection.
struct ConnReads<'d> {
    cq: CompletionQueue,
    table: Mutex<ReadTable<'d>>,
    /// Signalled when reads finish (the reader waits for room).
    room: Condvar,
}

/// Tag of the completion that wakes a completion thread to look at
/// `closing` (no read key comes near it).
const WAKE_TAG: u64 = u64::MAX;

impl<'d> ConnReads<'d> {
    fn new() -> Self {
        ConnReads {
            cq: CompletionQueue::new(),
            table: Mutex::new(ReadTable::default()),
            room: Condvar::new(),
        }
    }

    fn close(&self) {
        lock(&self.table).closing = true;
        self.cq.push(Completion {
            tag: WAKE_TAG,
            result: Ok(0),
            buf: IoBuf::empty(),
        });
    }
}

impl Daemon {
    /// Start a read: parse, check, take an access, send the I/O. Errors
    /// and reads with nothing to do are answered at once.
    fn start_read<'d>(
        &'d self,
        conn: &Mutex<Conn>,
        reads: &ConnReads<'d>,
        id: u64,
        payload: &[u8],
        out: &ReplyWriter,
    ) {
        let op_code = Op::Read as u16;
        let answer = |st: Status| out.send(&reply_frame(op_code, id, st, &[]));
        let mut r = Reader::new(payload);
        let parsed = (|| {
            let cookie = Self::cookie_of(conn, &mut r)?;
            let len = r.u32().map_err(bad)? as u64;
            let offset = r.u64().map_err(bad)?;
            r.end().map_err(bad)?;
            if len as usize > proto::MAX_DATA || offset.checked_add(len).is_none() {
                return Err(Reply::status(Status::Range));
            }
            Ok((cookie, offset, len))
        })();
        let (cookie, offset, len) = match parsed {
            Ok(p) => p,
            Err(reply) => return answer(reply.status),
        };
        let op = self.cache.begin_operation(&cookie, false);
        let Some((object, data_gen)) = op.read_target() else {
            return answer(Status::NoData);
        };
        let mut t = lock(&reads.table);
        while t.reads.len() >= MAX_INFLIGHT {
            // Back-pressure: stop reading the socket until replies go out.
            t = reads.room.wait(t).unwrap_or_else(|e| e.into_inner());
        }
        let key = t.reads.vacant_key() as u64;
        let at = ReadAt {
            object,
            data_gen: Some(data_gen),
            offset,
            len,
        };
        match self.store.start_read(key, id, at, &reads.cq) {
            Ok(StartedRead::Pending(read)) => {
                t.reads.insert(ConnRead { id, read, op });
            }
            Ok(StartedRead::Done(result)) => {
                drop(t);
                out.send(&read_reply(id, op.read_done(result)));
            }
            Err(e) => {
                drop(t);
                out.send(&read_reply(id, op.read_done(Err(e))));
            }
        }
    }

    /// A connection's completion thread: reap its reads, check them and
    /// answer them, a batch of replies to one writev.
    fn complete_reads<'d>(&'d self, reads: &ConnReads<'d>, out: &ReplyWriter) {
        let mut done = Vec::new();
        let mut landed: Vec<ConnRead<'d>> = Vec::new();
        let mut results = Vec::new();
        let mut heads: Vec<Vec<u8>> = Vec::new();
        loop {
            {
                let t = lock(&reads.table);
                if t.closing && t.reads.is_empty() {
                    return;
                }
            }
            reads.cq.wait_into(&mut done);
            {
                let mut t = lock(&reads.table);
                for c in done.drain(..) {
                    if c.tag == WAKE_TAG {
                        continue;
                    }
                    let key = read_key_of(c.tag) as usize;
                    if let Some(r) = t.reads.get_mut(key)
                        && r.read.absorb(c)
                    {
                        landed.push(t.reads.remove(key));
                    }
                }
            }
            if landed.is_empty() {
                continue;
            }
            let (ids_ops, pending): (Vec<_>, Vec<_>) =
                landed.drain(..).map(|r| ((r.id, r.op), r.read)).unzip();
            self.store.finish_pending(pending.into_iter(), &mut results);
            // Replies: a head (frame header, status, segment table) per
            // read, the data straight from the I/O buffers.
            let outcomes: Vec<(u64, Result<ReadOutcome, CacheError>)> = ids_ops
                .into_iter()
                .zip(results.drain(..))
                .map(|((id, op), (_, r))| (id, op.read_done(r)))
                .collect();
            heads.clear();
            for (id, outcome) in &outcomes {
                heads.push(read_reply_head(*id, outcome));
            }
            let mut slices = Vec::with_capacity(outcomes.len() * 2);
            for (head, (_, outcome)) in heads.iter().zip(&outcomes) {
                slices.push(IoSlice::new(head));
                if let Ok(ReadOutcome::Data(segs)) = outcome {
                    for s in segs {
                        if let Segment::Data { data, .. } = s {
                            slices.push(IoSlice::new(data));
                        }
                    }
                }
            }
            for chunk in slices.chunks_mut(512) {
                out.send_vectored(chunk);
            }
            drop(slices);
            drop(outcomes);
            reads.room.notify_all();
        }
    }
}

/// The head of a read reply: everything but the data bytes, which follow
/// it in segment order.
fn read_reply_head(id: u64, outcome: &Result<ReadOutcome, CacheError>) -> Vec<u8> {
    let op = Op::Read as u16;
    match outcome {
        Ok(ReadOutcome::Data(segs)) => {
            let data: usize = segs
                .iter()
                .filter(|s| matches!(s, Segment::Data { .. }))
                .map(|s| s.len() as usize)
                .sum();
            let mut w = Writer::new().u32(segs.len() as u32);
            for s in segs {
                let kind = if matches!(s, Segment::Data { .. }) {
                    SEG_DATA
                } else {
                    SEG_HOLE
                };
                w = w.u8(kind).u8(0).u16(0).u32(s.len() as u32).u64(s.offset());
            }
            let table = w.finish();
            let payload_len = 4 + table.len() + data;
            let mut head = Vec::with_capacity(16 + 4 + table.len());
            head.extend_from_slice(&((proto::HEADER_AFTER_LEN + payload_len) as u32).to_le_bytes());
            head.extend_from_slice(&(op | REPLY).to_le_bytes());
            head.extend_from_slice(&0u16.to_le_bytes());
            head.extend_from_slice(&id.to_le_bytes());
            head.extend_from_slice(&(Status::Ok as u16).to_le_bytes());
            head.extend_from_slice(&0u16.to_le_bytes());
            head.extend_from_slice(&table);
            head
        }
        Ok(ReadOutcome::NoData) => reply_frame(op, id, Status::NoData, &[]),
        Ok(ReadOutcome::Stale) => reply_frame(op, id, Status::Stale, &[]),
        Err(e) => reply_frame(op, id, from_cache_error(e), &[]),
    }
}

/// A whole read reply (head and data) in one buffer.
fn read_reply(id: u64, outcome: Result<ReadOutcome, CacheError>) -> Vec<u8> {
    let mut f = read_reply_head(id, &outcome);
    if let Ok(ReadOutcome::Data(segs)) = &outcome {
        for s in segs {
            if let Segment::Data { data, .. } = s {
                f.extend_from_slice(data);
            }
        }
    }
    f
}

/// Serve one connection until it closes, on this thread; its reads are
/// answered by a second thread, started with the first read.
fn serve_connection(d: &Daemon, stream: UnixStream) {
    let peer =
        match nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials) {
            Ok(c) => Peer {
                uid: c.uid(),
                gid: c.gid(),
            },
            Err(e) => {
                tracing::warn!(error = %e, "no peer credentials: closing");
                return;
            }
        };
    let writer = match stream.try_clone() {
        Ok(w) => ReplyWriter {
            stream: Mutex::new(w),
            broken: AtomicBool::new(false),
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot clone a connection: closing");
            return;
        }
    };
    d.connections.fetch_add(1, Ordering::Relaxed);
    let conn = Mutex::new(Conn::default());
    let reads = ConnReads::new();
    let mut frames = FrameReader::new(stream);
    std::thread::scope(|scope| {
        let mut completer = None;
        let mut greeted = false;
        loop {
            let (h, payload) = match frames.next() {
                Ok(f) => f,
                Err(FrameEnd::Closed) => break,
                Err(FrameEnd::Bad) => {
                    d.bad_frames.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            };
            d.requests.fetch_add(1, Ordering::Relaxed);
            if !greeted {
                if !greet(&writer, &h, &payload) {
                    d.bad_frames.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                greeted = true;
                continue;
            }
            if h.id == 0 {
                // Id 0 marks events: a request may not use it.
                writer.send(&reply_frame(h.op, 0, Status::BadRequest, &[]));
                continue;
            }
            let Some(op) = Op::from_u16(h.op) else {
                writer.send(&reply_frame(h.op, h.id, Status::UnknownOp, &[]));
                continue;
            };
            if op == Op::Read {
                if completer.is_none() {
                    let (reads, writer) = (&reads, &writer);
                    let spawned = std::thread::Builder::new()
                        .name("ringcached-reads".into())
                        .stack_size(CONN_STACK)
                        .spawn_scoped(scope, move || d.complete_reads(reads, writer));
                    match spawned {
                        Ok(t) => completer = Some(t),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot start a completion thread");
                            writer.send(&reply_frame(h.op, h.id, Status::Internal, &[]));
                            continue;
                        }
                    }
                }
                d.start_read(&conn, &reads, h.id, &payload, &writer);
                continue;
            }
            let reply = d.handle(&conn, &peer, op, &payload);
            writer.send(&reply_frame(h.op, h.id, reply.status, &reply.body.finish()));
        }
        // Reads in flight finish (releasing their accesses) before the
        // client's cookies and volumes are given back.
        reads.close();
        if let Some(t) = completer
            && t.join().is_err()
        {
            tracing::error!("a connection's completion thread panicked");
        }
    });
    d.cleanup(&conn);
    d.connections.fetch_sub(1, Ordering::Relaxed);
}

/// Answer the first frame, which must be a HELLO of our version. Returns
/// whether the connection goes on.
fn greet(writer: &ReplyWriter, h: &proto::Header, payload: &[u8]) -> bool {
    if h.op != Op::Hello as u16 {
        writer.send(&reply_frame(h.op, h.id, Status::BadRequest, &[]));
        return false;
    }
    let mut r = Reader::new(payload);
    match (r.bytes(8).ok(), r.u32().ok()) {
        (Some(m), Some(v)) if m == proto::MAGIC => {
            if v != proto::VERSION {
                let body = Writer::new().u32(proto::VERSION).finish();
                writer.send(&reply_frame(h.op, h.id, Status::Version, &body));
                return false;
            }
        }
        _ => return false,
    }
    let body = Writer::new()
        .u32(proto::VERSION)
        .u32(proto::MAX_FRAME as u32)
        .u32(MAX_INFLIGHT as u32)
        .u32(proto::MAX_DATA as u32)
        .finish();
    writer.send(&reply_frame(h.op, h.id, Status::Ok, &body));
    !writer.broken.load(Ordering::Relaxed)
}

/// Stack of connection threads: they parse frames and call into the
/// store, nothing deep.
const CONN_STACK: usize = 256 << 10;

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

/// Bind the socket: refuse if another daemon answers on it, replace a
/// stale one.
fn bind(sock: &Path, mode: u32) -> anyhow::Result<UnixListener> {
    if sock.exists() {
        // A stale socket from a crashed daemon: refuse if one answers.
        if UnixStream::connect(sock).is_ok() {
            anyhow::bail!("{} is served by another daemon", sock.display());
        }
        std::fs::remove_file(sock).with_context(|| format!("removing stale {}", sock.display()))?;
    }
    if let Some(dir) = sock.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let listener =
        UnixListener::bind(sock).with_context(|| format!("binding {}", sock.display()))?;
    std::fs::set_permissions(sock, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// Run the daemon until SIGTERM/SIGINT (or `shutdown`), then shut down
/// cleanly: stop accepting, finish requests in flight, release every
/// client's cookies, flush and checkpoint, mark the cache clean.
/// `on_ready` is called once the socket accepts connections.
///
/// Threads: this one accepts; each connection has a thread that reads and
/// serves its requests (and starts its reads), plus, once it reads, one
/// that reaps and answers its reads. Both block in the kernel (the socket,
/// or io_uring as the engine's driver), so a read costs no hand-off
/// through a pool. One more thread runs housekeeping (LRU discard, a flush
/// when dirty, once a second), one waits for signals.
pub fn run(
    cfg: Config,
    on_ready: impl FnOnce(ShutdownHandle) + Send + 'static,
) -> anyhow::Result<()> {
    raise_fd_limit();
    let daemon = Daemon::open(cfg)?;
    let sock = daemon.cfg.socket.clone();
    let listener = bind(&sock, daemon.cfg.socket_mode)?;
    let life = Arc::new(Lifecycle {
        stopping: AtomicBool::new(false),
        stopped: Condvar::new(),
        sleep: Mutex::new(()),
        listener: Mutex::new(Some(listener.try_clone()?)),
    });
    let handle = ShutdownHandle(life.clone());
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .context("installing signal handlers")?;
    let signal_handle = signals.handle();
    let signal_thread = {
        let handle = handle.clone();
        std::thread::Builder::new()
            .name("ringcached-signals".into())
            .spawn(move || {
                if signals.forever().next().is_some() {
                    tracing::info!("signal received: shutting down");
                    handle.shutdown();
                }
            })?
    };
    tracing::info!(socket = %sock.display(), "ready");
    sd_notify_ready();
    on_ready(handle.clone());
    let open: Mutex<HashMap<u64, UnixStream>> = Mutex::new(HashMap::new());
    let result = std::thread::scope(|scope| -> anyhow::Result<()> {
        let d = &*daemon;
        let life = &*life;
        // LRU: discard idle cookies once a second; data does not stay
        // volatile for more than a second.
        std::thread::Builder::new()
            .name("ringcached-housekeeping".into())
            .spawn_scoped(scope, move || {
                while !life.sleep(Duration::from_secs(1)) {
                    d.cache.lru_scan(Instant::now());
                    if let Err(e) = d.store.flush_if_dirty() {
                        tracing::warn!(error = %e, "periodic flush failed");
                    }
                }
            })?;
        let open = &open;
        let mut next_conn = 0u64;
        for stream in listener.incoming() {
            if life.stopping() {
                break;
            }
            let stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    // Out of descriptors, say: do not spin.
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            let id = next_conn;
            next_conn += 1;
            if let Ok(s) = stream.try_clone() {
                lock(open).insert(id, s);
            }
            let spawned = std::thread::Builder::new()
                .name("ringcached-conn".into())
                .stack_size(CONN_STACK)
                .spawn_scoped(scope, move || {
                    serve_connection(d, stream);
                    lock(open).remove(&id);
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start a connection thread");
                lock(open).remove(&id);
            }
        }
        drop(listener);
        let _ = std::fs::remove_file(&sock);
        // Connections stop reading, finish their requests in flight and
        // clean up; the scope waits for them.
        for s in lock(open).values() {
            let _ = s.shutdown(std::net::Shutdown::Read);
        }
        // A client that does not take its replies would hold its
        // connection's thread in a write: after a grace period, cut it off.
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while !lock(open).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let stuck = lock(open);
        if !stuck.is_empty() {
            tracing::warn!(
                connections = stuck.len(),
                "connections did not finish in time; closing them"
            );
            for s in stuck.values() {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
        drop(stuck);
        Ok(())
    });
    signal_handle.close();
    let _ = signal_thread.join();
    result?;
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
