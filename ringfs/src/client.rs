//! The ringfs client library: connects and greets, numbers requests,
//! keeps each until its reply arrives, reconnects and resends (only what
//! is safe to repeat after a new epoch), pings, acknowledges breaks after
//! handing them to its user, and says farewell.
//!
//! Threads: a driver (connects, then reads the connection's frames until
//! it fails, then connects again) and a pinger (keeps the connection
//! alive and declares it dead after a silence). Callers block in
//! [`Client::call`] until their reply is in.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::wire::{
    self, AttrReply, BREAK_FLAG_OWED, Break, BreakReason, BreakScope, DirPage, Entry, FileId,
    Header, Hello, Kind, ReplyBody, Request, SetAttr, StatFs, Status, Welcome, WireError,
    decode_error, decode_reply, frame, op, read_frame,
};

/// What the user of the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The server broke the promise on `file`. `owed`: delivered again
    /// because an earlier copy was not acknowledged in time.
    Break {
        file: FileId,
        reason: BreakReason,
        owed: bool,
    },
    /// Every promise is void: revalidate everything before use.
    ServerBreak { reason: ServerBreakReason },
    /// Connected again (after [`ServerBreakReason::Disconnected`]).
    Reconnected { epoch: u64, resumed: bool },
}

/// Why every promise is void.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerBreakReason {
    /// The server said so (an event-queue overflow, owed breaks
    /// collapsed).
    Server(BreakReason),
    /// The server restarted: a new epoch.
    NewEpoch,
    /// The server forgot this client (it was away too long).
    Forgotten,
    /// The connection was lost: breaks may have been missed until the
    /// client is connected again.
    Disconnected,
}

/// Errors of the client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("the server refused the greeting: {0:?}")]
    Refused(Status),
    #[error("protocol error: {0}")]
    Protocol(#[from] WireError),
    #[error("the server answered {0:?}")]
    Status(Status),
    #[error("system error {errno} at the server")]
    Os { errno: i32 },
    /// The server restarted (or forgot this client) before answering a
    /// request that is not safe to repeat: it may or may not have been
    /// applied.
    #[error("the server restarted before answering: the request may or may not have been applied")]
    Indeterminate,
    #[error("no reply in time")]
    Timeout,
    #[error("the client is closed")]
    Closed,
}

impl ClientError {
    /// The errno, when the server's system call failed.
    pub fn errno(&self) -> Option<i32> {
        match self {
            ClientError::Os { errno } => Some(*errno),
            _ => None,
        }
    }
}

/// A callback handed every event on the reader thread, before the break
/// is acknowledged.
pub type BreakHandler = Arc<dyn Fn(&Event) + Send + Sync>;

/// How the client behaves.
#[derive(Clone)]
pub struct ClientConfig {
    /// For the server's logs.
    pub name: String,
    /// The persistent client id ([`load_or_create_client_id`]).
    pub client_id: [u8; 16],
    /// How long [`Client::connect`] tries before it gives up.
    pub connect_timeout: Duration,
    /// How long a request waits for its reply (across reconnects).
    pub request_timeout: Duration,
    /// Acknowledge breaks (turn off only to test a server's handling of
    /// a client that does not answer).
    pub ack_breaks: bool,
    /// Called with every event before a break is acknowledged (a FUSE
    /// client invalidates here); events also go to [`Client::next_event`].
    pub on_event: Option<BreakHandler>,
    /// Queue events for [`Client::next_event`] too (turn off when
    /// `on_event` handles them all and nobody reads the queue).
    pub queue_events: bool,
}

impl ClientConfig {
    pub fn new(name: &str, client_id: [u8; 16]) -> ClientConfig {
        ClientConfig {
            name: name.to_string(),
            client_id,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            ack_breaks: true,
            on_event: None,
            queue_events: true,
        }
    }
}

/// A client id kept in `path` (16 random bytes, hex), made on first use.
pub fn load_or_create_client_id(path: &Path) -> io::Result<[u8; 16]> {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let s = s.trim();
            let mut id = [0u8; 16];
            if s.len() != 32 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "bad client id"));
            }
            for (i, b) in id.iter_mut().enumerate() {
                *b = s
                    .get(i * 2..i * 2 + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad client id"))?;
            }
            Ok(id)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let id = new_client_id();
            let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
            let tmp = path.with_extension("tmp");
            {
                let mut f = std::fs::File::create(&tmp)?;
                writeln!(f, "{hex}")?;
                f.sync_all()?;
            }
            std::fs::rename(&tmp, path)?;
            Ok(id)
        }
        Err(e) => Err(e),
    }
}

/// A fresh random client id (a v4 uuid's bytes).
pub fn new_client_id() -> [u8; 16] {
    let mut id: [u8; 16] = rand::random();
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

struct Pending {
    op: u16,
    payload: Arc<Vec<u8>>,
    repeatable: bool,
    result: Option<Result<ReplyBody, ClientError>>,
}

struct State {
    next_seq: u64,
    pending: BTreeMap<u64, Pending>,
    welcome: Option<Welcome>,
    connected: bool,
    last_rx: Instant,
    /// Why the client cannot go on (the first connection failed).
    fatal: Option<ClientError>,
}

impl State {
    fn watermark(&self) -> u64 {
        match self.pending.keys().next() {
            Some(first) => first - 1,
            None => self.next_seq - 1,
        }
    }
}

struct Shared {
    cfg: ClientConfig,
    addr: SocketAddr,
    incarnation: u64,
    st: Mutex<State>,
    cv: Condvar,
    writer: Mutex<Option<TcpStream>>,
    events: Sender<Event>,
    stop: AtomicBool,
    /// A farewell was sent: do not connect again.
    closing: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A connection to a ringfs server that survives reconnects.
pub struct Client {
    shared: Arc<Shared>,
    events: Mutex<Receiver<Event>>,
    threads: Vec<JoinHandle<()>>,
}

impl Client {
    /// Connects and greets (retrying for `connect_timeout`).
    pub fn connect(addr: SocketAddr, cfg: ClientConfig) -> Result<Client, ClientError> {
        let (tx, rx) = channel();
        let mut incarnation: u64 = rand::random();
        if incarnation == 0 {
            incarnation = 1;
        }
        let shared = Arc::new(Shared {
            cfg,
            addr,
            incarnation,
            st: Mutex::new(State {
                next_seq: 1,
                pending: BTreeMap::new(),
                welcome: None,
                connected: false,
                last_rx: Instant::now(),
                fatal: None,
            }),
            cv: Condvar::new(),
            writer: Mutex::new(None),
            events: tx,
            stop: AtomicBool::new(false),
            closing: AtomicBool::new(false),
        });
        let mut threads = Vec::new();
        {
            let s = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("ringfs-client".into())
                    .spawn(move || drive(&s))
                    .map_err(|e| ClientError::Connect(e.to_string()))?,
            );
        }
        {
            let s = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("ringfs-ping".into())
                    .spawn(move || ping(&s))
                    .map_err(|e| ClientError::Connect(e.to_string()))?,
            );
        }
        let client = Client {
            shared,
            events: Mutex::new(rx),
            threads,
        };
        {
            let mut st = lock(&client.shared.st);
            while st.welcome.is_none() {
                if let Some(e) = st.fatal.clone() {
                    return Err(e);
                }
                st = client.shared.cv.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        }
        Ok(client)
    }

    /// The last greeting's answer.
    pub fn welcome(&self) -> Welcome {
        lock(&self.shared.st).welcome.unwrap_or_default()
    }

    pub fn root(&self) -> FileId {
        self.welcome().root
    }

    pub fn epoch(&self) -> u64 {
        self.welcome().epoch
    }

    /// Whether the client is connected now.
    pub fn is_connected(&self) -> bool {
        lock(&self.shared.st).connected
    }

    /// The next event, waiting up to `timeout`.
    pub fn next_event(&self, timeout: Duration) -> Option<Event> {
        lock(&self.events).recv_timeout(timeout).ok()
    }

    /// Every event received so far.
    pub fn drain_events(&self) -> Vec<Event> {
        lock(&self.events).try_iter().collect()
    }

    /// Sends a request and waits for its reply (resending it after
    /// reconnects as the protocol allows).
    pub fn call(&self, req: &Request) -> Result<ReplyBody, ClientError> {
        let payload = Arc::new(req.encode());
        let deadline = Instant::now() + self.shared.cfg.request_timeout;
        loop {
            match self.call_once(req, payload.clone(), deadline) {
                Err(ClientError::Status(Status::Busy)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    fn call_once(
        &self,
        req: &Request,
        payload: Arc<Vec<u8>>,
        deadline: Instant,
    ) -> Result<ReplyBody, ClientError> {
        let sh = &self.shared;
        if sh.stop.load(Ordering::Relaxed) {
            return Err(ClientError::Closed);
        }
        let op_code = req.op();
        let mut st = lock(&sh.st);
        let seq = st.next_seq;
        st.next_seq += 1;
        st.pending.insert(
            seq,
            Pending {
                op: op_code,
                payload: payload.clone(),
                repeatable: req.is_repeatable(),
                result: None,
            },
        );
        let bytes = frame(
            &Header::new(Kind::Request, op_code, seq, st.watermark()),
            &payload,
        );
        {
            let mut w = lock(&sh.writer);
            drop(st);
            if let Some(s) = w.as_mut()
                && s.write_all(&bytes).is_err()
            {
                let _ = s.shutdown(Shutdown::Both);
                *w = None;
            }
        }
        let mut st = lock(&sh.st);
        loop {
            if let Some(p) = st.pending.get_mut(&seq)
                && let Some(r) = p.result.take()
            {
                st.pending.remove(&seq);
                return r;
            }
            let now = Instant::now();
            if now >= deadline || sh.stop.load(Ordering::Relaxed) {
                st.pending.remove(&seq);
                return Err(if now >= deadline {
                    ClientError::Timeout
                } else {
                    ClientError::Closed
                });
            }
            st = sh
                .cv
                .wait_timeout(st, (deadline - now).min(Duration::from_millis(500)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    // ---- the operations ----

    pub fn lookup(&self, dir: FileId, name: &[u8]) -> Result<AttrReply, ClientError> {
        attr(self.call(&Request::Lookup {
            dir,
            name: name.to_vec(),
        })?)
    }

    pub fn getattr(&self, id: FileId) -> Result<AttrReply, ClientError> {
        attr(self.call(&Request::GetAttr { id })?)
    }

    pub fn setattr(&self, id: FileId, set: SetAttr) -> Result<AttrReply, ClientError> {
        attr(self.call(&Request::SetAttr { id, set })?)
    }

    /// One page of a directory, after `cursor` (empty: from the start).
    pub fn readdir_page(
        &self,
        dir: FileId,
        cursor: &[u8],
        max_entries: u32,
    ) -> Result<DirPage, ClientError> {
        match self.call(&Request::ReadDir {
            dir,
            max_entries,
            cursor: cursor.to_vec(),
        })? {
            ReplyBody::Dir(d) => Ok(d),
            _ => Err(WireError::UnknownOp(op::READDIR).into()),
        }
    }

    /// Every entry of a directory, page by page.
    pub fn readdir(&self, dir: FileId) -> Result<Vec<Entry>, ClientError> {
        let mut out: Vec<Entry> = Vec::new();
        loop {
            let cursor = out.last().map(|e| e.name.clone()).unwrap_or_default();
            let page = self.readdir_page(dir, &cursor, wire::MAX_READDIR_ENTRIES)?;
            let eof = page.eof;
            out.extend(page.entries);
            if eof {
                return Ok(out);
            }
        }
    }

    pub fn read(
        &self,
        id: FileId,
        offset: u64,
        len: u32,
    ) -> Result<(AttrReply, Vec<u8>), ClientError> {
        match self.call(&Request::Read { id, offset, len })? {
            ReplyBody::Read { attr, data } => Ok((attr, data)),
            _ => Err(WireError::UnknownOp(op::READ).into()),
        }
    }

    /// Writes at `offset`; returns the file after the write.
    pub fn write(&self, id: FileId, offset: u64, data: &[u8]) -> Result<AttrReply, ClientError> {
        self.write_flags(id, offset, 0, data).map(|(_, a)| a)
    }

    /// Appends; returns where the data went and the file after.
    pub fn append(&self, id: FileId, data: &[u8]) -> Result<(u64, AttrReply), ClientError> {
        self.write_flags(id, 0, wire::WRITE_APPEND, data)
    }

    fn write_flags(
        &self,
        id: FileId,
        offset: u64,
        flags: u32,
        data: &[u8],
    ) -> Result<(u64, AttrReply), ClientError> {
        match self.call(&Request::Write {
            id,
            offset,
            flags,
            data: data.to_vec(),
        })? {
            ReplyBody::Write { offset, attr, .. } => Ok((offset, attr)),
            _ => Err(WireError::UnknownOp(op::WRITE).into()),
        }
    }

    /// Opens or creates a regular file; returns it and whether it was made.
    pub fn create(
        &self,
        dir: FileId,
        name: &[u8],
        mode: u32,
        flags: u32,
    ) -> Result<(AttrReply, bool), ClientError> {
        match self.call(&Request::Create {
            dir,
            mode,
            flags,
            name: name.to_vec(),
        })? {
            ReplyBody::Create { attr, created } => Ok((attr, created)),
            _ => Err(WireError::UnknownOp(op::CREATE).into()),
        }
    }

    pub fn mkdir(&self, dir: FileId, name: &[u8], mode: u32) -> Result<AttrReply, ClientError> {
        attr(self.call(&Request::Mkdir {
            dir,
            mode,
            name: name.to_vec(),
        })?)
    }

    pub fn unlink(&self, dir: FileId, name: &[u8]) -> Result<(), ClientError> {
        self.call(&Request::Unlink {
            dir,
            name: name.to_vec(),
        })
        .map(drop)
    }

    pub fn rmdir(&self, dir: FileId, name: &[u8]) -> Result<(), ClientError> {
        self.call(&Request::Rmdir {
            dir,
            name: name.to_vec(),
        })
        .map(drop)
    }

    pub fn rename(
        &self,
        from_dir: FileId,
        from: &[u8],
        to_dir: FileId,
        to: &[u8],
        flags: u32,
    ) -> Result<(), ClientError> {
        self.call(&Request::Rename {
            from_dir,
            to_dir,
            flags,
            from: from.to_vec(),
            to: to.to_vec(),
        })
        .map(drop)
    }

    pub fn symlink(
        &self,
        dir: FileId,
        name: &[u8],
        target: &[u8],
    ) -> Result<AttrReply, ClientError> {
        attr(self.call(&Request::Symlink {
            dir,
            name: name.to_vec(),
            target: target.to_vec(),
        })?)
    }

    pub fn readlink(&self, id: FileId) -> Result<Vec<u8>, ClientError> {
        match self.call(&Request::ReadLink { id })? {
            ReplyBody::Target(t) => Ok(t),
            _ => Err(WireError::UnknownOp(op::READLINK).into()),
        }
    }

    pub fn link(&self, id: FileId, dir: FileId, name: &[u8]) -> Result<AttrReply, ClientError> {
        attr(self.call(&Request::Link {
            id,
            dir,
            name: name.to_vec(),
        })?)
    }

    pub fn fsync(&self, id: FileId, datasync: bool) -> Result<(), ClientError> {
        let flags = if datasync { wire::FSYNC_DATASYNC } else { 0 };
        self.call(&Request::Fsync { id, flags }).map(drop)
    }

    /// The server's counters (`docs/RINGFS.md`, Stats).
    pub fn stats(&self) -> Result<Vec<(String, u64)>, ClientError> {
        match self.call(&Request::Stats)? {
            ReplyBody::Stats(v) => Ok(v),
            _ => Err(WireError::UnknownOp(op::STATS).into()),
        }
    }

    pub fn statfs(&self) -> Result<StatFs, ClientError> {
        match self.call(&Request::StatFs)? {
            ReplyBody::StatFs(s) => Ok(s),
            _ => Err(WireError::UnknownOp(op::STATFS).into()),
        }
    }

    /// Says farewell (the server drops this client's promises at once)
    /// and stops.
    pub fn close(mut self) -> Result<(), ClientError> {
        let r = self.farewell();
        self.stop();
        r
    }

    /// Says farewell without stopping (the threads stop when the client
    /// is dropped); the client does not connect again after it.
    pub fn farewell(&self) -> Result<(), ClientError> {
        self.shared.closing.store(true, Ordering::Relaxed);
        self.call(&Request::Farewell).map(drop)
    }

    fn stop(&mut self) {
        {
            let mut w = lock(&self.shared.writer);
            self.shared.stop.store(true, Ordering::Relaxed);
            if let Some(s) = w.take() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        self.shared.cv.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop();
    }
}

fn attr(body: ReplyBody) -> Result<AttrReply, ClientError> {
    match body {
        ReplyBody::Attr(a) => Ok(a),
        ReplyBody::Create { attr, .. } => Ok(attr),
        _ => Err(WireError::UnknownOp(0).into()),
    }
}

fn emit(sh: &Shared, ev: Event) {
    if let Some(h) = &sh.cfg.on_event {
        h(&ev);
    }
    if sh.cfg.queue_events {
        let _ = sh.events.send(ev);
    }
}

/// The silence after which the connection is declared dead, and the ping
/// interval, from the server's break timeout.
fn timings(w: &Welcome) -> (Duration, Duration) {
    let bt = Duration::from_millis(u64::from(w.break_timeout_ms.max(200)));
    (bt / 2, bt / 8)
}

fn greet(sh: &Shared) -> Result<(TcpStream, Welcome), ClientError> {
    let mut s = TcpStream::connect_timeout(&sh.addr, Duration::from_secs(1))
        .map_err(|e| ClientError::Connect(e.to_string()))?;
    let _ = s.set_nodelay(true);
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| ClientError::Connect(e.to_string()))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| ClientError::Connect(e.to_string()))?;
    let hello = Request::Hello(Hello {
        version: wire::VERSION,
        client_id: sh.cfg.client_id,
        incarnation: sh.incarnation,
        name: sh.cfg.name.as_bytes().to_vec(),
    });
    wire::write_frame(
        &mut s,
        &Header::new(Kind::Request, op::HELLO, 0, 0),
        &hello.encode(),
    )
    .map_err(|e| ClientError::Connect(e.to_string()))?;
    let mut payload = Vec::new();
    let h = read_frame(&mut s, &mut payload).map_err(|e| ClientError::Connect(e.to_string()))?;
    if h.kind != Kind::Reply as u8 {
        return Err(ClientError::Connect("no greeting reply".into()));
    }
    let reply = decode_reply(op::HELLO, &payload)?;
    match (reply.status, reply.body) {
        (Status::Ok, ReplyBody::Welcome(w)) => {
            // Reads block until the pinger shuts a silent socket down.
            s.set_read_timeout(None)
                .map_err(|e| ClientError::Connect(e.to_string()))?;
            Ok((s, w))
        }
        (status, _) => Err(ClientError::Refused(status)),
    }
}

/// Connects, greets, resends, reads; again after every failure.
fn drive(sh: &Shared) {
    let started = Instant::now();
    let mut ever = false;
    let mut backoff = Duration::from_millis(20);
    while !sh.stop.load(Ordering::Relaxed) {
        if sh.closing.load(Ordering::Relaxed) && ever {
            return;
        }
        let (stream, welcome) = match greet(sh) {
            Ok(x) => x,
            Err(e) => {
                if let ClientError::Refused(s) = e
                    && s != Status::TooManyClients
                {
                    let mut st = lock(&sh.st);
                    st.fatal = Some(ClientError::Refused(s));
                    sh.cv.notify_all();
                    return;
                }
                if !ever && started.elapsed() >= sh.cfg.connect_timeout {
                    let mut st = lock(&sh.st);
                    st.fatal = Some(e);
                    sh.cv.notify_all();
                    return;
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(500));
                continue;
            }
        };
        backoff = Duration::from_millis(20);
        let Ok(writer) = stream.try_clone() else {
            continue;
        };
        let mut events = Vec::new();
        {
            let mut st = lock(&sh.st);
            if let Some(old) = st.welcome {
                let new_epoch = old.epoch != welcome.epoch;
                if new_epoch || !welcome.resumed {
                    // No kept replies survive: fail what is not safe to
                    // repeat.
                    for p in st.pending.values_mut() {
                        if p.result.is_none() && !p.repeatable {
                            p.result = Some(Err(ClientError::Indeterminate));
                        }
                    }
                    events.push(Event::ServerBreak {
                        reason: if new_epoch {
                            ServerBreakReason::NewEpoch
                        } else {
                            ServerBreakReason::Forgotten
                        },
                    });
                }
                events.push(Event::Reconnected {
                    epoch: welcome.epoch,
                    resumed: welcome.resumed,
                });
            }
            st.welcome = Some(welcome);
            st.connected = true;
            st.last_rx = Instant::now();
            let ack = st.watermark();
            let resend: Vec<Vec<u8>> = st
                .pending
                .iter()
                .filter(|(_, p)| p.result.is_none())
                .map(|(seq, p)| frame(&Header::new(Kind::Request, p.op, *seq, ack), &p.payload))
                .collect();
            let mut w = lock(&sh.writer);
            if sh.stop.load(Ordering::Relaxed) {
                // stop() took the writer before this one was in place.
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
            *w = Some(writer);
            drop(st);
            sh.cv.notify_all();
            if let Some(s) = w.as_mut() {
                for f in &resend {
                    if s.write_all(f).is_err() {
                        break;
                    }
                }
            }
        }
        ever = true;
        for e in events {
            emit(sh, e);
        }
        read_loop(sh, stream);
        {
            let mut st = lock(&sh.st);
            st.connected = false;
            *lock(&sh.writer) = None;
        }
        if !sh.stop.load(Ordering::Relaxed) && !sh.closing.load(Ordering::Relaxed) {
            emit(
                sh,
                Event::ServerBreak {
                    reason: ServerBreakReason::Disconnected,
                },
            );
        }
    }
}

fn read_loop(sh: &Shared, mut stream: TcpStream) {
    let mut payload = Vec::new();
    loop {
        let h = match read_frame(&mut stream, &mut payload) {
            Ok(h) => h,
            Err(_) => return,
        };
        lock(&sh.st).last_rx = Instant::now();
        match Kind::from_u8(h.kind) {
            Ok(Kind::Reply) => {
                if h.seq == 0 {
                    continue; // a ping's answer
                }
                let mut st = lock(&sh.st);
                let Some(p) = st.pending.get_mut(&h.seq) else {
                    continue; // a duplicate, or abandoned
                };
                if p.result.is_some() {
                    continue;
                }
                let r = match decode_reply(p.op, &payload) {
                    Ok(reply) => match reply.status {
                        Status::Ok => Ok(reply.body),
                        Status::Os => Err(ClientError::Os {
                            errno: i32::try_from(reply.errno).unwrap_or(i32::MAX),
                        }),
                        s => Err(ClientError::Status(s)),
                    },
                    Err(e) => Err(ClientError::Protocol(e)),
                };
                p.result = Some(r);
                drop(st);
                sh.cv.notify_all();
            }
            Ok(Kind::Break) => {
                let Ok(b) = Break::decode(&payload) else {
                    continue;
                };
                let owed = h.flags & BREAK_FLAG_OWED != 0;
                let ev = match b.scope {
                    BreakScope::File(file) => Event::Break {
                        file,
                        reason: b.reason,
                        owed,
                    },
                    BreakScope::All => Event::ServerBreak {
                        reason: ServerBreakReason::Server(b.reason),
                    },
                };
                emit(sh, ev);
                if sh.cfg.ack_breaks {
                    let ack = frame(
                        &Header::new(Kind::BreakAck, 0, h.seq, lock(&sh.st).watermark()),
                        &[],
                    );
                    if let Some(s) = lock(&sh.writer).as_mut() {
                        let _ = s.write_all(&ack);
                    }
                }
            }
            Ok(Kind::Error) => {
                let msg = decode_error(&payload)
                    .map(|(s, m)| format!("{s:?}: {m}"))
                    .unwrap_or_default();
                tracing::warn!("server: {msg}");
            }
            _ => {}
        }
    }
}

/// Pings when the connection is quiet; shuts it down after a silence
/// (the driver then reconnects).
fn ping(sh: &Shared) {
    while !sh.stop.load(Ordering::Relaxed) {
        let (connected, last_rx, welcome) = {
            let st = lock(&sh.st);
            (st.connected, st.last_rx, st.welcome)
        };
        let (silence, interval) = welcome
            .as_ref()
            .map(timings)
            .unwrap_or((Duration::from_secs(1), Duration::from_millis(250)));
        std::thread::sleep(interval);
        if !connected {
            continue;
        }
        let quiet = last_rx.elapsed();
        // The state lock is never taken while the writer's is held.
        let ack = lock(&sh.st).watermark();
        let mut w = lock(&sh.writer);
        let Some(s) = w.as_mut() else { continue };
        if quiet >= silence {
            tracing::debug!("no frame from the server for {quiet:?}: reconnecting");
            let _ = s.shutdown(Shutdown::Both);
            *w = None;
            continue;
        }
        if quiet >= interval {
            let f = frame(&Header::new(Kind::Request, op::PING, 0, ack), &[]);
            if s.write_all(&f).is_err() {
                let _ = s.shutdown(Shutdown::Both);
                *w = None;
            }
        }
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Client>();
}

/// Reads one frame with a plain reader (for tests driving raw sockets).
pub fn read_one(r: &mut impl Read) -> Result<(Header, Vec<u8>), wire::FrameError> {
    let mut p = Vec::new();
    let h = read_frame(r, &mut p)?;
    Ok((h, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_id_is_kept_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client-id");
        let id = load_or_create_client_id(&path).unwrap();
        assert_eq!(load_or_create_client_id(&path).unwrap(), id);
        assert_eq!(id[6] >> 4, 4, "a version-4 uuid");
        std::fs::write(&path, "not hex\n").unwrap();
        assert!(load_or_create_client_id(&path).is_err());
        assert_ne!(new_client_id(), new_client_id());
    }

    #[test]
    fn the_reply_watermark_is_below_the_oldest_waiting_request() {
        let mut st = State {
            next_seq: 10,
            pending: BTreeMap::new(),
            welcome: None,
            connected: false,
            last_rx: Instant::now(),
            fatal: None,
        };
        assert_eq!(st.watermark(), 9);
        for seq in [4, 7] {
            st.pending.insert(
                seq,
                Pending {
                    op: op::READ,
                    payload: Arc::new(Vec::new()),
                    repeatable: true,
                    result: None,
                },
            );
        }
        assert_eq!(st.watermark(), 3);
    }
}
