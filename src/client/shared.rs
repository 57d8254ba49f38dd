//! [`SharedClient`]: one connection to the daemon used by many threads at
//! once (a FUSE client's worker threads). Each call sends its request
//! under the writer's lock and waits for its own reply; a reader thread
//! routes replies by request id and hands events (id 0) to a channel. The
//! typed requests are those of [`Requests`].
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

use super::{ClientError, Frame, Requests, Result, ServerInfo, greet, read_frame, reply_of};
use crate::proto::{self, Op, Status};

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
        let mut rd = BufReader::with_capacity(256 << 10, super::ReplyStream(stream.try_clone()?));
        // The greeting, before the reader thread starts.
        let info = greet(&stream, &mut rd, name, proto::VERSION)?;
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
}

impl Requests for SharedClient {
    fn request(&self, op: Op, body: &[u8]) -> Result<(Status, Vec<u8>)> {
        SharedClient::request(self, op, body)
    }

    fn is_dead(&self) -> bool {
        SharedClient::is_dead(self)
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
