//! Frames: reading them whole (a deadline once a frame has begun, none
//! while idle; buffered, since pipelined requests arrive many to a read),
//! and writing replies whole.

use std::io::{IoSlice, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::FRAME_TIMEOUT;
use super::lifecycle::Stop;
use super::server::lock;
use crate::proto::{self, Status};

/// Why a connection's frames stopped.
pub(super) enum FrameEnd {
    /// The peer closed (or shutdown) between frames.
    Closed,
    /// A frame that cannot be trusted: bad header, cut short, or not
    /// completed within [`FRAME_TIMEOUT`].
    Bad,
}

/// Bytes a connection's frame reader keeps: pipelined requests arrive many
/// to a read(2); a larger frame grows it for as long as it is read.
pub(super) const READ_BUF_BYTES: usize = 64 << 10;

/// Frames from a connection, read in large pieces: pipelined requests
/// arrive many to a read(2).
pub(super) struct FrameReader {
    pub(super) stream: UnixStream,
    pub(super) buf: Vec<u8>,
    pub(super) start: usize,
    pub(super) end: usize,
    /// A read timeout is set on the socket (only while a frame is part
    /// way in).
    pub(super) timeout_set: bool,
    /// The last read without waiting took less than there was room for:
    /// the socket had nothing more then. The next frame is not asked of
    /// the socket (a recv(2) that would find nothing) until [`wait`]
    /// sees it readable; the caller always waits there before sleeping,
    /// and that poll(2) returns at once for bytes that came since.
    ///
    /// [`wait`]: FrameReader::wait
    drained: bool,
}

/// What ended a [`FrameReader::wait`].
pub(super) enum Woke {
    /// Something is ready; `wake`: the caller's eventfd among it (to be
    /// read back to zero).
    Ready { wake: bool },
    /// Shutdown began and nothing came for
    /// [`DRAIN_QUIET`](super::lifecycle::DRAIN_QUIET).
    Quiet,
}

impl FrameReader {
    pub(super) fn new(stream: UnixStream) -> FrameReader {
        FrameReader {
            stream,
            buf: vec![0; READ_BUF_BYTES],
            start: 0,
            end: 0,
            timeout_set: false,
            drained: false,
        }
    }

    /// Read more bytes, making room for `need` buffered ones first.
    /// Returns the bytes read (0 at end of stream).
    pub(super) fn fill(&mut self, need: usize) -> std::io::Result<usize> {
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

    /// Read what the socket has without waiting, into an empty buffer:
    /// `None` when it has nothing yet.
    fn fill_now(&mut self) -> std::io::Result<Option<usize>> {
        use nix::sys::socket::{MsgFlags, recv};
        use std::os::fd::AsRawFd;
        loop {
            let end = self.end;
            let room = self.buf.get_mut(end..).unwrap_or_default();
            let room_len = room.len();
            match recv(self.stream.as_raw_fd(), room, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => {
                    // (0, the end of the stream, is not "drained": it is
                    // reported now.)
                    self.drained = n > 0 && n < room_len;
                    self.end += n;
                    return Ok(Some(n));
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Have `n` bytes buffered, waiting until `deadline` at most.
    pub(super) fn want(&mut self, n: usize, deadline: Instant) -> Result<(), FrameEnd> {
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

    /// Sleep until the socket has bytes (when `socket`; otherwise the
    /// caller does not want more requests yet), `wake` or `ring` poll
    /// readable, or shutdown begins.
    pub(super) fn wait(
        &mut self,
        stop: &Stop,
        socket: bool,
        wake: std::os::fd::BorrowedFd<'_>,
        ring: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> std::io::Result<Woke> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let draining = stop.began();
        let timeout = if draining {
            PollTimeout::try_from(stop.quiet_left()).unwrap_or(PollTimeout::ZERO)
        } else {
            PollTimeout::NONE
        };
        let (ready, sock_ready, wake_ready) = {
            let sock = self.stream.as_fd();
            // The socket when wanted, the shutdown eventfd unless draining
            // (it stays readable then), the caller's eventfd and ring; `at`
            // says where each wanted one sits in the set.
            let wanted = [
                socket.then_some(sock),
                (!draining).then_some(stop.fd()),
                Some(wake),
                ring,
            ];
            let mut set = wanted.map(|fd| PollFd::new(fd.unwrap_or(sock), PollFlags::POLLIN));
            let mut at = [None; 4];
            let mut used = 0;
            for (i, fd) in wanted.iter().enumerate() {
                if fd.is_some() {
                    set.swap(used, i);
                    at[i] = Some(used);
                    used += 1;
                }
            }
            let n = loop {
                match poll(&mut set[..used], timeout) {
                    Ok(n) => break n,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            };
            let fired = |i: usize| {
                at[i]
                    .and_then(|j| set[j].revents())
                    .is_some_and(|r| !r.is_empty())
            };
            (n > 0, fired(0), fired(2))
        };
        if sock_ready {
            // Bytes (or a hangup) to take: the next `next_ready` reads.
            self.drained = false;
        }
        Ok(if ready || !draining {
            Woke::Ready { wake: wake_ready }
        } else {
            Woke::Quiet
        })
    }

    /// The next frame if one has begun to arrive: whatever the socket has
    /// is taken without waiting (`None`: nothing yet), and a frame begun is
    /// then given [`FRAME_TIMEOUT`] to arrive whole. The payload is
    /// borrowed from the reader's buffer (no copy, no allocation) until
    /// the next call.
    pub(super) fn next_ready(&mut self) -> Result<Option<(proto::Header, &[u8])>, FrameEnd> {
        if self.start == self.end {
            // Everything buffered was handed out: start over at the front
            // (and give back what a large write grew the buffer to).
            self.start = 0;
            self.end = 0;
            if self.buf.len() > READ_BUF_BYTES {
                self.buf.truncate(READ_BUF_BYTES);
                self.buf.shrink_to_fit();
            }
            if self.timeout_set {
                if self.stream.set_read_timeout(None).is_err() {
                    return Err(FrameEnd::Bad);
                }
                self.timeout_set = false;
            }
            if self.drained {
                return Ok(None);
            }
            match self.fill_now() {
                Ok(Some(0)) | Err(_) => return Err(FrameEnd::Closed),
                Ok(Some(_)) => {}
                Ok(None) => return Ok(None),
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
        self.start = at + h.payload_len;
        let payload = self.buf.get(at..self.start).ok_or(FrameEnd::Bad)?;
        Ok(Some((h, payload)))
    }
}

/// One reply frame with a status and a body.
pub(super) fn reply_frame(op: u16, id: u64, status: Status, body: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(4 + body.len());
    payload.extend_from_slice(&(status as u16).to_le_bytes());
    payload.extend_from_slice(&0u16.to_le_bytes());
    payload.extend_from_slice(body);
    proto::frame(proto::reply_op(op), id, &payload)
}

/// The write side of a connection: replies and events, whole frames at a
/// time (a write that fails marks the connection broken).
pub(super) struct ReplyWriter {
    pub(super) stream: Mutex<UnixStream>,
    /// A write failed: the peer is gone, later replies are dropped.
    pub(super) broken: AtomicBool,
}

impl ReplyWriter {
    pub(super) fn send(&self, bytes: &[u8]) {
        self.send_vectored(&mut [IoSlice::new(bytes)]);
    }

    pub(super) fn send_vectored(&self, mut slices: &mut [IoSlice<'_>]) {
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

#[cfg(test)]
mod tests {
    use super::{FrameEnd, FrameReader, Woke};
    use crate::daemon::lifecycle::Stop;
    use crate::proto::{self, Op};
    use nix::sys::eventfd::{EfdFlags, EventFd};
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    fn ping(id: u64) -> Vec<u8> {
        proto::frame(Op::Ping as u16, id, &[])
    }

    fn next_id(r: &mut FrameReader) -> Result<Option<u64>, FrameEnd> {
        r.next_ready().map(|f| f.map(|(h, _)| h.id))
    }

    /// After a read that emptied the socket, the next frame is not asked
    /// of it (no recv that would find nothing) until a wait sees it
    /// readable; that wait returns at once for bytes that came meanwhile,
    /// and for the peer hanging up.
    #[test]
    fn a_drained_socket_is_read_again_after_the_wait_that_sees_it_readable() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut r = FrameReader::new(ours);
        let stop = Stop::new().unwrap();
        let wake = EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK).unwrap();
        (&theirs).write_all(&[ping(1), ping(2)].concat()).unwrap();
        assert!(matches!(next_id(&mut r), Ok(Some(1))));
        assert!(matches!(next_id(&mut r), Ok(Some(2))));
        (&theirs).write_all(&ping(3)).unwrap();
        assert!(matches!(next_id(&mut r), Ok(None)), "drained: not read yet");
        let woke = r.wait(&stop, true, wake.as_fd(), None).unwrap();
        assert!(matches!(woke, Woke::Ready { wake: false }));
        assert!(matches!(next_id(&mut r), Ok(Some(3))));
        drop(theirs);
        assert!(matches!(next_id(&mut r), Ok(None)));
        assert!(matches!(
            r.wait(&stop, true, wake.as_fd(), None).unwrap(),
            Woke::Ready { .. }
        ));
        assert!(matches!(next_id(&mut r), Err(FrameEnd::Closed)));
    }

    /// The eventfd among what woke the wait is said so (the caller reads
    /// it back to zero only then).
    #[test]
    fn a_wait_says_when_the_eventfd_woke_it() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let mut r = FrameReader::new(ours);
        let stop = Stop::new().unwrap();
        let wake = EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK).unwrap();
        wake.write(1).unwrap();
        let woke = r.wait(&stop, true, wake.as_fd(), None).unwrap();
        assert!(matches!(woke, Woke::Ready { wake: true }));
    }
}
