//! Region headers: each region that holds live extents, or whose extents
//! recovery dropped, has a header that parses and names the sequence its
//! extents were written under.

use ringcache::store::Loaded;
use ringcache_ondisk::superblock::SuperblockInfo;
use ringcache_ondisk::{BLOCK_BYTES_U64, RegionHeader};

use super::report::{Report, Severity, structure};
use crate::device::Device;

/// The header of every region that holds live extents, and of every region
/// whose extents recovery dropped because of its header.
pub(super) fn check_region_headers(
    dev: &Device,
    sb: &SuperblockInfo,
    loaded: &Loaded,
    rep: &mut Report,
) {
    let g = sb.geometry;
    let ix = loaded.index();
    let dropped = &loaded.report.dropped_regions;
    for region in ix.regions() {
        let r = region.index();
        let was_dropped = dropped.contains(&r);
        if region.live_bytes() == 0 && !was_dropped {
            continue;
        }
        rep.checked.region_headers += 1;
        let off = g.region_offset(r);
        let loc = format!("region {r}");
        let bytes = dev.bytes_clamped(off, BLOCK_BYTES_U64);
        match RegionHeader::parse(bytes, r, &sb.uuid) {
            Ok(seq) if seq == region.seq() && !was_dropped => {}
            Ok(seq) if seq > region.seq() && !sb.clean => rep.add(
                Severity::Info,
                structure::REGION_HEADER,
                loc,
                Some(off),
                format!(
                    "region_seq {seq} is newer than the {} its extents name: the region was reused after the \
                     last durable metadata, as an unclean shutdown can leave; its old extents are dropped",
                    region.seq()
                ),
            ),
            Ok(seq) => rep.add(
                Severity::Error,
                structure::REGION_HEADER,
                loc,
                Some(off),
                format!(
                    "region_seq {seq} but its extents were written under {}; recovery drops them",
                    region.seq()
                ),
            ),
            Err(e) => rep.add(
                Severity::Error,
                structure::REGION_HEADER,
                loc,
                Some(off),
                format!("{e}; recovery drops the extents held in this region"),
            ),
        }
    }
}
