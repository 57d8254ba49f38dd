//! A read-only view of a loaded index, for the offline tools (`inspect`,
//! `fsck`) and benchmarks. The index itself is private to the store: these
//! views hand out copies and borrowed slices, never a way to change it, so
//! the store's invariants (extent counts, region byte counts, the key maps)
//! cannot be broken from outside.

use ringcache_ondisk::{Geometry, Record};

use super::index::{Index, Object, Region};
use super::{ObjectId, VolumeId};

pub use super::index::RegionState;

/// The whole index as recovery rebuilt it.
#[derive(Clone, Copy)]
pub struct IndexView<'a> {
    ix: &'a Index,
}

/// One object of the index.
#[derive(Clone, Copy)]
pub struct ObjectView<'a> {
    id: ObjectId,
    o: &'a Object,
}

/// One region of the index.
#[derive(Clone, Copy)]
pub struct RegionView<'a> {
    index: u32,
    r: &'a Region,
}

/// One extent of an object: `len` bytes at logical `offset`, stored at
/// byte `region_off` of region `region`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtentView {
    pub offset: u64,
    pub len: u32,
    pub region: u32,
    pub region_off: u32,
}

impl<'a> IndexView<'a> {
    pub(super) fn new(ix: &'a Index) -> Self {
        IndexView { ix }
    }

    /// The device layout.
    pub fn geometry(&self) -> Geometry {
        self.ix.geometry
    }

    /// Volumes by id: (id, key).
    pub fn volumes(&self) -> impl Iterator<Item = (VolumeId, &'a [u8])> + use<'a> {
        self.ix.volumes.iter().map(|(&id, k)| (id, &k[..]))
    }

    /// The key of volume `id`.
    pub fn volume_key(&self, id: VolumeId) -> Option<&'a [u8]> {
        self.ix.volumes.get(&id).map(|k| &k[..])
    }

    /// The id of the volume with `key`.
    pub fn volume_id(&self, key: &[u8]) -> Option<VolumeId> {
        self.ix.volume_by_key.get(key).copied()
    }

    /// Objects in id order.
    pub fn objects(&self) -> impl Iterator<Item = ObjectView<'a>> + use<'a> {
        self.ix.objects.iter().map(|(&id, o)| ObjectView { id, o })
    }

    /// Object `id`.
    pub fn object(&self, id: ObjectId) -> Option<ObjectView<'a>> {
        self.ix.objects.get(&id).map(|o| ObjectView { id, o })
    }

    /// The object with `key` in `volume`.
    pub fn object_by_key(&self, volume: VolumeId, key: &[u8]) -> Option<ObjectView<'a>> {
        let id = *self
            .ix
            .object_by_key
            .get(&(volume, key.to_vec().into_boxed_slice()))?;
        self.object(id)
    }

    /// Number of objects.
    pub fn object_count(&self) -> usize {
        self.ix.objects.len()
    }

    /// Regions in index order.
    pub fn regions(&self) -> impl Iterator<Item = RegionView<'a>> + use<'a> {
        self.ix
            .regions
            .iter()
            .enumerate()
            .map(|(i, r)| RegionView { index: i as u32, r })
    }

    /// Region `index`.
    pub fn region(&self, index: u32) -> Option<RegionView<'a>> {
        self.ix
            .regions
            .get(index as usize)
            .map(|r| RegionView { index, r })
    }

    /// Extents in the whole index.
    pub fn extent_count(&self) -> u64 {
        self.ix.extent_count
    }

    /// Bytes a checkpoint of this index takes.
    pub fn checkpoint_bytes(&self) -> u64 {
        self.ix.checkpoint_bytes()
    }

    /// Byte offset on the device of byte `region_off` of region `region`.
    pub fn device_offset(&self, region: u32, region_off: u32) -> u64 {
        self.ix.device_offset(region, region_off)
    }
}

impl<'a> ObjectView<'a> {
    pub fn id(&self) -> ObjectId {
        self.id
    }
    pub fn volume(&self) -> VolumeId {
        self.o.volume
    }
    pub fn key(&self) -> &'a [u8] {
        &self.o.key
    }
    /// Coherency data.
    pub fn aux(&self) -> &'a [u8] {
        &self.o.aux
    }
    pub fn size(&self) -> u64 {
        self.o.size
    }
    /// Data generation (bumped by every invalidation).
    pub fn data_gen(&self) -> u64 {
        self.o.data_gen
    }
    /// The record's flag bits (`ringcache_ondisk::record::OBJECT_FLAG_*`).
    pub fn flags(&self) -> u32 {
        self.o.flags
    }
    /// Number of extents.
    pub fn extent_count(&self) -> usize {
        self.o.extents.len()
    }
    /// Extents in logical order.
    pub fn extents(&self) -> impl Iterator<Item = ExtentView> + use<'a> {
        self.o.extents.iter().map(|(offset, e)| ExtentView {
            offset,
            len: e.len,
            region: e.region,
            region_off: e.region_off,
        })
    }
}

impl<'a> RegionView<'a> {
    /// The region's index on the device.
    pub fn index(&self) -> u32 {
        self.index
    }
    /// region_seq of its current use (0: never used).
    pub fn seq(&self) -> u64 {
        self.r.seq
    }
    pub fn state(&self) -> RegionState {
        self.r.state
    }
    /// crc32c of each block (index 0 is the header block, unused).
    pub fn crcs(&self) -> &'a [u32] {
        &self.r.crcs
    }
    /// Objects that may have extents here (may name deleted ones).
    pub fn objects(&self) -> impl Iterator<Item = ObjectId> + use<'a> {
        self.r.objects.iter().copied()
    }
    /// Bytes of live extents.
    pub fn live_bytes(&self) -> u64 {
        self.r.live_bytes
    }
}

/// An index of its own, for measuring what the index costs in memory
/// (`vs-fio` counts its allocations per extent). Nothing else is reachable
/// through it.
pub struct IndexProbe {
    ix: Index,
}

impl IndexProbe {
    /// An empty index for `geometry`.
    pub fn new(geometry: Geometry) -> IndexProbe {
        IndexProbe {
            ix: Index::new(geometry),
        }
    }

    /// Apply a record, as recovery does.
    pub fn apply(&mut self, rec: &Record<'_>) {
        self.ix.apply(rec);
    }

    /// Map `len` bytes at logical `offset` of `object` to `region_off` of
    /// `region`.
    pub fn insert_extent(
        &mut self,
        object: ObjectId,
        offset: u64,
        len: u32,
        region: u32,
        region_off: u32,
    ) {
        self.ix.insert_extent(
            object,
            offset,
            super::extent_map::Extent {
                len,
                region,
                region_off,
            },
        );
    }

    /// A view of what was built.
    pub fn view(&self) -> IndexView<'_> {
        IndexView::new(&self.ix)
    }
}
