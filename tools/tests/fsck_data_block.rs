//! A bit flipped in a data block of a live extent is damage (exit 1) named
//! as that data block: its crc32c, seeded with the object, generation and
//! logical block, no longer matches the one the index keeps. The finding
//! names the region block, the object and the logical block.

mod common;

use common::*;

#[test]
fn block_of_an_extent() {
    let image = clean_image();
    let l = load_image(&image);
    let g = l.sb.geometry;
    let o = l
        .index()
        .objects()
        .find(|o| o.key() == b"alpha")
        .expect("alpha");
    let id = o.id();
    let e = o.extents().next().expect("an extent");
    assert_eq!(e.offset, 0);
    // The third block of the extent.
    let block = u64::from(e.region_off) / 4096 + 2;
    let off = g.region_offset(e.region) + block * 4096;
    let report = fsck_damaged(
        &image,
        |p| flip_bit(p, off + 1000, 7),
        1,
        "error",
        "data-block",
    );
    let errs = findings(&report, "error", "data-block");
    assert_eq!(errs.len(), 1, "{report:#}");
    assert_eq!(errs[0]["device_offset"], off);
    let loc = errs[0]["location"].as_str().unwrap();
    assert_eq!(
        loc,
        format!(
            "region {} block {block}, object {id} (vol1 / alpha) logical block 2",
            e.region
        )
    );
    assert!(
        errs[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("1 of the 10 blocks"),
        "{report:#}"
    );
}
