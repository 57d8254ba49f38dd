//! [`CacheBackend`] for the object store: fscache's cache operations in
//! terms of volumes, objects, pins and holds.

use super::backend::{CacheBackend, Lookup};
use crate::store::{ObjectId, Segments, Store, StoreError, VolumeId};

use super::VOLUME_COHERENCY_KEY as VOLUME_AUX_KEY;

impl CacheBackend for Store {
    fn acquire_volume(&self, key: &[u8], aux: &[u8]) -> Result<VolumeId, StoreError> {
        let vol = self.volume(key, true)?;
        let (vol, aux_id) = match self.lookup(vol, VOLUME_AUX_KEY)? {
            Some(info) if info.aux == aux => (vol, info.id),
            Some(_) => {
                // Coherency mismatch: the volume's content is stale.
                tracing::info!(volume = %String::from_utf8_lossy(key), "volume coherency changed: discarding its objects");
                self.delete_volume(vol)?;
                let vol = self.volume(key, true)?;
                let id = self.create(vol, VOLUME_AUX_KEY, aux, 0)?;
                self.flush()?;
                (vol, id)
            }
            None => (vol, self.create(vol, VOLUME_AUX_KEY, aux, 0)?),
        };
        // The coherency record is not culled while the volume is acquired.
        self.hold(aux_id)?;
        Ok(vol)
    }

    fn relinquish_volume(&self, volume: VolumeId, invalidate: bool) -> Result<(), StoreError> {
        if invalidate {
            return self.delete_volume(volume);
        }
        if let Some(info) = self.lookup(volume, VOLUME_AUX_KEY)? {
            self.release(info.id);
        }
        Ok(())
    }

    fn lookup_cookie(
        &self,
        volume: VolumeId,
        key: &[u8],
        aux: &[u8],
        size: u64,
        on_negative: &mut dyn FnMut(),
    ) -> Result<Lookup, StoreError> {
        if key.first() == Some(&0) && key == VOLUME_AUX_KEY {
            return Err(StoreError::Invalid("that object key is reserved".into()));
        }
        match self.lookup(volume, key)? {
            Some(info) if info.aux == aux && !info.dirty => {
                if info.size != size {
                    self.resize(info.id, size)?;
                }
                self.hold(info.id)?;
                Ok(Lookup {
                    object: info.id,
                    positive: true,
                })
            }
            Some(info) => {
                // Stale: other coherency data, or modified locally when the
                // cache went down. Discard the content, keep the object.
                on_negative();
                self.invalidate(info.id, aux, size)?;
                self.set_dirty(info.id, false)?;
                self.hold(info.id)?;
                Ok(Lookup {
                    object: info.id,
                    positive: false,
                })
            }
            None => {
                on_negative();
                let id = self.create(volume, key, aux, size)?;
                self.hold(id)?;
                Ok(Lookup {
                    object: id,
                    positive: false,
                })
            }
        }
    }

    fn withdraw_cookie(
        &self,
        object: ObjectId,
        retire: bool,
        aux: &[u8],
        size: u64,
    ) -> Result<(), StoreError> {
        self.release(object);
        if retire {
            return match self.delete(object) {
                Ok(()) | Err(StoreError::NoSuchObject) => Ok(()),
                Err(e) => Err(e),
            };
        }
        let info = match self.stat(object) {
            Ok(i) => i,
            Err(StoreError::NoSuchObject) => return Ok(()),
            Err(e) => return Err(e),
        };
        if info.aux != aux || info.size != size {
            // The netfs's new coherency data for content it cached itself.
            self.update_aux(object, aux, size)?;
        }
        if info.dirty {
            // The local modifications are complete: make them durable, then
            // say so.
            self.flush()?;
            self.set_dirty(object, false)?;
        }
        Ok(())
    }

    fn retire(&self, volume: VolumeId, key: &[u8]) -> Result<(), StoreError> {
        match self.lookup(volume, key)? {
            Some(info) => match self.delete(info.id) {
                Ok(()) | Err(StoreError::NoSuchObject) => Ok(()),
                Err(e) => Err(e),
            },
            None => Ok(()),
        }
    }

    fn prepare_to_write(&self, object: ObjectId) -> Result<(), StoreError> {
        self.set_dirty(object, true)
    }

    fn invalidate_cookie(&self, object: ObjectId, aux: &[u8], size: u64) -> Result<(), StoreError> {
        self.invalidate(object, aux, size).map(|_| ())
    }

    fn resize_cookie(&self, object: ObjectId, size: u64) -> Result<(), StoreError> {
        self.resize(object, size)
    }

    fn begin_operation(&self, object: ObjectId) -> Result<u64, StoreError> {
        self.pin(object)
    }

    fn end_operation(&self, object: ObjectId) {
        self.unpin(object);
    }

    fn read(
        &self,
        object: ObjectId,
        data_gen: u64,
        offset: u64,
        len: u64,
    ) -> Result<Segments, StoreError> {
        self.read_gen(object, Some(data_gen), offset, len)
    }

    fn write(
        &self,
        object: ObjectId,
        data_gen: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<(), StoreError> {
        self.write_gen(object, Some(data_gen), offset, data)
    }

    fn query_occupancy(&self, object: ObjectId) -> Result<Vec<(u64, u64)>, StoreError> {
        self.occupancy(object)
    }

    fn under_pressure(&self) -> bool {
        self.under_object_pressure()
    }
}
