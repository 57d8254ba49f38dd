//! The in-memory index: volumes, objects, extents and regions.
//!
//! Every change to the index is a [`Record`] applied by [`Index::apply`]:
//! live operations build the record, apply it and append it to the
//! metadata log; recovery applies the same records from the checkpoint and
//! the log. One code path, so replay cannot drift from what was done live.

use std::collections::{BTreeMap, BTreeSet};

pub use super::extent_map::{Extent, ExtentMap};

use ringcache_ondisk::record::{Crcs, ExtentEntry};
use ringcache_ondisk::{BLOCK_BYTES, BLOCK_BYTES_U64, Geometry, Record};

/// Handle of an object in the store. Never reused within a cache.
pub type ObjectId = u64;
/// Handle of a volume in the store.
pub type VolumeId = u32;

/// An object: an entry of the cache with sparse content.
#[derive(Debug, Clone)]
pub struct Object {
    pub volume: VolumeId,
    pub key: Box<[u8]>,
    pub aux: Box<[u8]>,
    pub size: u64,
    /// Data generation: bumped by every invalidation; block crcs are seeded
    /// with it, so data of an older generation never verifies.
    pub data_gen: u64,
    pub flags: u32,
    pub extents: ExtentMap,
    /// Accesses in flight: a pinned object is never culled, and regions
    /// holding its data are not evicted.
    pub pins: u32,
    /// Held by a live cookie: not culled (deleting it would pull the
    /// object from under the cookie), though its data may be evicted.
    pub holds: u32,
    /// Logical clock of the last use, for LRU culling.
    pub last_use: u64,
}

/// Life of a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionState {
    /// Holds no data; may be opened.
    Free,
    /// Being appended to.
    Open,
    /// Full (or closed by recovery); evicted in FIFO order of seq.
    Sealed,
}

/// A region's in-memory state.
#[derive(Debug, Clone)]
pub struct Region {
    /// region_seq of its current use (0: never used).
    pub seq: u64,
    pub state: RegionState,
    /// crc32c of each block (index 0 is the header block, unused).
    pub crcs: Vec<u32>,
    /// Objects that may have extents here (may hold stale ids).
    pub objects: BTreeSet<ObjectId>,
    /// Bytes of live extents.
    pub live_bytes: u64,
}

/// The whole index.
#[derive(Debug)]
pub struct Index {
    pub geometry: Geometry,
    pub volumes: BTreeMap<VolumeId, Box<[u8]>>,
    pub volume_by_key: BTreeMap<Box<[u8]>, VolumeId>,
    pub objects: BTreeMap<ObjectId, Object>,
    pub object_by_key: BTreeMap<(VolumeId, Box<[u8]>), ObjectId>,
    pub regions: Vec<Region>,
    pub next_object_id: u64,
    pub next_volume_id: u32,
    pub next_region_seq: u64,
    pub extent_count: u64,
    /// Bytes of object records (keys and aux included) in a checkpoint.
    pub object_record_bytes: u64,
    pub clock: u64,
}

/// Bytes a checkpoint spends on one extent.
pub const CKPT_EXTENT_BYTES: u64 = 40;

impl Index {
    /// An empty index for `geometry`.
    pub fn new(geometry: Geometry) -> Index {
        let blocks = geometry.region_blocks() as usize;
        Index {
            geometry,
            volumes: BTreeMap::new(),
            volume_by_key: BTreeMap::new(),
            objects: BTreeMap::new(),
            object_by_key: BTreeMap::new(),
            regions: (0..geometry.region_count)
                .map(|_| Region {
                    seq: 0,
                    state: RegionState::Free,
                    crcs: vec![0; blocks],
                    objects: BTreeSet::new(),
                    live_bytes: 0,
                })
                .collect(),
            next_object_id: 1,
            next_volume_id: 1,
            next_region_seq: 1,
            extent_count: 0,
            object_record_bytes: 0,
            clock: 0,
        }
    }

    /// Bytes a checkpoint of this index would take.
    pub fn checkpoint_bytes(&self) -> u64 {
        let regions = self.regions.iter().filter(|r| r.live_bytes > 0).count() as u64
            * (32 + 4 * u64::from(self.geometry.region_blocks()));
        let volumes: u64 = self.volumes.values().map(|k| 16 + k.len() as u64).sum();
        regions + volumes + self.object_record_bytes + self.extent_count * CKPT_EXTENT_BYTES
    }

    fn object_record_len(key: &[u8], aux: &[u8]) -> u64 {
        48 + key.len() as u64 + aux.len() as u64
    }

    /// Apply one record. Records that name unknown objects or volumes are
    /// ignored (they describe something deleted later in the same log).
    pub fn apply(&mut self, rec: &Record<'_>) {
        match *rec {
            Record::Volume { volume_id, key } => {
                let key: Box<[u8]> = key.into();
                if let Some(old) = self.volumes.insert(volume_id, key.clone()) {
                    self.volume_by_key.remove(&old);
                }
                self.volume_by_key.insert(key, volume_id);
                self.next_volume_id = self.next_volume_id.max(volume_id.saturating_add(1));
            }
            Record::VolumeDelete { volume_id } => {
                let ids: Vec<ObjectId> = self
                    .objects
                    .iter()
                    .filter(|(_, o)| o.volume == volume_id)
                    .map(|(id, _)| *id)
                    .collect();
                for id in ids {
                    self.remove_object(id);
                }
                if let Some(key) = self.volumes.remove(&volume_id) {
                    self.volume_by_key.remove(&key);
                }
            }
            Record::Object {
                object_id,
                volume_id,
                data_gen,
                size,
                flags,
                key,
                aux,
            } => {
                // The same object again (same id, volume, key and data
                // generation): a new coherency data, size or flags, content
                // kept. Otherwise this is a new object.
                if let Some(o) = self.objects.get_mut(&object_id)
                    && o.volume == volume_id
                    && *o.key == *key
                    && o.data_gen == data_gen
                {
                    let old_len = Self::object_record_len(&o.key, &o.aux);
                    o.aux = aux.into();
                    o.flags = flags;
                    o.size = size;
                    let new_len = Self::object_record_len(&o.key, &o.aux);
                    self.object_record_bytes = self.object_record_bytes - old_len + new_len;
                    self.drop_extents_from(object_id, size);
                    return;
                }
                self.remove_object(object_id);
                let key: Box<[u8]> = key.into();
                if let Some(old) = self.object_by_key.remove(&(volume_id, key.clone())) {
                    // A newer object took this key: the old one is gone.
                    self.remove_object(old);
                }
                self.object_by_key
                    .insert((volume_id, key.clone()), object_id);
                self.object_record_bytes += Self::object_record_len(&key, aux);
                self.clock += 1;
                self.objects.insert(
                    object_id,
                    Object {
                        volume: volume_id,
                        key,
                        aux: aux.into(),
                        size,
                        data_gen,
                        flags,
                        extents: ExtentMap::new(),
                        pins: 0,
                        holds: 0,
                        last_use: self.clock,
                    },
                );
                self.next_object_id = self.next_object_id.max(object_id.saturating_add(1));
            }
            Record::Extent { entry, crcs } => self.apply_extent(&entry, &crcs),
            Record::Invalidate {
                object_id,
                data_gen,
                size,
                aux,
            } => {
                let Some(o) = self.objects.get_mut(&object_id) else {
                    return;
                };
                let old_len = Self::object_record_len(&o.key, &o.aux);
                o.aux = aux.into();
                o.size = size;
                o.data_gen = data_gen;
                let new_len = Self::object_record_len(&o.key, &o.aux);
                self.object_record_bytes = self.object_record_bytes - old_len + new_len;
                self.drop_extents_from(object_id, 0);
            }
            Record::Resize { object_id, size } => {
                let Some(o) = self.objects.get_mut(&object_id) else {
                    return;
                };
                o.size = size;
                self.drop_extents_from(object_id, size);
            }
            Record::Delete { object_id } => self.remove_object(object_id),
            Record::Flags { object_id, flags } => {
                if let Some(o) = self.objects.get_mut(&object_id) {
                    o.flags = flags;
                }
            }
            Record::Region {
                region_index,
                region_seq,
                crcs,
            } => {
                if let Some(r) = self.regions.get_mut(region_index as usize) {
                    r.seq = region_seq;
                    r.state = RegionState::Sealed;
                    for (dst, c) in r.crcs.iter_mut().zip(crcs.iter()) {
                        *dst = c;
                    }
                }
                self.next_region_seq = self.next_region_seq.max(region_seq.saturating_add(1));
            }
            Record::CkptExtent {
                object_id,
                logical_offset,
                length,
                region_index,
                region_offset,
            } => {
                self.insert_extent(
                    object_id,
                    logical_offset,
                    Extent {
                        len: length,
                        region: region_index,
                        region_off: region_offset,
                    },
                );
            }
        }
    }

    fn apply_extent(&mut self, entry: &ExtentEntry, crcs: &Crcs<'_>) {
        let Some(o) = self.objects.get(&entry.object_id) else {
            return;
        };
        if o.data_gen != entry.object_gen {
            return; // written for a generation since invalidated
        }
        let ri = entry.region_index as usize;
        let Some(region) = self.regions.get(ri) else {
            return;
        };
        if entry.region_seq < region.seq {
            return; // the region has been reused since
        }
        if entry.region_seq > region.seq {
            // The region was reused: whatever it held before is gone.
            self.evict_region_extents(entry.region_index);
            if let Some(r) = self.regions.get_mut(ri) {
                r.seq = entry.region_seq;
                r.state = RegionState::Sealed;
                r.crcs.fill(0);
            }
            self.next_region_seq = self.next_region_seq.max(entry.region_seq.saturating_add(1));
        }
        if let Some(r) = self.regions.get_mut(ri) {
            let first = entry.region_block as usize;
            for (i, c) in crcs.iter().enumerate() {
                if let Some(dst) = r.crcs.get_mut(first + i) {
                    *dst = c;
                }
            }
        }
        self.insert_extent(
            entry.object_id,
            entry.logical_offset,
            Extent {
                len: entry.length,
                region: entry.region_index,
                region_off: entry.region_block.saturating_mul(BLOCK_BYTES as u32),
            },
        );
    }

    /// Put `ext` at `start` of object `id`, trimming whatever it overlaps.
    pub fn insert_extent(&mut self, id: ObjectId, start: u64, ext: Extent) {
        let Some(o) = self.objects.get_mut(&id) else {
            return;
        };
        let end = start + u64::from(ext.len);
        Self::cut_range(o, start, end, &mut self.regions, &mut self.extent_count);
        o.extents.insert(start, ext);
        self.extent_count += 1;
        if let Some(r) = self.regions.get_mut(ext.region as usize) {
            r.live_bytes += u64::from(ext.len);
            r.objects.insert(id);
        }
    }

    /// Remove the bytes [start, end) from `o`'s extents, trimming extents
    /// that straddle the edges. Returns how many bytes were removed.
    fn cut_range(
        o: &mut Object,
        start: u64,
        end: u64,
        regions: &mut [Region],
        extent_count: &mut u64,
    ) -> u64 {
        let mut hits: Vec<(u64, Extent)> = Vec::new();
        if let Some((s, e)) = o.extents.last_before(start)
            && s + u64::from(e.len) > start
        {
            hits.push((s, e));
        }
        hits.extend(o.extents.range(start, end));
        let mut removed = 0u64;
        for (s, e) in hits {
            o.extents.remove(s);
            *extent_count -= 1;
            let e_end = s + u64::from(e.len);
            let mut kept = 0u64;
            if s < start {
                let left = Extent {
                    len: (start - s) as u32,
                    ..e
                };
                o.extents.insert(s, left);
                *extent_count += 1;
                kept += u64::from(left.len);
            }
            if e_end > end {
                let right = Extent {
                    len: (e_end - end) as u32,
                    region: e.region,
                    region_off: e.region_off + (end - s) as u32,
                };
                o.extents.insert(end, right);
                *extent_count += 1;
                kept += u64::from(right.len);
            }
            let gone = u64::from(e.len) - kept;
            removed += gone;
            if let Some(r) = regions.get_mut(e.region as usize) {
                r.live_bytes = r.live_bytes.saturating_sub(gone);
            }
        }
        removed
    }

    /// Drop the bytes [start, end) of object `id`.
    pub fn remove_range(&mut self, id: ObjectId, start: u64, end: u64) {
        if let Some(o) = self.objects.get_mut(&id) {
            Self::cut_range(o, start, end, &mut self.regions, &mut self.extent_count);
        }
    }

    /// Drop every byte of object `id` at or past `from`.
    pub fn drop_extents_from(&mut self, id: ObjectId, from: u64) {
        if let Some(o) = self.objects.get_mut(&id) {
            Self::cut_range(o, from, u64::MAX, &mut self.regions, &mut self.extent_count);
        }
    }

    /// Remove an object and all its extents.
    pub fn remove_object(&mut self, id: ObjectId) {
        let Some(o) = self.objects.remove(&id) else {
            return;
        };
        for (_, e) in o.extents.iter() {
            if let Some(r) = self.regions.get_mut(e.region as usize) {
                r.live_bytes = r.live_bytes.saturating_sub(u64::from(e.len));
            }
        }
        self.extent_count -= o.extents.len() as u64;
        self.object_record_bytes -= Self::object_record_len(&o.key, &o.aux);
        if self.object_by_key.get(&(o.volume, o.key.clone())) == Some(&id) {
            self.object_by_key.remove(&(o.volume, o.key));
        }
    }

    /// Drop every extent held in region `ri` (it is being reused or was
    /// found damaged). Returns the bytes dropped.
    pub fn evict_region_extents(&mut self, ri: u32) -> u64 {
        let Some(r) = self.regions.get_mut(ri as usize) else {
            return 0;
        };
        let objs = std::mem::take(&mut r.objects);
        let mut dropped = 0u64;
        for id in objs {
            if let Some(o) = self.objects.get_mut(&id) {
                let before = o.extents.len();
                o.extents.retain(|_, e| {
                    if e.region == ri {
                        dropped += u64::from(e.len);
                        false
                    } else {
                        true
                    }
                });
                self.extent_count -= (before - o.extents.len()) as u64;
            }
        }
        if let Some(r) = self.regions.get_mut(ri as usize) {
            r.live_bytes = 0;
        }
        dropped
    }

    /// Serialize the index as checkpoint records into `out`. Returns
    /// (volumes, objects, extents) written.
    pub fn encode_checkpoint(&self, out: &mut Vec<u8>) -> (u64, u64, u64) {
        for (&volume_id, key) in &self.volumes {
            Record::Volume { volume_id, key }.encode(out);
        }
        for (i, r) in self.regions.iter().enumerate() {
            if r.live_bytes > 0 {
                Record::Region {
                    region_index: i as u32,
                    region_seq: r.seq,
                    crcs: Crcs::Native(&r.crcs),
                }
                .encode(out);
            }
        }
        let mut extents = 0u64;
        for (&object_id, o) in &self.objects {
            Record::Object {
                object_id,
                volume_id: o.volume,
                data_gen: o.data_gen,
                size: o.size,
                flags: o.flags,
                key: &o.key,
                aux: &o.aux,
            }
            .encode(out);
            for (logical_offset, e) in o.extents.iter() {
                Record::CkptExtent {
                    object_id,
                    logical_offset,
                    length: e.len,
                    region_index: e.region,
                    region_offset: e.region_off,
                }
                .encode(out);
                extents += 1;
            }
        }
        (
            self.volumes.len() as u64,
            self.objects.len() as u64,
            extents,
        )
    }

    /// Byte offset on the device of byte `region_off` of region `ri`.
    pub fn device_offset(&self, ri: u32, region_off: u32) -> u64 {
        self.geometry.region_offset(ri) + u64::from(region_off)
    }

    /// Occupancy of object `id`: merged (offset, length) ranges present.
    pub fn occupancy(&self, id: ObjectId) -> Option<Vec<(u64, u64)>> {
        let o = self.objects.get(&id)?;
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (s, e) in o.extents.iter() {
            let len = u64::from(e.len);
            match out.last_mut() {
                Some((ls, ll)) if *ls + *ll == s => *ll += len,
                _ => out.push((s, len)),
            }
        }
        Some(out)
    }
}

/// The block crc index (within its region) of byte `region_off`.
pub fn block_of(region_off: u64) -> usize {
    (region_off / BLOCK_BYTES_U64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringcache_ondisk::superblock::GeometryParams;

    fn index_with_object() -> Index {
        let g = Geometry::plan(
            64 << 20,
            GeometryParams {
                region_bytes: Some(1 << 20),
                ..Default::default()
            },
        )
        .unwrap();
        let mut ix = Index::new(g);
        ix.apply(&Record::Volume {
            volume_id: 1,
            key: b"v",
        });
        ix.apply(&Record::Object {
            object_id: 1,
            volume_id: 1,
            data_gen: 1,
            size: 1 << 20,
            flags: 0,
            key: b"k",
            aux: b"",
        });
        ix
    }

    fn ext(len: u32, off: u32) -> Extent {
        Extent {
            len,
            region: 0,
            region_off: off,
        }
    }

    #[test]
    fn overlapping_insert_trims_both_sides() {
        let mut ix = index_with_object();
        ix.insert_extent(1, 0, ext(16384, 4096));
        ix.insert_extent(1, 4096, ext(4096, 65536));
        let o = &ix.objects[&1];
        let v: Vec<_> = o.extents.iter().collect();
        assert_eq!(
            v,
            vec![
                (0, ext(4096, 4096)),
                (4096, ext(4096, 65536)),
                (8192, ext(8192, 12288)),
            ]
        );
        assert_eq!(ix.extent_count, 3);
        assert_eq!(ix.regions[0].live_bytes, 16384);
        assert_eq!(ix.occupancy(1).unwrap(), vec![(0, 16384)]);
    }

    #[test]
    fn resize_cuts_mid_extent_and_invalidate_drops_all() {
        let mut ix = index_with_object();
        ix.insert_extent(1, 0, ext(8192, 4096));
        ix.apply(&Record::Resize {
            object_id: 1,
            size: 5000,
        });
        assert_eq!(ix.occupancy(1).unwrap(), vec![(0, 5000)]);
        assert_eq!(ix.regions[0].live_bytes, 5000);
        ix.apply(&Record::Invalidate {
            object_id: 1,
            data_gen: 2,
            size: 10,
            aux: b"x",
        });
        assert_eq!(ix.occupancy(1).unwrap(), vec![]);
        assert_eq!(ix.extent_count, 0);
        assert_eq!(ix.regions[0].live_bytes, 0);
    }
}
