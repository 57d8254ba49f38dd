//! A bit flipped in the header of a region holding live extents is damage
//! (exit 1) named as that region's header: recovery drops every extent in
//! the region, since it can no longer tell which use of the region they
//! belong to.

mod common;

use common::*;

#[test]
fn header_of_a_region_in_use() {
    let image = clean_image();
    let l = load_image(&image);
    let g = l.sb.geometry;
    let r = l
        .index()
        .regions()
        .find(|r| r.live_bytes() > 0)
        .expect("a region in use")
        .index();
    // Byte 16 is region_seq.
    let off = g.region_offset(r);
    let report = fsck_damaged(
        &image,
        |p| flip_bit(p, off + 16, 1),
        1,
        "error",
        "region-header",
    );
    let errs = findings(&report, "error", "region-header");
    assert_eq!(errs[0]["location"], format!("region {r}"), "{report:#}");
    assert_eq!(errs[0]["device_offset"], off);
    assert!(
        errs[0]["message"]
            .as_str()
            .unwrap()
            .contains("region header: checksum mismatch"),
        "{report:#}"
    );
}
