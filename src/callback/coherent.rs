//! [`Coherent`]: the callback registry over the cookie layer, keeping the
//! cached data and the promises in step so that no read ever returns data
//! the promises do not vouch for.
//!
//! The object's data version is the cookie's coherency data
//! ([`version_aux`]: 8 little-endian bytes), so a cookie looked up with
//! another version finds its old data discarded by the store, and a
//! version change is an [`Fscache::invalidate`] with the new version.
//!
//! Every invalidation of a cookie acquired here must go through
//! [`Coherent::revalidate`]: the ordering arguments below count on the
//! record's data version and the cookie's data generation changing
//! together. They also count on [`Fscache::invalidate`] having discarded
//! the old data for every operation begun after it returns, which the
//! cookie layer does not yet ensure while another thread runs the
//! cookie's state machine (a concurrent resize): see `docs/CALLBACK.md`.
//!
//! Ordering, in short (the long form is in `docs/CALLBACK.md`):
//! - A read begins its cookie operation, which snapshots the cookie's
//!   invalidation counter, *then* validates. A version change that had
//!   bumped that counter before the operation began had also finished in
//!   the registry (the record is marked invalidating until then, and
//!   validation says `Revalidate` meanwhile), so the data read is of the
//!   version validated; one that bumps it later makes the read `Stale`.
//! - A write of fetched data likewise begins its operation first, then
//!   checks the token and version under the registry lock. A version
//!   change after the check invalidates after the operation began, so the
//!   write is `Stale` or lands in the generation the invalidation
//!   discards; a change before the check is caught by it.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::{
    CallbackConfig, CallbackError, CallbackStats, Callbacks, FetchToken, ObjectRef, Promise,
    ServerId, Validity, Zap,
};
use crate::cookie::{Cookie, Fscache, ReadOutcome, Volume, WriteOutcome};
use crate::store::Segments;

/// The cookie coherency data for a data version: 8 little-endian bytes,
/// or none when the version is unknown.
pub fn version_aux(data_version: Option<u64>) -> Vec<u8> {
    data_version.map_or_else(Vec::new, |v| v.to_le_bytes().to_vec())
}

/// What a coherent read found.
#[derive(Debug)]
pub enum CoherentRead {
    /// No valid promise: ask the server (and [`Coherent::revalidate`])
    /// first. Nothing cached was read.
    Revalidate,
    /// Cached data (and holes) of `data_version`, under a valid promise.
    Data {
        data_version: u64,
        segments: Segments,
    },
    /// The promise is valid but nothing is cached: fetch data of
    /// `data_version` and [`Coherent::write_fetched`] it.
    NoData { data_version: u64 },
    /// The data was invalidated during the read: read again.
    Stale,
}

/// What a revalidation did.
#[derive(Debug)]
pub enum Revalidated {
    /// The server's version is the cached data's: the data stays (no
    /// refetch) and the promise is installed.
    Kept,
    /// The server's version is new: the cached data was invalidated at
    /// once. `zaps` tell the other holders (`Invalidated`). If a break
    /// arrived during the invalidation the promise was not installed
    /// (`promise_installed` false) and validation says `Revalidate`.
    Changed {
        zaps: Vec<Zap>,
        promise_installed: bool,
    },
}

/// The callback layer over a cookie layer.
pub struct Coherent {
    cache: Arc<Fscache>,
    callbacks: Mutex<Callbacks>,
    /// Notified when an object's invalidation finishes.
    changed: Condvar,
}

/// Finishes a change begun in the registry even if the invalidation
/// between unwinds, so the record is never left marked invalidating.
struct ChangeGuard<'a> {
    coherent: &'a Coherent,
    obj: ObjectRef,
    armed: bool,
}

impl Drop for ChangeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.coherent.lock().finish_change(self.obj, None);
            self.coherent.changed.notify_all();
        }
    }
}

impl Coherent {
    /// A callback layer over `cache`.
    pub fn new(cache: Arc<Fscache>, cfg: CallbackConfig) -> Coherent {
        Coherent {
            cache,
            callbacks: Mutex::new(Callbacks::new(cfg)),
            changed: Condvar::new(),
        }
    }

    /// The cookie layer.
    pub fn cache(&self) -> &Arc<Fscache> {
        &self.cache
    }

    fn lock(&self) -> MutexGuard<'_, Callbacks> {
        self.callbacks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_cookie(reg: &Callbacks, cookie: &Cookie, obj: ObjectRef) -> Result<(), CallbackError> {
        match reg.keys(obj) {
            None => Err(CallbackError::Forgotten),
            Some(keys) if keys == (cookie.volume().key(), cookie.key()) => Ok(()),
            Some(_) => Err(CallbackError::WrongCookie),
        }
    }

    /// Acquire a cookie whose cached data is of `data_version` (what the
    /// netfs knows of the file; `None` if nothing), with a new object
    /// record for it. The cookie's coherency data is the version, so data
    /// cached under another version is discarded at lookup.
    pub fn acquire_cookie(
        &self,
        volume: &Arc<Volume>,
        key: &[u8],
        data_version: Option<u64>,
        size: u64,
    ) -> Result<(Arc<Cookie>, ObjectRef), CallbackError> {
        let cookie = self
            .cache
            .acquire_cookie(volume, key, &version_aux(data_version), size)?;
        let obj = self.lock().create(volume.key(), key, data_version);
        Ok((cookie, obj))
    }

    /// Forget the record, then relinquish the cookie.
    pub fn relinquish_cookie(&self, cookie: &Arc<Cookie>, obj: ObjectRef, retire: bool) {
        self.lock().forget(obj);
        self.cache.relinquish_cookie(cookie, retire);
    }

    /// Read cached data, only under a valid promise: never stale data.
    pub fn read(
        &self,
        cookie: &Arc<Cookie>,
        obj: ObjectRef,
        offset: u64,
        len: u64,
        now: Instant,
    ) -> Result<CoherentRead, CallbackError> {
        // The operation first: see the module comment.
        let op = self.cache.begin_operation(cookie, false);
        let validity = {
            let reg = self.lock();
            Self::check_cookie(&reg, cookie, obj)?;
            reg.validate(obj, now)
        };
        let Validity::Valid { data_version } = validity else {
            return Ok(CoherentRead::Revalidate);
        };
        Ok(match op.read(offset, len)? {
            ReadOutcome::Data(segments) => CoherentRead::Data {
                data_version,
                segments,
            },
            ReadOutcome::NoData => CoherentRead::NoData { data_version },
            ReadOutcome::Stale => CoherentRead::Stale,
        })
    }

    /// The server replied to the request `token` was taken for: the file
    /// is at `promise.data_version`, of `size` bytes, with `promise`.
    /// The same version as the cached data keeps the data and installs the
    /// promise; another invalidates the data at once (concurrent readers
    /// see `Revalidate` until that is done), then installs the promise.
    /// `by` is the holder asking, which needs no zap.
    ///
    /// `Err(Broken)`: a break came after the token was taken (or the data
    /// version changed since): nothing was done; fetch again.
    pub fn revalidate(
        &self,
        cookie: &Arc<Cookie>,
        obj: ObjectRef,
        token: FetchToken,
        promise: Promise,
        size: u64,
        by: Option<u64>,
    ) -> Result<Revalidated, CallbackError> {
        let mut reg = self.lock();
        Self::check_cookie(&reg, cookie, obj)?;
        // One change at a time per object: the cookie's coherency data must
        // end as the record's version.
        while reg.is_invalidating(obj) {
            reg = self.changed.wait(reg).unwrap_or_else(|e| e.into_inner());
        }
        if reg.data_version(obj) == Some(promise.data_version) {
            reg.install(obj, token, promise)?;
            return Ok(Revalidated::Kept);
        }
        let zaps = reg.begin_change(obj, token, promise.data_version, by)?;
        drop(reg);
        let mut guard = ChangeGuard {
            coherent: self,
            obj,
            armed: true,
        };
        let r = self
            .cache
            .invalidate(cookie, &version_aux(Some(promise.data_version)), size);
        guard.armed = false;
        let installed = self
            .lock()
            .finish_change(obj, r.is_ok().then_some((token, promise)));
        self.changed.notify_all();
        r?;
        Ok(Revalidated::Changed {
            zaps,
            promise_installed: installed,
        })
    }

    /// Cache `data`, fetched from the server at `offset` under `token`,
    /// of `data_version`: only if nothing was broken since the token and
    /// the cached data is of that version (`Err(Broken)` otherwise);
    /// `Ok(Stale)` if the data is being invalidated meanwhile.
    pub fn write_fetched(
        &self,
        cookie: &Arc<Cookie>,
        obj: ObjectRef,
        token: FetchToken,
        data_version: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<WriteOutcome, CallbackError> {
        // The operation first, so that an invalidation after the check
        // below makes the write stale: see the module comment.
        let op = self.cache.begin_operation(cookie, true);
        {
            let reg = self.lock();
            Self::check_cookie(&reg, cookie, obj)?;
            if reg.is_invalidating(obj) {
                return Ok(WriteOutcome::Stale);
            }
            reg.check_fetched(obj, token, data_version)?;
        }
        Ok(op.write(offset, data)?)
    }

    /// A record for a cookie acquired elsewhere (the daemon acquires its
    /// cookies itself, with the client's coherency data): its cached data
    /// is of `data_version`.
    pub fn track(&self, volume_key: &[u8], key: &[u8], data_version: Option<u64>) -> ObjectRef {
        self.lock().create(volume_key, key, data_version)
    }

    /// Forget a record made by [`Coherent::track`].
    pub fn untrack(&self, obj: ObjectRef) {
        self.lock().forget(obj);
    }

    /// Whether promises decide what may be read of `obj` (its volume was
    /// declared for a server), and if so whether its data may be served.
    /// `None`: no server, the cookie layer alone decides.
    pub fn gate(&self, obj: ObjectRef, now: Instant) -> Option<Validity> {
        let reg = self.lock();
        reg.has_server(obj).then(|| reg.validate(obj, now))
    }

    /// Install a promise for the data already cached (same version);
    /// [`CallbackError::OtherVersion`] for another version (use
    /// [`Coherent::revalidate`]), [`CallbackError::Broken`] if a break came
    /// after the token.
    pub fn install(
        &self,
        cookie: &Arc<Cookie>,
        obj: ObjectRef,
        token: FetchToken,
        promise: Promise,
    ) -> Result<(), CallbackError> {
        let mut reg = self.lock();
        Self::check_cookie(&reg, cookie, obj)?;
        reg.install(obj, token, promise)
    }

    /// The cached data is now of `data_version` (a client invalidated the
    /// cookie itself, e.g. after its own write): the data is discarded,
    /// the record takes the version and holds no promise, so the next read
    /// revalidates. The other holders get `Invalidated` zaps.
    pub fn invalidate(
        &self,
        cookie: &Arc<Cookie>,
        obj: ObjectRef,
        data_version: u64,
        size: u64,
        by: Option<u64>,
        now: Instant,
    ) -> Result<Vec<Zap>, CallbackError> {
        loop {
            let token = self.begin_fetch(obj);
            // A promise that has already expired: the version is recorded
            // and the data discarded, but nothing is vouched for.
            let promise = Promise {
                expires_at: now,
                data_version,
            };
            match self.revalidate(cookie, obj, token, promise, size, by) {
                Ok(Revalidated::Kept) => {
                    // Same version: the client still wants the data gone.
                    self.cache
                        .invalidate(cookie, &version_aux(Some(data_version)), size)?;
                    return Ok(Vec::new());
                }
                Ok(Revalidated::Changed { zaps, .. }) => return Ok(zaps),
                // A break in between: take a new token and go again.
                Err(CallbackError::Broken) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    // ------------------------------------------------------------ the registry

    /// [`Callbacks::validate`].
    pub fn validate(&self, obj: ObjectRef, now: Instant) -> Validity {
        self.lock().validate(obj, now)
    }

    /// [`Callbacks::begin_fetch`].
    pub fn begin_fetch(&self, obj: ObjectRef) -> FetchToken {
        self.lock().begin_fetch(obj)
    }

    /// [`Callbacks::lookup`].
    pub fn lookup(&self, volume_key: &[u8], object_key: &[u8]) -> Option<ObjectRef> {
        self.lock().lookup(volume_key, object_key)
    }

    /// [`Callbacks::data_version`].
    pub fn data_version(&self, obj: ObjectRef) -> Option<u64> {
        self.lock().data_version(obj)
    }

    /// [`Callbacks::volume_server`].
    pub fn volume_server(&self, volume_key: &[u8]) -> Option<ServerId> {
        self.lock().volume_server(volume_key)
    }

    /// [`Callbacks::declare_server`].
    pub fn declare_server(&self, volume_key: &[u8], server: &ServerId, epoch: u64) -> Vec<Zap> {
        self.lock().declare_server(volume_key, server, epoch)
    }

    /// [`Callbacks::break_files`].
    pub fn break_files(&self, objs: &[ObjectRef]) -> Vec<Zap> {
        self.lock().break_files(objs)
    }

    /// [`Callbacks::break_volume`].
    pub fn break_volume(&self, volume_key: &[u8]) -> Vec<Zap> {
        self.lock().break_volume(volume_key)
    }

    /// [`Callbacks::break_server`].
    pub fn break_server(&self, server: &ServerId) -> Vec<Zap> {
        self.lock().break_server(server)
    }

    /// [`Callbacks::hold`].
    pub fn hold(&self, obj: ObjectRef, holder: u64, tag: u32) -> Result<(), CallbackError> {
        self.lock().hold(obj, holder, tag)
    }

    /// [`Callbacks::unhold`].
    pub fn unhold(&self, obj: ObjectRef, holder: u64) -> bool {
        self.lock().unhold(obj, holder)
    }

    /// [`Callbacks::drop_holder`].
    pub fn drop_holder(&self, holder: u64) -> usize {
        self.lock().drop_holder(holder)
    }

    /// [`Callbacks::stats`].
    pub fn stats(&self) -> CallbackStats {
        self.lock().stats()
    }

    /// [`Callbacks::check_consistency`].
    pub fn check_consistency(&self) -> Result<(), String> {
        self.lock().check_consistency()
    }
}
