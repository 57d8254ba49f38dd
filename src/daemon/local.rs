//! The daemon in its user's process, without a socket: [`Embedded`] opens
//! the cache and runs the housekeeping a daemon runs; each
//! [`LocalSession`] is what a connection is (its handles, its holds on
//! callback objects, its zap events), with every request answered on the
//! calling thread by the same handlers a connection's frames go to. A
//! read starts its I/O and waits for it on that thread too, so it costs
//! no hand-off at all.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use super::Config;
use super::connection::{Conn, Peer};
use super::events::{EVENT_TAG, Outbox};
use super::lifecycle::{Lifecycle, close, housekeeping};
use super::local_reads::{self, Handed, ReadThread, whole_of};
use super::reads::read_reply;
use super::server::{Daemon, lock, own_uid};
use crate::client::{self, Frame, ReadWholeDone, Requests, WholeRead, ZapEvent};
use crate::cookie::{CacheError, ReadOutcome};
use crate::io::{Completion, CompletionQueue, IoBuf};
use crate::proto::{self, Op, Status};
use crate::store::{StartedRead, read_key_of};

/// Tag of the completion that ends [`LocalSession::wait_zaps`] (no read
/// key or event tag comes near it).
const WAKE_TAG: u64 = u64::MAX;

/// An open cache with its housekeeping, for sessions in this process.
pub struct Embedded {
    daemon: Option<Arc<Daemon>>,
    life: Arc<Lifecycle>,
    housekeeping: Option<JoinHandle<()>>,
}

impl Embedded {
    /// Open (creating and formatting on first use) the cache of `cfg`;
    /// its socket settings are not used.
    pub fn open(cfg: Config) -> anyhow::Result<Embedded> {
        Self::start(Daemon::open(cfg)?)
    }

    /// Open the cache that `engine` holds (formatted already), for any I/O
    /// engine: the sim engine runs the whole daemon over injected faults.
    /// `cfg.device` only names the device in messages.
    pub fn open_on(cfg: Config, engine: Arc<dyn crate::io::IoEngine>) -> anyhow::Result<Embedded> {
        Self::start(Daemon::open_on_engine(cfg, engine, |store| store)?)
    }

    fn start(daemon: Arc<Daemon>) -> anyhow::Result<Embedded> {
        let life = Arc::new(Lifecycle {
            stopping: AtomicBool::new(false),
            stopped: Condvar::new(),
            sleep: Mutex::new(()),
            listener: Mutex::new(None),
            metrics_listener: Mutex::new(None),
            metrics_addr: None,
        });
        let housekeeping = {
            let (d, l) = (daemon.clone(), life.clone());
            std::thread::Builder::new()
                .name("ringcache-housekeeping".into())
                .spawn(move || housekeeping(&d, &l))?
        };
        Ok(Embedded {
            daemon: Some(daemon),
            life,
            housekeeping: Some(housekeeping),
        })
    }

    /// A new session (as a connection greeted with the current protocol
    /// version, by this process's user).
    pub fn session(&self) -> Option<LocalSession> {
        self.daemon.as_ref().map(|d| LocalSession::open(d.clone()))
    }

    /// Shut down cleanly: stop the housekeeping, flush, checkpoint and
    /// mark the cache clean. Sessions still open keep the cache referenced:
    /// it is then checkpointed, not marked clean.
    pub fn close(mut self) -> anyhow::Result<()> {
        self.stop_housekeeping();
        match self.daemon.take() {
            Some(d) => close(d),
            None => Ok(()),
        }
    }

    fn stop_housekeeping(&mut self) {
        self.life.stop();
        if let Some(t) = self.housekeeping.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        self.stop_housekeeping();
        if let Some(d) = self.daemon.take()
            && let Err(e) = close(d)
        {
            tracing::error!("closing the embedded cache: {e:#}");
        }
    }
}

/// One in-process session: the protocol's requests without the socket.
pub struct LocalSession {
    d: Arc<Daemon>,
    conn: Arc<Mutex<Conn>>,
    /// The read thread of [`Requests::start_read_whole`], started by the
    /// first such read.
    reader: Mutex<Option<Reader>>,
    /// Every such read goes to the read thread, even one that is alone
    /// (see [`LocalSession::hand_over_every_read`]).
    hand_over_all: AtomicBool,
    peer: Peer,
    /// Zap events land here (the daemon's outbox wakes `events`).
    outbox: Arc<Outbox>,
    events: CompletionQueue,
    closed: AtomicBool,
}

impl LocalSession {
    fn open(d: Arc<Daemon>) -> LocalSession {
        let id = d.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let events = CompletionQueue::new();
        let outbox = Arc::new(Outbox::new(events.clone()));
        d.outboxes.register(id, outbox.clone());
        d.connections.fetch_add(1, Ordering::Relaxed);
        let uid = own_uid();
        let gid = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata("/proc/self").map_or(0, |m| m.gid())
        };
        LocalSession {
            conn: Arc::new(Mutex::new(Conn {
                id,
                version: proto::VERSION,
                ..Conn::default()
            })),
            reader: Mutex::new(None),
            hand_over_all: AtomicBool::new(false),
            peer: Peer { uid, gid },
            outbox,
            events,
            closed: AtomicBool::new(false),
            d,
        }
    }

    /// Hand every read of [`Requests::start_read_whole`] to the session's
    /// read thread (`true`), or (`false`, the default) read one that is
    /// alone, with no other read outstanding nor others lately, on the
    /// caller's thread: that saves it two wake-ups, which at queue depth 1
    /// is most of the latency a hand-over adds, but the caller then waits
    /// for the device. For callers whose threads must never wait for it.
    pub fn hand_over_every_read(&self, yes: bool) {
        self.hand_over_all.store(yes, Ordering::Relaxed);
    }

    /// Waits for zap events; `None` once [`LocalSession::close_events`]
    /// was called.
    pub fn wait_zaps(&self) -> Option<Vec<ZapEvent>> {
        let mut done: Vec<Completion> = Vec::new();
        loop {
            self.events.wait_into(&mut done);
            let mut events = false;
            for c in done.drain(..) {
                if c.tag == WAKE_TAG {
                    return None;
                }
                events |= c.tag == EVENT_TAG;
            }
            if self.closed.load(Ordering::Relaxed) {
                return None;
            }
            if events {
                let zaps: Vec<ZapEvent> = self
                    .outbox
                    .take_frames()
                    .iter()
                    .filter_map(|f| frame_of(f).as_ref().and_then(ZapEvent::parse))
                    .collect();
                if !zaps.is_empty() {
                    return Some(zaps);
                }
            }
        }
    }

    /// Ends [`LocalSession::wait_zaps`] (for the thread that waits in it).
    pub fn close_events(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.events.push(Completion {
            tag: WAKE_TAG,
            result: Ok(0),
            buf: IoBuf::empty(),
        });
    }

    /// A read's outcome, its I/O started and waited for on this thread
    /// (the thread's own queue and scratch, kept between reads); `Err`: the
    /// status of a read refused before any I/O.
    fn read_outcome(&self, payload: &[u8]) -> Result<Result<ReadOutcome, CacheError>, Status> {
        let d = &*self.d;
        let (op, at) = d.prepare_read(&self.conn, payload)?;
        // Each read on this thread has a key of its own, so that the
        // reused queue could never give one read another's completion
        // (none is left behind: a read returns once all of its I/O has
        // landed, but a key costs nothing).
        let (key, started) = READ_SCRATCH.with(|s| {
            let key = s.next_key.get();
            s.next_key.set((key + 1) & KEY_MASK);
            (key, d.store.start_read(key, 0, at, &s.cq))
        });
        Ok(match started {
            Ok(StartedRead::Pending(mut read)) => READ_SCRATCH
                .with(|s| {
                    let mut done = s.done.take();
                    let mut landed = false;
                    while !landed {
                        s.cq.wait_into(&mut done);
                        for c in done.drain(..) {
                            if read_key_of(c.tag) == key {
                                landed |= read.absorb(c);
                            }
                        }
                    }
                    s.done.set(done);
                    let mut results = s.results.take();
                    d.store.finish_pending(std::iter::once(read), &mut results);
                    let r = results.pop();
                    results.clear();
                    s.results.set(results);
                    r.map(|(_, r)| op.read_done(r))
                })
                .ok_or(Status::Internal)?,
            Ok(StartedRead::Done(result)) => op.read_done(result),
            Err(e) => op.read_done(Err(e)),
        })
    }

    fn read(&self, payload: &[u8]) -> (Status, Vec<u8>) {
        let outcome = match self.read_outcome(payload) {
            Ok(o) => o,
            Err(st) => return (st, Vec::new()),
        };
        // The reply as a connection would get it: a 16-byte frame header,
        // status u16, reserved u16, then the body, taken in place (no copy
        // of the data).
        let mut f = read_reply(0, outcome);
        if f.len() < 20 {
            return (Status::Internal, Vec::new());
        }
        let st = Status::from_u16(u16::from_le_bytes([f[16], f[17]]));
        f.drain(..20);
        (st, f)
    }
}

/// A session's read thread.
struct Reader {
    shared: Arc<ReadThread>,
    thread: JoinHandle<()>,
}

impl LocalSession {
    /// The read thread, started if need be; `None` if it cannot be.
    fn reader(&self) -> Option<Arc<ReadThread>> {
        let mut r = lock(&self.reader);
        if let Some(r) = &*r {
            return Some(r.shared.clone());
        }
        if self.closed.load(Ordering::Relaxed) {
            return None;
        }
        let shared = match ReadThread::new() {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::warn!("cannot make a session's read thread: {e}");
                return None;
            }
        };
        let (d, conn, sh) = (self.d.clone(), self.conn.clone(), shared.clone());
        match std::thread::Builder::new()
            .name("ringcache-reads".into())
            .spawn(move || local_reads::serve(d, conn, sh))
        {
            Ok(thread) => {
                *r = Some(Reader {
                    shared: shared.clone(),
                    thread,
                });
                Some(shared)
            }
            Err(e) => {
                tracing::warn!("cannot start a session's read thread: {e}");
                None
            }
        }
    }
}

/// A thread's completion queue and vectors for its reads through a
/// session, kept between reads (a read then allocates nothing of its own).
struct ReadScratch {
    cq: CompletionQueue,
    next_key: Cell<u64>,
    done: Cell<Vec<Completion>>,
    results: Cell<Vec<(u64, crate::store::Result<crate::store::Segments>)>>,
}

/// Read keys stay below 2^44 (see `Store::start_read`).
const KEY_MASK: u64 = (1 << 44) - 1;

thread_local! {
    static READ_SCRATCH: ReadScratch = ReadScratch {
        cq: CompletionQueue::new(),
        next_key: Cell::new(0),
        done: Cell::new(Vec::new()),
        results: Cell::new(Vec::new()),
    };
}

/// A Read request's body.
fn read_payload(c: client::CookieHandle, offset: u64, len: u32) -> [u8; 16] {
    let mut payload = [0u8; 16];
    payload[..4].copy_from_slice(&c.0.to_le_bytes());
    payload[4..8].copy_from_slice(&len.to_le_bytes());
    payload[8..].copy_from_slice(&offset.to_le_bytes());
    payload
}

/// A frame as the client sees it.
fn frame_of(bytes: &[u8]) -> Option<Frame> {
    let head: &[u8; 16] = bytes.get(..16)?.try_into().ok()?;
    let h = proto::parse_header(head).ok()?;
    Some(Frame {
        op: h.op,
        id: h.id,
        payload: bytes.get(16..16 + h.payload_len)?.to_vec(),
    })
}

impl Requests for LocalSession {
    fn request(&self, op: Op, body: &[u8]) -> client::Result<(Status, Vec<u8>)> {
        self.d.requests.fetch_add(1, Ordering::Relaxed);
        let received = Instant::now();
        let answer = match op {
            Op::Read => self.read(body),
            // A session is greeted when it is made.
            Op::Hello => return Ok((Status::BadRequest, Vec::new())),
            _ => {
                let r = self.d.handle(&self.conn, &self.peer, op, body);
                (r.status, r.body.finish())
            }
        };
        self.d.latency.observe(op, received);
        Ok(answer)
    }

    fn is_dead(&self) -> bool {
        false
    }

    fn start_read_whole(
        &self,
        c: client::CookieHandle,
        offset: u64,
        len: u32,
        out: Vec<u8>,
        done: ReadWholeDone,
    ) {
        self.d.requests.fetch_add(1, Ordering::Relaxed);
        let handed = Handed {
            payload: read_payload(c, offset, len),
            offset,
            out,
            done,
            received: Instant::now(),
        };
        let reader = self.reader();
        let handed = match &reader {
            // Counted first, whoever reads it (the count ends with the
            // answer).
            Some(r) if !r.alone() || self.hand_over_all.load(Ordering::Relaxed) => {
                match r.start(handed) {
                    Ok(()) => return,
                    Err(h) => h,
                }
            }
            _ => handed,
        };
        // The only read outstanding, or no read thread (the session is
        // closing): read here.
        let outcome = self.read_outcome(&handed.payload);
        handed.answer(&self.d, outcome);
        if let Some(r) = reader {
            r.ended();
        }
    }

    fn read_whole(
        &self,
        c: client::CookieHandle,
        offset: u64,
        len: u32,
        out: &mut Vec<u8>,
    ) -> client::Result<WholeRead> {
        self.d.requests.fetch_add(1, Ordering::Relaxed);
        let received = Instant::now();
        let payload = read_payload(c, offset, len);
        let r = whole_of(self.read_outcome(&payload), offset, out);
        self.d.latency.observe(Op::Read, received);
        r
    }
}

impl Drop for LocalSession {
    fn drop(&mut self) {
        self.close_events();
        // The reads handed over are answered (their accesses ended) before
        // the session's cookies are given back.
        let reader = lock(&self.reader).take();
        if let Some(r) = reader {
            if r.thread.thread().id() == std::thread::current().id() {
                // Dropped by a read's own answer, whose access is still
                // held: the thread gives the cookies back once it has
                // answered the rest (it cannot wait for itself).
                r.shared.stop_and_clean_up();
                return;
            }
            r.shared.stop();
            if r.thread.join().is_err() {
                tracing::error!("a session's read thread panicked");
            }
        }
        self.d.cleanup(&self.conn);
        self.d.connections.fetch_sub(1, Ordering::Relaxed);
    }
}
