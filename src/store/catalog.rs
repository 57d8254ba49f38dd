//! The catalog: volumes and objects (lookup, create, delete), their
//! coherency data and size, and the pins (accesses in flight) and holds
//! (in use by a cookie) that keep an object's data from being culled.

use ringcache_ondisk::record::OBJECT_FLAG_DIRTY;
use ringcache_ondisk::{AUX_MAX, OBJECT_KEY_MAX, Record};

use super::error::invalid;
use super::*;

/// What the store tells about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub id: ObjectId,
    pub volume: VolumeId,
    pub aux: Vec<u8>,
    pub size: u64,
    pub data_gen: u64,
    pub dirty: bool,
}

pub(super) fn check_volume_key(key: &[u8]) -> Result<()> {
    ringcache_ondisk::check_volume_key(key).map_err(|e| invalid(e.to_string()))
}

pub(super) fn check_object_key(key: &[u8]) -> Result<()> {
    if key.is_empty() || key.len() > OBJECT_KEY_MAX {
        return Err(invalid(format!(
            "object key must be 1..={OBJECT_KEY_MAX} bytes, got {}",
            key.len()
        )));
    }
    Ok(())
}

pub(super) fn check_aux(aux: &[u8]) -> Result<()> {
    if aux.len() > AUX_MAX {
        return Err(invalid(format!(
            "coherency data must be at most {AUX_MAX} bytes, got {}",
            aux.len()
        )));
    }
    Ok(())
}

impl Store {
    /// The volume with `key`, created if `create` and absent.
    pub fn volume(&self, key: &[u8], create: bool) -> Result<VolumeId> {
        check_volume_key(key)?;
        let mut inner = self.lock();
        Self::check_failed(&inner)?;
        if let Some(&id) = inner.ix.volume_by_key.get(key) {
            return Ok(id);
        }
        if !create {
            return Err(StoreError::NoSuchVolume);
        }
        let volume_id = inner.ix.next_volume_id;
        let rec = Record::Volume { volume_id, key };
        self.commit(&mut inner, &rec);
        Ok(volume_id)
    }

    /// Delete a volume and every object in it (durable on return).
    pub fn delete_volume(&self, volume_id: VolumeId) -> Result<()> {
        {
            let mut inner = self.lock();
            Self::check_failed(&inner)?;
            if !inner.ix.volumes.contains_key(&volume_id) {
                return Err(StoreError::NoSuchVolume);
            }
            self.commit(&mut inner, &Record::VolumeDelete { volume_id });
        }
        self.flush()
    }

    /// Key of every volume.
    pub fn volumes(&self) -> Vec<(VolumeId, Vec<u8>)> {
        let inner = self.lock();
        let mut v: Vec<_> = inner
            .ix
            .volumes
            .iter()
            .map(|(&id, k)| (id, k.to_vec()))
            .collect();
        v.sort();
        v
    }

    // ---------------------------------------------------------------- objects

    pub(super) fn info(id: ObjectId, o: &index::Object) -> ObjectInfo {
        ObjectInfo {
            id,
            volume: o.volume,
            aux: o.aux.to_vec(),
            size: o.size,
            data_gen: o.data_gen,
            dirty: o.flags & OBJECT_FLAG_DIRTY != 0,
        }
    }

    /// Look an object up by key.
    pub fn lookup(&self, volume: VolumeId, key: &[u8]) -> Result<Option<ObjectInfo>> {
        check_object_key(key)?;
        let mut inner = self.lock();
        Self::check_failed(&inner)?;
        let Some(&id) = inner.ix.object_by_key.get(&(volume, Box::from(key))) else {
            return Ok(None);
        };
        inner.ix.clock += 1;
        let clock = inner.ix.clock;
        Ok(inner.ix.objects.get_mut(&id).map(|o| {
            o.last_use = clock;
            Self::info(id, o)
        }))
    }

    /// What the store knows of object `id`.
    pub fn stat(&self, id: ObjectId) -> Result<ObjectInfo> {
        let inner = self.lock();
        inner
            .ix
            .objects
            .get(&id)
            .map(|o| Self::info(id, o))
            .ok_or(StoreError::NoSuchObject)
    }

    /// Every object of a volume (or of all volumes), sorted by id.
    pub fn objects(&self, volume: Option<VolumeId>) -> Vec<(ObjectId, Vec<u8>)> {
        let inner = self.lock();
        let mut v: Vec<_> = inner
            .ix
            .objects
            .iter()
            .filter(|(_, o)| volume.is_none_or(|vol| o.volume == vol))
            .map(|(&id, o)| (id, o.key.to_vec()))
            .collect();
        v.sort();
        v
    }

    /// Create an object. Fails with [`StoreError::Exists`] if the key is
    /// taken. Not durable by itself: a crash may forget a new object.
    pub fn create(&self, volume: VolumeId, key: &[u8], aux: &[u8], size: u64) -> Result<ObjectId> {
        check_object_key(key)?;
        check_aux(aux)?;
        let mut inner = self.lock();
        Self::check_failed(&inner)?;
        if !inner.ix.volumes.contains_key(&volume) {
            return Err(StoreError::NoSuchVolume);
        }
        if inner
            .ix
            .object_by_key
            .contains_key(&(volume, Box::from(key)))
        {
            return Err(StoreError::Exists);
        }
        self.cull_objects_if_needed(&mut inner, 1 + key.len() as u64 + aux.len() as u64)?;
        let object_id = inner.ix.next_object_id;
        let rec = Record::Object {
            object_id,
            volume_id: volume,
            data_gen: 1,
            size,
            flags: 0,
            key,
            aux,
        };
        self.commit(&mut inner, &rec);
        drop(inner);
        self.after_op()?;
        Ok(object_id)
    }

    /// Pin an object (an access in flight): it is not culled until unpinned.
    /// Returns the object's data generation at this moment.
    pub fn pin(&self, id: ObjectId) -> Result<u64> {
        let mut inner = self.lock();
        let o = inner
            .ix
            .objects
            .get_mut(&id)
            .ok_or(StoreError::NoSuchObject)?;
        o.pins += 1;
        Ok(o.data_gen)
    }

    /// Hold an object for a live cookie: it is not culled until released
    /// (its data may still be evicted).
    pub fn hold(&self, id: ObjectId) -> Result<()> {
        let mut inner = self.lock();
        let o = inner
            .ix
            .objects
            .get_mut(&id)
            .ok_or(StoreError::NoSuchObject)?;
        o.holds += 1;
        Ok(())
    }

    /// Release a hold taken with [`Store::hold`].
    pub fn release(&self, id: ObjectId) {
        let mut inner = self.lock();
        if let Some(o) = inner.ix.objects.get_mut(&id) {
            o.holds = o.holds.saturating_sub(1);
        }
    }

    /// Whether object culling found nothing it may cull the last time it
    /// needed to (objects held by idle cookies should be let go).
    pub fn under_object_pressure(&self) -> bool {
        self.lock().object_pressure
    }

    /// Release a pin taken with [`Store::pin`].
    pub fn unpin(&self, id: ObjectId) {
        let mut inner = self.lock();
        if let Some(o) = inner.ix.objects.get_mut(&id) {
            o.pins = o.pins.saturating_sub(1);
        }
        self.wake_space_waiters(inner);
    }

    /// New coherency data and size: every byte cached before is gone at
    /// once. Durable on return.
    pub fn invalidate(&self, id: ObjectId, aux: &[u8], size: u64) -> Result<u64> {
        check_aux(aux)?;
        let new_gen = {
            let mut inner = self.lock();
            Self::check_failed(&inner)?;
            let o = inner.ix.objects.get(&id).ok_or(StoreError::NoSuchObject)?;
            let data_gen = o.data_gen + 1;
            let rec = Record::Invalidate {
                object_id: id,
                data_gen,
                size,
                aux,
            };
            self.commit(&mut inner, &rec);
            data_gen
        };
        self.flush()?;
        Ok(new_gen)
    }

    /// New coherency data and size for content that is still current (the
    /// netfs changed the file itself and cached the new content): nothing
    /// is discarded but bytes past the new size.
    pub fn update_aux(&self, id: ObjectId, aux: &[u8], size: u64) -> Result<()> {
        check_aux(aux)?;
        let mut inner = self.lock();
        Self::check_failed(&inner)?;
        let o = inner.ix.objects.get(&id).ok_or(StoreError::NoSuchObject)?;
        let (volume_id, key, data_gen, flags) = (o.volume, o.key.clone(), o.data_gen, o.flags);
        let rec = Record::Object {
            object_id: id,
            volume_id,
            data_gen,
            size,
            flags,
            key: &key,
            aux,
        };
        self.commit(&mut inner, &rec);
        Ok(())
    }

    /// New object size; bytes past it are gone.
    pub fn resize(&self, id: ObjectId, size: u64) -> Result<()> {
        let mut inner = self.lock();
        Self::check_failed(&inner)?;
        if !inner.ix.objects.contains_key(&id) {
            return Err(StoreError::NoSuchObject);
        }
        self.commit(
            &mut inner,
            &Record::Resize {
                object_id: id,
                size,
            },
        );
        Ok(())
    }

    /// Delete an object. Durable on return.
    pub fn delete(&self, id: ObjectId) -> Result<()> {
        {
            let mut inner = self.lock();
            Self::check_failed(&inner)?;
            if !inner.ix.objects.contains_key(&id) {
                return Err(StoreError::NoSuchObject);
            }
            self.commit(&mut inner, &Record::Delete { object_id: id });
        }
        self.flush()
    }

    /// Mark an object dirty (durable on return when set) or clean.
    pub fn set_dirty(&self, id: ObjectId, dirty: bool) -> Result<()> {
        {
            let mut inner = self.lock();
            Self::check_failed(&inner)?;
            let o = inner.ix.objects.get(&id).ok_or(StoreError::NoSuchObject)?;
            let flags = if dirty {
                o.flags | OBJECT_FLAG_DIRTY
            } else {
                o.flags & !OBJECT_FLAG_DIRTY
            };
            if flags == o.flags {
                return Ok(());
            }
            self.commit(
                &mut inner,
                &Record::Flags {
                    object_id: id,
                    flags,
                },
            );
        }
        if dirty { self.flush() } else { Ok(()) }
    }

    /// Which byte ranges of the object are cached, merged.
    pub fn occupancy(&self, id: ObjectId) -> Result<Vec<(u64, u64)>> {
        self.lock().ix.occupancy(id).ok_or(StoreError::NoSuchObject)
    }
}
