//! [`Callbacks`]: the servers, volumes and object records with their break
//! counters, promises and holds. Pure bookkeeping: no I/O, no locks, no
//! clock of its own (every time is an argument, so tests inject it).
//!
//! Counters are stamps from one registry-wide `u64` that only grows: a
//! break sets the broken thing's stamp to the next value. A snapshot of
//! three stamps therefore tells whether anything was broken since, and a
//! token can also tell whether it predates an object's last data-version
//! change. At one break per nanosecond the stamp would wrap after 584
//! years; it is not checked.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;

use slab::Slab;

use super::{
    CallbackConfig, CallbackError, CallbackStats, FetchToken, ObjectRef, Promise, ServerId, Stamps,
    Validity, Zap, ZapReason,
};

struct ServerRec {
    epoch: u64,
    stamp: u64,
    /// Volumes declared on this server, for a whole-server break's zaps.
    volumes: BTreeSet<usize>,
}

struct VolumeRec {
    key: Box<[u8]>,
    server: Option<usize>,
    stamp: u64,
    /// Object records by object key.
    objects: HashMap<Box<[u8]>, usize>,
    /// Object records with at least one hold: what a volume or server
    /// break walks.
    in_use: BTreeSet<usize>,
}

struct ObjectRec {
    generation: u64,
    volume: usize,
    key: Box<[u8]>,
    stamp: u64,
    /// Registry stamp of the last data-version change (0: none).
    changed_at: u64,
    /// The version the cached data belongs to.
    data_version: Option<u64>,
    /// The promise and the stamps seen when it was requested.
    promise: Option<(Promise, Stamps)>,
    /// The data is being invalidated for a new version: not valid, no
    /// promise may be installed, until [`Callbacks::finish_change`].
    invalidating: bool,
    /// (holder, tag); a handful at most, so a vector.
    holds: Vec<(u64, u32)>,
}

#[derive(Default)]
struct Counts {
    holds: usize,
    in_use: usize,
    invalidating: usize,
    file_breaks: u64,
    volume_breaks: u64,
    server_breaks: u64,
    zaps: u64,
    break_visits: u64,
}

/// The callback registry. Not synchronised: [`super::Coherent`] keeps it
/// under a mutex.
pub struct Callbacks {
    cfg: CallbackConfig,
    /// The last stamp handed out.
    stamp: u64,
    /// The last record generation handed out.
    generation: u64,
    servers: Vec<ServerRec>,
    server_ix: HashMap<ServerId, usize>,
    /// Volume records are kept for the registry's life: there are few, and
    /// their stamps must not go back.
    volumes: Vec<VolumeRec>,
    volume_ix: HashMap<Box<[u8]>, usize>,
    objects: Slab<ObjectRec>,
    /// Holder -> the object records it holds.
    holders: HashMap<u64, HashSet<usize>>,
    counts: Counts,
}

impl Callbacks {
    /// An empty registry.
    pub fn new(cfg: CallbackConfig) -> Callbacks {
        Callbacks {
            cfg,
            stamp: 0,
            generation: 0,
            servers: Vec::new(),
            server_ix: HashMap::new(),
            volumes: Vec::new(),
            volume_ix: HashMap::new(),
            objects: Slab::new(),
            holders: HashMap::new(),
            counts: Counts::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CallbackConfig {
        &self.cfg
    }

    fn next_stamp(&mut self) -> u64 {
        // Never wraps in practice (see the module comment).
        self.stamp += 1;
        self.stamp
    }

    fn volume_index(&mut self, volume_key: &[u8]) -> usize {
        if let Some(&vi) = self.volume_ix.get(volume_key) {
            return vi;
        }
        let vi = self.volumes.len();
        self.volumes.push(VolumeRec {
            key: volume_key.into(),
            server: None,
            stamp: 0,
            objects: HashMap::new(),
            in_use: BTreeSet::new(),
        });
        self.volume_ix.insert(volume_key.into(), vi);
        vi
    }

    fn rec(&self, obj: ObjectRef) -> Option<&ObjectRec> {
        self.objects
            .get(obj.index)
            .filter(|r| r.generation == obj.generation)
    }

    fn rec_mut(&mut self, obj: ObjectRef) -> Option<&mut ObjectRec> {
        self.objects
            .get_mut(obj.index)
            .filter(|r| r.generation == obj.generation)
    }

    fn stamps_of(&self, rec: &ObjectRec) -> Stamps {
        let vol = self.volumes.get(rec.volume);
        let server = vol
            .and_then(|v| v.server)
            .and_then(|s| self.servers.get(s))
            .map_or(0, |s| s.stamp);
        Stamps {
            object: rec.stamp,
            volume: vol.map_or(0, |v| v.stamp),
            server,
        }
    }

    /// The record, if `token` was taken for it and nothing was broken
    /// since.
    fn intact(&self, obj: ObjectRef, token: &FetchToken) -> Option<&ObjectRec> {
        if token.obj != obj {
            return None;
        }
        self.rec(obj).filter(|r| self.stamps_of(r) == token.seen)
    }

    fn zaps_of(
        &mut self,
        index: usize,
        reason: ZapReason,
        except: Option<u64>,
        out: &mut Vec<Zap>,
    ) {
        let Some(rec) = self.objects.get(index) else {
            return;
        };
        let object = ObjectRef {
            index,
            generation: rec.generation,
        };
        let before = out.len();
        out.extend(
            rec.holds
                .iter()
                .filter(|(h, _)| Some(*h) != except)
                .map(|&(holder, tag)| Zap {
                    holder,
                    tag,
                    reason,
                    object,
                }),
        );
        self.counts.zaps += (out.len() - before) as u64;
    }

    fn zap_volume(&mut self, vi: usize, reason: ZapReason, out: &mut Vec<Zap>) {
        let in_use: Vec<usize> = self
            .volumes
            .get(vi)
            .map(|v| v.in_use.iter().copied().collect())
            .unwrap_or_default();
        self.counts.break_visits += in_use.len() as u64;
        for index in in_use {
            self.zaps_of(index, reason, None, out);
        }
    }

    // ------------------------------------------------------------ servers and volumes

    /// The volume `volume_key` is served by `server`, which is at `epoch`
    /// (call it with every reply: the epoch comes with it). A new epoch
    /// for a known server is a whole-server break (it restarted and forgot
    /// its promises); a volume that moves to another server is a volume
    /// break. A volume's first declaration breaks nothing. Returns the
    /// zaps.
    pub fn declare_server(&mut self, volume_key: &[u8], server: &ServerId, epoch: u64) -> Vec<Zap> {
        let mut zaps = Vec::new();
        let si = match self.server_ix.get(server) {
            Some(&si) => {
                let restarted = self.servers.get(si).is_some_and(|s| s.epoch != epoch);
                if restarted {
                    if let Some(s) = self.servers.get_mut(si) {
                        s.epoch = epoch;
                    }
                    self.break_server_index(si, &mut zaps);
                }
                si
            }
            None => {
                let si = self.servers.len();
                self.servers.push(ServerRec {
                    epoch,
                    stamp: 0,
                    volumes: BTreeSet::new(),
                });
                self.server_ix.insert(server.clone(), si);
                si
            }
        };
        let vi = self.volume_index(volume_key);
        let old = self.volumes.get(vi).and_then(|v| v.server);
        if old == Some(si) {
            return zaps;
        }
        if let Some(o) = old.and_then(|o| self.servers.get_mut(o)) {
            o.volumes.remove(&vi);
        }
        if let Some(s) = self.servers.get_mut(si) {
            s.volumes.insert(vi);
        }
        if let Some(v) = self.volumes.get_mut(vi) {
            v.server = Some(si);
        }
        if old.is_some() {
            self.break_volume_index(vi, &mut zaps);
        }
        zaps
    }

    /// The server `volume_key` was declared for, if any.
    pub fn volume_server(&self, volume_key: &[u8]) -> Option<ServerId> {
        let vi = *self.volume_ix.get(volume_key)?;
        let si = self.volumes.get(vi)?.server?;
        self.server_ix
            .iter()
            .find(|&(_, &i)| i == si)
            .map(|(id, _)| id.clone())
    }

    /// Whether the object's volume was declared for a server: only then
    /// do promises decide what may be read.
    pub fn has_server(&self, obj: ObjectRef) -> bool {
        self.rec(obj)
            .and_then(|r| self.volumes.get(r.volume))
            .is_some_and(|v| v.server.is_some())
    }

    /// The epoch recorded for `server`.
    pub fn server_epoch(&self, server: &ServerId) -> Option<u64> {
        let si = *self.server_ix.get(server)?;
        self.servers.get(si).map(|s| s.epoch)
    }

    // ------------------------------------------------------------ object records

    /// A new record for (`volume_key`, `object_key`) whose cached data is
    /// of `data_version` (`None`: unknown, nothing cached is usable). An
    /// existing record under the same keys is forgotten first: its handles
    /// and tokens die with it.
    pub fn create(
        &mut self,
        volume_key: &[u8],
        object_key: &[u8],
        data_version: Option<u64>,
    ) -> ObjectRef {
        if let Some(old) = self.lookup(volume_key, object_key) {
            self.forget(old);
        }
        let vi = self.volume_index(volume_key);
        self.generation += 1;
        let generation = self.generation;
        let index = self.objects.insert(ObjectRec {
            generation,
            volume: vi,
            key: object_key.into(),
            stamp: 0,
            changed_at: 0,
            data_version,
            promise: None,
            invalidating: false,
            holds: Vec::new(),
        });
        if let Some(v) = self.volumes.get_mut(vi) {
            v.objects.insert(object_key.into(), index);
        }
        ObjectRef { index, generation }
    }

    /// The live record for (`volume_key`, `object_key`), if any.
    pub fn lookup(&self, volume_key: &[u8], object_key: &[u8]) -> Option<ObjectRef> {
        let vi = *self.volume_ix.get(volume_key)?;
        let index = *self.volumes.get(vi)?.objects.get(object_key)?;
        let generation = self.objects.get(index)?.generation;
        Some(ObjectRef { index, generation })
    }

    /// The keys a record was made for.
    pub fn keys(&self, obj: ObjectRef) -> Option<(&[u8], &[u8])> {
        let rec = self.rec(obj)?;
        let vol = self.volumes.get(rec.volume)?;
        Some((&vol.key, &rec.key))
    }

    /// Whether the record is a live one made for (`volume_key`,
    /// `object_key`). Compares bytes, hashes nothing.
    pub fn is_for(&self, obj: ObjectRef, volume_key: &[u8], object_key: &[u8]) -> bool {
        self.keys(obj) == Some((volume_key, object_key))
    }

    /// Forget a record (its cookie was relinquished): its holds go with
    /// it, and no handle or token taken before ever validates again.
    /// Returns whether there was such a record.
    pub fn forget(&mut self, obj: ObjectRef) -> bool {
        if self.rec(obj).is_none() {
            return false;
        }
        let rec = self.objects.remove(obj.index);
        for (holder, _) in &rec.holds {
            if let Some(set) = self.holders.get_mut(holder) {
                set.remove(&obj.index);
                if set.is_empty() {
                    self.holders.remove(holder);
                }
            }
        }
        self.counts.holds -= rec.holds.len();
        if rec.invalidating {
            self.counts.invalidating -= 1;
        }
        if let Some(v) = self.volumes.get_mut(rec.volume) {
            if v.objects.get(&rec.key) == Some(&obj.index) {
                v.objects.remove(&rec.key);
            }
            if v.in_use.remove(&obj.index) {
                self.counts.in_use -= 1;
            }
        }
        true
    }

    /// The data version the record's cached data belongs to.
    pub fn data_version(&self, obj: ObjectRef) -> Option<u64> {
        self.rec(obj)?.data_version
    }

    // ------------------------------------------------------------ validity

    /// Whether the object's cached data may be served at `now`. O(1): a
    /// slab lookup and three counter comparisons, no hashing.
    pub fn validate(&self, obj: ObjectRef, now: Instant) -> Validity {
        let Some(rec) = self.rec(obj) else {
            return Validity::Revalidate;
        };
        if rec.invalidating {
            return Validity::Revalidate;
        }
        let Some((promise, seen)) = rec.promise else {
            return Validity::Revalidate;
        };
        if rec.data_version != Some(promise.data_version) || self.stamps_of(rec) != seen {
            return Validity::Revalidate;
        }
        let lasts = now
            .checked_add(self.cfg.margin)
            .is_some_and(|t| t < promise.expires_at);
        if !lasts {
            return Validity::Revalidate;
        }
        Validity::Valid {
            data_version: promise.data_version,
        }
    }

    /// Whether the object's data is being invalidated for a new version.
    pub fn is_invalidating(&self, obj: ObjectRef) -> bool {
        self.rec(obj).is_some_and(|r| r.invalidating)
    }

    /// Snapshot the counters before sending a request for `obj` to the
    /// server. (A token for a forgotten record is born broken.)
    pub fn begin_fetch(&self, obj: ObjectRef) -> FetchToken {
        let seen = self.rec(obj).map_or(
            Stamps {
                object: 0,
                volume: 0,
                server: 0,
            },
            |r| self.stamps_of(r),
        );
        FetchToken {
            obj,
            seen,
            taken: self.stamp,
        }
    }

    /// Install a promise the server gave in reply to the request `token`
    /// was taken for. Refused ([`CallbackError::Broken`]) if anything was
    /// broken since, the record was forgotten, its data version changed
    /// since, or its data is being invalidated; refused
    /// ([`CallbackError::OtherVersion`]) if the promise is for another
    /// version than the cached data's.
    pub fn install(
        &mut self,
        obj: ObjectRef,
        token: FetchToken,
        promise: Promise,
    ) -> Result<(), CallbackError> {
        let seen = token.seen;
        let rec = self.intact(obj, &token).ok_or(CallbackError::Broken)?;
        if token.taken < rec.changed_at || rec.invalidating {
            return Err(CallbackError::Broken);
        }
        if rec.data_version != Some(promise.data_version) {
            return Err(CallbackError::OtherVersion {
                cached: rec.data_version,
                promised: promise.data_version,
            });
        }
        if let Some(rec) = self.rec_mut(obj) {
            rec.promise = Some((promise, seen));
        }
        Ok(())
    }

    /// Whether data of `data_version`, fetched under `token`, may be
    /// cached now: nothing broken since the token, the record's data is of
    /// that version, and not being invalidated.
    pub fn check_fetched(
        &self,
        obj: ObjectRef,
        token: FetchToken,
        data_version: u64,
    ) -> Result<(), CallbackError> {
        let rec = self.intact(obj, &token).ok_or(CallbackError::Broken)?;
        if rec.invalidating || rec.data_version != Some(data_version) {
            return Err(CallbackError::Broken);
        }
        Ok(())
    }

    /// Start changing the record's data version to `data_version` (the
    /// server says the file changed): the record is marked invalidating
    /// (not valid, no promise) until [`Callbacks::finish_change`], which
    /// the caller must call once the cached data is discarded. Tokens
    /// taken before can no longer install a promise. Returns `Invalidated`
    /// zaps for every holder but `by`.
    pub(crate) fn begin_change(
        &mut self,
        obj: ObjectRef,
        token: FetchToken,
        data_version: u64,
        by: Option<u64>,
    ) -> Result<Vec<Zap>, CallbackError> {
        let rec = self.intact(obj, &token).ok_or(CallbackError::Broken)?;
        if token.taken < rec.changed_at || rec.invalidating {
            return Err(CallbackError::Broken);
        }
        let changed_at = self.next_stamp();
        if let Some(rec) = self.rec_mut(obj) {
            rec.invalidating = true;
            rec.changed_at = changed_at;
            rec.data_version = Some(data_version);
            rec.promise = None;
        }
        self.counts.invalidating += 1;
        let mut zaps = Vec::new();
        self.zaps_of(obj.index, ZapReason::Invalidated, by, &mut zaps);
        Ok(zaps)
    }

    /// The change begun by [`Callbacks::begin_change`] is done (the data
    /// is discarded, or the attempt failed). With `install`, the promise
    /// is installed if nothing was broken since the token was taken.
    /// Returns whether it was.
    pub(crate) fn finish_change(
        &mut self,
        obj: ObjectRef,
        install: Option<(FetchToken, Promise)>,
    ) -> bool {
        let Some(rec) = self.rec_mut(obj) else {
            return false;
        };
        if !rec.invalidating {
            return false;
        }
        rec.invalidating = false;
        self.counts.invalidating -= 1;
        let Some((token, promise)) = install else {
            return false;
        };
        // The token predates the change we made; only breaks count here.
        let ok = self
            .intact(obj, &token)
            .is_some_and(|r| r.data_version == Some(promise.data_version));
        if ok && let Some(rec) = self.rec_mut(obj) {
            rec.promise = Some((promise, token.seen));
        }
        ok
    }

    // ------------------------------------------------------------ breaks

    /// The server broke its promises on these objects. O(objects given).
    /// Returns a `FileBreak` zap per holder of each (once, even if an
    /// object is given twice).
    pub fn break_files(&mut self, objs: &[ObjectRef]) -> Vec<Zap> {
        let mut zaps = Vec::new();
        let mut seen: HashSet<usize> = HashSet::new();
        for &obj in objs {
            if self.rec(obj).is_none() || !seen.insert(obj.index) {
                continue;
            }
            let stamp = self.next_stamp();
            if let Some(rec) = self.rec_mut(obj) {
                rec.stamp = stamp;
                rec.promise = None;
            }
            self.counts.file_breaks += 1;
            self.counts.break_visits += 1;
            self.zaps_of(obj.index, ZapReason::FileBreak, None, &mut zaps);
        }
        zaps
    }

    fn break_volume_index(&mut self, vi: usize, zaps: &mut Vec<Zap>) {
        let stamp = self.next_stamp();
        if let Some(v) = self.volumes.get_mut(vi) {
            v.stamp = stamp;
        }
        self.counts.volume_breaks += 1;
        self.zap_volume(vi, ZapReason::VolumeBreak, zaps);
    }

    /// Every promise on the volume is broken: one counter bump, plus a
    /// `VolumeBreak` zap per holder of each object of it in use.
    pub fn break_volume(&mut self, volume_key: &[u8]) -> Vec<Zap> {
        let mut zaps = Vec::new();
        if let Some(&vi) = self.volume_ix.get(volume_key) {
            self.break_volume_index(vi, &mut zaps);
        }
        zaps
    }

    fn break_server_index(&mut self, si: usize, zaps: &mut Vec<Zap>) {
        let stamp = self.next_stamp();
        let volumes: Vec<usize> = match self.servers.get_mut(si) {
            Some(s) => {
                s.stamp = stamp;
                s.volumes.iter().copied().collect()
            }
            None => return,
        };
        self.counts.server_breaks += 1;
        for vi in volumes {
            self.zap_volume(vi, ZapReason::ServerBreak, zaps);
        }
    }

    /// Every promise from the server is broken (AFS `InitCallBackState`):
    /// one counter bump, plus a `ServerBreak` zap per holder of each
    /// object in use on its volumes.
    pub fn break_server(&mut self, server: &ServerId) -> Vec<Zap> {
        let mut zaps = Vec::new();
        if let Some(&si) = self.server_ix.get(server) {
            self.break_server_index(si, &mut zaps);
        }
        zaps
    }

    // ------------------------------------------------------------ holds

    /// `holder` (a client connection) has the object in use under its
    /// `tag`: it will get a zap when the object is broken. Holding again
    /// replaces the tag.
    pub fn hold(&mut self, obj: ObjectRef, holder: u64, tag: u32) -> Result<(), CallbackError> {
        let rec = self.rec_mut(obj).ok_or(CallbackError::Forgotten)?;
        if let Some(h) = rec.holds.iter_mut().find(|(h, _)| *h == holder) {
            h.1 = tag;
            return Ok(());
        }
        rec.holds.push((holder, tag));
        let first = rec.holds.len() == 1;
        let vi = rec.volume;
        if first
            && let Some(v) = self.volumes.get_mut(vi)
            && v.in_use.insert(obj.index)
        {
            self.counts.in_use += 1;
        }
        self.holders.entry(holder).or_default().insert(obj.index);
        self.counts.holds += 1;
        Ok(())
    }

    /// Remove one record's hold by `holder`, if any, from the record's
    /// side; the caller fixes the holder index.
    fn unhold_index(&mut self, index: usize, holder: u64) -> bool {
        let Some(rec) = self.objects.get_mut(index) else {
            return false;
        };
        let Some(at) = rec.holds.iter().position(|(h, _)| *h == holder) else {
            return false;
        };
        rec.holds.swap_remove(at);
        let now_unused = rec.holds.is_empty();
        let vi = rec.volume;
        self.counts.holds -= 1;
        if now_unused
            && let Some(v) = self.volumes.get_mut(vi)
            && v.in_use.remove(&index)
        {
            self.counts.in_use -= 1;
        }
        true
    }

    /// `holder` no longer has the object in use. Returns whether it had.
    pub fn unhold(&mut self, obj: ObjectRef, holder: u64) -> bool {
        if self.rec(obj).is_none() || !self.unhold_index(obj.index, holder) {
            return false;
        }
        if let Some(set) = self.holders.get_mut(&holder) {
            set.remove(&obj.index);
            if set.is_empty() {
                self.holders.remove(&holder);
            }
        }
        true
    }

    /// `holder` went away (its connection closed): every hold of it goes.
    /// Returns how many there were.
    pub fn drop_holder(&mut self, holder: u64) -> usize {
        let Some(set) = self.holders.remove(&holder) else {
            return 0;
        };
        set.into_iter()
            .filter(|&index| self.unhold_index(index, holder))
            .count()
    }

    // ------------------------------------------------------------ inspection

    /// Counts. O(1).
    pub fn stats(&self) -> CallbackStats {
        let c = &self.counts;
        CallbackStats {
            servers: self.servers.len(),
            volumes: self.volumes.len(),
            objects: self.objects.len(),
            objects_in_use: c.in_use,
            holds: c.holds,
            holders: self.holders.len(),
            invalidating: c.invalidating,
            file_breaks: c.file_breaks,
            volume_breaks: c.volume_breaks,
            server_breaks: c.server_breaks,
            zaps: c.zaps,
            break_visits: c.break_visits,
        }
    }

    /// Cross-check every index against the records (O(everything); for
    /// tests and debugging). Describes the first inconsistency found.
    pub fn check_consistency(&self) -> Result<(), String> {
        let mut holds = 0;
        let mut in_use = 0;
        let mut invalidating = 0;
        for (index, rec) in &self.objects {
            let v = self
                .volumes
                .get(rec.volume)
                .ok_or(format!("object {index}: no volume {}", rec.volume))?;
            if v.objects.get(&rec.key) != Some(&index) {
                return Err(format!("object {index}: not in its volume's key map"));
            }
            if rec.holds.is_empty() == v.in_use.contains(&index) {
                return Err(format!("object {index}: in-use index disagrees"));
            }
            for (h, _) in &rec.holds {
                if !self.holders.get(h).is_some_and(|s| s.contains(&index)) {
                    return Err(format!("object {index}: holder {h} does not list it"));
                }
            }
            let mut hs: Vec<u64> = rec.holds.iter().map(|(h, _)| *h).collect();
            hs.sort_unstable();
            hs.dedup();
            if hs.len() != rec.holds.len() {
                return Err(format!("object {index}: a holder holds it twice"));
            }
            holds += rec.holds.len();
            in_use += usize::from(!rec.holds.is_empty());
            invalidating += usize::from(rec.invalidating);
        }
        for (h, set) in &self.holders {
            if set.is_empty() {
                return Err(format!("holder {h}: empty entry left behind"));
            }
            for index in set {
                let held = self
                    .objects
                    .get(*index)
                    .is_some_and(|r| r.holds.iter().any(|(x, _)| x == h));
                if !held {
                    return Err(format!("holder {h}: lists object {index} it does not hold"));
                }
            }
        }
        for (vi, v) in self.volumes.iter().enumerate() {
            for index in v.objects.values().chain(v.in_use.iter()) {
                if self.objects.get(*index).is_none_or(|r| r.volume != vi) {
                    return Err(format!("volume {vi}: lists object {index} not of it"));
                }
            }
            if let Some(si) = v.server
                && !self
                    .servers
                    .get(si)
                    .is_some_and(|s| s.volumes.contains(&vi))
            {
                return Err(format!("volume {vi}: its server does not list it"));
            }
        }
        for (si, s) in self.servers.iter().enumerate() {
            for vi in &s.volumes {
                if self.volumes.get(*vi).and_then(|v| v.server) != Some(si) {
                    return Err(format!("server {si}: lists volume {vi} not on it"));
                }
            }
        }
        let c = &self.counts;
        if (c.holds, c.in_use, c.invalidating) != (holds, in_use, invalidating) {
            return Err(format!(
                "counts (holds, in use, invalidating) {:?} but records say {:?}",
                (c.holds, c.in_use, c.invalidating),
                (holds, in_use, invalidating)
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::callback::SERVER_ID_MAX;

    fn sid(s: &str) -> ServerId {
        ServerId::new(s.as_bytes()).unwrap()
    }

    fn promise(now: Instant, secs: u64, dv: u64) -> Promise {
        Promise {
            expires_at: now + Duration::from_secs(secs),
            data_version: dv,
        }
    }

    fn setup() -> (Callbacks, ObjectRef, Instant) {
        let mut cb = Callbacks::new(CallbackConfig::default());
        assert!(cb.declare_server(b"vol", &sid("fs1"), 1).is_empty());
        let o = cb.create(b"vol", b"file", Some(3));
        (cb, o, Instant::now())
    }

    fn valid(cb: &mut Callbacks, o: ObjectRef, now: Instant) {
        let t = cb.begin_fetch(o);
        cb.install(o, t, promise(now, 60, 3)).unwrap();
        assert_eq!(cb.validate(o, now), Validity::Valid { data_version: 3 });
    }

    #[test]
    fn server_id_length_is_checked() {
        assert!(ServerId::new(b"").is_err());
        assert!(ServerId::new(&[7; SERVER_ID_MAX]).is_ok());
        assert!(matches!(
            ServerId::new(&[7; SERVER_ID_MAX + 1]),
            Err(CallbackError::InvalidServerId { len: 65 })
        ));
    }

    #[test]
    fn each_counter_breaks_the_promise() {
        let (mut cb, o, now) = setup();
        valid(&mut cb, o, now);
        cb.break_files(&[o]);
        assert_eq!(cb.validate(o, now), Validity::Revalidate);
        valid(&mut cb, o, now);
        cb.break_volume(b"vol");
        assert_eq!(cb.validate(o, now), Validity::Revalidate);
        valid(&mut cb, o, now);
        cb.break_server(&sid("fs1"));
        assert_eq!(cb.validate(o, now), Validity::Revalidate);
        valid(&mut cb, o, now);
        // Same epoch: nothing. New epoch: a server break.
        cb.declare_server(b"vol", &sid("fs1"), 1);
        assert_eq!(cb.validate(o, now), Validity::Valid { data_version: 3 });
        cb.declare_server(b"vol", &sid("fs1"), 2);
        assert_eq!(cb.validate(o, now), Validity::Revalidate);
        assert_eq!(cb.server_epoch(&sid("fs1")), Some(2));
        valid(&mut cb, o, now);
        // Another volume's break, another server's break: nothing.
        cb.declare_server(b"vol2", &sid("fs2"), 1);
        cb.break_volume(b"vol2");
        cb.break_server(&sid("fs2"));
        assert_eq!(cb.validate(o, now), Validity::Valid { data_version: 3 });
        // The volume moves: a volume break.
        cb.declare_server(b"vol", &sid("fs2"), 1);
        assert_eq!(cb.validate(o, now), Validity::Revalidate);
        assert_eq!(cb.stats().volume_breaks, 3);
        cb.check_consistency().unwrap();
    }

    #[test]
    fn a_break_after_the_token_refuses_the_promise() {
        let (mut cb, o, now) = setup();
        for kind in 0..3 {
            let t = cb.begin_fetch(o);
            match kind {
                0 => cb.break_files(&[o]),
                1 => cb.break_volume(b"vol"),
                _ => cb.break_server(&sid("fs1")),
            };
            assert!(matches!(
                cb.install(o, t, promise(now, 60, 3)),
                Err(CallbackError::Broken)
            ));
            assert!(cb.check_fetched(o, t, 3).is_err());
            assert_eq!(cb.validate(o, now), Validity::Revalidate);
        }
    }

    #[test]
    fn a_promise_for_another_version_is_refused() {
        let (mut cb, o, now) = setup();
        let t = cb.begin_fetch(o);
        assert!(matches!(
            cb.install(o, t, promise(now, 60, 4)),
            Err(CallbackError::OtherVersion {
                cached: Some(3),
                promised: 4
            })
        ));
    }

    #[test]
    fn margin_and_expiry() {
        let (mut cb, o, now) = setup();
        let t = cb.begin_fetch(o);
        cb.install(o, t, promise(now, 30, 3)).unwrap();
        assert!(matches!(cb.validate(o, now), Validity::Valid { .. }));
        let edge = now + Duration::from_secs(20);
        assert_eq!(
            cb.validate(o, edge),
            Validity::Revalidate,
            "expires within the margin"
        );
        assert!(matches!(
            cb.validate(o, edge - Duration::from_nanos(1)),
            Validity::Valid { .. }
        ));
    }

    #[test]
    fn forgotten_records_never_validate_again() {
        let (mut cb, o, now) = setup();
        let t = cb.begin_fetch(o);
        cb.hold(o, 1, 10).unwrap();
        assert!(cb.forget(o));
        assert!(!cb.forget(o));
        let o2 = cb.create(b"vol", b"file", Some(3));
        assert_ne!(o, o2);
        assert_eq!(cb.validate(o, now), Validity::Revalidate);
        assert!(matches!(
            cb.install(o2, t, promise(now, 60, 3)),
            Err(CallbackError::Broken)
        ));
        assert!(matches!(
            cb.install(o, t, promise(now, 60, 3)),
            Err(CallbackError::Broken)
        ));
        assert!(matches!(cb.hold(o, 1, 1), Err(CallbackError::Forgotten)));
        assert!(cb.break_files(&[o]).is_empty());
        assert_eq!(cb.stats().holds, 0);
        assert_eq!(cb.stats().holders, 0);
        // Creating again over a live record forgets it too.
        cb.hold(o2, 1, 1).unwrap();
        let o3 = cb.create(b"vol", b"file", None);
        assert_eq!(cb.lookup(b"vol", b"file"), Some(o3));
        assert!(!cb.unhold(o2, 1));
        assert_eq!(cb.stats().objects, 1);
        assert_eq!(cb.stats().holds, 0);
        cb.check_consistency().unwrap();
        assert_eq!(cb.keys(o3), Some((&b"vol"[..], &b"file"[..])));
    }

    #[test]
    fn holds_and_zaps() {
        let (mut cb, o, _) = setup();
        let p = cb.create(b"vol", b"other", None);
        cb.hold(o, 1, 10).unwrap();
        cb.hold(o, 2, 20).unwrap();
        cb.hold(o, 2, 21).unwrap(); // a new tag, still one hold
        cb.hold(p, 1, 11).unwrap();
        assert_eq!(cb.stats().holds, 3);
        let mut z = cb.break_files(&[o, o]);
        z.sort_by_key(|z| z.holder);
        let got: Vec<_> = z.iter().map(|z| (z.holder, z.tag, z.reason)).collect();
        assert_eq!(
            got,
            vec![(1, 10, ZapReason::FileBreak), (2, 21, ZapReason::FileBreak)]
        );
        assert_eq!(cb.break_volume(b"vol").len(), 3);
        assert_eq!(cb.break_server(&sid("fs1")).len(), 3);
        assert!(cb.unhold(o, 2));
        assert!(!cb.unhold(o, 2));
        assert_eq!(cb.drop_holder(1), 2);
        assert_eq!(cb.drop_holder(1), 0);
        assert!(cb.break_server(&sid("fs1")).is_empty());
        let s = cb.stats();
        assert_eq!((s.holds, s.holders, s.objects_in_use), (0, 0, 0));
        cb.check_consistency().unwrap();
    }

    #[test]
    fn a_change_hides_the_data_until_finished() {
        let (mut cb, o, now) = setup();
        cb.hold(o, 1, 10).unwrap();
        cb.hold(o, 2, 20).unwrap();
        valid(&mut cb, o, now);
        let old = cb.begin_fetch(o);
        let t = cb.begin_fetch(o);
        let z = cb.begin_change(o, t, 4, Some(1)).unwrap();
        assert_eq!(z.len(), 1);
        assert_eq!((z[0].holder, z[0].reason), (2, ZapReason::Invalidated));
        assert!(cb.is_invalidating(o));
        assert_eq!(cb.validate(o, now), Validity::Revalidate);
        assert!(cb.check_fetched(o, t, 4).is_err(), "not while invalidating");
        assert!(
            cb.begin_change(o, t, 5, None).is_err(),
            "one change at a time"
        );
        assert!(cb.finish_change(o, Some((t, promise(now, 60, 4)))));
        assert_eq!(cb.validate(o, now), Validity::Valid { data_version: 4 });
        // Data of the new version fetched before the change is still fine
        // to cache; a promise from before the change is not.
        assert!(cb.check_fetched(o, old, 4).is_ok());
        assert!(cb.check_fetched(o, old, 3).is_err());
        assert!(matches!(
            cb.install(o, old, promise(now, 60, 4)),
            Err(CallbackError::Broken)
        ));
        // A break while invalidating: the promise is not installed.
        let t = cb.begin_fetch(o);
        cb.begin_change(o, t, 5, None).unwrap();
        cb.break_volume(b"vol");
        assert!(!cb.finish_change(o, Some((t, promise(now, 60, 5)))));
        assert_eq!(cb.validate(o, now), Validity::Revalidate);
        assert_eq!(cb.data_version(o), Some(5));
        assert_eq!(cb.stats().invalidating, 0);
        cb.check_consistency().unwrap();
    }

    #[test]
    fn forgetting_while_invalidating_leaves_no_count() {
        let (mut cb, o, _) = setup();
        let t = cb.begin_fetch(o);
        cb.begin_change(o, t, 9, None).unwrap();
        assert_eq!(cb.stats().invalidating, 1);
        cb.forget(o);
        assert!(!cb.finish_change(o, None));
        assert_eq!(cb.stats().invalidating, 0);
        cb.check_consistency().unwrap();
    }
}
