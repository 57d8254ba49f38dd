//! Promises, breaks and owed breaks, and what the server keeps per client
//! (its connection, its break numbers, its kept replies).
//!
//! Lock order: `files` and `clients` are never held together; a
//! connection's writer lock is taken with neither held.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::wire::{
    BREAK_FLAG_OWED, Break, BreakReason, BreakScope, FileId, Header, Kind, Status, encode_error,
    frame,
};

/// A client's persistent id.
pub type ClientKey = [u8; 16];

/// Owed breaks beyond this collapse into one whole-server break.
pub const MAX_OWED: usize = 1024;
/// How much longer the server keeps a promise record than it promises.
pub const PROMISE_GRACE: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Replies queued per connection before the worker waits (back-pressure).
const MAX_QUEUED_REPLIES: usize = 8;
/// Urgent frames (breaks, pongs, errors) queued per connection; beyond
/// this a break is not sent (it becomes owed).
const MAX_QUEUED_URGENT: usize = 4096;

#[derive(Default)]
struct OutQ {
    urgent: VecDeque<Vec<u8>>,
    replies: VecDeque<Vec<u8>>,
    closing: bool,
    dead: bool,
}

#[derive(Default)]
struct Outbox {
    q: Mutex<OutQ>,
    cv: Condvar,
}

/// The sending side of a connection: a writer thread drains two queues,
/// urgent frames first, so a break is never held up behind replies and
/// never blocks the thread that breaks.
pub struct Conn {
    out: Arc<Outbox>,
    /// Another handle on the socket, to shut it down.
    ctl: TcpStream,
    pub gen_: u64,
}

impl Conn {
    pub fn new(stream: TcpStream, gen_: u64) -> io::Result<Conn> {
        let ctl = stream.try_clone()?;
        let out = Arc::new(Outbox::default());
        {
            let out = out.clone();
            let ctl = stream.try_clone()?;
            std::thread::Builder::new()
                .name("ringfs-writer".into())
                .spawn(move || write_loop(&out, stream, &ctl))?;
        }
        Ok(Conn { out, ctl, gen_ })
    }

    /// Queues a reply, waiting while too many are queued.
    pub fn send(&self, frame: Vec<u8>) -> io::Result<()> {
        let mut q = lock(&self.out.q);
        while q.replies.len() >= MAX_QUEUED_REPLIES && !q.dead && !q.closing {
            q = self.out.cv.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        if q.dead || q.closing {
            return Err(io::ErrorKind::NotConnected.into());
        }
        q.replies.push_back(frame);
        self.out.cv.notify_all();
        Ok(())
    }

    /// Queues an urgent frame without waiting; false if it was not queued.
    pub fn send_urgent(&self, frame: Vec<u8>) -> bool {
        let mut q = lock(&self.out.q);
        if q.dead || q.closing || q.urgent.len() >= MAX_QUEUED_URGENT {
            return false;
        }
        q.urgent.push_back(frame);
        self.out.cv.notify_all();
        true
    }

    /// Sends what is queued, then shuts the socket down (its reader then
    /// ends).
    pub fn close(&self) {
        lock(&self.out.q).closing = true;
        self.out.cv.notify_all();
    }

    /// Shuts the socket down at once.
    pub fn abort(&self) {
        lock(&self.out.q).dead = true;
        self.out.cv.notify_all();
        let _ = self.ctl.shutdown(Shutdown::Both);
    }

    pub fn is_closed(&self) -> bool {
        let q = lock(&self.out.q);
        q.closing || q.dead
    }
}

fn write_loop(out: &Outbox, mut stream: TcpStream, ctl: &TcpStream) {
    loop {
        let frame = {
            let mut q = lock(&out.q);
            loop {
                if q.dead {
                    break None;
                }
                if let Some(f) = q.urgent.pop_front() {
                    break Some(f);
                }
                if let Some(f) = q.replies.pop_front() {
                    out.cv.notify_all();
                    break Some(f);
                }
                if q.closing {
                    break None;
                }
                q = out.cv.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        let Some(f) = frame else { break };
        if stream.write_all(&f).is_err() {
            break;
        }
    }
    let mut q = lock(&out.q);
    q.dead = true;
    q.urgent.clear();
    q.replies.clear();
    drop(q);
    out.cv.notify_all();
    let _ = ctl.shutdown(Shutdown::Both);
}

/// A kept reply's slot.
enum Slot {
    InProgress,
    Done(Arc<Vec<u8>>),
}

/// Replies of kept ops of one client incarnation, by `seq`.
#[derive(Default)]
pub struct Kept {
    slots: Mutex<BTreeMap<u64, Slot>>,
    done: Condvar,
}

/// What to do with a kept op.
pub enum KeptState {
    /// Apply it; then [`Kept::finish`].
    New,
    /// Already applied: send this reply payload again.
    Done(Arc<Vec<u8>>),
    /// Too many kept replies: answer `Busy`, apply nothing.
    Full,
}

impl Kept {
    /// Claims `seq`, or waits for the copy being served and returns its
    /// reply.
    pub fn begin(&self, seq: u64, max_kept: usize) -> KeptState {
        let mut s = lock(&self.slots);
        loop {
            match s.get(&seq) {
                Some(Slot::Done(r)) => return KeptState::Done(r.clone()),
                Some(Slot::InProgress) => {
                    s = self.done.wait(s).unwrap_or_else(|p| p.into_inner());
                }
                None if s.len() >= max_kept => return KeptState::Full,
                None => {
                    s.insert(seq, Slot::InProgress);
                    return KeptState::New;
                }
            }
        }
    }

    pub fn finish(&self, seq: u64, reply: Arc<Vec<u8>>) {
        lock(&self.slots).insert(seq, Slot::Done(reply));
        self.done.notify_all();
    }

    /// The client has the replies up to `ack`.
    pub fn release(&self, ack: u64) {
        let mut s = lock(&self.slots);
        // Keep slots in progress: their copy is still being served.
        let keep = s.split_off(&(ack.saturating_add(1)));
        let old = std::mem::replace(&mut *s, keep);
        for (seq, slot) in old {
            if matches!(slot, Slot::InProgress) {
                s.insert(seq, slot);
            }
        }
    }

    pub fn len(&self) -> usize {
        lock(&self.slots).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct PendingBreak {
    scope: BreakScope,
    reason: BreakReason,
    deadline: Instant,
    conn_gen: u64,
}

/// What the server keeps of one client.
pub struct ClientState {
    pub incarnation: u64,
    pub name: String,
    pub conn: Option<Arc<Conn>>,
    conn_gen: u64,
    next_break: u64,
    pending: HashMap<u64, PendingBreak>,
    owed_files: HashMap<FileId, BreakReason>,
    owed_all: Option<BreakReason>,
    pub kept: Arc<Kept>,
    /// The client's reply watermark.
    pub ack: u64,
    /// The highest request seq received.
    pub received: u64,
    disconnected_at: Option<Instant>,
}

impl ClientState {
    fn new(incarnation: u64, name: String) -> ClientState {
        ClientState {
            incarnation,
            name,
            conn: None,
            conn_gen: 0,
            next_break: 1,
            pending: HashMap::new(),
            owed_files: HashMap::new(),
            owed_all: None,
            kept: Arc::new(Kept::default()),
            ack: 0,
            received: 0,
            disconnected_at: None,
        }
    }

    fn owe(&mut self, scope: BreakScope, reason: BreakReason) {
        match scope {
            BreakScope::All => {
                self.owed_all = Some(reason);
                self.owed_files.clear();
            }
            BreakScope::File(_) if self.owed_all.is_some() => {}
            BreakScope::File(f) => {
                self.owed_files.insert(f, reason);
                if self.owed_files.len() > MAX_OWED {
                    self.owed_files.clear();
                    self.owed_all = Some(BreakReason::OwedCollapsed);
                }
            }
        }
    }

    /// Pending breaks sent on an older connection, or unacknowledged past
    /// their deadline, become owed.
    fn settle(&mut self, now: Instant) {
        let gen_ = self.conn_gen;
        let late: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now || p.conn_gen != gen_)
            .map(|(s, _)| *s)
            .collect();
        for s in late {
            if let Some(p) = self.pending.remove(&s) {
                self.owe(p.scope, p.reason);
            }
        }
    }

    fn owes(&self) -> bool {
        self.owed_all.is_some() || !self.owed_files.is_empty()
    }
}

#[derive(Default)]
struct FileState {
    /// Client → until when its promise record lasts.
    holders: HashMap<ClientKey, Instant>,
    /// Changes in progress.
    changing: u32,
    /// Bumped when a change begins and when it ends.
    gen_: u64,
}

/// How a client connected.
pub struct Attached {
    pub resumed: bool,
    pub kept: Arc<Kept>,
    pub replaced: Option<Arc<Conn>>,
}

/// The promise and break registry, and the clients.
pub struct Coherency {
    files: Mutex<HashMap<FileId, FileState>>,
    clients: Mutex<HashMap<ClientKey, ClientState>>,
    acked: Condvar,
    pub promise: Duration,
    pub break_timeout: Duration,
}

/// A promise being granted: recorded before the file is read.
pub struct Ticket {
    file: FileId,
    gen_: u64,
    clean: bool,
}

/// A change in progress on some files; ends when dropped.
pub struct Change<'a> {
    co: &'a Coherency,
    files: Vec<(FileId, u64)>,
    by: Option<ClientKey>,
}

impl Coherency {
    pub fn new(promise: Duration, break_timeout: Duration) -> Coherency {
        Coherency {
            files: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
            acked: Condvar::new(),
            promise,
            break_timeout,
        }
    }

    pub fn promise_ms(&self) -> u32 {
        u32::try_from(self.promise.as_millis()).unwrap_or(u32::MAX)
    }

    // ---- clients ----

    /// A greeting: attach the connection `conn` to client `key`.
    pub fn attach(
        &self,
        key: ClientKey,
        incarnation: u64,
        name: String,
        conn: Arc<Conn>,
        max_clients: usize,
    ) -> Result<Attached, Status> {
        let mut forget_promises = false;
        let out = {
            let mut cs = lock(&self.clients);
            let connected = cs.values().filter(|c| c.conn.is_some()).count();
            let known = cs.get(&key).is_some_and(|c| c.conn.is_some());
            if !known && connected >= max_clients {
                return Err(Status::TooManyClients);
            }
            let resumed = match cs.get(&key) {
                Some(c) if c.incarnation == incarnation => true,
                Some(_) => {
                    forget_promises = true;
                    false
                }
                None => false,
            };
            if !resumed {
                cs.insert(key, ClientState::new(incarnation, name.clone()));
            }
            let st = cs.get_mut(&key).ok_or(Status::Internal)?;
            st.name = name;
            let replaced = st.conn.replace(conn.clone());
            st.conn_gen = conn.gen_;
            st.disconnected_at = None;
            st.settle(Instant::now());
            Attached {
                resumed,
                kept: st.kept.clone(),
                replaced,
            }
        };
        if forget_promises {
            self.drop_promises_of(&key);
        }
        Ok(out)
    }

    /// The connection `gen_` of the client ended.
    pub fn detach(&self, key: &ClientKey, gen_: u64) {
        let mut cs = lock(&self.clients);
        if let Some(st) = cs.get_mut(key)
            && st.conn_gen == gen_
        {
            st.conn = None;
            st.disconnected_at = Some(Instant::now());
        }
    }

    /// Farewell: forget the client at once.
    pub fn farewell(&self, key: &ClientKey) {
        lock(&self.clients).remove(key);
        self.drop_promises_of(key);
        self.acked.notify_all();
    }

    fn drop_promises_of(&self, key: &ClientKey) {
        let mut fs = lock(&self.files);
        for st in fs.values_mut() {
            st.holders.remove(key);
        }
        fs.retain(|_, s| !s.holders.is_empty() || s.changing > 0);
    }

    /// Records what the client said it has received, and the highest seq.
    pub fn client_ack(&self, key: &ClientKey, ack: u64, seq: Option<u64>) -> Option<u64> {
        let mut cs = lock(&self.clients);
        let st = cs.get_mut(key)?;
        if ack > st.ack {
            st.ack = ack;
            st.kept.release(ack);
        }
        if let Some(s) = seq {
            st.received = st.received.max(s);
        }
        Some(st.ack)
    }

    pub fn received(&self, key: &ClientKey) -> u64 {
        lock(&self.clients).get(key).map_or(0, |c| c.received)
    }

    /// A BreakAck.
    pub fn break_acked(&self, key: &ClientKey, bseq: u64) {
        let mut cs = lock(&self.clients);
        if let Some(st) = cs.get_mut(key) {
            st.pending.remove(&bseq);
        }
        drop(cs);
        self.acked.notify_all();
    }

    /// Before a request of the client is served: send it what it owes
    /// (breaks that were not acknowledged in time), flagged as owed.
    pub fn deliver_owed(&self, key: &ClientKey) {
        let now = Instant::now();
        let (conn, frames) = {
            let mut cs = lock(&self.clients);
            let Some(st) = cs.get_mut(key) else { return };
            st.settle(now);
            if !st.owes() {
                return;
            }
            let Some(conn) = st.conn.clone() else { return };
            let mut owed: Vec<(BreakScope, BreakReason)> = Vec::new();
            if let Some(r) = st.owed_all.take() {
                owed.push((BreakScope::All, r));
            }
            owed.extend(st.owed_files.drain().map(|(f, r)| (BreakScope::File(f), r)));
            let mut frames = Vec::with_capacity(owed.len());
            for (scope, reason) in owed {
                let bseq = st.next_break;
                st.next_break += 1;
                st.pending.insert(
                    bseq,
                    PendingBreak {
                        scope,
                        reason,
                        deadline: now + self.break_timeout,
                        conn_gen: st.conn_gen,
                    },
                );
                frames.push(break_frame(bseq, scope, reason, true));
            }
            (conn, frames)
        };
        for f in frames {
            // Not queued: still pending, so owed again at its deadline.
            if !conn.send_urgent(f) {
                break;
            }
        }
    }

    /// Forgets clients disconnected for longer than `timeout`, and promise
    /// records past their time.
    pub fn sweep(&self, client_timeout: Duration) {
        let now = Instant::now();
        let gone: Vec<ClientKey> = {
            let mut cs = lock(&self.clients);
            let gone: Vec<ClientKey> = cs
                .iter()
                .filter(|(_, c)| {
                    c.conn.is_none()
                        && c.disconnected_at
                            .is_some_and(|t| now.duration_since(t) >= client_timeout)
                })
                .map(|(k, _)| *k)
                .collect();
            for k in &gone {
                cs.remove(k);
            }
            gone
        };
        let mut fs = lock(&self.files);
        for st in fs.values_mut() {
            st.holders
                .retain(|k, until| *until > now && !gone.contains(k));
        }
        fs.retain(|_, s| !s.holders.is_empty() || s.changing > 0);
    }

    pub fn client_count(&self) -> usize {
        lock(&self.clients).len()
    }

    // ---- promises ----

    /// Records `client`'s promise on `file` before the file is read.
    pub fn promise_begin(&self, file: FileId, client: &ClientKey) -> Ticket {
        let mut fs = lock(&self.files);
        let st = fs.entry(file).or_default();
        st.holders
            .insert(*client, Instant::now() + self.promise + PROMISE_GRACE);
        Ticket {
            file,
            gen_: st.gen_,
            clean: st.changing == 0,
        }
    }

    /// After the file was read: the promise to tell the client (0 if a
    /// change began or ended meanwhile).
    pub fn promise_end(&self, t: Ticket) -> u32 {
        let fs = lock(&self.files);
        match fs.get(&t.file) {
            Some(st) if t.clean && st.changing == 0 && st.gen_ == t.gen_ => self.promise_ms(),
            _ => 0,
        }
    }

    /// Whether a change of the file through the server is in progress.
    pub fn is_changing(&self, file: &FileId) -> bool {
        lock(&self.files).get(file).is_some_and(|s| s.changing > 0)
    }

    // ---- breaks ----

    /// A change of `files` by `by` (None: a local process, already done).
    /// Breaks every other holder's promise; with a client as the changer,
    /// waits until each acknowledged or the break timeout passed (those
    /// that did not then owe the break). The change is applied while the
    /// returned guard lives.
    pub fn change(&self, files: &[FileId], by: Option<&ClientKey>) -> Change<'_> {
        let now = Instant::now();
        let reason = if by.is_some() {
            BreakReason::Client
        } else {
            BreakReason::Local
        };
        let mut holders: Vec<(ClientKey, FileId)> = Vec::new();
        let mut marked = Vec::with_capacity(files.len());
        {
            let mut fs = lock(&self.files);
            for f in files {
                if marked.iter().any(|(m, _)| m == f) {
                    continue;
                }
                let st = fs.entry(*f).or_default();
                st.changing += 1;
                st.gen_ += 1;
                marked.push((*f, st.gen_));
                let taken: Vec<ClientKey> = st
                    .holders
                    .iter()
                    .filter(|(k, until)| Some(*k) != by && **until > now)
                    .map(|(k, _)| *k)
                    .collect();
                st.holders.retain(|k, _| Some(k) == by);
                holders.extend(taken.into_iter().map(|k| (k, *f)));
            }
        }
        let sent = self.send_breaks(&holders, reason);
        if by.is_some() {
            self.wait_acks(&sent, now + self.break_timeout);
        }
        Change {
            co: self,
            files: marked,
            by: by.copied(),
        }
    }

    /// A local change already made: break without waiting.
    pub fn break_local(&self, files: &[FileId]) {
        drop(self.change(files, None));
    }

    /// A whole-server break to every client (connected or not).
    pub fn break_all(&self, reason: BreakReason) {
        lock(&self.files).retain(|_, s| {
            s.holders.clear();
            s.changing > 0
        });
        let now = Instant::now();
        let mut frames = Vec::new();
        {
            let mut cs = lock(&self.clients);
            for st in cs.values_mut() {
                match st.conn.clone() {
                    Some(conn) => {
                        let bseq = st.next_break;
                        st.next_break += 1;
                        st.pending.insert(
                            bseq,
                            PendingBreak {
                                scope: BreakScope::All,
                                reason,
                                deadline: now + self.break_timeout,
                                conn_gen: st.conn_gen,
                            },
                        );
                        frames.push((conn, break_frame(bseq, BreakScope::All, reason, false)));
                    }
                    None => st.owe(BreakScope::All, reason),
                }
            }
        }
        for (conn, f) in frames {
            conn.send_urgent(f);
        }
    }

    /// Sends the breaks; returns (client, break number) of those sent.
    fn send_breaks(
        &self,
        holders: &[(ClientKey, FileId)],
        reason: BreakReason,
    ) -> Vec<(ClientKey, u64)> {
        if holders.is_empty() {
            return Vec::new();
        }
        let now = Instant::now();
        let mut out = Vec::new();
        let mut frames = Vec::new();
        {
            let mut cs = lock(&self.clients);
            for (key, file) in holders {
                let Some(st) = cs.get_mut(key) else { continue };
                let scope = BreakScope::File(*file);
                match st.conn.clone() {
                    Some(conn) if !conn.is_closed() => {
                        let bseq = st.next_break;
                        st.next_break += 1;
                        st.pending.insert(
                            bseq,
                            PendingBreak {
                                scope,
                                reason,
                                deadline: now + self.break_timeout,
                                conn_gen: st.conn_gen,
                            },
                        );
                        frames.push((conn, break_frame(bseq, scope, reason, false)));
                        out.push((*key, bseq));
                    }
                    _ => st.owe(scope, reason),
                }
            }
        }
        for (conn, f) in frames {
            // A break not queued stays pending: it becomes owed.
            conn.send_urgent(f);
        }
        out
    }

    fn wait_acks(&self, sent: &[(ClientKey, u64)], deadline: Instant) {
        if sent.is_empty() {
            return;
        }
        let mut cs = lock(&self.clients);
        loop {
            let waiting = sent.iter().any(|(k, s)| {
                cs.get(k).is_some_and(|c| {
                    c.pending
                        .get(s)
                        .is_some_and(|p| p.conn_gen == c.conn_gen && c.conn.is_some())
                })
            });
            if !waiting {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            cs = self
                .acked
                .wait_timeout(cs, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        // Whatever is still pending is owed.
        for (k, s) in sent {
            if let Some(c) = cs.get_mut(k)
                && let Some(p) = c.pending.remove(s)
            {
                tracing::debug!(client = %c.name, "break not acknowledged in time: owed");
                c.owe(p.scope, p.reason);
            }
        }
    }
}

impl Change<'_> {
    /// Ends the change; if no other change of the first file overlapped,
    /// the changer gets a promise on it (its reply describes the file
    /// after the change). Returns the promise to tell the changer.
    pub fn finish(mut self, promised: Option<FileId>) -> u32 {
        let ms = self.end(promised);
        self.files.clear();
        ms
    }

    fn end(&mut self, promised: Option<FileId>) -> u32 {
        let mut ms = 0;
        let mut fs = lock(&self.co.files);
        for (f, my_gen) in &self.files {
            if let Some(st) = fs.get_mut(f) {
                if Some(*f) == promised
                    && let Some(by) = self.by
                    && st.changing == 1
                    && st.gen_ == *my_gen
                {
                    st.holders
                        .insert(by, Instant::now() + self.co.promise + PROMISE_GRACE);
                    ms = self.co.promise_ms();
                }
                st.changing = st.changing.saturating_sub(1);
                st.gen_ += 1;
            }
        }
        ms
    }
}

impl Drop for Change<'_> {
    fn drop(&mut self) {
        if !self.files.is_empty() {
            self.end(None);
        }
    }
}

fn break_frame(bseq: u64, scope: BreakScope, reason: BreakReason, owed: bool) -> Vec<u8> {
    let mut h = Header::new(Kind::Break, 0, bseq, 0);
    if owed {
        h.flags = BREAK_FLAG_OWED;
    }
    frame(&h, &Break { scope, reason }.encode())
}

/// An Error frame.
pub fn error_frame(status: Status, msg: &str) -> Vec<u8> {
    frame(
        &Header::new(Kind::Error, 0, 0, 0),
        &encode_error(status, msg),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_replies_are_released_by_the_watermark() {
        let k = Kept::default();
        assert!(matches!(k.begin(1, 4), KeptState::New));
        k.finish(1, Arc::new(vec![1]));
        assert!(matches!(k.begin(1, 4), KeptState::Done(r) if *r == vec![1]));
        assert!(matches!(k.begin(2, 4), KeptState::New));
        k.release(2);
        // 2 is still in progress: kept; 1 is gone.
        assert_eq!(k.len(), 1);
        k.finish(2, Arc::new(vec![2]));
        for s in 3..5 {
            assert!(matches!(k.begin(s, 3), KeptState::New));
        }
        assert!(matches!(k.begin(9, 3), KeptState::Full));
    }

    /// A connected pair of sockets: the server's end in a Conn, and the
    /// client's end to read from.
    fn pair(gen_: u64) -> (Arc<Conn>, TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let c = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (s, _) = l.accept().expect("accept");
        c.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        (Arc::new(Conn::new(s, gen_).expect("conn")), c)
    }

    fn next_break(c: &mut TcpStream) -> (Header, Break) {
        let mut p = Vec::new();
        let h = crate::wire::read_frame(c, &mut p).expect("a frame");
        assert_eq!(h.kind, Kind::Break as u8);
        (h, Break::decode(&p).expect("a break"))
    }

    #[test]
    fn a_whole_server_break_reaches_everyone_and_is_owed_by_the_absent() {
        let co = Coherency::new(Duration::from_secs(60), Duration::from_millis(50));
        let (a, b) = ([1u8; 16], [2u8; 16]);
        let (ca, mut ra) = pair(1);
        let (cb, _rb) = pair(2);
        co.attach(a, 1, "a".into(), ca, 8).expect("attach a");
        co.attach(b, 1, "b".into(), cb, 8).expect("attach b");
        co.detach(&b, 2);
        co.break_all(BreakReason::Overflow);
        let (h, brk) = next_break(&mut ra);
        assert_eq!(brk.scope, BreakScope::All);
        assert_eq!(brk.reason, BreakReason::Overflow);
        assert_eq!(h.flags & BREAK_FLAG_OWED, 0);
        // B was away: it owes the break, delivered before its next reply.
        let (cb, mut rb) = pair(3);
        let att = co.attach(b, 1, "b".into(), cb, 8).expect("attach b again");
        assert!(att.resumed);
        co.deliver_owed(&b);
        let (h, brk) = next_break(&mut rb);
        assert_eq!(
            (brk.scope, brk.reason),
            (BreakScope::All, BreakReason::Overflow)
        );
        assert_ne!(h.flags & BREAK_FLAG_OWED, 0);
        // A never acknowledged: past the timeout it owes it too.
        std::thread::sleep(Duration::from_millis(80));
        co.deliver_owed(&a);
        let (h, _) = next_break(&mut ra);
        assert_ne!(h.flags & BREAK_FLAG_OWED, 0);
    }

    #[test]
    fn owed_breaks_collapse_into_a_whole_server_break() {
        let mut st = ClientState::new(1, "c".into());
        for ino in 0..=MAX_OWED as u64 {
            st.owe(
                BreakScope::File(FileId { ino, gen_: 0 }),
                BreakReason::Client,
            );
        }
        assert!(st.owed_files.is_empty());
        assert_eq!(st.owed_all, Some(BreakReason::OwedCollapsed));
    }

    #[test]
    fn a_promise_taken_during_a_change_is_worthless() {
        let co = Coherency::new(Duration::from_secs(60), Duration::from_millis(10));
        let f = FileId { ino: 1, gen_: 1 };
        let a = [1u8; 16];
        let t = co.promise_begin(f, &a);
        let change = co.change(&[f], None);
        assert_eq!(co.promise_end(t), 0);
        let t = co.promise_begin(f, &a);
        drop(change);
        assert_eq!(co.promise_end(t), 0);
        let t = co.promise_begin(f, &a);
        assert_eq!(co.promise_end(t), 60_000);
    }
}
