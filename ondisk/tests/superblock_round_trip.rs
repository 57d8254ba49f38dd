//! A superblock written by `Superblock::new` parses back to exactly the
//! description it was built from, from either copy position, and what the
//! parser reads is what the byte map in docs/FORMAT.md says.

mod common;

use common::*;
use ringcache_ondisk::superblock::{SB_FLAG_CLEAN, SUPERBLOCK_MAGIC, SUPERBLOCK_OFFSETS};
use ringcache_ondisk::{BLOCK_BYTES, FormatVersion, Superblock};

#[test]
fn parse_gives_back_every_field() {
    let info = sb_info();
    let bytes = sb_bytes(&info);
    assert_eq!(bytes.len(), BLOCK_BYTES);
    assert_eq!(Superblock::parse(&bytes, DEVICE_BYTES).unwrap(), info);
}

#[test]
fn unclean_flag_and_empty_tag_round_trip() {
    let mut info = sb_info();
    info.clean = false;
    info.tag = String::new();
    info.sb_seq = u64::MAX;
    let bytes = sb_bytes(&info);
    assert_eq!(get_u32(&bytes, 12), 0);
    assert_eq!(Superblock::parse(&bytes, DEVICE_BYTES).unwrap(), info);
}

#[test]
fn a_32_byte_tag_fills_the_field_without_a_nul() {
    let mut info = sb_info();
    info.tag = "x".repeat(32);
    let bytes = sb_bytes(&info);
    assert_eq!(&bytes[112..144], "x".repeat(32).as_bytes());
    assert_eq!(Superblock::parse(&bytes, DEVICE_BYTES).unwrap(), info);
}

#[test]
fn a_longer_device_than_formatted_is_accepted() {
    // A device that grew after format keeps its layout.
    let info = sb_info();
    let bytes = sb_bytes(&info);
    assert_eq!(
        Superblock::parse(&bytes, DEVICE_BYTES * 2).unwrap(),
        info,
        "device_bytes is what the cache was formatted for, not the device size"
    );
}

#[test]
fn fields_sit_at_their_documented_offsets() {
    let info = sb_info();
    let g = info.geometry;
    let b = sb_bytes(&info);
    assert_eq!(get_u64(&b, 0), SUPERBLOCK_MAGIC);
    assert_eq!(&b[0..8], b"RINGCACH");
    assert_eq!(get_u32(&b, 8), FormatVersion::CURRENT as u32);
    assert_eq!(get_u32(&b, 12), SB_FLAG_CLEAN);
    assert_eq!(get_u64(&b, 16), info.sb_seq);
    assert_eq!(&b[24..40], &info.uuid);
    assert_eq!(get_u64(&b, 40), g.device_bytes);
    assert_eq!(get_u32(&b, 48), 4096);
    assert_eq!(get_u32(&b, 52), g.region_count);
    assert_eq!(get_u64(&b, 56), g.region_bytes);
    assert_eq!(get_u64(&b, 64), g.regions_offset);
    assert_eq!(get_u64(&b, 72), g.ckpt_offset);
    assert_eq!(get_u64(&b, 80), g.ckpt_slot_bytes);
    assert_eq!(get_u64(&b, 88), g.metalog_offset);
    assert_eq!(get_u64(&b, 96), g.metalog_bytes);
    assert_eq!(get_u64(&b, 104), info.created_unix_secs);
    assert_eq!(&b[112..120], b"test-tag");
    assert!(b[120..144].iter().all(|&x| x == 0), "tag is NUL-padded");
    assert_eq!(get_u64(&b, 144), info.durable_log_seq);
    assert!(b[152..4092].iter().all(|&x| x == 0), "reserved is zero");
    assert_eq!(
        get_u32(&b, 4092),
        ringcache_ondisk::crc32c(&b[..4092]),
        "crc32c of bytes 0..4092"
    );
}

#[test]
fn copies_live_in_the_first_two_blocks() {
    assert_eq!(SUPERBLOCK_OFFSETS, [0, 4096]);
}
