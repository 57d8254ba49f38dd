//! The version-2 requests: the callback layer served over the socket
//! (declare a volume's server, fetch tokens, promises, validation,
//! revalidation, breaks of files, volumes and servers, writes of fetched
//! data) and Flush. Breaks are answered as soon as they are recorded: the
//! zap events they cause are queued for the holders' connections
//! (`events.rs`), never waited for.
//!
//! Cookies of a volume declared for a server are shared by the
//! connections that acquire the same key (one cookie and one callback
//! record per file on this host), and each connection's handle is a hold,
//! so every connection using the file gets its zaps.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::connection::{Conn, CookieEntry};
use super::handlers::{Handled, Reply, bad, cache_status, done, status};
use super::server::{Daemon, SharedCookie, lock};
use crate::callback::{
    CallbackError, FetchToken, ObjectRef, Promise, Revalidated, ServerId, Validity,
};
use crate::cookie::{CacheError, Cookie, Volume, WriteOutcome};
use crate::proto::{Reader, Status, TOKEN_BYTES, Writer};

/// The data version a callback volume's cookie carries as its coherency
/// data: 8 little-endian bytes, or none (unknown). Anything else is
/// `Invalid`.
pub(super) fn data_version_of(aux: &[u8]) -> Result<Option<u64>, Reply> {
    match aux.len() {
        0 => Ok(None),
        8 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(aux);
            Ok(Some(u64::from_le_bytes(b)))
        }
        _ => Err(status(Status::Invalid)),
    }
}

/// The status for a callback-layer error.
pub(super) fn callback_status(e: CallbackError) -> Reply {
    match e {
        CallbackError::Broken => status(Status::Broken),
        CallbackError::Forgotten | CallbackError::WrongCookie => status(Status::BadHandle),
        CallbackError::OtherVersion { .. } | CallbackError::InvalidServerId { .. } => {
            status(Status::Invalid)
        }
        CallbackError::Cache(c) => cache_status(c),
    }
}

fn token_of(r: &mut Reader<'_>) -> Result<FetchToken, Reply> {
    FetchToken::from_bytes(r.bytes(TOKEN_BYTES).map_err(bad)?).ok_or(status(Status::BadRequest))
}

/// A promise that lasts `valid_ms` from now. The client counts its
/// promise from when it sent the request that obtained it and sends what
/// is left, so the daemon only adds the time the request took to arrive
/// here (microseconds; far inside the margin).
fn promise_of(valid_ms: u32, data_version: u64, now: Instant) -> Promise {
    Promise {
        expires_at: now + Duration::from_millis(u64::from(valid_ms)),
        data_version,
    }
}

/// The cookie and callback record behind the handle at the start of `r`;
/// `Invalid` for a cookie of a volume without a declared server.
fn tracked_of(conn: &Mutex<Conn>, r: &mut Reader<'_>) -> Result<(Arc<Cookie>, ObjectRef), Reply> {
    match Conn::cookie_entry_of(conn, r)? {
        (c, Some(obj)) => Ok((c, obj)),
        (_, None) => Err(status(Status::Invalid)),
    }
}

/// The key of the volume behind the handle at the start of `r`.
fn volume_key_of(conn: &Mutex<Conn>, r: &mut Reader<'_>) -> Result<Vec<u8>, Reply> {
    let h = r.u32().map_err(bad)?;
    lock(conn)
        .volumes
        .get(&h)
        .cloned()
        .ok_or(status(Status::BadHandle))
}

impl Daemon {
    /// AcquireCookie in a callback volume: share the cookie of the key if
    /// another connection has it, hold it for this connection.
    pub(super) fn acquire_shared_cookie(
        &self,
        conn: &Mutex<Conn>,
        vh: u32,
        vol: &Arc<Volume>,
        key: &[u8],
        aux: &[u8],
        size: u64,
    ) -> Handled {
        let version = data_version_of(aux)?;
        let skey = (vol.key().to_vec(), key.to_vec());
        // The last handle's release takes the cookie out of the table
        // before it relinquishes it; an acquire in between finds the old
        // cookie still live (Busy) for the microseconds until its
        // relinquishment begins, after which the cookie layer waits for it
        // by itself. Retry through that window, never longer than this.
        let deadline = Instant::now() + Duration::from_secs(1);
        let (cookie, obj) = loop {
            let mut shared = lock(&self.shared_cookies);
            if let Some(s) = shared.get_mut(&skey) {
                s.refs += 1;
                break (s.cookie.clone(), s.obj);
            }
            match self.cache.acquire_cookie(vol, key, aux, size) {
                Ok(cookie) => {
                    let obj = self.coherent.track(vol.key(), key, version);
                    shared.insert(
                        skey,
                        SharedCookie {
                            cookie: cookie.clone(),
                            obj,
                            refs: 1,
                        },
                    );
                    break (cookie, obj);
                }
                Err(CacheError::Busy(_)) if Instant::now() < deadline => {
                    drop(shared);
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(e) => return Err(cache_status(e)),
            }
        };
        let mut c = lock(conn);
        let h = c.handle();
        let conn_id = c.id;
        c.cookies.insert(
            h,
            CookieEntry {
                cookie,
                volume: vh,
                uses: 0,
                obj: Some(obj),
            },
        );
        drop(c);
        // The record lives as long as some connection has the cookie, so
        // the hold cannot fail; if it did, say so rather than lose zaps.
        self.coherent
            .hold(obj, conn_id, h)
            .map_err(|_| status(Status::Internal))?;
        Ok(Reply::ok(Writer::new().u32(h)))
    }

    /// DeclareServer: volume u32, epoch u64, id_len u8, 3 reserved, id.
    /// A new epoch of a known server is a whole-server break.
    pub(super) fn op_declare_server(&self, conn: &Mutex<Conn>, r: &mut Reader<'_>) -> Handled {
        let vkey = volume_key_of(conn, r)?;
        let epoch = r.u64().map_err(bad)?;
        let id_len = r.u8().map_err(bad)? as usize;
        let reserved = [
            r.u8().map_err(bad)?,
            r.u8().map_err(bad)?,
            r.u8().map_err(bad)?,
        ];
        let id = r.bytes(id_len).map_err(bad)?;
        r.end().map_err(bad)?;
        if reserved != [0; 3] {
            return Err(status(Status::BadRequest));
        }
        let server = ServerId::new(id).map_err(callback_status)?;
        // A connection's cookies acquired before the declaration have no
        // callback record: refuse rather than serve them unguarded.
        {
            let c = lock(conn);
            let vh_has_untracked = c
                .cookies
                .values()
                .any(|e| e.obj.is_none() && c.volumes.get(&e.volume).is_some_and(|k| *k == vkey));
            if vh_has_untracked {
                return Err(status(Status::Busy));
            }
        }
        let zaps = self.coherent.declare_server(&vkey, &server, epoch);
        self.outboxes.deliver(&zaps);
        done()
    }

    /// BeginFetch: cookie u32 -> token (48 bytes). Take it before asking
    /// the server.
    pub(super) fn op_begin_fetch(&self, conn: &Mutex<Conn>, r: &mut Reader<'_>) -> Handled {
        let (_, obj) = tracked_of(conn, r)?;
        r.end().map_err(bad)?;
        let token = self.coherent.begin_fetch(obj);
        Ok(Reply::ok(Writer::new().bytes(&token.to_bytes())))
    }

    /// InstallPromise: cookie u32, valid_ms u32, data_version u64, token.
    /// For the version already cached; `Broken` if a break came after the
    /// token, `Invalid` for another version (use Revalidate).
    pub(super) fn op_install_promise(&self, conn: &Mutex<Conn>, r: &mut Reader<'_>) -> Handled {
        let (cookie, obj) = tracked_of(conn, r)?;
        let valid_ms = r.u32().map_err(bad)?;
        let version = r.u64().map_err(bad)?;
        let token = token_of(r)?;
        r.end().map_err(bad)?;
        let promise = promise_of(valid_ms, version, Instant::now());
        self.coherent
            .install(&cookie, obj, token, promise)
            .map_err(callback_status)?;
        done()
    }

    /// Validate: cookie u32 -> data_version u64 under a valid promise, or
    /// status Revalidate.
    pub(super) fn op_validate(&self, conn: &Mutex<Conn>, r: &mut Reader<'_>) -> Handled {
        let (_, obj) = tracked_of(conn, r)?;
        r.end().map_err(bad)?;
        match self.coherent.validate(obj, Instant::now()) {
            Validity::Valid { data_version } => Ok(Reply::ok(Writer::new().u64(data_version))),
            Validity::Revalidate => Err(status(Status::Revalidate)),
        }
    }

    /// Revalidate: cookie u32, valid_ms u32, data_version u64, size u64,
    /// token -> kept u8 (1: same version, data kept; 0: new version, data
    /// invalidated), installed u8 (0: a break came during the
    /// invalidation, revalidate again), 2 reserved.
    pub(super) fn op_revalidate(&self, conn: &Mutex<Conn>, r: &mut Reader<'_>) -> Handled {
        let (cookie, obj) = tracked_of(conn, r)?;
        let valid_ms = r.u32().map_err(bad)?;
        let version = r.u64().map_err(bad)?;
        let size = r.u64().map_err(bad)?;
        let token = token_of(r)?;
        r.end().map_err(bad)?;
        let conn_id = lock(conn).id;
        let promise = promise_of(valid_ms, version, Instant::now());
        let outcome = self
            .coherent
            .revalidate(&cookie, obj, token, promise, size, Some(conn_id))
            .map_err(callback_status)?;
        let (kept, installed) = match outcome {
            Revalidated::Kept => (1, 1),
            Revalidated::Changed {
                zaps,
                promise_installed,
            } => {
                self.outboxes.deliver(&zaps);
                (0, u8::from(promise_installed))
            }
        };
        Ok(Reply::ok(Writer::new().u8(kept).u8(installed).u16(0)))
    }

    /// BreakFiles: volume u32, n u32, n x {key_len u16, key} -> records
    /// found u32. Keys with no record (nothing cached under a promise)
    /// are skipped.
    pub(super) fn op_break_files(&self, conn: &Mutex<Conn>, r: &mut Reader<'_>) -> Handled {
        let vkey = volume_key_of(conn, r)?;
        let n = r.u32().map_err(bad)? as usize;
        let mut objs = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            let len = r.u16().map_err(bad)? as usize;
            let key = r.bytes(len).map_err(bad)?;
            if key.is_empty() || key.len() > ringcache_ondisk::OBJECT_KEY_MAX {
                return Err(status(Status::Invalid));
            }
            if let Some(obj) = self.coherent.lookup(&vkey, key) {
                objs.push(obj);
            }
        }
        r.end().map_err(bad)?;
        let zaps = self.coherent.break_files(&objs);
        self.outboxes.deliver(&zaps);
        Ok(Reply::ok(Writer::new().u32(objs.len() as u32)))
    }

    /// BreakVolume: volume u32.
    pub(super) fn op_break_volume(&self, conn: &Mutex<Conn>, r: &mut Reader<'_>) -> Handled {
        let vkey = volume_key_of(conn, r)?;
        r.end().map_err(bad)?;
        let zaps = self.coherent.break_volume(&vkey);
        self.outboxes.deliver(&zaps);
        done()
    }

    /// BreakServer: volume u32: every promise of the server the volume is
    /// declared for (`Invalid` if none).
    pub(super) fn op_break_server(&self, conn: &Mutex<Conn>, r: &mut Reader<'_>) -> Handled {
        let vkey = volume_key_of(conn, r)?;
        r.end().map_err(bad)?;
        let server = self
            .coherent
            .volume_server(&vkey)
            .ok_or(status(Status::Invalid))?;
        let zaps = self.coherent.break_server(&server);
        self.outboxes.deliver(&zaps);
        done()
    }

    /// Flush: returns once every write acknowledged so far (on any
    /// connection, so this one's too) is on the device.
    pub(super) fn op_flush(&self, r: &mut Reader<'_>) -> Handled {
        r.end().map_err(bad)?;
        self.store
            .flush()
            .map_err(|e| status(super::handlers::from_store_error(&e)))?;
        done()
    }

    /// WriteFetched: cookie u32, len u32, offset u64, data_version u64,
    /// token, data: data fetched from the server under `token`; cached
    /// only if nothing was broken since and the cached data is of that
    /// version (`Broken` otherwise). Outcomes as Write.
    pub(super) fn op_write_fetched(&self, conn: &Mutex<Conn>, r: &mut Reader<'_>) -> Handled {
        let (cookie, obj, in_use) = match Conn::io_target_of(conn, r)? {
            (c, Some(obj), in_use) => (c, obj, in_use),
            (_, None, _) => return Err(status(Status::Invalid)),
        };
        let len = r.u32().map_err(bad)? as usize;
        let offset = r.u64().map_err(bad)?;
        let version = r.u64().map_err(bad)?;
        let token = token_of(r)?;
        let data = r.bytes(len).map_err(bad)?;
        r.end().map_err(bad)?;
        if len > crate::proto::MAX_DATA {
            return Err(status(Status::Range));
        }
        if offset.checked_add(len as u64).is_none() {
            return Err(status(Status::Range));
        }
        if !in_use {
            return Err(status(Status::Dropped));
        }
        match self
            .coherent
            .write_fetched(&cookie, obj, token, version, offset, data)
            .map_err(callback_status)?
        {
            WriteOutcome::Written => done(),
            WriteOutcome::Dropped => Err(status(Status::Dropped)),
            WriteOutcome::Stale => Err(status(Status::Stale)),
        }
    }
}
