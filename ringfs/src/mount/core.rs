//! The client's logic, apart from FUSE: what it knows of each file, the
//! read path (the cache under a valid promise, else revalidate with the
//! server, else fetch 1 MiB ranges and cache them), the write-through
//! path, and what a break does.
//!
//! Locks: `nodes` is held only to read or update the table, never across
//! a request to the server or the cache. Notifications to the kernel go
//! through a channel to one thread (`Notice`), never from here.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fuser::Errno;
use ringcache::client::{ClientError as CacheError, CookieHandle, WholeRead};

use super::cache::{Cache, Conn, object_key};
use super::nodes::{Snap, Table};
use crate::client::{Client, ClientError};
use crate::wire::{AttrReply, FileId, FileKind, Status};

/// What the kernel must be told, by the notification thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Drop the file's attributes, page cache and mapped pages.
    Inode(u64),
    /// Drop the entry `name` of directory `parent`.
    Entry(u64, Vec<u8>),
}

/// Knobs of the client.
#[derive(Debug, Clone, Copy)]
pub struct Tunables {
    /// A promise is trusted until this long before it expires (at most
    /// half the promise).
    pub margin: Duration,
    /// Attribute and entry timeouts given to the kernel (never beyond
    /// the promise minus the margin).
    pub ttl: Duration,
    /// Fetch unit (aligned).
    pub chunk: u64,
    /// Threads for the reads the cache's read thread hands back (misses,
    /// revalidations: they wait for the server).
    pub fallback_threads: usize,
}

impl Default for Tunables {
    fn default() -> Self {
        Tunables {
            margin: Duration::from_secs(10),
            ttl: Duration::from_secs(1),
            chunk: 1 << 20,
            fallback_threads: 16,
        }
    }
}

/// Counters of the client (for tests and logs).
#[derive(Default, Debug)]
pub struct MountStats {
    /// Reads answered from the cache entirely.
    pub cache_reads: AtomicU64,
    /// File data bytes fetched from the server.
    pub fetched_bytes: AtomicU64,
    /// Bytes written into the cache.
    pub cached_bytes: AtomicU64,
    /// Revalidations with the server.
    pub revalidations: AtomicU64,
}

pub type FsResult<T> = Result<T, Errno>;

/// An errno for a failed server request.
pub fn errno_of(e: &ClientError) -> Errno {
    let n = match e {
        ClientError::Os { errno } => *errno,
        ClientError::Status(s) => match s {
            Status::Stale => libc::ESTALE,
            Status::ReadOnly => libc::EROFS,
            Status::BadName => libc::EINVAL,
            Status::Escape => libc::EXDEV,
            Status::TooBig => libc::EFBIG,
            Status::Busy => libc::EBUSY,
            Status::TooManyClients => libc::EAGAIN,
            _ => libc::EIO,
        },
        ClientError::Timeout | ClientError::Connect(_) | ClientError::Closed => libc::ENOTCONN,
        ClientError::Indeterminate | ClientError::Protocol(_) | ClientError::Refused(_) => {
            libc::EIO
        }
    };
    Errno::from_i32(n)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Milliseconds left of a promise of `promise_ms` counted from `sent`.
fn remaining_ms(sent: Instant, promise_ms: u32) -> u32 {
    let el = u32::try_from(sent.elapsed().as_millis()).unwrap_or(u32::MAX);
    promise_ms.saturating_sub(el)
}

/// The mount's shared state.
pub struct Core {
    pub server: Client,
    pub cache: Option<Cache>,
    pub nodes: Mutex<Table>,
    /// Whole-server breaks so far.
    server_breaks: AtomicU64,
    /// File breaks so far (any file).
    all_breaks: AtomicU64,
    notices: Mutex<Sender<Notice>>,
    pub tun: Tunables,
    /// Chunks being fetched: (node, chunk start).
    fetching: Mutex<HashSet<(u64, u64)>>,
    fetched: Condvar,
    pub stats: MountStats,
    /// Reads started by [`Core::read_then`] and not answered yet.
    reads_out: AtomicU64,
    /// The fallback threads' queue, made on first use.
    fallback: Mutex<Option<Sender<Job>>>,
}

/// What answers a read of [`Core::read_then`].
pub type Answer = Box<dyn FnOnce(FsResult<Vec<u8>>) + Send>;

/// Work for a fallback thread.
type Job = Box<dyn FnOnce() + Send>;

impl Core {
    pub fn new(
        server: Client,
        cache: Option<Cache>,
        nodes: Table,
        notices: Sender<Notice>,
        tun: Tunables,
    ) -> Core {
        Core {
            server,
            cache,
            nodes: Mutex::new(nodes),
            server_breaks: AtomicU64::new(0),
            all_breaks: AtomicU64::new(0),
            notices: Mutex::new(notices),
            tun,
            fetching: Mutex::new(HashSet::new()),
            fetched: Condvar::new(),
            stats: MountStats::default(),
            reads_out: AtomicU64::new(0),
            fallback: Mutex::new(None),
        }
    }

    /// Run `job` on a fallback thread (here, if none can be started).
    fn on_fallback(&self, job: Job) {
        let mut q = lock(&self.fallback);
        if q.is_none() {
            let (tx, rx) = std::sync::mpsc::channel::<Job>();
            let rx = std::sync::Arc::new(Mutex::new(rx));
            let mut started = 0;
            for i in 0..self.tun.fallback_threads.max(1) {
                let rx = rx.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("ringfs-fetch-{i}"))
                    .spawn(move || {
                        loop {
                            // The lock is held only to take a job.
                            let job = lock(&rx).recv();
                            match job {
                                Ok(job) => job(),
                                Err(_) => return,
                            }
                        }
                    });
                match spawned {
                    Ok(_) => started += 1,
                    Err(e) => tracing::warn!("cannot start a fetch thread: {e}"),
                }
            }
            if started > 0 {
                *q = Some(tx);
            }
        }
        let job = match q.as_ref() {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                Err(e) => e.0,
            },
            None => job,
        };
        drop(q);
        job();
    }

    /// Wait (at most `limit`) until every read of [`Core::read_then`] is
    /// answered.
    pub fn quiesce(&self, limit: Duration) {
        let until = Instant::now() + limit;
        while self.reads_out.load(Ordering::SeqCst) > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn notify(&self, n: Notice) {
        let _ = lock(&self.notices).send(n);
    }

    pub fn table(&self) -> MutexGuard<'_, Table> {
        lock(&self.nodes)
    }

    /// A node's file id and kind.
    pub fn id_of(&self, ino: u64) -> FsResult<(FileId, FileKind)> {
        let t = self.table();
        let n = t.get(ino).ok_or(Errno::ESTALE)?;
        Ok((n.id, n.attr.kind))
    }

    /// Taken before a request about `ino` (or about a file not known
    /// yet, `None`).
    pub fn snap(&self, ino: Option<u64>) -> Snap {
        let t = self.table();
        Snap {
            breaks: ino.and_then(|i| t.get(i)).map_or(u64::MAX, |n| n.breaks),
            all_breaks: self.all_breaks.load(Ordering::SeqCst),
            server_breaks: self.server_breaks.load(Ordering::SeqCst),
            sent: Instant::now(),
        }
    }

    fn margin_for(&self, promise_ms: u32) -> Duration {
        self.tun
            .margin
            .min(Duration::from_millis(u64::from(promise_ms) / 2))
    }

    /// Records a reply about `ino`: its attributes, and its promise if no
    /// break came since `snap`. `own`: the reply is to this client's
    /// change (the kernel's pages were changed by the kernel itself). A
    /// data version that moved otherwise tells the kernel to drop its
    /// pages.
    pub fn learn(&self, ino: u64, snap: &Snap, a: &AttrReply, own: bool) {
        let mut notice = false;
        {
            let mut t = self.table();
            let Some(n) = t.get_mut(ino) else { return };
            let old = n.attr.data_version;
            // Replies to concurrent requests arrive in any order: data
            // versions only grow, and within one version the ctime orders
            // attribute changes. An older reply changes nothing.
            let newer = (a.attr.data_version, a.attr.ctime) >= (old, n.attr.ctime);
            if !newer {
                return;
            }
            n.attr = a.attr;
            let unbroken = if snap.breaks == u64::MAX {
                self.all_breaks.load(Ordering::SeqCst) == snap.all_breaks
            } else {
                n.breaks == snap.breaks
            } && self.server_breaks.load(Ordering::SeqCst) == snap.server_breaks;
            if a.promise_ms > 0 && unbroken {
                let until = snap.sent + Duration::from_millis(u64::from(a.promise_ms))
                    - self.margin_for(a.promise_ms);
                n.promise_until = Some(until);
                n.promise_sb = snap.server_breaks;
            } else if !unbroken {
                n.promise_until = None;
            }
            if old != a.attr.data_version {
                if own {
                    if n.kernel_version == Some(old) {
                        n.kernel_version = Some(a.attr.data_version);
                    }
                } else if n.kernel_version.is_some() && n.is_file() {
                    n.kernel_version = None;
                    notice = true;
                }
            }
        }
        if notice {
            self.notify(Notice::Inode(ino));
        }
    }

    /// A reply naming a file (lookup, create, ...): the node, made if new,
    /// with one more kernel lookup, and `name` recorded under `parent`.
    pub fn enter(&self, parent: u64, name: &[u8], snap: &Snap, a: &AttrReply) -> (u64, Shown) {
        let ino = {
            let mut t = self.table();
            let ino = t.intern(a.attr);
            if let Some(n) = t.get_mut(ino) {
                n.nlookup += 1;
            }
            if let Some(p) = t.get_mut(parent) {
                p.names.insert(name.to_vec());
            }
            ino
        };
        self.learn(ino, snap, a, false);
        (ino, self.view(ino).unwrap_or_default())
    }

    /// What FUSE needs of a node: attributes and how long to trust them.
    pub fn view(&self, ino: u64) -> Option<Shown> {
        let t = self.table();
        let n = t.get(ino)?;
        let now = Instant::now();
        let ttl = if n.promised(now, self.server_breaks.load(Ordering::SeqCst)) {
            n.promise_until
                .map_or(Duration::ZERO, |u| u.saturating_duration_since(now))
                .min(self.tun.ttl)
        } else {
            Duration::ZERO
        };
        Some(Shown {
            attr: Some(n.attr),
            ttl,
        })
    }

    /// Whether `ino`'s promise holds now.
    pub fn promised(&self, ino: u64) -> bool {
        let t = self.table();
        t.get(ino)
            .is_some_and(|n| n.promised(Instant::now(), self.server_breaks.load(Ordering::SeqCst)))
    }

    /// Asks the server for `ino`'s attributes (and the cache to follow
    /// when the cookie is given).
    pub fn refresh(&self, ino: u64) -> FsResult<()> {
        let cookie = self.cookie(ino);
        match cookie {
            Some((conn, h)) => self.revalidate(&conn, h, ino),
            None => {
                let (id, _) = self.id_of(ino)?;
                let snap = self.snap(Some(ino));
                let a = self.server.getattr(id).map_err(|e| errno_of(&e))?;
                self.stats.revalidations.fetch_add(1, Ordering::Relaxed);
                self.learn(ino, &snap, &a, false);
                Ok(())
            }
        }
    }

    /// The cookie of `ino` on the live cache connection, acquiring it (and
    /// starting its use if the file is open) when the connection is new.
    pub fn cookie(&self, ino: u64) -> Option<(std::sync::Arc<Conn>, CookieHandle)> {
        let cache = self.cache.as_ref()?;
        let conn = cache.conn()?;
        let (id, version, size, open, have) = {
            let t = self.table();
            let n = t.get(ino)?;
            if !n.is_file() {
                return None;
            }
            let have = n.cookie.filter(|(g, _)| *g == conn.gen_).map(|(_, h)| h);
            if let Some(h) = have
                && (n.in_use || n.opens == 0)
            {
                return Some((conn, h));
            }
            (n.id, n.attr.data_version, n.attr.size, n.opens > 0, have)
        };
        let h = match have {
            Some(h) => h,
            None => {
                let aux = ringcache::callback::version_aux(Some(version));
                match conn
                    .client
                    .acquire_cookie(conn.volume, &object_key(id), &aux, size)
                {
                    Ok(h) => h,
                    Err(e) => {
                        cache.failed(&conn, &e);
                        return None;
                    }
                }
            }
        };
        if open && let Err(e) = conn.client.use_cookie(h, false) {
            cache.failed(&conn, &e);
            return None;
        }
        let mut t = self.table();
        match t.get(ino) {
            Some(n) if n.cookie.is_some_and(|(g, x)| g == conn.gen_ && x != h) => {
                // Another thread acquired it meanwhile: keep theirs.
                let theirs = n.cookie.map(|(_, x)| x)?;
                drop(t);
                let _ = conn.client.relinquish_cookie(h, false);
                Some((conn, theirs))
            }
            Some(_) => {
                if have.is_none() {
                    t.set_cookie(ino, conn.gen_, h);
                }
                if let Some(n) = t.get_mut(ino) {
                    n.in_use = open;
                }
                Some((conn, h))
            }
            None => None,
        }
    }

    /// The cached read failed on the cache's side.
    fn cache_failed(&self, conn: &Conn, e: &CacheError) {
        if let Some(c) = &self.cache {
            c.failed(conn, e);
        }
    }

    /// Revalidates `ino` with the server and tells the cache what it said.
    fn revalidate(&self, conn: &Conn, h: CookieHandle, ino: u64) -> FsResult<()> {
        let (id, _) = self.id_of(ino)?;
        let token = conn.client.begin_fetch(h);
        let snap = self.snap(Some(ino));
        let a = self.server.getattr(id).map_err(|e| errno_of(&e))?;
        self.stats.revalidations.fetch_add(1, Ordering::Relaxed);
        self.learn(ino, &snap, &a, false);
        match token {
            Ok(token) => {
                let ms = remaining_ms(snap.sent, a.promise_ms);
                match conn
                    .client
                    .revalidate(h, &token, a.attr.data_version, a.attr.size, ms)
                {
                    Ok(_) | Err(CacheError::Status(ringcache::proto::Status::Broken)) => {}
                    Err(e) => self.cache_failed(conn, &e),
                }
            }
            Err(e) => self.cache_failed(conn, &e),
        }
        Ok(())
    }

    /// Reads as [`Core::read`] does, answering through `answer`. A read
    /// of a cached file goes to the cache's read thread (the store in this
    /// process batches the reads that arrive together into one submission
    /// and answers each as its I/O completes), so the calling FUSE thread
    /// goes back for the next request at once; what the cache cannot
    /// answer (a miss, a revalidation) is finished on a fallback thread,
    /// never on the cache's read thread. Without a cookie it reads here.
    pub fn read_then(self: &std::sync::Arc<Self>, ino: u64, off: u64, size: u32, answer: Answer) {
        let Some((conn, h)) = self.cookie(ino) else {
            return answer(self.fetch(None, ino, off, size));
        };
        self.reads_out.fetch_add(1, Ordering::SeqCst);
        let core = self.clone();
        let answer: Answer = Box::new(move |r| {
            answer(r);
            core.reads_out.fetch_sub(1, Ordering::SeqCst);
        });
        let core = self.clone();
        let here = std::thread::current().id();
        let client = conn.client.clone();
        let out = Vec::with_capacity(size as usize);
        client.start_read_whole(
            h,
            off,
            size,
            out,
            Box::new(move |r, data| {
                if let Ok(WholeRead::Data) = r {
                    core.stats.cache_reads.fetch_add(1, Ordering::Relaxed);
                    return answer(Ok(data));
                }
                let c = core.clone();
                let rest: Job = Box::new(move || {
                    answer(match r {
                        // The promise lapsed: revalidate, then as a read.
                        Ok(WholeRead::Revalidate) => c.read(ino, off, size),
                        Ok(_) | Err(CacheError::Status(ringcache::proto::Status::Range)) => {
                            c.fetch(Some((&conn, h)), ino, off, size)
                        }
                        Err(e) => {
                            c.cache_failed(&conn, &e);
                            c.fetch(None, ino, off, size)
                        }
                    })
                });
                if std::thread::current().id() == here {
                    // Answered on the calling thread (a cache whose reads
                    // are synchronous): no hand-off.
                    rest();
                } else {
                    core.on_fallback(rest);
                }
            }),
        );
    }

    /// Reads `size` bytes at `off` of file `ino`.
    pub fn read(&self, ino: u64, off: u64, size: u32) -> FsResult<Vec<u8>> {
        if let Some((conn, h)) = self.cookie(ino) {
            match self.read_cached(&conn, h, ino, off, size) {
                Ok(Some(data)) => {
                    self.stats.cache_reads.fetch_add(1, Ordering::Relaxed);
                    return Ok(data);
                }
                Ok(None) => return self.fetch(Some((&conn, h)), ino, off, size),
                Err(e) => self.cache_failed(&conn, &e),
            }
        }
        self.fetch(None, ino, off, size)
    }

    /// The whole range from the cache under a valid promise, or `None`
    /// when some of it must be fetched.
    fn read_cached(
        &self,
        conn: &Conn,
        h: CookieHandle,
        ino: u64,
        off: u64,
        size: u32,
    ) -> Result<Option<Vec<u8>>, CacheError> {
        let mut out = Vec::with_capacity(size as usize);
        for _ in 0..3 {
            match conn.client.read_whole(h, off, size, &mut out) {
                Ok(WholeRead::Data) => return Ok(Some(out)),
                Ok(WholeRead::Partial) => return Ok(None),
                Ok(WholeRead::Revalidate) => {
                    if self.revalidate(conn, h, ino).is_err() {
                        // The server is unreachable: the fetch path
                        // reports it.
                        return Ok(None);
                    }
                }
                Ok(WholeRead::NoData | WholeRead::Stale) => return Ok(None),
                // Past the cached object's size.
                Err(CacheError::Status(ringcache::proto::Status::Range)) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Fetches from the server; with a cookie, in aligned chunks that are
    /// then cached.
    fn fetch(
        &self,
        cache: Option<(&Conn, CookieHandle)>,
        ino: u64,
        off: u64,
        size: u32,
    ) -> FsResult<Vec<u8>> {
        let (id, _) = self.id_of(ino)?;
        let Some((conn, h)) = cache else {
            return self
                .server_read(ino, id, off, size)
                .map(|(_, _, data)| data);
        };
        let chunk = self.tun.chunk;
        let end = off + u64::from(size);
        let mut out = Vec::with_capacity(size as usize);
        let mut c = off - off % chunk;
        while c < end {
            let data = self.fetch_chunk(conn, h, ino, id, c)?;
            let from = off.max(c) - c;
            let to = (end.min(c + chunk) - c).min(data.len() as u64);
            if from < to {
                out.extend_from_slice(data.get(from as usize..to as usize).unwrap_or_default());
            }
            if (data.len() as u64) < chunk {
                break; // the end of the file
            }
            c += chunk;
        }
        Ok(out)
    }

    /// One chunk: from the cache if another thread just fetched it, else
    /// from the server (then cached under its token).
    fn fetch_chunk(
        &self,
        conn: &Conn,
        h: CookieHandle,
        ino: u64,
        id: FileId,
        c: u64,
    ) -> FsResult<Vec<u8>> {
        let chunk = self.tun.chunk;
        let len = u32::try_from(chunk).unwrap_or(u32::MAX);
        {
            let mut f = lock(&self.fetching);
            let mut waited = false;
            while f.contains(&(ino, c)) {
                waited = true;
                f = self.fetched.wait(f).unwrap_or_else(|p| p.into_inner());
            }
            if waited {
                drop(f);
                if let Ok(Some(d)) = self.read_cached(conn, h, ino, c, len) {
                    return Ok(d);
                }
                f = lock(&self.fetching);
            }
            f.insert((ino, c));
        }
        let r = self.fetch_from_server(conn, h, ino, id, c, len);
        lock(&self.fetching).remove(&(ino, c));
        self.fetched.notify_all();
        r
    }

    fn fetch_from_server(
        &self,
        conn: &Conn,
        h: CookieHandle,
        ino: u64,
        id: FileId,
        c: u64,
        len: u32,
    ) -> FsResult<Vec<u8>> {
        // The token before the request: a break while it is in flight
        // keeps its data out of the cache.
        let token = conn.client.begin_fetch(h);
        let (snap, a, data) = self.server_read(ino, id, c, len)?;
        let token = match token {
            Ok(t) => t,
            Err(e) => {
                self.cache_failed(conn, &e);
                return Ok(data);
            }
        };
        // No promise: the data may be of a newer version than named.
        if a.promise_ms == 0 || data.is_empty() {
            return Ok(data);
        }
        let v = a.attr.data_version;
        let ms = remaining_ms(snap.sent, a.promise_ms);
        match conn.client.revalidate(h, &token, v, a.attr.size, ms) {
            Ok(_) => {}
            Err(CacheError::Status(ringcache::proto::Status::Broken)) => return Ok(data),
            Err(e) => {
                self.cache_failed(conn, &e);
                return Ok(data);
            }
        }
        let whole_blocks = data.len() % 4096 == 0 || c + data.len() as u64 == a.attr.size;
        if whole_blocks {
            match conn.client.write_fetched(h, &token, v, c, &data) {
                Ok(ringcache::proto::Status::Ok) => {
                    self.stats
                        .cached_bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                Ok(_) | Err(CacheError::Status(ringcache::proto::Status::Broken)) => {}
                Err(e) => self.cache_failed(conn, &e),
            }
        }
        Ok(data)
    }

    /// A read from the server, counted and learnt from: (the snap taken
    /// before it, the attributes, the data).
    fn server_read(
        &self,
        ino: u64,
        id: FileId,
        off: u64,
        len: u32,
    ) -> FsResult<(Snap, AttrReply, Vec<u8>)> {
        let snap = self.snap(Some(ino));
        let (a, data) = self.server.read(id, off, len).map_err(|e| errno_of(&e))?;
        self.stats
            .fetched_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        self.learn(ino, &snap, &a, false);
        self.unprotected(ino, &a);
        Ok((snap, a, data))
    }

    /// Data that came without a promise (the file is being changed by
    /// another client, and no break will follow for this read) must not
    /// stay in the kernel's page cache: it is told to drop it. The
    /// notification thread waits for the pages this read fills, which the
    /// kernel holds locked until the reply, so the drop comes after.
    fn unprotected(&self, ino: u64, a: &AttrReply) {
        if a.promise_ms == 0 {
            self.notify(Notice::Inode(ino));
        }
    }

    /// Writes through to the server; the cache gets the new version and
    /// the whole blocks written.
    pub fn write(&self, ino: u64, off: u64, data: &[u8]) -> FsResult<u32> {
        let (id, _) = self.id_of(ino)?;
        let cookie = self.cookie(ino);
        let token = cookie
            .as_ref()
            .and_then(|(conn, h)| conn.client.begin_fetch(*h).ok());
        let snap = self.snap(Some(ino));
        let a = self.server.write(id, off, data).map_err(|e| errno_of(&e))?;
        self.learn(ino, &snap, &a, true);
        if let (Some((conn, h)), Some(token)) = (cookie, token) {
            self.cache_own_change(&conn, h, &token, &snap, &a, Some((off, data)));
        }
        Ok(u32::try_from(data.len()).unwrap_or(u32::MAX))
    }

    /// After this client's change: the cache records the new version
    /// (dropping the old data) and keeps the whole blocks of `written`.
    pub fn cache_own_change(
        &self,
        conn: &Conn,
        h: CookieHandle,
        token: &[u8; ringcache::proto::TOKEN_BYTES],
        snap: &Snap,
        a: &AttrReply,
        written: Option<(u64, &[u8])>,
    ) {
        let v = a.attr.data_version;
        let ms = remaining_ms(snap.sent, a.promise_ms);
        match conn.client.revalidate(h, token, v, a.attr.size, ms) {
            Ok(_) => {}
            Err(CacheError::Status(ringcache::proto::Status::Broken)) => return,
            Err(e) => return self.cache_failed(conn, &e),
        }
        let Some((off, data)) = written else { return };
        if a.promise_ms == 0 {
            return;
        }
        let end = off + data.len() as u64;
        let start = off.div_ceil(4096) * 4096;
        let stop = if end == a.attr.size {
            end
        } else {
            end - end % 4096
        };
        if start >= stop {
            return;
        }
        let piece = data
            .get((start - off) as usize..(stop - off) as usize)
            .unwrap_or_default();
        match conn.client.write_fetched(h, token, v, start, piece) {
            Ok(ringcache::proto::Status::Ok) => {
                self.stats
                    .cached_bytes
                    .fetch_add(piece.len() as u64, Ordering::Relaxed);
            }
            Ok(_) | Err(CacheError::Status(ringcache::proto::Status::Broken)) => {}
            Err(e) => self.cache_failed(conn, &e),
        }
    }

    /// Voids the cache's promise on `id` (after a change by this client
    /// that the cache was not told of with a token): its next read
    /// revalidates.
    pub fn forget_cached_promise(&self, id: FileId) {
        if let Some(cache) = &self.cache
            && let Some(conn) = cache.live()
        {
            let key = object_key(id);
            if let Err(e) = conn.client.break_files(conn.volume, &[&key]) {
                cache.failed(&conn, &e);
            }
        }
    }

    /// A break from the server (recorded before it is acknowledged).
    pub fn break_file(&self, id: FileId) {
        self.all_breaks.fetch_add(1, Ordering::SeqCst);
        let mut notices = Vec::new();
        {
            let mut t = self.table();
            if let Some(ino) = t.ino_of(id)
                && let Some(n) = t.get_mut(ino)
            {
                n.breaks += 1;
                n.promise_until = None;
                n.kernel_version = None;
                notices.push(Notice::Inode(ino));
                for name in n.names.drain() {
                    notices.push(Notice::Entry(ino, name));
                }
            }
        }
        self.forget_cached_promise(id);
        for n in notices {
            self.notify(n);
        }
    }

    /// Every promise is void (the server restarted, forgot this client,
    /// or said so). `epoch`: the server's new epoch, if it changed.
    pub fn break_all(&self, epoch: Option<u64>) {
        self.server_breaks.fetch_add(1, Ordering::SeqCst);
        if let Some(cache) = &self.cache {
            match epoch {
                Some(e) => cache.set_epoch(e),
                None => {
                    if let Some(conn) = cache.live()
                        && let Err(e) = conn.client.break_server(conn.volume)
                    {
                        cache.failed(&conn, &e);
                    }
                }
            }
        }
        let mut notices = Vec::new();
        {
            let mut t = self.table();
            for ino in t.inos() {
                if let Some(n) = t.get_mut(ino) {
                    n.promise_until = None;
                    n.kernel_version = None;
                    notices.push(Notice::Inode(ino));
                    for name in n.names.drain() {
                        notices.push(Notice::Entry(ino, name));
                    }
                }
            }
        }
        for n in notices {
            self.notify(n);
        }
    }

    /// A zap from the cache: another client of the cache changed the
    /// file, or a break reached the cache from elsewhere.
    pub fn zap(&self, gen_: u64, handle: u32) {
        let mut notices = Vec::new();
        {
            let mut t = self.table();
            let inos = if handle == 0 {
                t.inos()
            } else {
                t.ino_of_cookie(gen_, handle).into_iter().collect()
            };
            for ino in inos {
                if let Some(n) = t.get_mut(ino) {
                    n.promise_until = None;
                    n.kernel_version = None;
                    notices.push(Notice::Inode(ino));
                }
            }
        }
        for n in notices {
            self.notify(n);
        }
    }
}

/// The attributes FUSE is given, and for how long.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shown {
    pub attr: Option<crate::wire::Attr>,
    pub ttl: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promises_count_from_the_send() {
        let sent = Instant::now() - Duration::from_millis(300);
        let left = remaining_ms(sent, 1000);
        assert!(left <= 700 && left > 500, "{left}");
        assert_eq!(remaining_ms(sent, 100), 0);
    }
}
