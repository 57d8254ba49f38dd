//! A bit flipped in the header of the checkpoint recovery would load is
//! damage (exit 1) named as that checkpoint slot. Recovery falls back to
//! the older slot; fsck still runs to the end.

mod common;

use common::*;

#[test]
fn newest_checkpoint_header() {
    let image = clean_image();
    let (slot, off, _) = loaded_checkpoint(&image);
    // Byte 40 is log_seq: covered by the header crc.
    let report = fsck_damaged(
        &image,
        |p| flip_bit(p, off + 40, 0),
        1,
        "error",
        "checkpoint",
    );
    let errs = findings(&report, "error", "checkpoint");
    assert_eq!(errs[0]["location"], format!("slot {slot}"), "{report:#}");
    assert_eq!(errs[0]["device_offset"], off);
    assert!(
        errs[0]["message"].as_str().unwrap().contains("header"),
        "{report:#}"
    );
}
