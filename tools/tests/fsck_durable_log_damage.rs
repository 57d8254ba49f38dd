//! A damaged last log block looks like a write torn by a crash, and after
//! a crash that is what it usually is (see `fsck_torn_log_tail`). But once
//! a flush has made the block durable and the superblock says so
//! (`durable_log_seq`), the same damage is damage: records acknowledged as
//! durable are rolled back. fsck reports that as an error.

mod common;

use common::*;

#[test]
fn damage_to_a_block_a_flush_made_durable_is_an_error() {
    let image = durable_image();
    let loaded = load_image(&image);
    let (_, _, info) = loaded_checkpoint(&image);
    let last = info.log_seq + 1;
    assert_eq!(loaded.log_end, last + 1, "two blocks after the checkpoint");
    assert!(
        loaded.sb.durable_log_seq >= last,
        "the superblock says the last block is durable: {}",
        loaded.sb.durable_log_seq
    );
    let g = loaded.sb.geometry;
    let off = g.metalog_block_offset(last);
    let report = fsck_damaged(
        &image,
        |p| flip_bit(p, off + 60, 2),
        1,
        "error",
        "metadata-log",
    );
    let errors = findings(&report, "error", "metadata-log");
    let msg = errors[0]["message"].as_str().unwrap();
    assert!(msg.contains("damage, not a torn write"), "{report:#}");
    assert!(
        findings(&report, "info", "metadata-log").is_empty(),
        "not called a torn tail: {report:#}"
    );
}

#[test]
fn the_same_damage_past_the_durable_mark_is_a_torn_tail() {
    // The image as `unclean_image` leaves it: the last flush's blocks are
    // past what the superblock says is durable.
    let image = unclean_image();
    let loaded = load_image(&image);
    let (_, _, info) = loaded_checkpoint(&image);
    let last = info.log_seq + 1;
    assert!(loaded.sb.durable_log_seq < last);
    let off = loaded.sb.geometry.metalog_block_offset(last);
    fsck_damaged(
        &image,
        |p| flip_bit(p, off + 60, 2),
        0,
        "info",
        "metadata-log",
    );
}

#[test]
fn recovery_reports_what_the_damage_rolled_back() {
    let image = durable_image();
    let (_, _, info) = loaded_checkpoint(&image);
    let g = load_image(&image).sb.geometry;
    // The first block after the checkpoint: durable, with one valid block
    // after it that replay cannot use either.
    let off = (g.metalog_block_offset(info.log_seq) + 60) as usize;
    let mut damaged = image.clone();
    damaged[off] ^= 4;
    let loss = load_image(&damaged)
        .report
        .log_loss
        .expect("a loss is reported");
    assert_eq!(loss.at_seq, info.log_seq);
    assert!(loss.durable, "{loss:?}");
    assert_eq!(loss.later_blocks, 1, "{loss:?}");
    assert!(loss.later_records > 0, "{loss:?}");
    assert!(
        loss.describe().contains("damaged after a flush"),
        "{}",
        loss.describe()
    );
    // Undamaged, nothing is lost; damaged past the mark, replay stops at a
    // torn tail and says nothing was lost beyond it.
    assert_eq!(load_image(&image).report.log_loss, None);
    let mut torn = unclean_image();
    let (_, _, info) = loaded_checkpoint(&torn);
    let off = (g.metalog_block_offset(info.log_seq + 1) + 60) as usize;
    torn[off] ^= 4;
    assert_eq!(load_image(&torn).report.log_loss, None);
}
