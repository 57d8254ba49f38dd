//! A metadata-log block written by `metalog::encode_block` parses back to
//! its seq, record count and exact payload; the records in the payload
//! parse back; the header fields sit at the offsets of the byte map; and
//! `encode_block` refuses what does not fit instead of writing it.

mod common;

use common::*;
use ringcache_ondisk::metalog::{self, LOG_MAGIC, LOG_PAYLOAD_MAX};
use ringcache_ondisk::{BLOCK_BYTES, RecordIter, crc32c};

#[test]
fn parse_gives_back_seq_count_and_payload() {
    let payload = log_payload();
    let block = log_block(&payload);
    let parsed = metalog::parse_block(&block, &UUID).unwrap();
    assert_eq!(parsed.seq, 1000);
    assert_eq!(parsed.record_count, 2);
    assert_eq!(parsed.payload, &payload[..]);
    let records: Vec<_> = RecordIter::new(parsed.payload)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(records.len(), parsed.record_count as usize);
}

#[test]
fn empty_and_full_payloads() {
    let mut block = vec![0u8; BLOCK_BYTES];
    assert!(metalog::encode_block(&mut block, 0, UUID, 0, &[]));
    let parsed = metalog::parse_block(&block, &UUID).unwrap();
    assert_eq!((parsed.seq, parsed.record_count), (0, 0));
    assert!(parsed.payload.is_empty());

    let full: Vec<u8> = (0..LOG_PAYLOAD_MAX).map(|i| i as u8).collect();
    assert_eq!(LOG_PAYLOAD_MAX, 4048);
    assert!(metalog::encode_block(&mut block, u64::MAX, UUID, 7, &full));
    let parsed = metalog::parse_block(&block, &UUID).unwrap();
    assert_eq!(parsed.seq, u64::MAX);
    assert_eq!(parsed.payload, &full[..]);
}

#[test]
fn fields_sit_at_their_documented_offsets() {
    let payload = log_payload();
    let b = log_block(&payload);
    assert_eq!(&b[0..8], b"RCLOGBLK");
    assert_eq!(get_u64(&b, 0), LOG_MAGIC);
    assert_eq!(get_u32(&b, 8), 1);
    assert_eq!(get_u32(&b, 12) as usize, payload.len());
    assert_eq!(get_u64(&b, 16), 1000);
    assert_eq!(&b[24..40], &UUID);
    assert_eq!(get_u32(&b, 40), 2);
    let mut covered = b[..44].to_vec();
    covered.extend_from_slice(&payload);
    assert_eq!(get_u32(&b, 44), crc32c(&covered));
    assert_eq!(&b[48..48 + payload.len()], &payload[..]);
    assert!(
        b[48 + payload.len()..].iter().all(|&x| x == 0),
        "encode_block zeroes the rest of the block"
    );
}

#[test]
fn encode_refuses_what_does_not_fit() {
    let mut block = vec![0u8; BLOCK_BYTES];
    let too_big = vec![0u8; LOG_PAYLOAD_MAX + 1];
    assert!(!metalog::encode_block(&mut block, 1, UUID, 1, &too_big));
    let mut short = vec![0u8; BLOCK_BYTES - 1];
    assert!(!metalog::encode_block(&mut short, 1, UUID, 0, &[]));
    let mut long = vec![0u8; BLOCK_BYTES + 1];
    assert!(!metalog::encode_block(&mut long, 1, UUID, 0, &[]));
    assert!(
        block.iter().all(|&x| x == 0),
        "a refused block is untouched"
    );
}
