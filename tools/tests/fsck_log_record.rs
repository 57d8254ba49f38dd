//! A bit flipped in a metadata-log record that replay needs, with a valid
//! block after it, is damage (exit 1) named as that log block: replay stops
//! there and loses the records behind it. Unlike a torn last block (see
//! fsck_torn_log_tail.rs), the intact next block shows it was not the end.

mod common;

use common::*;

#[test]
fn record_in_the_middle_of_the_log() {
    let image = unclean_image();
    let (_, _, info) = loaded_checkpoint(&image);
    let g = load_image(&image).sb.geometry;
    // The first block after the checkpoint: its first record starts at
    // byte 48; byte 60 is inside that record's body.
    let off = g.metalog_block_offset(info.log_seq);
    let report = fsck_damaged(
        &image,
        |p| flip_bit(p, off + 60, 2),
        1,
        "error",
        "metadata-log",
    );
    let errs = findings(&report, "error", "metadata-log");
    assert_eq!(errs[0]["device_offset"], off, "{report:#}");
    assert!(
        errs[0]["location"]
            .as_str()
            .unwrap()
            .starts_with(&format!("block seq {}", info.log_seq)),
        "{report:#}"
    );
    let msg = errs[0]["message"].as_str().unwrap();
    assert!(msg.contains("checksum mismatch"), "{msg}");
    assert!(msg.contains("loses them"), "{msg}");
}
