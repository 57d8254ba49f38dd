//! One connection: peer credentials, the greeting, then its frames served
//! in order on its thread (reads and writes kept in flight by the read and
//! write pipelines); its handles
//! (`Conn`) and what is released when it closes.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::MAX_INFLIGHT;
use super::frames::{FrameEnd, FrameReader, ReplyWriter, Woke, reply_frame};
use super::reads::{ConnReads, Finisher};
use super::server::{Daemon, lock};
use super::writes::write_len;
use crate::callback::ObjectRef;
use crate::cookie::Cookie;
use crate::proto::{self, Op, Reader, Status, Writer};
use nix::sys::eventfd::{EfdFlags, EventFd};

pub(super) struct CookieEntry {
    pub(super) cookie: Arc<Cookie>,
    pub(super) volume: u32,
    pub(super) uses: u32,
    /// The callback layer's record, for a cookie of a volume declared for
    /// a file server (shared with other connections, see `SharedCookie`).
    pub(super) obj: Option<ObjectRef>,
}

#[derive(Default)]
pub(super) struct Conn {
    /// The connection's id: its holder id in the callback layer.
    pub(super) id: u64,
    /// The protocol version it greeted with.
    pub(super) version: u32,
    pub(super) next_handle: u32,
    /// Volume handles -> volume keys.
    pub(super) volumes: HashMap<u32, Vec<u8>>,
    pub(super) cookies: HashMap<u32, CookieEntry>,
}

impl Conn {
    /// A handle no live volume or cookie of this connection has (the
    /// counter wraps after 2^32 - 1 handles; a live one is skipped, never
    /// overwritten).
    pub(super) fn handle(&mut self) -> u32 {
        loop {
            self.next_handle = self.next_handle.wrapping_add(1).max(1);
            let h = self.next_handle;
            if !self.volumes.contains_key(&h) && !self.cookies.contains_key(&h) {
                return h;
            }
        }
    }
}

pub(super) struct Peer {
    pub(super) uid: u32,
    pub(super) gid: u32,
}

/// Serve one connection until it closes, on this thread: its frames, and
/// its reads as their I/O completes. The thread sleeps in one poll(2) on
/// the socket, the engine's descriptor for its completions (the io_uring
/// engine's ring: its completions are posted by the thread that
/// submitted them, so the submitter is the one to wait for them), an
/// eventfd for completions and events pushed by other threads, and the
/// shutdown eventfd. One thread per connection: a read crosses no other
/// thread between the socket and the device and back.
pub(super) fn serve_connection(d: &Daemon, stream: UnixStream) {
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
    let wake =
        match EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK) {
            Ok(w) => Arc::new(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot make a connection's eventfd: closing");
                return;
            }
        };
    d.connections.fetch_add(1, Ordering::Relaxed);
    let conn_id = d.next_conn_id.fetch_add(1, Ordering::Relaxed);
    let conn = Mutex::new(Conn {
        id: conn_id,
        ..Conn::default()
    });
    let reads = ConnReads::new();
    {
        let wake = wake.clone();
        reads.cq.set_waker(Arc::new(move || {
            // Nonblocking: a full counter already wakes the thread.
            let _ = wake.write(1);
        }));
    }
    let mut frames = FrameReader::new(stream);
    let mut finisher = Finisher::new();
    let mut s = Session {
        d,
        conn: &conn,
        peer: &peer,
        reads: &reads,
        writer: &writer,
        greeted: false,
    };
    loop {
        // Answer what completed.
        finisher.poll(d, &reads, &writer);
        // Serve the frames there are, while reads have room.
        let mut served = false;
        let mut close = false;
        while reads.in_flight() < MAX_INFLIGHT {
            match frames.next_ready() {
                Ok(Some((h, payload))) => {
                    served = true;
                    if h.op == Op::Write as u16 && !reads.writes_have_room(write_len(payload)) {
                        // Writes are at their bound: answer the earlier
                        // ones first (back-pressure on the writer).
                        finisher.drain_writes(d, &reads, &writer);
                    }
                    if s.serve(&mut finisher, &h, payload).is_break() {
                        close = true;
                        break;
                    }
                }
                Ok(None) => break,
                Err(FrameEnd::Closed) => {
                    close = true;
                    break;
                }
                Err(FrameEnd::Bad) => {
                    d.bad_frames.fetch_add(1, Ordering::Relaxed);
                    close = true;
                    break;
                }
            }
        }
        // The reads of the frames just served go to the device together.
        reads.submit(d);
        if close {
            break;
        }
        if served || !reads.cq.arm_waker() {
            continue;
        }
        // Nothing to do: sleep. The socket only while reads have room
        // (back-pressure), the engine's descriptor while reads or writes
        // are in flight.
        let reads_in_flight = reads.in_flight();
        let in_flight = reads_in_flight + reads.writes_in_flight();
        let engine = d.store.engine();
        // (Asked only with reads in flight: the thread's lane then has its
        // ring open already; asking opens it.)
        let ring = if in_flight > 0 {
            engine.wake_fd()
        } else {
            None
        };
        let woke = frames.wait(&d.stop, reads_in_flight < MAX_INFLIGHT, wake.as_fd(), ring);
        // Awake: what this thread reaps itself needs no eventfd write.
        reads.cq.disarm_waker();
        match woke {
            Ok(Woke::Ready { wake: true }) => {
                // Read back to zero.
                let _ = wake.read();
            }
            Ok(Woke::Ready { wake: false }) => {}
            // Draining, and the client stayed quiet: close once its reads
            // are answered.
            Ok(Woke::Quiet) if in_flight == 0 => break,
            Ok(Woke::Quiet) => {}
            Err(e) => {
                tracing::warn!(error = %e, "poll failed: closing a connection");
                break;
            }
        }
    }
    // Reads and writes in flight are answered (their accesses released)
    // before the client's cookies and volumes are given back.
    d.outboxes.unregister(conn_id);
    finisher.drain(d, &reads, &writer);
    d.cleanup(&conn);
    d.connections.fetch_sub(1, Ordering::Relaxed);
}

/// One connection's side of serving a frame.
struct Session<'a, 'd> {
    d: &'d Daemon,
    conn: &'a Mutex<Conn>,
    peer: &'a Peer,
    reads: &'a ConnReads<'d>,
    writer: &'a ReplyWriter,
    greeted: bool,
}

impl<'d> Session<'_, 'd> {
    /// Serve one frame: a read is started (answered when its I/O
    /// completes), anything else answered now, after the reads in flight.
    /// `Break`: close the connection.
    fn serve(
        &mut self,
        finisher: &mut Finisher<'d>,
        h: &proto::Header,
        payload: &[u8],
    ) -> ControlFlow<()> {
        let (d, writer) = (self.d, self.writer);
        // The request is off the socket: its latency counts from here.
        let received = Instant::now();
        d.requests.fetch_add(1, Ordering::Relaxed);
        if d.stop.began() {
            // Shutting down: nothing new is started; the client is told
            // so instead of finding its socket shut under it.
            writer.send(&reply_frame(h.op, h.id, Status::ShuttingDown, &[]));
            return ControlFlow::Continue(());
        }
        if !self.greeted {
            let (reply, version) = greet(h, payload);
            if h.op == Op::Hello as u16 {
                d.latency.observe(Op::Hello, received);
            }
            writer.send(&reply);
            let Some(version) = version.filter(|_| !writer.broken.load(Ordering::Relaxed)) else {
                d.bad_frames.fetch_add(1, Ordering::Relaxed);
                return ControlFlow::Break(());
            };
            self.greeted = true;
            let id = {
                let mut c = lock(self.conn);
                c.version = version;
                c.id
            };
            if version >= 2 {
                // Zap events wake this connection's thread.
                d.outboxes.register(id, self.reads.outbox.clone());
            }
            return ControlFlow::Continue(());
        }
        if h.id == 0 || h.flags != 0 {
            // Id 0 marks events: a request may not use it. Flags are
            // reserved and must be zero.
            writer.send(&reply_frame(h.op, h.id, Status::BadRequest, &[]));
            return ControlFlow::Continue(());
        }
        let Some(op) = Op::from_u16(h.op) else {
            writer.send(&reply_frame(h.op, h.id, Status::UnknownOp, &[]));
            return ControlFlow::Continue(());
        };
        if op == Op::Read {
            // A read sees every write its connection sent before it.
            finisher.drain_writes(d, self.reads, writer);
            d.start_read(self.conn, self.reads, h.id, payload, writer, received);
            return ControlFlow::Continue(());
        }
        if op == Op::Write {
            // Writes are started after the reads before them are
            // answered (taking an access may wait on the cookie's state
            // machine, which may wait for those reads' accesses), then
            // kept in flight together, committed and answered in order.
            finisher.drain_reads(d, self.reads, writer);
            d.start_write(self.conn, self.reads, h.id, payload, writer, received);
            return ControlFlow::Continue(());
        }
        // Other requests are served in order after the reads and writes
        // before them: none waits on an access of this connection's own
        // reads or writes while it is the thread that would answer them.
        finisher.drain(d, self.reads, writer);
        let reply = d.handle(self.conn, self.peer, op, payload);
        let frame = reply_frame(h.op, h.id, reply.status, &reply.body.finish());
        d.latency.observe(op, received);
        writer.send(&frame);
        ControlFlow::Continue(())
    }
}

/// The answer to the first frame, which must be a HELLO of a version
/// served (1 or 2; the reply names the one spoken): the reply, and the
/// version if the connection goes on.
pub(super) fn greet(h: &proto::Header, payload: &[u8]) -> (Vec<u8>, Option<u32>) {
    let refuse = |st: Status, body: &[u8]| (reply_frame(h.op, h.id, st, body), None);
    if h.op != Op::Hello as u16 || h.id == 0 || h.flags != 0 {
        return refuse(Status::BadRequest, &[]);
    }
    let mut r = Reader::new(payload);
    let parsed = (|| -> Result<(bool, u32, u32), proto::ProtoError> {
        let magic_ok = r.bytes(8)? == proto::MAGIC;
        let version = r.u32()?;
        let reserved = r.u32()?;
        let name_len = r.u16()? as usize;
        let _name = r.bytes(name_len)?;
        r.end()?;
        Ok((magic_ok, version, reserved))
    })();
    let version = match parsed {
        Ok((true, v, 0)) => v,
        // A wrong magic (not our protocol), a reserved field that is not
        // zero, or a body that does not parse.
        _ => return refuse(Status::BadRequest, &[]),
    };
    if !(proto::MIN_VERSION..=proto::VERSION).contains(&version) {
        let body = Writer::new().u32(proto::VERSION).finish();
        return refuse(Status::Version, &body);
    }
    let body = Writer::new()
        .u32(version)
        .u32(proto::MAX_FRAME as u32)
        .u32(MAX_INFLIGHT as u32)
        .u32(proto::MAX_DATA as u32)
        .finish();
    (reply_frame(h.op, h.id, Status::Ok, &body), Some(version))
}

/// Stack of connection threads: they parse frames and call into the
/// store, nothing deep.
pub(super) const CONN_STACK: usize = 256 << 10;
