//! A device shorter than the cache was formatted for is damage (exit 1):
//! both superblock copies refuse it and fsck says in plain words that the
//! device was truncated, and to what. Even a device cut inside the
//! superblocks gets an answer, never a crash.

mod common;

use common::*;

fn truncate_to(len: u64) -> serde_json::Value {
    fsck_damaged(
        &clean_image(),
        |p| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .expect("open image")
                .set_len(len)
                .expect("truncate")
        },
        1,
        "error",
        "device",
    )
}

#[test]
fn cut_in_the_regions() {
    let report = truncate_to(SMALL_DEVICE / 2);
    let dev = findings(&report, "error", "device");
    assert!(
        dev.iter().any(|f| f["message"]
            == format!(
                "truncated: the device is {} bytes, the cache was formatted for {SMALL_DEVICE}",
                SMALL_DEVICE / 2
            )),
        "{report:#}"
    );
    assert_eq!(findings(&report, "error", "superblock").len(), 2);
}

#[test]
fn cut_inside_superblock_b() {
    let report = truncate_to(6000);
    assert_eq!(
        findings(&report, "error", "superblock").len(),
        2,
        "{report:#}"
    );
}
