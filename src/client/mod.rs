//! The client library for `ringcached`'s socket protocol: [`Client`]
//! (blocking, one thread), [`SharedClient`] (blocking, many threads on one
//! connection) and `AsyncClient` (tokio, with the cargo feature
//! `async-client`).
//!
//! One [`Client`] is one connection. Calls are synchronous, but requests
//! can also be pipelined: [`Client::send`] many, then [`Client::recv`] their
//! replies (matched by request id). Handles are only valid on the
//! connection that acquired them.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::proto::{self, Op, ProtoError, REPLY, Reader, Status};

/// What can go wrong for a client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Proto(#[from] ProtoError),
    /// The daemon answered with a status other than Ok.
    #[error("daemon answered {0:?}")]
    Status(Status),
    #[error("protocol: {0}")]
    Protocol(String),
}

/// Result of client calls.
pub type Result<T> = std::result::Result<T, ClientError>;

/// A volume handle (this connection only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VolumeHandle(pub u32);
/// A cookie handle (this connection only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CookieHandle(pub u32);

/// One segment of a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadSegment {
    Data { offset: u64, data: Vec<u8> },
    Hole { offset: u64, len: u64 },
}

/// What a read returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadReply {
    Data(Vec<ReadSegment>),
    NoData,
    Stale,
    /// Version 2: no valid callback promise; revalidate with the server
    /// first.
    Revalidate,
}

/// What [`Requests::read_whole`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WholeRead {
    /// Cached from the offset on without a hole: the bytes were appended.
    Data,
    /// A hole in the range: nothing was appended (fetch it).
    Partial,
    NoData,
    Stale,
    /// No valid callback promise: revalidate with the server first.
    Revalidate,
}

/// A frame from the daemon.
#[derive(Debug, Clone)]
pub struct Frame {
    pub op: u16,
    pub id: u64,
    pub payload: Vec<u8>,
}

/// What the daemon said in its greeting.
#[derive(Debug, Clone, Copy)]
pub struct ServerInfo {
    pub version: u32,
    pub max_frame: u32,
    pub max_inflight: u32,
    pub max_data: u32,
}

/// A connection to the daemon.
pub struct Client {
    stream: UnixStream,
    /// Replies, read in large pieces (pipelined replies arrive many to a
    /// read).
    reader: std::io::BufReader<ReplyStream>,
    /// Requests queued by [`Client::queue`], sent by the next flush.
    queued: Vec<u8>,
    next_id: u64,
    /// Replies that arrived while waiting for another.
    early: HashMap<u64, Frame>,
    /// Server-pushed events.
    events: VecDeque<Frame>,
    info: ServerInfo,
}

/// A reply frame's status and body: refuses a frame that is not a reply.
/// Both clients read replies through this.
fn reply_of(f: &Frame) -> Result<(Status, &[u8])> {
    if f.op & REPLY == 0 {
        return Err(ClientError::Protocol(format!(
            "frame op {:#x} is not a reply",
            f.op
        )));
    }
    let mut r = Reader::new(&f.payload);
    let st = Status::from_u16(r.u16()?);
    let _ = r.u16()?;
    Ok((st, r.rest()))
}

/// The body of a reply whose status must be Ok; any other status is an
/// error. Both clients' `call` use this.
fn ok_body((status, body): (Status, Vec<u8>)) -> Result<Vec<u8>> {
    match status {
        Status::Ok => Ok(body),
        st => Err(ClientError::Status(st)),
    }
}

/// The read side of a client's socket, for a thread that waits for
/// replies. A thread blocked in recv(2) on a Unix stream socket is woken
/// by every change of the socket, also by the daemon taking in a request
/// (which frees send space on this side): one wakeup for nothing per
/// request, paid by the daemon's thread on its way to the device and, on
/// another CPU, by an interprocessor interrupt. Waiting in poll(2) for
/// `POLLIN` is woken by data or a hangup only. The socket's read timeout
/// (`SO_RCVTIMEO`) still bounds each wait, as it bounds a recv.
pub(crate) struct ReplyStream(pub(crate) UnixStream);

impl Read for ReplyStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use nix::errno::Errno;
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use nix::sys::socket::{MsgFlags, recv};
        use std::os::fd::{AsFd, AsRawFd};
        loop {
            match recv(self.0.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => return Ok(n),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => {}
                Err(e) => return Err(e.into()),
            }
            let timeout = match self.0.read_timeout()? {
                None => PollTimeout::NONE,
                Some(d) => PollTimeout::try_from(d).unwrap_or(PollTimeout::MAX),
            };
            let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(0) => return Err(std::io::ErrorKind::WouldBlock.into()),
                // Readable, hung up or failed: the next recv says which.
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// One frame from `rd`.
pub(crate) fn read_frame(rd: &mut impl Read) -> Result<Frame> {
    let mut head = [0u8; 16];
    rd.read_exact(&mut head)?;
    let h = proto::parse_header(&head)?;
    let mut payload = vec![0u8; h.payload_len];
    rd.read_exact(&mut payload)?;
    Ok(Frame {
        op: h.op,
        id: h.id,
        payload,
    })
}

/// Send HELLO (request id 1) and read its answer. A daemon at its
/// connection cap answers with a Hello reply of id 0 and status Busy, then
/// closes: that is `Err(Status(Busy))`, also when the Hello could no longer
/// be sent.
pub(crate) fn greet(
    mut w: &UnixStream,
    rd: &mut impl Read,
    name: &[u8],
    version: u32,
) -> Result<ServerInfo> {
    let sent = w.write_all(&proto::frame(
        Op::Hello as u16,
        1,
        &request::hello_version(name, version)?,
    ));
    let f = match read_frame(rd) {
        Ok(f) => f,
        Err(e) => return Err(sent.err().map_or(e, ClientError::Io)),
    };
    if f.id == 0 && f.op == proto::reply_op(Op::Hello as u16) {
        let (st, _) = reply_of(&f)?;
        return Err(ClientError::Status(st));
    }
    if f.id != 1 {
        return Err(ClientError::Protocol(format!(
            "the greeting was answered with id {}",
            f.id
        )));
    }
    let (st, b) = reply_of(&f)?;
    reply::hello(&ok_body((st, b.to_vec()))?)
}

impl Client {
    /// Connect to the daemon at `socket` and greet it.
    pub fn connect(socket: &Path) -> Result<Client> {
        Self::connect_version(socket, proto::VERSION)
    }

    /// Connect and greet with protocol `version` (1 speaks the protocol as
    /// it was before the callback layer; for compatibility tests).
    pub fn connect_version(socket: &Path, version: u32) -> Result<Client> {
        let stream = UnixStream::connect(socket)?;
        let reader = std::io::BufReader::with_capacity(256 << 10, ReplyStream(stream.try_clone()?));
        let mut c = Client {
            stream,
            reader,
            queued: Vec::new(),
            next_id: 1,
            early: HashMap::new(),
            events: VecDeque::new(),
            info: ServerInfo {
                version: 0,
                max_frame: 0,
                max_inflight: 0,
                max_data: 0,
            },
        };
        c.info = greet(&c.stream, &mut c.reader, b"ringcache-client", version)?;
        c.next_id = 2;
        Ok(c)
    }

    /// What the daemon said in its greeting.
    pub fn server_info(&self) -> ServerInfo {
        self.info
    }

    /// The underlying socket (for tests that misbehave on purpose).
    pub fn stream(&mut self) -> &mut UnixStream {
        &mut self.stream
    }

    /// Send a request without waiting; returns its id.
    pub fn send(&mut self, op: Op, body: &[u8]) -> Result<u64> {
        let id = self.queue(op, body);
        self.flush()?;
        Ok(id)
    }

    /// Queue a request to go with the next [`Client::flush`], or when
    /// [`Client::recv`] has to wait for the daemon: many pipelined requests
    /// in one write.
    pub fn queue(&mut self, op: Op, body: &[u8]) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.queued
            .extend_from_slice(&proto::frame(op as u16, id, body));
        id
    }

    /// Send the queued requests.
    pub fn flush(&mut self) -> Result<()> {
        if !self.queued.is_empty() {
            let r = self.stream.write_all(&self.queued);
            self.queued.clear();
            r?;
        }
        Ok(())
    }

    pub(super) fn read_frame(&mut self) -> Result<Frame> {
        if self.reader.buffer().is_empty() {
            // About to wait for the daemon: it must have our requests.
            self.flush()?;
        }
        read_frame(&mut self.reader)
    }

    /// Wait for the reply to request `id` (queued requests are sent before
    /// it waits); returns its status and body.
    pub fn recv(&mut self, id: u64) -> Result<(Status, Vec<u8>)> {
        let f = loop {
            if let Some(f) = self.early.remove(&id) {
                break f;
            }
            let f = self.read_frame()?;
            // Events carry id 0; request ids start at 1.
            if f.id == 0 {
                self.events.push_back(f);
                continue;
            }
            if f.id == id {
                break f;
            }
            self.early.insert(f.id, f);
        };
        let (st, rest) = reply_of(&f)?;
        Ok((st, rest.to_vec()))
    }

    /// Wait for the next reply, whichever request it answers (queued
    /// requests are sent before it waits): (id, status, body). Replies that
    /// [`Client::recv`] set aside come first.
    pub fn recv_any(&mut self) -> Result<(u64, Status, Vec<u8>)> {
        let f = match self.early.keys().next().copied() {
            Some(id) => self.early.remove(&id),
            None => None,
        };
        let f = match f {
            Some(f) => f,
            None => loop {
                let f = self.read_frame()?;
                if f.id == 0 {
                    self.events.push_back(f);
                    continue;
                }
                break f;
            },
        };
        let (st, rest) = reply_of(&f)?;
        Ok((f.id, st, rest.to_vec()))
    }

    /// Send a request and wait for its reply; a status other than Ok is an
    /// error.
    pub fn call(&mut self, op: Op, body: &[u8]) -> Result<Vec<u8>> {
        let id = self.send(op, body)?;
        ok_body(self.recv(id)?)
    }

    /// Events pushed by the daemon so far.
    pub fn take_events(&mut self) -> Vec<Frame> {
        self.events.drain(..).collect()
    }

    pub fn ping(&mut self) -> Result<()> {
        self.call(Op::Ping, &[]).map(|_| ())
    }

    pub fn acquire_volume(&mut self, key: &[u8], aux: &[u8]) -> Result<VolumeHandle> {
        reply::volume(&self.call(Op::AcquireVolume, &request::acquire_volume(key, aux)?)?)
    }

    pub fn relinquish_volume(&mut self, v: VolumeHandle, invalidate: bool) -> Result<()> {
        self.call(
            Op::RelinquishVolume,
            &request::relinquish_volume(v, invalidate),
        )
        .map(|_| ())
    }

    pub fn acquire_cookie(
        &mut self,
        v: VolumeHandle,
        key: &[u8],
        aux: &[u8],
        size: u64,
    ) -> Result<CookieHandle> {
        reply::cookie(&self.call(
            Op::AcquireCookie,
            &request::acquire_cookie(v, key, aux, size)?,
        )?)
    }

    pub fn relinquish_cookie(&mut self, c: CookieHandle, retire: bool) -> Result<()> {
        self.call(Op::RelinquishCookie, &request::relinquish_cookie(c, retire))
            .map(|_| ())
    }

    pub fn use_cookie(&mut self, c: CookieHandle, will_modify: bool) -> Result<()> {
        self.call(Op::UseCookie, &request::use_cookie(c, will_modify))
            .map(|_| ())
    }

    pub fn unuse_cookie(
        &mut self,
        c: CookieHandle,
        aux: Option<&[u8]>,
        size: Option<u64>,
    ) -> Result<()> {
        self.call(Op::UnuseCookie, &request::unuse_cookie(c, aux, size)?)
            .map(|_| ())
    }

    /// The body of a READ request.
    pub fn read_request(c: CookieHandle, offset: u64, len: u32) -> Vec<u8> {
        request::read(c, offset, len)
    }

    /// Decode a READ reply.
    pub fn parse_read(status: Status, body: &[u8]) -> Result<ReadReply> {
        reply::read(status, body)
    }

    pub fn read(&mut self, c: CookieHandle, offset: u64, len: u32) -> Result<ReadReply> {
        let id = self.send(Op::Read, &request::read(c, offset, len))?;
        let (st, body) = self.recv(id)?;
        reply::read(st, &body)
    }

    /// Write; `Ok(Status::Ok)` when cached, `Ok(Dropped | Stale)` when not.
    pub fn write(&mut self, c: CookieHandle, offset: u64, data: &[u8]) -> Result<Status> {
        let id = self.send(Op::Write, &request::write(c, offset, data)?)?;
        reply::write(self.recv(id)?.0)
    }

    pub fn prepare_to_write(&mut self, c: CookieHandle) -> Result<()> {
        self.call(Op::PrepareToWrite, &request::cookie_only(c))
            .map(|_| ())
    }

    pub fn invalidate(&mut self, c: CookieHandle, aux: &[u8], size: u64) -> Result<()> {
        self.call(Op::Invalidate, &request::invalidate(c, aux, size)?)
            .map(|_| ())
    }

    pub fn resize(&mut self, c: CookieHandle, size: u64) -> Result<()> {
        self.call(Op::Resize, &request::resize(c, size)).map(|_| ())
    }

    pub fn query_occupancy(&mut self, c: CookieHandle) -> Result<Vec<(u64, u64)>> {
        reply::occupancy(&self.call(Op::QueryOccupancy, &request::cookie_only(c))?)
    }

    /// The daemon's counters as (name, value).
    pub fn stats(&mut self) -> Result<Vec<(String, u64)>> {
        reply::stats(&self.call(Op::Stats, &[])?)
    }

    /// The daemon's metrics in the Prometheus text format (a daemon too
    /// old to know the op answers `Status(UnknownOp)`).
    pub fn metrics(&mut self) -> Result<String> {
        reply::metrics(&self.call(Op::Metrics, &[])?)
    }
}

mod callback;
mod requests;
mod shared;
pub use callback::{Revalidation, ZapEvent};
pub use requests::{ReadWholeDone, Requests, append_whole};
pub use shared::SharedClient;

/// Request payloads, shared by the clients. A length that does not fit
/// its field (a name, key or aux over 65,535 bytes, data over 4 GiB) is an
/// error, never a silently truncated field.
pub mod request {
    use super::{ClientError, CookieHandle, Result, VolumeHandle};
    use crate::proto::{self, Writer};

    /// `n` as the field type `T`, or an error naming `what`.
    pub(crate) fn fits<T: TryFrom<usize>>(n: usize, what: &str) -> Result<T> {
        T::try_from(n)
            .map_err(|_| ClientError::Protocol(format!("{what} of {n} bytes is too long")))
    }

    /// HELLO.
    pub fn hello(name: &[u8]) -> Result<Vec<u8>> {
        hello_version(name, proto::VERSION)
    }
    /// HELLO for protocol `version`.
    pub fn hello_version(name: &[u8], version: u32) -> Result<Vec<u8>> {
        Ok(Writer::new()
            .bytes(&proto::MAGIC)
            .u32(version)
            .u32(0)
            .u16(fits(name.len(), "a client name")?)
            .bytes(name)
            .finish())
    }
    pub fn acquire_volume(key: &[u8], aux: &[u8]) -> Result<Vec<u8>> {
        Ok(Writer::new()
            .u16(fits(key.len(), "a volume key")?)
            .u16(fits(aux.len(), "coherency data")?)
            .bytes(key)
            .bytes(aux)
            .finish())
    }
    pub fn relinquish_volume(v: VolumeHandle, invalidate: bool) -> Vec<u8> {
        Writer::new().u32(v.0).u8(u8::from(invalidate)).finish()
    }
    pub fn acquire_cookie(v: VolumeHandle, key: &[u8], aux: &[u8], size: u64) -> Result<Vec<u8>> {
        Ok(Writer::new()
            .u32(v.0)
            .u16(fits(key.len(), "an object key")?)
            .u16(fits(aux.len(), "coherency data")?)
            .u64(size)
            .bytes(key)
            .bytes(aux)
            .finish())
    }
    pub fn relinquish_cookie(c: CookieHandle, retire: bool) -> Vec<u8> {
        Writer::new().u32(c.0).u8(u8::from(retire)).finish()
    }
    pub fn use_cookie(c: CookieHandle, will_modify: bool) -> Vec<u8> {
        Writer::new().u32(c.0).u8(u8::from(will_modify)).finish()
    }
    pub fn unuse_cookie(c: CookieHandle, aux: Option<&[u8]>, size: Option<u64>) -> Result<Vec<u8>> {
        let flags = u8::from(aux.is_some()) | (u8::from(size.is_some()) << 1);
        let aux = aux.unwrap_or(&[]);
        Ok(Writer::new()
            .u32(c.0)
            .u8(flags)
            .u16(fits(aux.len(), "coherency data")?)
            .u64(size.unwrap_or(0))
            .bytes(aux)
            .finish())
    }
    pub fn read(c: CookieHandle, offset: u64, len: u32) -> Vec<u8> {
        Writer::new().u32(c.0).u32(len).u64(offset).finish()
    }
    pub fn write(c: CookieHandle, offset: u64, data: &[u8]) -> Result<Vec<u8>> {
        Ok(Writer::new()
            .u32(c.0)
            .u32(fits(data.len(), "a write")?)
            .u64(offset)
            .bytes(data)
            .finish())
    }
    pub fn cookie_only(c: CookieHandle) -> Vec<u8> {
        Writer::new().u32(c.0).finish()
    }
    pub fn invalidate(c: CookieHandle, aux: &[u8], size: u64) -> Result<Vec<u8>> {
        Ok(Writer::new()
            .u32(c.0)
            .u16(fits(aux.len(), "coherency data")?)
            .u16(0)
            .u64(size)
            .bytes(aux)
            .finish())
    }
    pub fn resize(c: CookieHandle, size: u64) -> Vec<u8> {
        Writer::new().u32(c.0).u32(0).u64(size).finish()
    }
}

/// Reply decoding, shared by the blocking and the async client. Every
/// read is bounds-checked: a misbehaving daemon gives an error, not a panic.
pub mod reply {
    use super::{
        ClientError, CookieHandle, ReadReply, ReadSegment, Result, ServerInfo, VolumeHandle,
    };
    use crate::proto::{Reader, SEG_DATA, Status};

    pub fn hello(body: &[u8]) -> Result<ServerInfo> {
        let mut r = Reader::new(body);
        Ok(ServerInfo {
            version: r.u32()?,
            max_frame: r.u32()?,
            max_inflight: r.u32()?,
            max_data: r.u32()?,
        })
    }
    pub fn volume(body: &[u8]) -> Result<VolumeHandle> {
        Ok(VolumeHandle(Reader::new(body).u32()?))
    }
    pub fn cookie(body: &[u8]) -> Result<CookieHandle> {
        Ok(CookieHandle(Reader::new(body).u32()?))
    }
    pub fn write(status: Status) -> Result<Status> {
        match status {
            Status::Ok | Status::Dropped | Status::Stale => Ok(status),
            st => Err(ClientError::Status(st)),
        }
    }
    pub fn read(status: Status, body: &[u8]) -> Result<ReadReply> {
        match status {
            Status::Ok => {}
            Status::NoData => return Ok(ReadReply::NoData),
            Status::Stale => return Ok(ReadReply::Stale),
            Status::Revalidate => return Ok(ReadReply::Revalidate),
            st => return Err(ClientError::Status(st)),
        }
        let mut r = Reader::new(body);
        let n = r.u32()? as usize;
        let mut table = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let kind = r.u8()?;
            let _ = r.u8()?;
            let _ = r.u16()?;
            let len = r.u32()?;
            let offset = r.u64()?;
            table.push((kind, len, offset));
        }
        let mut segs = Vec::with_capacity(table.len());
        for (kind, len, offset) in table {
            if kind == SEG_DATA {
                segs.push(ReadSegment::Data {
                    offset,
                    data: r.bytes(len as usize)?.to_vec(),
                });
            } else {
                segs.push(ReadSegment::Hole {
                    offset,
                    len: u64::from(len),
                });
            }
        }
        r.end()?;
        Ok(ReadReply::Data(segs))
    }
    pub fn occupancy(body: &[u8]) -> Result<Vec<(u64, u64)>> {
        let mut rd = Reader::new(body);
        let n = rd.u32()? as usize;
        let mut v = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            v.push((rd.u64()?, rd.u64()?));
        }
        rd.end()?;
        Ok(v)
    }
    pub fn stats(body: &[u8]) -> Result<Vec<(String, u64)>> {
        let mut rd = Reader::new(body);
        let n = rd.u32()? as usize;
        let mut v = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            let l = rd.u8()? as usize;
            let name = String::from_utf8_lossy(rd.bytes(l)?).into_owned();
            v.push((name, rd.u64()?));
        }
        rd.end()?;
        Ok(v)
    }
    pub fn metrics(body: &[u8]) -> Result<String> {
        let mut rd = Reader::new(body);
        let n = rd.u32()? as usize;
        let text = rd.bytes(n)?;
        rd.end()?;
        String::from_utf8(text.to_vec())
            .map_err(|_| ClientError::Protocol("the metrics text is not UTF-8".into()))
    }
}

#[cfg(feature = "async-client")]
mod async_client;
#[cfg(feature = "async-client")]
pub use async_client::AsyncClient;

#[cfg(test)]
mod reply_stream_tests {
    use super::ReplyStream;
    use std::io::{ErrorKind, Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    /// Voluntary context switches of the calling thread so far.
    fn sleeps() -> u64 {
        let s = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// A request sent, then a wait for its reply while the peer takes the
    /// request in and answers later: how many times the waiting thread
    /// slept while it waited.
    fn sleeps_waiting(wrap: bool) -> u64 {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let waiter = std::thread::spawn(move || {
            (&ours).write_all(&[7u8; 4096]).unwrap();
            let mut rd: Box<dyn Read> = if wrap {
                Box::new(ReplyStream(ours))
            } else {
                Box::new(ours)
            };
            let before = sleeps();
            let mut b = [0u8; 1];
            rd.read_exact(&mut b).unwrap();
            assert_eq!(b[0], 9);
            sleeps() - before
        });
        // The waiter is asleep by now; taking its request in frees its
        // send space (a wakeup of a thread in recv), the reply comes later.
        std::thread::sleep(Duration::from_millis(100));
        let mut req = [0u8; 4096];
        theirs.read_exact(&mut req).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        theirs.write_all(&[9]).unwrap();
        waiter.join().unwrap()
    }

    #[test]
    fn waiting_for_a_reply_is_not_woken_by_the_peer_taking_the_request() {
        let n = sleeps_waiting(true);
        // One sleep, until the reply (a blocking recv sleeps twice: it is
        // woken when the request is taken in, and sleeps again).
        assert_eq!(n, 1, "the waiter slept {n} times");
        eprintln!(
            "(a plain blocking recv slept {} times)",
            sleeps_waiting(false)
        );
    }

    #[test]
    fn the_socket_read_timeout_still_bounds_a_wait_and_a_hangup_is_the_end() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut rd = ReplyStream(ours);
        let mut b = [0u8; 8];
        let e = rd.read(&mut b).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::WouldBlock);
        (&theirs).write_all(b"abc").unwrap();
        assert_eq!(rd.read(&mut b).unwrap(), 3);
        assert_eq!(&b[..3], b"abc");
        drop(theirs);
        assert_eq!(rd.read(&mut b).unwrap(), 0);
    }
}
