//! Space: the active region appends go to, eviction of whole regions
//! oldest first (brun/bcull/bstop on free regions), and culling of objects
//! least recently used first (frun/fcull/fstop on the object count or the
//! checkpoint's room). Never takes a region holding data of a pinned object.

use std::sync::MutexGuard;

use ringcache_ondisk::{BLOCK_BYTES_U64, Record};

use super::index::RegionState;
use super::*;

impl Store {
    pub(super) fn space_free_percent(inner: &Inner) -> u64 {
        inner.free.len() as u64 * 100 / u64::from(inner.ix.geometry.region_count.max(1))
    }

    /// Evict the oldest sealed region that holds no data in use. Returns
    /// whether one was freed.
    pub(super) fn evict_one(inner: &mut Inner) -> bool {
        let victim = inner.fifo.iter().map(|(&s, &r)| (s, r)).find(|&(_, r)| {
            if inner.inflight.get(r as usize).copied().unwrap_or(0) > 0 {
                return false;
            }
            let Some(region) = inner.ix.regions.get(r as usize) else {
                return false;
            };
            !region.objects.iter().any(|id| {
                inner
                    .ix
                    .objects
                    .get(id)
                    .is_some_and(|o| o.pins > 0 && o.extents.iter().any(|(_, e)| e.region == r))
            })
        });
        let Some((seq, r)) = victim else {
            return false;
        };
        inner.fifo.remove(&seq);
        let bytes = inner.ix.evict_region_extents(r);
        if let Some(region) = inner.ix.regions.get_mut(r as usize) {
            region.state = RegionState::Free;
        }
        inner.free.push_back(r);
        inner.stats.regions_evicted += 1;
        inner.stats.bytes_evicted += bytes;
        true
    }

    /// Cull regions ahead of need: below bcull percent free, evict until
    /// brun percent is free (or nothing more can go).
    pub(super) fn cull_space(&self, inner: &mut Inner) {
        if Self::space_free_percent(inner) >= u64::from(self.cfg.cull.bcull) {
            return;
        }
        while Self::space_free_percent(inner) < u64::from(self.cfg.cull.brun) {
            if !Self::evict_one(inner) {
                break;
            }
        }
    }

    /// A region to append to, opening (and if need be freeing) one. Returns
    /// the region header to write when a region was opened.
    pub(super) fn active_region<'a>(
        &self,
        mut inner: MutexGuard<'a, Inner>,
    ) -> Result<(MutexGuard<'a, Inner>, Option<OpenedRegion>)> {
        if let Some(a) = &inner.active {
            if a.next_block < inner.ix.geometry.region_blocks() {
                return Ok((inner, None));
            }
            let r = a.region;
            let seq = inner.ix.regions.get(r as usize).map(|x| x.seq).unwrap_or(0);
            if let Some(region) = inner.ix.regions.get_mut(r as usize) {
                region.state = RegionState::Sealed;
            }
            inner.fifo.insert(seq, r);
            inner.active = None;
        }
        let deadline = std::time::Instant::now() + self.cfg.space_wait;
        loop {
            Self::check_failed(&inner)?;
            if inner.free.is_empty() {
                Self::evict_one(&mut inner);
            }
            if let Some(r) = inner.free.pop_front() {
                let seq = inner.ix.next_region_seq;
                inner.ix.next_region_seq += 1;
                if let Some(region) = inner.ix.regions.get_mut(r as usize) {
                    region.seq = seq;
                    region.state = RegionState::Open;
                    region.crcs.fill(0);
                    region.objects.clear();
                    region.live_bytes = 0;
                }
                inner.active = Some(Active {
                    region: r,
                    next_block: 1,
                });
                self.cull_space(&mut inner);
                return Ok((inner, Some((r, seq))));
            }
            // Everything left is in use: wait for an unpin (back-pressure).
            inner.stats.nospace_events += 1;
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(StoreError::NoSpace);
            }
            inner.space_waiters += 1;
            inner = self
                .space
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            inner.space_waiters -= 1;
        }
    }

    /// Cull least recently used objects if adding one of `bytes` record
    /// bytes would cross fcull; fail if over fstop with nothing cullable.
    pub(super) fn cull_objects_if_needed(&self, inner: &mut Inner, bytes: u64) -> Result<()> {
        let cap_objects = inner.max_objects;
        let cap_ckpt = self.checkpoint_capacity(inner);
        let used_pct = |inner: &Inner, extra: u64| -> u64 {
            let by_objects = (inner.ix.objects.len() as u64 + 1) * 100 / cap_objects.max(1);
            let by_ckpt = (inner.ix.checkpoint_bytes() + extra + 64) * 100 / cap_ckpt.max(1);
            by_objects.max(by_ckpt)
        };
        let c = self.cfg.cull;
        if used_pct(inner, bytes) <= u64::from(100 - c.fcull) {
            inner.object_pressure = false;
            return Ok(());
        }
        let mut candidates: Vec<(u64, ObjectId)> = inner
            .ix
            .objects
            .iter()
            .filter(|(_, o)| o.pins == 0 && o.holds == 0)
            .map(|(&id, o)| (o.last_use, id))
            .collect();
        candidates.sort_unstable();
        for (_, id) in candidates {
            if used_pct(inner, bytes) <= u64::from(100 - c.frun) {
                break;
            }
            self.commit(inner, &Record::Delete { object_id: id });
            inner.stats.objects_culled += 1;
        }
        inner.object_pressure = used_pct(inner, bytes) > u64::from(100 - c.frun);
        if used_pct(inner, bytes) > u64::from(100 - c.fstop) {
            inner.stats.nospace_events += 1;
            return Err(StoreError::NoSpace);
        }
        Ok(())
    }

    pub(super) fn checkpoint_capacity(&self, inner: &Inner) -> u64 {
        inner.ix.geometry.ckpt_slot_bytes - BLOCK_BYTES_U64
    }
}
