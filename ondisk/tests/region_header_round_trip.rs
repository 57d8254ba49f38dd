//! A region header written by `RegionHeader::new` parses back to its
//! region_seq when read at its own index for its own cache, and its fields
//! sit at the offsets of the byte map.

mod common;

use common::*;
use ringcache_ondisk::region::REGION_MAGIC;
use ringcache_ondisk::{RegionHeader, crc32c};
use zerocopy::IntoBytes;

#[test]
fn parse_gives_back_region_seq() {
    for (index, seq) in [(0u32, 0u64), (5, 99), (u32::MAX, u64::MAX)] {
        let h = RegionHeader::new(index, seq, UUID);
        assert_eq!(RegionHeader::parse(h.as_bytes(), index, &UUID), Ok(seq));
    }
}

#[test]
fn whole_header_block_parses() {
    let mut block = region_bytes();
    block.resize(4096, 0);
    assert_eq!(RegionHeader::parse(&block, 5, &UUID), Ok(99));
}

#[test]
fn fields_sit_at_their_documented_offsets() {
    let b = region_bytes();
    assert_eq!(b.len(), 64);
    assert_eq!(&b[0..8], b"RCREGION");
    assert_eq!(get_u64(&b, 0), REGION_MAGIC);
    assert_eq!(get_u32(&b, 8), 1);
    assert_eq!(get_u32(&b, 12), 5);
    assert_eq!(get_u64(&b, 16), 99);
    assert_eq!(&b[24..40], &UUID);
    assert!(b[40..60].iter().all(|&x| x == 0));
    assert_eq!(get_u32(&b, 60), crc32c(&b[..60]));
}
