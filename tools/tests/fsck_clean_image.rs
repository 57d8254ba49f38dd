//! fsck on healthy caches finds nothing: a populated cache closed cleanly,
//! a cache left open after flushed writes (unclean shutdown) and a freshly
//! formatted one all exit 0, with no error or warning. What a healthy cache
//! normally shows (a checkpoint slot never written, the end of the log) is
//! reported as info, not damage. Guards against fsck crying wolf.

mod common;

use common::*;

fn assert_clean(image: &[u8]) -> serde_json::Value {
    let f = temp_image(image);
    let (code, report) = fsck(f.path());
    assert_eq!(code, 0, "fsck of a healthy cache: {report:#}");
    assert_eq!(report["result"], "clean");
    assert_eq!(report["errors"], 0, "{report:#}");
    assert_eq!(report["warnings"], 0, "{report:#}");
    report
}

#[test]
fn populated_clean_cache() {
    let report = assert_clean(&clean_image());
    assert_eq!(report["clean_shutdown"], true);
    let c = &report["checked"];
    assert_eq!(c["superblock_copies"], 2);
    assert_eq!(c["checkpoint_slots"], 2);
    assert_eq!(c["objects"], 3);
    // alpha 40000 + beta 8192 + gamma 65536 bytes, every block read.
    assert_eq!(c["data_bytes"], 40_000 + 8192 + 65_536);
    assert_eq!(c["data_blocks"], 10 + 2 + 16);
    assert!(c["region_headers"].as_u64().unwrap() >= 2, "{c}");
}

#[test]
fn unclean_cache_with_log_to_replay() {
    let report = assert_clean(&unclean_image());
    assert_eq!(report["clean_shutdown"], false);
    assert_eq!(report["checked"]["log_blocks"], 2, "{report:#}");
    assert_eq!(report["checked"]["objects"], 4);
    // Replay ends at a block never written: info.
    assert_eq!(findings(&report, "info", "metadata-log").len(), 1);
}

#[test]
fn freshly_formatted_cache() {
    let report = assert_clean(&formatted().current_image());
    // Slot 1 is all zeros until the first open: an empty slot is info.
    let slots = findings(&report, "info", "checkpoint");
    assert!(
        slots
            .iter()
            .any(|f| f["location"] == "slot 1" && f["message"].as_str().unwrap().contains("empty")),
        "{report:#}"
    );
}
