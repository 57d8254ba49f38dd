//! A bit flipped in the payload of the checkpoint recovery would load (a
//! record of the index snapshot) is damage (exit 1) named as that slot's
//! payload: its crc no longer matches the header's payload_crc.

mod common;

use common::*;

#[test]
fn newest_checkpoint_payload() {
    let image = clean_image();
    let (slot, off, info) = loaded_checkpoint(&image);
    assert!(info.payload_bytes > 100, "the checkpoint holds the index");
    let report = fsck_damaged(
        &image,
        |p| flip_bit(p, off + 4096 + info.payload_bytes / 2, 5),
        1,
        "error",
        "checkpoint",
    );
    let errs = findings(&report, "error", "checkpoint");
    assert_eq!(errs[0]["location"], format!("slot {slot}"), "{report:#}");
    assert_eq!(errs[0]["device_offset"], off + 4096, "the payload's offset");
    assert!(
        errs[0]["message"]
            .as_str()
            .unwrap()
            .contains("checkpoint payload: checksum mismatch"),
        "{report:#}"
    );
}
