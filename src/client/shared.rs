//! [`SharedClient`]: one connection to the daemon used by many threads at
//! once (a FUSE client's worker threads). Each call sends its request
//! under the writer's lock and waits for its own reply; a reader thread
//! routes replies by request id and hands events (id 0) to a channel.
//!
//! When the connection fails, every waiting call and every later one gets
//! an error ([`ClientError::Io`], `BrokenPipe`); the client does not
//! reconnect by itself: make a new one.

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::callback::{body, parse};
use super::{
    ClientError, CookieHandle, Frame, ReadReply, Result, Revalidation, ServerInfo, VolumeHandle,
    ok_body, reply, reply_of, request,
};
use crate::proto::{self, Op, Status, TOKEN_BYTES, Writer};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn closed(why: &str) -> ClientError {
    ClientError::Io(std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        format!("connection to the daemon lost: {why}"),
    ))
}

#[derive(Default)]
struct Routes {
    waiting: HashMap<u64, SyncSender<Frame>>,
    /// Why the connection is unusable, once it is.
    dead: Option<String>,
}

struct Inner {
    writer: Mutex<UnixStream>,
    next_id: AtomicU64,
    routes: Mutex<Routes>,
}

impl Inner {
    fn kill(&self, why: String) {
        let mut r = lock(&self.routes);
        if r.dead.is_none() {
            r.dead = Some(why);
        }
        // Dropping the senders wakes every waiter with an error.
        r.waiting.clear();
    }
}

/// A connection to the daemon shared by many threads.
pub struct SharedClient {
    inner: Arc<Inner>,
    info: ServerInfo,
    events: Mutex<Option<Receiver<Frame>>>,
    reader: Mutex<Option<JoinHandle<()>>>,
}

impl SharedClient {
    /// Connect to the daemon at `socket` and greet it as `name`.
    pub fn connect(socket: &Path, name: &[u8]) -> Result<SharedClient> {
        let stream = UnixStream::connect(socket)?;
        let mut rd = BufReader::with_capacity(256 << 10, stream.try_clone()?);
        // The greeting, before the reader thread starts.
        let mut w = &stream;
        w.write_all(&proto::frame(Op::Hello as u16, 1, &request::hello(name)))?;
        let f = read_frame(&mut rd)?;
        if f.id != 1 {
            return Err(ClientError::Protocol(format!(
                "the greeting was answered with id {}",
                f.id
            )));
        }
        let (st, b) = reply_of(&f)?;
        let info = reply::hello(&ok_body((st, b.to_vec()))?)?;
        let inner = Arc::new(Inner {
            writer: Mutex::new(stream),
            next_id: AtomicU64::new(2),
            routes: Mutex::new(Routes::default()),
        });
        let (tx, rx) = channel();
        let reader = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("ringcache-client".into())
                .spawn(move || {
                    let why = route(&inner, &mut rd, &tx);
                    inner.kill(why);
                })?
        };
        Ok(SharedClient {
            inner,
            info,
            events: Mutex::new(Some(rx)),
            reader: Mutex::new(Some(reader)),
        })
    }

    /// What the daemon said in its greeting.
    pub fn server_info(&self) -> ServerInfo {
        self.info
    }

    /// The events the daemon pushes (zaps); one receiver, taken once.
    pub fn take_events(&self) -> Option<Receiver<Frame>> {
        lock(&self.events).take()
    }

    /// Whether the connection has failed.
    pub fn is_dead(&self) -> bool {
        lock(&self.inner.routes).dead.is_some()
    }

    /// Send a request and wait for its reply: (status, body).
    pub fn request(&self, op: Op, body: &[u8]) -> Result<(Status, Vec<u8>)> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = sync_channel(1);
        {
            let mut r = lock(&self.inner.routes);
            if let Some(why) = &r.dead {
                return Err(closed(why));
            }
            r.waiting.insert(id, tx);
        }
        let sent = {
            let mut w = lock(&self.inner.writer);
            w.write_all(&proto::frame(op as u16, id, body))
        };
        if let Err(e) = sent {
            lock(&self.inner.routes).waiting.remove(&id);
            self.inner.kill(format!("sending: {e}"));
            return Err(e.into());
        }
        match rx.recv() {
            Ok(f) => {
                let (st, b) = reply_of(&f)?;
                Ok((st, b.to_vec()))
            }
            Err(_) => {
                let why = lock(&self.inner.routes)
                    .dead
                    .clone()
                    .unwrap_or_else(|| "closed".into());
                Err(closed(&why))
            }
        }
    }

    /// A request whose status must be Ok.
    pub fn call(&self, op: Op, body: &[u8]) -> Result<Vec<u8>> {
        ok_body(self.request(op, body)?)
    }

    pub fn acquire_volume(&self, key: &[u8], aux: &[u8]) -> Result<VolumeHandle> {
        reply::volume(&self.call(Op::AcquireVolume, &request::acquire_volume(key, aux))?)
    }

    pub fn relinquish_volume(&self, v: VolumeHandle, invalidate: bool) -> Result<()> {
        self.call(
            Op::RelinquishVolume,
            &request::relinquish_volume(v, invalidate),
        )
        .map(|_| ())
    }

    pub fn acquire_cookie(
        &self,
        v: VolumeHandle,
        key: &[u8],
        aux: &[u8],
        size: u64,
    ) -> Result<CookieHandle> {
        reply::cookie(&self.call(
            Op::AcquireCookie,
            &request::acquire_cookie(v, key, aux, size),
        )?)
    }

    pub fn relinquish_cookie(&self, c: CookieHandle, retire: bool) -> Result<()> {
        self.call(Op::RelinquishCookie, &request::relinquish_cookie(c, retire))
            .map(|_| ())
    }

    pub fn use_cookie(&self, c: CookieHandle, will_modify: bool) -> Result<()> {
        self.call(Op::UseCookie, &request::use_cookie(c, will_modify))
            .map(|_| ())
    }

    pub fn unuse_cookie(&self, c: CookieHandle) -> Result<()> {
        self.call(Op::UnuseCookie, &request::unuse_cookie(c, None, None))
            .map(|_| ())
    }

    pub fn read(&self, c: CookieHandle, offset: u64, len: u32) -> Result<ReadReply> {
        let (st, body) = self.request(Op::Read, &request::read(c, offset, len))?;
        reply::read(st, &body)
    }

    pub fn query_occupancy(&self, c: CookieHandle) -> Result<Vec<(u64, u64)>> {
        reply::occupancy(&self.call(Op::QueryOccupancy, &request::cookie_only(c))?)
    }

    pub fn stats(&self) -> Result<Vec<(String, u64)>> {
        reply::stats(&self.call(Op::Stats, &[])?)
    }

    /// The volume `v` is an export of `server`, now at `epoch`.
    pub fn declare_server(&self, v: VolumeHandle, server: &[u8], epoch: u64) -> Result<()> {
        self.call(Op::DeclareServer, &body::declare_server(v, server, epoch)?)
            .map(|_| ())
    }

    /// A fetch token for `c`: take it before asking the server.
    pub fn begin_fetch(&self, c: CookieHandle) -> Result<[u8; TOKEN_BYTES]> {
        parse::token(&self.call(Op::BeginFetch, &request::cookie_only(c))?)
    }

    /// The data version cached under a valid promise, or `None`.
    pub fn validate(&self, c: CookieHandle) -> Result<Option<u64>> {
        parse::validate(self.request(Op::Validate, &request::cookie_only(c))?)
    }

    /// The server says the file is at `data_version`, `size` bytes.
    pub fn revalidate(
        &self,
        c: CookieHandle,
        token: &[u8; TOKEN_BYTES],
        data_version: u64,
        size: u64,
        valid_ms: u32,
    ) -> Result<Revalidation> {
        let b = body::revalidate(c, token, data_version, size, valid_ms);
        parse::revalidation(&self.call(Op::Revalidate, &b)?)
    }

    /// Cache data fetched from the server under `token`.
    pub fn write_fetched(
        &self,
        c: CookieHandle,
        token: &[u8; TOKEN_BYTES],
        data_version: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<Status> {
        let b = body::write_fetched(c, token, data_version, offset, data)?;
        reply::write(self.request(Op::WriteFetched, &b)?.0)
    }

    /// The server broke its promises on these files of volume `v`.
    pub fn break_files(&self, v: VolumeHandle, keys: &[&[u8]]) -> Result<u32> {
        parse::count(&self.call(Op::BreakFiles, &body::break_files(v, keys)?)?)
    }

    /// The server of volume `v` broke all its promises.
    pub fn break_server(&self, v: VolumeHandle) -> Result<()> {
        self.call(Op::BreakServer, &Writer::new().u32(v.0).finish())
            .map(|_| ())
    }

    /// Returns once every acknowledged write is on the device.
    pub fn flush_cache(&self) -> Result<()> {
        self.call(Op::Flush, &[]).map(|_| ())
    }
}

impl Drop for SharedClient {
    fn drop(&mut self) {
        let _ = lock(&self.inner.writer).shutdown(std::net::Shutdown::Both);
        if let Some(t) = lock(&self.reader).take() {
            let _ = t.join();
        }
    }
}

fn read_frame(rd: &mut impl Read) -> Result<Frame> {
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

/// The reader: routes replies until the connection fails; returns why.
fn route(inner: &Inner, rd: &mut impl Read, events: &std::sync::mpsc::Sender<Frame>) -> String {
    loop {
        let f = match read_frame(rd) {
            Ok(f) => f,
            Err(e) => return e.to_string(),
        };
        if f.id == 0 {
            // Nobody listening is fine: events may be ignored.
            let _ = events.send(f);
            continue;
        }
        let tx = lock(&inner.routes).waiting.remove(&f.id);
        match tx {
            Some(tx) => {
                let _ = tx.send(f);
            }
            None => return format!("a reply to request {} that was not sent", f.id),
        }
    }
}
