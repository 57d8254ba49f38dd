//! An object's extents: a sorted map from logical start to [`Extent`],
//! kept compact because there is one entry per cached extent.
//!
//! Each entry is 16 bytes (the start, and the extent packed into a u64).
//! Entries live in sorted chunks of at most [`CHUNK`]; a chunk that fills
//! is split in half, except when the entry went to the very end of the map
//! (sequential fills), where a new chunk starts and the full one stays full.
//! That keeps the index near 20 bytes per extent where a `BTreeMap` of the
//! same entries takes over 40 (`benches/vs-fio` measures it).

/// Most entries in one chunk.
pub const CHUNK: usize = 128;

/// Most regions an index can address (22 bits).
pub const MAX_REGIONS: u32 = 1 << 22;
/// Most 4 KiB blocks in a region (18 bits: 1 GiB regions).
pub const MAX_REGION_BLOCKS: u32 = 1 << 18;
/// Longest extent in bytes (21 bits).
pub const MAX_EXTENT_LEN: u32 = (1 << 21) - 1;

/// One contiguous piece of an object's data on the device. Its logical
/// start is the key of the map that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Bytes of data.
    pub len: u32,
    /// Region holding the data.
    pub region: u32,
    /// Byte offset of the first data byte within the region: a multiple of
    /// 4096 (extents start on block boundaries; only their length may end
    /// mid-block, at the object's size).
    pub region_off: u32,
}

impl Extent {
    fn pack(self) -> u64 {
        debug_assert!(self.len <= MAX_EXTENT_LEN);
        debug_assert!(self.region < MAX_REGIONS);
        debug_assert!(
            self.region_off.is_multiple_of(4096) && self.region_off / 4096 < MAX_REGION_BLOCKS
        );
        (u64::from(self.region) << 39)
            | (u64::from(self.region_off / 4096) << 21)
            | u64::from(self.len)
    }

    fn unpack(v: u64) -> Extent {
        Extent {
            len: (v & u64::from(MAX_EXTENT_LEN)) as u32,
            region_off: (((v >> 21) & u64::from(MAX_REGION_BLOCKS - 1)) as u32) * 4096,
            region: (v >> 39) as u32,
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone, Default)]
pub struct ExtentMap {
    chunks: Vec<Vec<(u64, u64)>>,
    len: usize,
}

impl ExtentMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of extents.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Index of the chunk that holds (or would hold) `key`.
    fn chunk_for(&self, key: u64) -> usize {
        self.chunks
            .partition_point(|c| c.first().is_some_and(|&(k, _)| k <= key))
            .saturating_sub(1)
    }

    /// Insert an extent at `start`; the caller has cut any overlap.
    pub fn insert(&mut self, start: u64, e: Extent) {
        let v = e.pack();
        if self.chunks.is_empty() {
            self.chunks.push(vec![(start, v)]);
            self.len = 1;
            return;
        }
        let ci = self.chunk_for(start);
        let last_chunk = ci + 1 == self.chunks.len();
        let Some(chunk) = self.chunks.get_mut(ci) else {
            return;
        };
        let pos = chunk.partition_point(|&(k, _)| k < start);
        if chunk.get(pos).is_some_and(|&(k, _)| k == start) {
            if let Some(slot) = chunk.get_mut(pos) {
                slot.1 = v;
            }
            return;
        }
        self.len += 1;
        if chunk.len() >= CHUNK {
            if last_chunk && pos == chunk.len() {
                // Appending past the end: leave the full chunk full.
                self.chunks.push(vec![(start, v)]);
                return;
            }
            let right = chunk.split_off(CHUNK / 2);
            self.chunks.insert(ci + 1, right);
            // Insert into whichever half holds the position now.
            let (ci, pos) = if pos <= CHUNK / 2 {
                (ci, pos)
            } else {
                (ci + 1, pos - CHUNK / 2)
            };
            if let Some(c) = self.chunks.get_mut(ci) {
                c.insert(pos, (start, v));
            }
            return;
        }
        chunk.insert(pos, (start, v));
    }

    /// Remove the extent that starts at `start`.
    pub fn remove(&mut self, start: u64) -> Option<Extent> {
        let ci = self.chunk_for(start);
        let chunk = self.chunks.get_mut(ci)?;
        let pos = chunk.binary_search_by_key(&start, |&(k, _)| k).ok()?;
        let (_, v) = chunk.remove(pos);
        if chunk.is_empty() {
            self.chunks.remove(ci);
        }
        self.len -= 1;
        Some(Extent::unpack(v))
    }

    /// The extent with the greatest start below `x`.
    pub fn last_before(&self, x: u64) -> Option<(u64, Extent)> {
        let ci = self
            .chunks
            .partition_point(|c| c.first().is_some_and(|&(k, _)| k < x))
            .checked_sub(1)?;
        let chunk = self.chunks.get(ci)?;
        let pos = chunk.partition_point(|&(k, _)| k < x).checked_sub(1)?;
        chunk.get(pos).map(|&(k, v)| (k, Extent::unpack(v)))
    }

    /// Extents whose start is in [from, to), in order.
    pub fn range(&self, from: u64, to: u64) -> Range<'_> {
        let ci = self.chunk_for(from);
        let ei = self
            .chunks
            .get(ci)
            .map_or(0, |c| c.partition_point(|&(k, _)| k < from));
        Range {
            map: self,
            ci,
            ei,
            to,
        }
    }

    /// All extents in order.
    pub fn iter(&self) -> Range<'_> {
        Range {
            map: self,
            ci: 0,
            ei: 0,
            to: u64::MAX,
        }
    }

    /// Keep only the extents for which `f` is true.
    pub fn retain(&mut self, mut f: impl FnMut(u64, Extent) -> bool) {
        for c in &mut self.chunks {
            c.retain(|&(k, v)| f(k, Extent::unpack(v)));
        }
        self.chunks.retain(|c| !c.is_empty());
        self.len = self.chunks.iter().map(Vec::len).sum();
    }
}

/// Iterator over a range of an [`ExtentMap`].
pub struct Range<'a> {
    map: &'a ExtentMap,
    ci: usize,
    ei: usize,
    to: u64,
}

impl Iterator for Range<'_> {
    type Item = (u64, Extent);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let chunk = self.map.chunks.get(self.ci)?;
            if let Some(&(k, v)) = chunk.get(self.ei) {
                if k >= self.to {
                    return None;
                }
                self.ei += 1;
                return Some((k, Extent::unpack(v)));
            }
            self.ci += 1;
            self.ei = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;

    fn ext(i: u64) -> Extent {
        Extent {
            len: (i % 4096) as u32 + 1,
            region: (i % MAX_REGIONS as u64) as u32,
            region_off: ((i % 100) * 4096) as u32,
        }
    }

    #[test]
    fn packing_round_trips_at_the_limits() {
        for e in [
            Extent {
                len: MAX_EXTENT_LEN,
                region: MAX_REGIONS - 1,
                region_off: (MAX_REGION_BLOCKS - 1) * 4096,
            },
            Extent {
                len: 1,
                region: 0,
                region_off: 0,
            },
        ] {
            assert_eq!(Extent::unpack(e.pack()), e);
        }
    }

    #[test]
    fn behaves_like_a_btreemap() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut m = ExtentMap::new();
        let mut r: BTreeMap<u64, Extent> = BTreeMap::new();
        for i in 0..20_000u64 {
            let k = if i % 3 == 0 {
                i * 10
            } else {
                rng.random_range(0..100_000)
            };
            match rng.random_range(0..10) {
                0..=6 => {
                    m.insert(k, ext(i));
                    r.insert(k, ext(i));
                }
                7 => assert_eq!(m.remove(k), r.remove(&k)),
                8 => assert_eq!(
                    m.last_before(k),
                    r.range(..k).next_back().map(|(&a, &b)| (a, b))
                ),
                _ => {
                    let got: Vec<_> = m.range(k, k + 500).collect();
                    let want: Vec<_> = r.range(k..k + 500).map(|(&a, &b)| (a, b)).collect();
                    assert_eq!(got, want);
                }
            }
            assert_eq!(m.len(), r.len());
        }
        m.retain(|k, _| k % 2 == 0);
        r.retain(|k, _| k % 2 == 0);
        assert_eq!(
            m.iter().collect::<Vec<_>>(),
            r.iter().map(|(&a, &b)| (a, b)).collect::<Vec<_>>()
        );
        assert_eq!(m.len(), r.len());
    }
}
