//! One handler per request other than Read: parse the payload, check it,
//! call the cookie layer, build the reply. Handles are looked up through
//! one helper, under the connection's lock.

use std::sync::{Arc, Mutex};

use super::callback_ops::{callback_status, data_version_of};
use super::connection::{Conn, CookieEntry, Peer};
use super::server::{Daemon, lock};
use crate::callback::{ObjectRef, Validity};
use crate::cookie::{CacheError, Cookie, Operation, WriteOutcome};
use crate::proto::{Op, ProtoError, Reader, Status, Writer};
use crate::store::{ObjectId, StoreError};
use std::time::Instant;

/// A reply: status and body.
pub(super) struct Reply {
    pub(super) status: Status,
    pub(super) body: Writer,
}

impl Reply {
    pub(super) fn ok(body: Writer) -> Reply {
        Reply {
            status: Status::Ok,
            body,
        }
    }
    pub(super) fn status(s: Status) -> Reply {
        Reply {
            status: s,
            body: Writer::new(),
        }
    }
}

pub(super) fn bad(_: ProtoError) -> Reply {
    Reply::status(Status::BadRequest)
}

pub(super) fn from_cache_error(e: &CacheError) -> Status {
    match e {
        CacheError::Busy(_) => Status::Busy,
        CacheError::Invalid(_) => Status::Invalid,
        CacheError::Relinquished | CacheError::VolumeRelinquished => Status::BadHandle,
        CacheError::Store(s) => from_store_error(s),
    }
}

pub(super) fn from_store_error(e: &StoreError) -> Status {
    match e {
        StoreError::Invalid(_) => Status::Range,
        StoreError::NoSpace => Status::NoSpace,
        StoreError::Failed(_) | StoreError::Io(_) | StoreError::Corrupt(_) => Status::Failed,
        StoreError::Stale => Status::Stale,
        StoreError::Exists => Status::Busy,
        StoreError::NoSuchObject | StoreError::NoSuchVolume => Status::BadHandle,
        StoreError::NotACache(_) => Status::Internal,
    }
}

/// What a handler returns: its reply either way (an error is a reply with
/// a status and no body).
pub(super) type Handled = Result<Reply, Reply>;

pub(super) fn status(s: Status) -> Reply {
    Reply::status(s)
}

pub(super) fn cache_status(e: CacheError) -> Reply {
    Reply::status(from_cache_error(&e))
}

/// What a write caches into (object, data generation, offset, data), or
/// what it is answered with at once.
pub(super) type WriteTarget<'p> = Result<(ObjectId, u64, u64, &'p [u8]), WriteOutcome>;

/// The status a write is answered with.
pub(super) fn write_status(outcome: Result<WriteOutcome, CacheError>) -> Status {
    match outcome {
        Ok(WriteOutcome::Written) => Status::Ok,
        Ok(WriteOutcome::Dropped) => Status::Dropped,
        Ok(WriteOutcome::Stale) => Status::Stale,
        Err(e) => from_cache_error(&e),
    }
}

pub(super) fn done() -> Handled {
    Ok(Reply::ok(Writer::new()))
}

impl Conn {
    /// The one way to reach a cookie by handle: under the connection's
    /// lock, `BadHandle` if this connection holds no such cookie.
    pub(super) fn with_cookie<T>(
        conn: &Mutex<Conn>,
        h: u32,
        f: impl FnOnce(&mut CookieEntry) -> Result<T, Reply>,
    ) -> Result<T, Reply> {
        let mut c = lock(conn);
        let e = c.cookies.get_mut(&h).ok_or(status(Status::BadHandle))?;
        f(e)
    }

    /// The cookie behind the handle at the start of `r`, and its callback
    /// record if its volume was declared for a file server.
    pub(super) fn cookie_entry_of(
        conn: &Mutex<Conn>,
        r: &mut Reader<'_>,
    ) -> Result<(Arc<Cookie>, Option<ObjectRef>), Reply> {
        let (cookie, obj, _) = Self::io_target_of(conn, r)?;
        Ok((cookie, obj))
    }

    /// Like [`Conn::cookie_entry_of`], and whether this connection has the
    /// cookie in use (UseCookie not undone): I/O on a cookie not in use
    /// reads nothing and caches nothing, as for a netfs file that is not
    /// open.
    pub(super) fn io_target_of(
        conn: &Mutex<Conn>,
        r: &mut Reader<'_>,
    ) -> Result<(Arc<Cookie>, Option<ObjectRef>, bool), Reply> {
        let h = r.u32().map_err(bad)?;
        Self::with_cookie(conn, h, |e| Ok((e.cookie.clone(), e.obj, e.uses > 0)))
    }

    /// The cookie behind the handle at the start of `r`.
    pub(super) fn cookie_of(conn: &Mutex<Conn>, r: &mut Reader<'_>) -> Result<Arc<Cookie>, Reply> {
        let h = r.u32().map_err(bad)?;
        Self::with_cookie(conn, h, |e| Ok(e.cookie.clone()))
    }
}

impl Daemon {
    /// Handle one request other than a read (blocking).
    pub(super) fn handle(&self, conn: &Mutex<Conn>, peer: &Peer, op: Op, payload: &[u8]) -> Reply {
        let mut r = Reader::new(payload);
        let r = &mut r;
        let res = match op {
            // The connection loop answers these itself.
            Op::Hello | Op::Read => Err(status(Status::BadRequest)),
            Op::Ping => r.end().map_err(bad).and_then(|()| done()),
            Op::Stats => self.op_stats(r),
            Op::AcquireVolume => self.op_acquire_volume(conn, peer, r),
            Op::RelinquishVolume => self.op_relinquish_volume(conn, r),
            Op::AcquireCookie => self.op_acquire_cookie(conn, r),
            Op::RelinquishCookie => self.op_relinquish_cookie(conn, r),
            Op::UseCookie => self.op_use_cookie(conn, r),
            Op::UnuseCookie => self.op_unuse_cookie(conn, r),
            Op::Write => self.op_write(conn, r),
            Op::PrepareToWrite => self.op_prepare_to_write(conn, r),
            Op::Invalidate => self.op_invalidate(conn, r),
            Op::Resize => self.op_resize(conn, r),
            Op::QueryOccupancy => self.op_query_occupancy(conn, r),
            Op::DeclareServer => self.op_declare_server(conn, r),
            Op::BeginFetch => self.op_begin_fetch(conn, r),
            Op::InstallPromise => self.op_install_promise(conn, r),
            Op::Validate => self.op_validate(conn, r),
            Op::Revalidate => self.op_revalidate(conn, r),
            Op::BreakFiles => self.op_break_files(conn, r),
            Op::BreakVolume => self.op_break_volume(conn, r),
            Op::BreakServer => self.op_break_server(conn, r),
            Op::Flush => self.op_flush(r),
            Op::WriteFetched => self.op_write_fetched(conn, r),
            Op::Metrics => self.op_metrics(r),
        };
        res.unwrap_or_else(|e| e)
    }

    fn op_stats(&self, r: &mut Reader<'_>) -> Handled {
        r.end().map_err(bad)?;
        let stats = self.stats();
        let mut w = Writer::new().u32(stats.len() as u32);
        for s in stats {
            w = w
                .u8(s.name.len() as u8)
                .bytes(s.name.as_bytes())
                .u64(s.value);
        }
        Ok(Reply::ok(w))
    }

    fn op_metrics(&self, r: &mut Reader<'_>) -> Handled {
        r.end().map_err(bad)?;
        let text = self.metrics_text();
        // Far below a frame's limit (some 50 KiB); a text that outgrew it
        // would be a bug here, answered as one rather than sent cut.
        if text.len() > crate::proto::MAX_DATA {
            tracing::error!(bytes = text.len(), "the metrics text does not fit a frame");
            return Err(status(Status::Internal));
        }
        Ok(Reply::ok(
            Writer::new().u32(text.len() as u32).bytes(text.as_bytes()),
        ))
    }

    fn op_acquire_volume(&self, conn: &Mutex<Conn>, peer: &Peer, r: &mut Reader<'_>) -> Handled {
        let key_len = r.u16().map_err(bad)? as usize;
        let aux_len = r.u16().map_err(bad)? as usize;
        let key = r.bytes(key_len).map_err(bad)?;
        let aux = r.bytes(aux_len).map_err(bad)?;
        r.end().map_err(bad)?;
        let key_str = std::str::from_utf8(key).map_err(|_| status(Status::Invalid))?;
        // Every argument is checked before anything is created.
        if ringcache_ondisk::check_volume_key(key).is_err() || aux.len() > ringcache_ondisk::AUX_MAX
        {
            return Err(status(Status::Invalid));
        }
        if !self.cfg.allows(key_str, peer.uid, peer.gid, self.self_uid) {
            tracing::warn!(uid = peer.uid, volume = key_str, "volume access denied");
            return Err(status(Status::Denied));
        }
        self.hold_volume(key, key_str, aux).map_err(cache_status)?;
        let mut c = lock(conn);
        let h = c.handle();
        c.volumes.insert(h, key.to_vec());
        Ok(Reply::ok(Writer::new().u32(h)))
    }

    fn op_relinquish_volume(&self, conn: &Mutex<Conn>, r: &mut Reader<'_>) -> Handled {
        let h = r.u32().map_err(bad)?;
        let invalidate = r.u8().map_err(bad)? != 0;
        r.end().map_err(bad)?;
        let key = {
            let mut c = lock(conn);
            if c.cookies.values().any(|e| e.volume == h) {
                return Err(status(Status::Busy));
            }
            c.volumes.remove(&h).ok_or(status(Status::BadHandle))?
        };
        self.release_volume(&key, invalidate);
        done()
    }

    fn op_acquire_cookie(&self, conn: &Mutex<Conn>, r: &mut Reader<'_>) -> Handled {
        let vh = r.u32().map_err(bad)?;
        let key_len = r.u16().map_err(bad)? as usize;
        let aux_len = r.u16().map_err(bad)? as usize;
        let size = r.u64().map_err(bad)?;
        let key = r.bytes(key_len).map_err(bad)?;
        let aux = r.bytes(aux_len).map_err(bad)?;
        r.end().map_err(bad)?;
        let vkey = lock(conn)
            .volumes
            .get(&vh)
            .cloned()
            .ok_or(status(Status::BadHandle))?;
        let vol = self.held_volume(&vkey).ok_or(status(Status::BadHandle))?;
        if self.coherent.volume_server(&vkey).is_some() {
            return self.acquire_shared_cookie(conn, vh, &vol, key, aux, size);
        }
        let cookie = self
            .cache
            .acquire_cookie(&vol, key, aux, size)
            .map_err(cache_status)?;
        let mut c = lock(conn);
        let h = c.handle();
        c.cookies.insert(
            h,
            CookieEntry {
                cookie,
                volume: vh,
                uses: 0,
                obj: None,
            },
        );
        Ok(Reply::ok(Writer::new().u32(h)))
    }

    fn op_relinquish_cookie(&self, conn: &Mutex<Conn>, r: &mut Reader<'_>) -> Handled {
        let h = r.u32().map_err(bad)?;
        let retire = r.u8().map_err(bad)? != 0;
        r.end().map_err(bad)?;
        let (conn_id, e) = {
            let mut c = lock(conn);
            let e = c.cookies.remove(&h).ok_or(status(Status::BadHandle))?;
            (c.id, e)
        };
        self.release_cookie(conn_id, e, retire);
        done()
    }

    fn op_use_cookie(&self, conn: &Mutex<Conn>, r: &mut Reader<'_>) -> Handled {
        let h = r.u32().map_err(bad)?;
        let will_modify = match r.u8().map_err(bad)? {
            0 => false,
            1 => true,
            _ => return Err(status(Status::Invalid)),
        };
        r.end().map_err(bad)?;
        let cookie = Conn::with_cookie(conn, h, |e| {
            e.uses += 1;
            Ok(e.cookie.clone())
        })?;
        self.cache.use_cookie(&cookie, will_modify);
        done()
    }

    fn op_unuse_cookie(&self, conn: &Mutex<Conn>, r: &mut Reader<'_>) -> Handled {
        let h = r.u32().map_err(bad)?;
        let flags = r.u8().map_err(bad)?;
        let aux_len = r.u16().map_err(bad)? as usize;
        let size = r.u64().map_err(bad)?;
        let aux = r.bytes(aux_len).map_err(bad)?;
        r.end().map_err(bad)?;
        // Flag bits: 1 aux given, 2 size given; no others.
        if aux.len() > ringcache_ondisk::AUX_MAX || flags & !3 != 0 {
            return Err(status(Status::Invalid));
        }
        let cookie = Conn::with_cookie(conn, h, |e| {
            if e.uses == 0 {
                return Err(status(Status::Invalid));
            }
            e.uses -= 1;
            Ok(e.cookie.clone())
        })?;
        self.cache.unuse_cookie(
            &cookie,
            (flags & 1 != 0).then_some(aux),
            (flags & 2 != 0).then_some(size),
        );
        done()
    }

    fn op_write(&self, conn: &Mutex<Conn>, r: &mut Reader<'_>) -> Handled {
        let (opn, target) = self.prepare_write(conn, r)?;
        let outcome = match target {
            Err(outcome) => Ok(outcome),
            // Through the cookie layer's backend (the store, or a stand-in
            // under test).
            Ok((_, _, offset, data)) => opn.write(offset, data),
        };
        match write_status(outcome) {
            Status::Ok => done(),
            st => Err(status(st)),
        }
    }

    /// A write request parsed and checked, its access taken and its
    /// promise validated: the operation and what to write (object, data
    /// generation, offset, data), or the outcome to answer with at once
    /// (no object, or stale), or the reply for a request refused. Both
    /// [`Daemon::handle`] and a connection's pipelined writes start their
    /// writes here.
    pub(super) fn prepare_write<'d, 'p>(
        &'d self,
        conn: &Mutex<Conn>,
        r: &mut Reader<'p>,
    ) -> Result<(Operation<'d>, WriteTarget<'p>), Reply> {
        let (cookie, obj, in_use) = Conn::io_target_of(conn, r)?;
        let len = r.u32().map_err(bad)? as usize;
        let offset = r.u64().map_err(bad)?;
        let data = r.bytes(len).map_err(bad)?;
        r.end().map_err(bad)?;
        if len > crate::proto::MAX_DATA || offset.checked_add(len as u64).is_none() {
            return Err(status(Status::Range));
        }
        if !in_use {
            return Err(status(Status::Dropped));
        }
        let opn = self.cache.begin_operation(&cookie, true);
        // In a callback volume, data is cached only under a valid promise
        // (or through WriteFetched, with the token of its fetch).
        if let Some(obj) = obj
            && let Some(Validity::Revalidate) = self.coherent.gate(obj, Instant::now())
        {
            return Err(status(Status::Revalidate));
        }
        let target = opn
            .write_target()
            .map(|(object, data_gen)| (object, data_gen, offset, data));
        Ok((opn, target))
    }

    fn op_prepare_to_write(&self, conn: &Mutex<Conn>, r: &mut Reader<'_>) -> Handled {
        let cookie = Conn::cookie_of(conn, r)?;
        r.end().map_err(bad)?;
        self.cache.prepare_to_write(&cookie);
        done()
    }

    fn op_invalidate(&self, conn: &Mutex<Conn>, r: &mut Reader<'_>) -> Handled {
        let (cookie, obj) = Conn::cookie_entry_of(conn, r)?;
        let aux_len = r.u16().map_err(bad)? as usize;
        let _pad = r.u16().map_err(bad)?;
        let size = r.u64().map_err(bad)?;
        let aux = r.bytes(aux_len).map_err(bad)?;
        r.end().map_err(bad)?;
        if let Some(obj) = obj {
            // A callback volume: the coherency data is the data version,
            // and the change goes through the callback layer so that no
            // reader sees the old data under the new version.
            let version = data_version_of(aux)?.ok_or(status(Status::Invalid))?;
            let conn_id = lock(conn).id;
            let zaps = self
                .coherent
                .invalidate(&cookie, obj, version, size, Some(conn_id), Instant::now())
                .map_err(callback_status)?;
            self.outboxes.deliver(&zaps);
            return done();
        }
        self.cache
            .invalidate(&cookie, aux, size)
            .map_err(cache_status)?;
        done()
    }

    fn op_resize(&self, conn: &Mutex<Conn>, r: &mut Reader<'_>) -> Handled {
        let cookie = Conn::cookie_of(conn, r)?;
        let _pad = r.u32().map_err(bad)?;
        let size = r.u64().map_err(bad)?;
        r.end().map_err(bad)?;
        self.cache.resize(&cookie, size).map_err(cache_status)?;
        done()
    }

    fn op_query_occupancy(&self, conn: &Mutex<Conn>, r: &mut Reader<'_>) -> Handled {
        let cookie = Conn::cookie_of(conn, r)?;
        r.end().map_err(bad)?;
        let opn = self.cache.begin_operation(&cookie, false);
        let occ = opn.query_occupancy().map_err(cache_status)?;
        let mut w = Writer::new().u32(occ.len() as u32);
        for (o, l) in occ {
            w = w.u64(o).u64(l);
        }
        Ok(Reply::ok(w))
    }
}
