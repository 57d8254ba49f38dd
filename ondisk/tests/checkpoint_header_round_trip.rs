//! A checkpoint header written by `CheckpointHeader::new` parses back to
//! exactly its `CheckpointInfo`, its fields sit at the offsets of the byte
//! map, and `check_payload` accepts the payload whose crc it carries.

mod common;

use common::*;
use ringcache_ondisk::checkpoint::{CKPT_MAGIC, CheckpointInfo, check_payload};
use ringcache_ondisk::{CheckpointHeader, crc32c};

const SLOT_BYTES: u64 = 1 << 20;

#[test]
fn parse_gives_back_every_field() {
    let info = ckpt_info();
    let b = ckpt_bytes(&info);
    assert_eq!(b.len(), 128);
    assert_eq!(CheckpointHeader::parse(&b, &UUID, SLOT_BYTES), Ok(info));
}

#[test]
fn extremes_round_trip() {
    let info = CheckpointInfo {
        ckpt_seq: u64::MAX,
        log_seq: u64::MAX,
        next_object_id: u64::MAX,
        next_region_seq: u64::MAX,
        next_volume_id: u32::MAX,
        payload_bytes: SLOT_BYTES - 4096,
        payload_crc: u32::MAX,
        volume_count: u64::MAX,
        object_count: u64::MAX,
        extent_count: u64::MAX,
        created_unix_secs: u64::MAX,
    };
    let b = ckpt_bytes(&info);
    assert_eq!(CheckpointHeader::parse(&b, &UUID, SLOT_BYTES), Ok(info));
    let empty = CheckpointInfo::default();
    let b = ckpt_bytes(&empty);
    assert_eq!(CheckpointHeader::parse(&b, &UUID, SLOT_BYTES), Ok(empty));
}

#[test]
fn header_block_may_be_read_whole() {
    // Recovery reads the whole 4 KiB header block; the rest is ignored.
    let info = ckpt_info();
    let mut block = ckpt_bytes(&info);
    block.resize(4096, 0);
    assert_eq!(CheckpointHeader::parse(&block, &UUID, SLOT_BYTES), Ok(info));
}

#[test]
fn fields_sit_at_their_documented_offsets() {
    let i = ckpt_info();
    let b = ckpt_bytes(&i);
    assert_eq!(&b[0..8], b"RCCHKPT1");
    assert_eq!(get_u64(&b, 0), CKPT_MAGIC);
    assert_eq!(get_u32(&b, 8), 1);
    assert_eq!(get_u32(&b, 12), i.next_volume_id);
    assert_eq!(&b[16..32], &UUID);
    assert_eq!(get_u64(&b, 32), i.ckpt_seq);
    assert_eq!(get_u64(&b, 40), i.log_seq);
    assert_eq!(get_u64(&b, 48), i.next_object_id);
    assert_eq!(get_u64(&b, 56), i.next_region_seq);
    assert_eq!(get_u64(&b, 64), i.payload_bytes);
    assert_eq!(get_u64(&b, 72), i.volume_count);
    assert_eq!(get_u64(&b, 80), i.object_count);
    assert_eq!(get_u64(&b, 88), i.extent_count);
    assert_eq!(get_u64(&b, 96), i.created_unix_secs);
    assert_eq!(get_u32(&b, 104), i.payload_crc);
    assert!(b[108..124].iter().all(|&x| x == 0));
    assert_eq!(get_u32(&b, 124), crc32c(&b[..124]));
}

#[test]
fn payload_crc_is_crc32c_of_the_payload() {
    let payload = log_payload();
    let mut info = ckpt_info();
    info.payload_bytes = payload.len() as u64;
    info.payload_crc = crc32c(&payload);
    assert_eq!(check_payload(&info, &payload), Ok(()));
    let empty = CheckpointInfo {
        payload_crc: crc32c(&[]),
        ..CheckpointInfo::default()
    };
    assert_eq!(check_payload(&empty, &[]), Ok(()));
}
