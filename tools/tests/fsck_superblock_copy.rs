//! A bit flipped in either superblock copy is damage (exit 1) found in that
//! copy, by location; the other copy still opens the cache, so the rest is
//! checked and inspect keeps working.

mod common;

use common::*;

fn flip_copy(copy: u64, location: &str) {
    let image = clean_image();
    // Byte 30 is inside the uuid: covered by the copy's crc.
    let report = fsck_damaged(
        &image,
        |p| flip_bit(p, copy * 4096 + 30, 3),
        1,
        "error",
        "superblock",
    );
    let errs = findings(&report, "error", "superblock");
    assert_eq!(errs.len(), 1, "{report:#}");
    assert_eq!(errs[0]["location"], location);
    assert_eq!(errs[0]["device_offset"], copy * 4096);
    assert!(
        errs[0]["message"].as_str().unwrap().contains("checksum"),
        "{report:#}"
    );
    // Everything else was still checked, through the good copy.
    assert_eq!(report["checked"]["objects"], 3);
    assert_eq!(
        report["errors"], 1,
        "only the one copy is damaged: {report:#}"
    );
}

#[test]
fn copy_a() {
    flip_copy(0, "copy A");
}

#[test]
fn copy_b() {
    flip_copy(1, "copy B");
}
