//! One connection: peer credentials, the greeting, then its frames served
//! in order on its thread (reads handed to the read pipeline); its handles
//! (`Conn`) and what is released when it closes.

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::MAX_INFLIGHT;
use super::frames::{FrameEnd, FrameReader, ReplyWriter, reply_frame};
use super::reads::ConnReads;
use super::server::{Daemon, lock};
use crate::callback::ObjectRef;
use crate::cookie::Cookie;
use crate::proto::{self, Op, Reader, Status, Writer};

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

/// Serve one connection until it closes, on this thread; its reads are
/// answered by a second thread, started with the first read.
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
    d.connections.fetch_add(1, Ordering::Relaxed);
    let conn_id = d.next_conn_id.fetch_add(1, Ordering::Relaxed);
    let conn = Mutex::new(Conn {
        id: conn_id,
        ..Conn::default()
    });
    let reads = ConnReads::new();
    let mut frames = FrameReader::new(stream);
    std::thread::scope(|scope| {
        let mut completer = None;
        let mut greeted = false;
        let spawn_completer = || {
            let (reads, writer) = (&reads, &writer);
            std::thread::Builder::new()
                .name("ringcached-reads".into())
                .stack_size(CONN_STACK)
                .spawn_scoped(scope, move || d.complete_reads(reads, writer))
        };
        loop {
            let (h, payload) = match frames.next(&d.stop) {
                Ok(f) => f,
                Err(FrameEnd::Closed) => break,
                Err(FrameEnd::Bad) => {
                    d.bad_frames.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            };
            // The request is off the socket: its latency counts from here.
            let received = Instant::now();
            d.requests.fetch_add(1, Ordering::Relaxed);
            if d.stop.began() {
                // Shutting down: nothing new is started; the client is told
                // so instead of finding its socket shut under it.
                writer.send(&reply_frame(h.op, h.id, Status::ShuttingDown, &[]));
                continue;
            }
            if !greeted {
                let (reply, version) = greet(&h, payload);
                if h.op == Op::Hello as u16 {
                    d.latency.observe(Op::Hello, received);
                }
                writer.send(&reply);
                let Some(version) = version.filter(|_| !writer.broken.load(Ordering::Relaxed))
                else {
                    d.bad_frames.fetch_add(1, Ordering::Relaxed);
                    break;
                };
                greeted = true;
                lock(&conn).version = version;
                if version >= 2 {
                    // Zap events are written by the completion thread, so
                    // a version-2 connection has one from the start.
                    match spawn_completer() {
                        Ok(t) => completer = Some(t),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot start a completion thread");
                            break;
                        }
                    }
                    d.outboxes.register(conn_id, reads.outbox.clone());
                }
                continue;
            }
            if h.id == 0 || h.flags != 0 {
                // Id 0 marks events: a request may not use it. Flags are
                // reserved and must be zero.
                writer.send(&reply_frame(h.op, h.id, Status::BadRequest, &[]));
                continue;
            }
            let Some(op) = Op::from_u16(h.op) else {
                writer.send(&reply_frame(h.op, h.id, Status::UnknownOp, &[]));
                continue;
            };
            if op == Op::Read {
                if completer.is_none() {
                    match spawn_completer() {
                        Ok(t) => completer = Some(t),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot start a completion thread");
                            writer.send(&reply_frame(h.op, h.id, Status::Internal, &[]));
                            continue;
                        }
                    }
                }
                d.start_read(&conn, &reads, h.id, payload, &writer, received);
                continue;
            }
            let reply = d.handle(&conn, &peer, op, payload);
            let frame = reply_frame(h.op, h.id, reply.status, &reply.body.finish());
            d.latency.observe(op, received);
            writer.send(&frame);
        }
        // Reads in flight finish (releasing their accesses) before the
        // client's cookies and volumes are given back.
        d.outboxes.unregister(conn_id);
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
