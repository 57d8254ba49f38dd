//! Volumes: the parents of cookies, with their own key, coherency data and
//! count of cookies.

use std::sync::{Arc, Mutex};

use super::*;

pub(super) struct VolumeInner {
    pub(super) n_cookies: u32,
    pub(super) relinquished: bool,
}

/// A volume: the parent of cookies, with its own key and coherency data.
pub struct Volume {
    pub(super) key: Vec<u8>,
    pub(super) id: VolumeId,
    pub(super) inner: Mutex<VolumeInner>,
}

impl Volume {
    /// The volume's key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }
    /// The backend's id for it.
    pub fn id(&self) -> VolumeId {
        self.id
    }
}

impl Fscache {
    /// Acquire a volume by printable key. A second acquire of a live
    /// volume fails with `Busy`.
    pub fn acquire_volume(&self, key: &str, aux: &[u8]) -> Result<Arc<Volume>> {
        ringcache_ondisk::check_volume_key(key.as_bytes())
            .map_err(|e| CacheError::Invalid(e.to_string()))?;
        if let Some(why) = self.withdrawn() {
            return Err(CacheError::Store(StoreError::Failed(why)));
        }
        {
            let t = self.tables();
            if t.volumes.contains_key(key.as_bytes()) {
                return Err(CacheError::Busy(format!(
                    "volume {key:?} is already acquired"
                )));
            }
        }
        let id = self.backend.acquire_volume(key.as_bytes(), aux)?;
        let v = Arc::new(Volume {
            key: key.as_bytes().to_vec(),
            id,
            inner: Mutex::new(VolumeInner {
                n_cookies: 0,
                relinquished: false,
            }),
        });
        let mut t = self.tables();
        if t.volumes.contains_key(key.as_bytes()) {
            return Err(CacheError::Busy(format!(
                "volume {key:?} is already acquired"
            )));
        }
        t.volumes.insert(v.key.clone(), v.clone());
        FscacheStats::inc(&self.stats.volumes);
        Ok(v)
    }

    /// Relinquish a volume whose cookies are all relinquished; with
    /// `invalidate`, everything cached in it is deleted.
    pub fn relinquish_volume(&self, volume: &Arc<Volume>, invalidate: bool) -> Result<()> {
        {
            let mut vi = volume.inner.lock().unwrap_or_else(|e| e.into_inner());
            if vi.relinquished {
                return Err(CacheError::VolumeRelinquished);
            }
            if vi.n_cookies > 0 {
                return Err(CacheError::Busy(format!(
                    "volume still has {} cookies",
                    vi.n_cookies
                )));
            }
            vi.relinquished = true;
        }
        let r = self.backend.relinquish_volume(volume.id, invalidate);
        let mut t = self.tables();
        if t.volumes
            .get(&volume.key)
            .is_some_and(|v| Arc::ptr_eq(v, volume))
        {
            t.volumes.remove(&volume.key);
        }
        FscacheStats::dec(&self.stats.volumes);
        drop(t);
        self.tables_changed.notify_all();
        r.map_err(CacheError::from)
    }
}
