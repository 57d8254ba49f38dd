//! One connection: a reader thread that parses frames, answers pings and
//! break acknowledgements at once and queues requests, and a worker
//! thread that serves them in order (owed breaks first, kept replies for
//! exactly-once).

use std::io::{self, Read};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::wire::{
    self, HEADER_LEN, Header, Kind, MAX_DATA, MAX_PAYLOAD, ReplyBody, Request, Status, Welcome,
    WireError, encode_reply, encode_version_refusal, frame, op,
};

use super::Server;
use super::coherency::{ClientKey, Conn, KeptState, error_frame};

/// A frame must arrive whole within this time of its first byte.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection must greet within this time.
pub const GREETING_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no frame for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests of one client waiting at the server.
pub const MAX_INFLIGHT: usize = 64;
/// Kept replies per client.
pub const MAX_KEPT: usize = 256;
/// Request payload bytes a connection may have waiting at the server;
/// beyond it the reader stops reading until the worker catches up.
pub const MAX_INFLIGHT_BYTES: usize = 8 << 20;
/// A write to a client that blocks longer closes its connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

static CONN_GEN: AtomicU64 = AtomicU64::new(1);

/// Payload bytes queued for the worker (back-pressure, never a drop).
#[derive(Default)]
struct Budget {
    used: Mutex<usize>,
    cv: Condvar,
}

impl Budget {
    fn take(&self, n: usize) {
        let mut u = self.used.lock().unwrap_or_else(|p| p.into_inner());
        while *u > 0 && *u + n > MAX_INFLIGHT_BYTES {
            u = self.cv.wait(u).unwrap_or_else(|p| p.into_inner());
        }
        *u += n;
    }

    fn give(&self, n: usize) {
        let mut u = self.used.lock().unwrap_or_else(|p| p.into_inner());
        *u = u.saturating_sub(n);
        self.cv.notify_all();
    }
}

enum Got {
    Frame(Header, Vec<u8>),
    Idle,
    Closed,
    /// A framing error: answer BadFrame and close.
    Bad(String),
}

/// Reads a frame; a frame begun must complete within [`FRAME_TIMEOUT`].
fn read_timed(s: &mut TcpStream) -> Got {
    let mut hb = [0u8; HEADER_LEN];
    let mut got = 0;
    let mut started: Option<Instant> = None;
    while got < HEADER_LEN {
        match s.read(hb.get_mut(got..).unwrap_or_default()) {
            Ok(0) if got == 0 => return Got::Closed,
            Ok(0) => return Got::Bad("connection closed inside a frame header".into()),
            Ok(n) => {
                got += n;
                started.get_or_insert_with(Instant::now);
            }
            Err(e) if is_timeout(&e) => {
                if got == 0 {
                    return Got::Idle;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Got::Closed,
        }
        if started.is_some_and(|t| t.elapsed() > FRAME_TIMEOUT) {
            return Got::Bad("frame header incomplete after 5 s".into());
        }
    }
    let started = started.unwrap_or_else(Instant::now);
    let (h, len) = match Header::decode(&hb) {
        Ok(x) => x,
        Err(e) => return Got::Bad(e.to_string()),
    };
    let mut payload = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match s.read(payload.get_mut(got..).unwrap_or_default()) {
            Ok(0) => return Got::Bad("connection closed inside a frame".into()),
            Ok(n) => got += n,
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Got::Closed,
        }
        if started.elapsed() > FRAME_TIMEOUT {
            return Got::Bad("frame incomplete after 5 s".into());
        }
    }
    Got::Frame(h, payload)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn reply_frame(h: &Header, ack: u64, payload: &[u8]) -> Vec<u8> {
    frame(&Header::new(Kind::Reply, h.op, h.seq, ack), payload)
}

fn status_payload(status: Status, errno: u32) -> Vec<u8> {
    encode_reply(status, errno, &ReplyBody::Empty)
}

/// Serves one accepted connection until it ends.
pub fn serve_connection(srv: Arc<Server>, mut stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    // Short read timeouts so that a frame's deadline can be checked.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let gen_ = CONN_GEN.fetch_add(1, Ordering::Relaxed);
    let conn = match stream.try_clone().and_then(|s| Conn::new(s, gen_)) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::warn!(%peer, "connection: {e}");
            return;
        }
    };

    // The greeting.
    let idle = Instant::now();
    let (h, payload) = loop {
        match read_timed(&mut stream) {
            Got::Frame(h, p) => break (h, p),
            Got::Idle if idle.elapsed() < GREETING_TIMEOUT => continue,
            Got::Idle | Got::Closed => return,
            Got::Bad(msg) => {
                let _ = conn.send(error_frame(Status::BadFrame, &msg));
                conn.close();
                return;
            }
        }
    };
    if h.kind != Kind::Request as u8 || h.op != op::HELLO {
        let _ = conn.send(reply_frame(&h, 0, &status_payload(Status::NotGreeted, 0)));
        conn.close();
        return;
    }
    let hello = match Request::decode(op::HELLO, &payload) {
        Ok(Request::Hello(hello)) => hello,
        Ok(_) => return,
        Err(e @ (WireError::Magic | WireError::Version(_))) => {
            tracing::info!(%peer, "greeting refused: {e}");
            let _ = conn.send(reply_frame(&h, 0, &encode_version_refusal()));
            conn.close();
            return;
        }
        Err(e) => {
            let _ = conn.send(reply_frame(&h, 0, &status_payload(e.status(), 0)));
            conn.close();
            return;
        }
    };
    let key: ClientKey = hello.client_id;
    let name = String::from_utf8_lossy(&hello.name).into_owned();
    let attached = match srv.co.attach(
        key,
        hello.incarnation,
        name.clone(),
        conn.clone(),
        srv.cfg.max_clients,
    ) {
        Ok(a) => a,
        Err(status) => {
            let _ = conn.send(reply_frame(&h, 0, &status_payload(status, 0)));
            conn.close();
            return;
        }
    };
    if let Some(old) = attached.replaced {
        let _ = old.send(error_frame(Status::Replaced, "the client connected again"));
        old.close();
    }
    tracing::info!(%peer, client = %name, resumed = attached.resumed, "client connected");
    let welcome = Welcome {
        version: wire::VERSION,
        read_only: srv.export.read_only,
        export_id: srv.state.export_id,
        epoch: srv.state.epoch,
        root: srv.export.root.id,
        max_payload: MAX_PAYLOAD as u32,
        max_data: MAX_DATA as u32,
        max_inflight: MAX_INFLIGHT as u32,
        max_kept: MAX_KEPT as u32,
        promise_ms: srv.co.promise_ms(),
        break_timeout_ms: u32::try_from(srv.co.break_timeout.as_millis()).unwrap_or(u32::MAX),
        idle_ms: u32::try_from(IDLE_TIMEOUT.as_millis()).unwrap_or(u32::MAX),
        resumed: attached.resumed,
    };
    if conn
        .send(reply_frame(
            &h,
            0,
            &encode_reply(Status::Ok, 0, &ReplyBody::Welcome(welcome)),
        ))
        .is_err()
    {
        srv.co.detach(&key, gen_);
        return;
    }

    let (tx, rx) = sync_channel::<Queued>(MAX_INFLIGHT);
    let budget = Arc::new(Budget::default());
    let worker = {
        let srv = srv.clone();
        let conn = conn.clone();
        let kept = attached.kept.clone();
        let budget = budget.clone();
        std::thread::Builder::new()
            .name("ringfs-worker".into())
            .spawn(move || work(&srv, &conn, key, &kept, &budget, rx))
    };
    if worker.is_err() {
        conn.close();
        srv.co.detach(&key, gen_);
        return;
    }
    read_loop(&srv, &conn, &mut stream, key, &tx, &budget);
    drop(tx);
    srv.co.detach(&key, gen_);
    conn.close();
    tracing::info!(%peer, client = %name, "connection ended");
}

/// A request waiting for the worker, and its payload's size.
type Queued = (Header, Request, usize);

fn read_loop(
    srv: &Server,
    conn: &Conn,
    stream: &mut TcpStream,
    key: ClientKey,
    tx: &SyncSender<Queued>,
    budget: &Budget,
) {
    let mut last = Instant::now();
    loop {
        if conn.is_closed() {
            return;
        }
        let (h, payload) = match read_timed(stream) {
            Got::Frame(h, p) => (h, p),
            Got::Idle if last.elapsed() < IDLE_TIMEOUT => continue,
            Got::Idle | Got::Closed => return,
            Got::Bad(msg) => {
                let _ = conn.send(error_frame(Status::BadFrame, &msg));
                conn.close();
                return;
            }
        };
        last = Instant::now();
        let is_request = h.kind == Kind::Request as u8;
        let Some(watermark) = srv.co.client_ack(&key, h.ack, is_request.then_some(h.seq)) else {
            // Forgotten meanwhile (a Farewell): nothing more to serve.
            return;
        };
        let ack = srv.co.received(&key);
        // Answers from the reader never wait behind the worker's replies.
        let answer = |status: Status| {
            conn.send_urgent(reply_frame(&h, ack, &status_payload(status, 0)));
        };
        match Kind::from_u8(h.kind) {
            Ok(Kind::BreakAck) => {
                if h.flags != 0 || h.op != 0 || !payload.is_empty() {
                    conn.send_urgent(error_frame(
                        Status::BadRequest,
                        "a BreakAck has no flags, op or payload",
                    ));
                    continue;
                }
                srv.co.break_acked(&key, h.seq);
            }
            Ok(Kind::Request) => {
                if h.flags != 0 {
                    answer(Status::BadRequest);
                    continue;
                }
                if h.op == op::HELLO {
                    answer(Status::NotGreeted);
                    conn.close();
                    return;
                }
                let req = match Request::decode(h.op, &payload) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!("bad request: {e}");
                        answer(e.status());
                        continue;
                    }
                };
                if req == Request::Ping {
                    answer(Status::Ok);
                    continue;
                }
                if h.seq == 0 || h.seq <= watermark {
                    answer(Status::OldSeq);
                    continue;
                }
                let cost = payload.len();
                budget.take(cost);
                match tx.try_send((h, req, cost)) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        budget.give(cost);
                        answer(Status::Busy);
                    }
                    Err(TrySendError::Disconnected(_)) => return,
                }
            }
            Ok(_) | Err(_) => {
                conn.send_urgent(error_frame(
                    Status::BadKind,
                    &format!("frame kind {} is not one a client sends", h.kind),
                ));
            }
        }
    }
}

fn work(
    srv: &Server,
    conn: &Conn,
    key: ClientKey,
    kept: &super::coherency::Kept,
    budget: &Budget,
    rx: Receiver<Queued>,
) {
    for (h, req, cost) in rx {
        // Requests left when the connection closed are not served (the
        // client resends them) but still give their bytes back, so that a
        // reader waiting for room goes on to see the end.
        if !conn.is_closed() {
            serve_one(srv, conn, key, kept, h, &req);
        }
        budget.give(cost);
    }
}

fn serve_one(
    srv: &Server,
    conn: &Conn,
    key: ClientKey,
    kept: &super::coherency::Kept,
    h: Header,
    req: &Request,
) {
    srv.co.deliver_owed(&key);
    if *req == Request::Farewell {
        srv.co.farewell(&key);
        let _ = conn.send(reply_frame(&h, h.seq, &status_payload(Status::Ok, 0)));
        conn.close();
        return;
    }
    let payload = if req.is_kept() {
        match kept.begin(h.seq, MAX_KEPT) {
            KeptState::Done(p) => p,
            KeptState::Full => Arc::new(status_payload(Status::Busy, 0)),
            KeptState::New => {
                let p = Arc::new(execute(srv, &key, req));
                kept.finish(h.seq, p.clone());
                p
            }
        }
    } else {
        Arc::new(execute(srv, &key, req))
    };
    let ack = srv.co.received(&key);
    // A reply that cannot be sent is resent from the kept replies, or
    // served again, when the client resends on its next connection.
    let _ = conn.send(reply_frame(&h, ack, &payload));
}

fn execute(srv: &Server, key: &ClientKey, req: &Request) -> Vec<u8> {
    match srv.serve(key, req) {
        Ok(body) => encode_reply(Status::Ok, 0, &body),
        Err(e) => {
            let (s, errno) = e.status_errno();
            status_payload(s, errno)
        }
    }
}
