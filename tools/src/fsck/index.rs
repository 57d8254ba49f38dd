//! The index recovery rebuilt, judged against itself: extents disjoint and
//! inside their object and region, live bytes per region that add up,
//! extent counts that agree, volumes that exist.

use std::collections::BTreeMap;

use ringcache::store::Loaded;
use ringcache_ondisk::BLOCK_BYTES_U64;
use ringcache_ondisk::record::check_disjoint;

use super::report::{Report, Severity, structure};
use crate::text;

/// An object as findings name it: its id, volume key and key.
pub(super) fn object_name(loaded: &Loaded, id: u64) -> String {
    let ix = loaded.index();
    match ix.object(id) {
        Some(o) => format!(
            "object {id} ({} / {})",
            ix.volume_key(o.volume())
                .map(text::key_text)
                .unwrap_or_else(|| format!("volume {}", o.volume())),
            text::key_text(o.key())
        ),
        None => format!("object {id}"),
    }
}

/// The index recovery rebuilt: disjoint extents inside their object and
/// region, live bytes per region that add up, volumes that exist.
pub(super) fn check_index(loaded: &Loaded, rep: &mut Report) {
    let ix = loaded.index();
    let g = ix.geometry();
    let mut live: BTreeMap<u32, u64> = BTreeMap::new();
    let mut extent_total = 0u64;
    for o in ix.objects() {
        let id = o.id();
        rep.checked.objects += 1;
        let mut pairs: Vec<(u64, u64)> = Vec::with_capacity(o.extent_count());
        if ix.volume_key(o.volume()).is_none() {
            rep.add(
                Severity::Error,
                structure::INDEX,
                object_name(loaded, id),
                None,
                format!("names volume {}, which does not exist", o.volume()),
            );
        }
        for e in o.extents() {
            let logical = e.offset;
            extent_total += 1;
            let len = u64::from(e.len);
            pairs.push((logical, len));
            *live.entry(e.region).or_default() += len;
            let end = logical.saturating_add(len);
            let mut bad = Vec::new();
            if end > o.size() {
                bad.push(format!("ends at {end}, past the object size {}", o.size()));
            }
            if e.region >= g.region_count {
                bad.push(format!("names region {}, which does not exist", e.region));
            }
            if !u64::from(e.region_off).is_multiple_of(BLOCK_BYTES_U64)
                || u64::from(e.region_off) < BLOCK_BYTES_U64
                || u64::from(e.region_off) + len > g.region_bytes
            {
                bad.push(format!(
                    "region offset {} length {len} is not inside the region's data blocks",
                    e.region_off
                ));
            }
            if !logical.is_multiple_of(BLOCK_BYTES_U64) {
                bad.push(format!(
                    "logical offset {logical} is not a multiple of 4096"
                ));
            }
            for why in bad {
                rep.add(
                    Severity::Error,
                    structure::INDEX,
                    format!("{} extent at {logical}", object_name(loaded, id)),
                    None,
                    why,
                );
            }
        }
        if let Err(e) = check_disjoint(id, &mut pairs) {
            rep.add(
                Severity::Error,
                structure::INDEX,
                object_name(loaded, id),
                None,
                e.to_string(),
            );
        }
    }
    rep.checked.extents = extent_total;
    if extent_total != ix.extent_count() {
        rep.add(
            Severity::Error,
            structure::INDEX,
            "index",
            None,
            format!(
                "the index counts {} extents, its objects hold {extent_total}",
                ix.extent_count()
            ),
        );
    }
    for region in ix.regions() {
        let r = region.index();
        let sum = live.get(&r).copied().unwrap_or(0);
        if sum != region.live_bytes() {
            rep.add(
                Severity::Error,
                structure::INDEX,
                format!("region {r}"),
                Some(g.region_offset(r)),
                format!(
                    "live_bytes is {}, its extents add up to {sum}",
                    region.live_bytes()
                ),
            );
        }
    }
}
