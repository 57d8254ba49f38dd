//! A damaged last log block after an unclean shutdown is what a write torn
//! by a crash looks like, and recovery is built for it: fsck reports it as
//! info and exits 0. Pins down that fsck does not call a normal crash
//! damage.

mod common;

use common::*;

#[test]
fn torn_last_block_is_info() {
    let image = unclean_image();
    let (_, _, info) = loaded_checkpoint(&image);
    let g = load_image(&image).sb.geometry;
    // The second (last) block after the checkpoint.
    let off = g.metalog_block_offset(info.log_seq + 1);
    let report = fsck_damaged(
        &image,
        |p| flip_bit(p, off + 60, 2),
        0,
        "info",
        "metadata-log",
    );
    assert_eq!(report["clean_shutdown"], false);
    let infos = findings(&report, "info", "metadata-log");
    assert!(
        infos[0]["message"]
            .as_str()
            .unwrap()
            .contains("torn last block"),
        "{report:#}"
    );
    // Replay stopped before it: the object in it is not there.
    assert_eq!(report["checked"]["log_blocks"], 1);
    assert_eq!(report["checked"]["objects"], 3);
}
