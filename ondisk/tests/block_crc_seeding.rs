//! `block_crc` is the crc32c of the 4 KiB block seeded with where the block
//! belongs: it equals crc32c(object_id ++ data_gen ++ logical_block ++
//! block) with the three numbers little-endian, so a block written for
//! another object, an older generation or another offset never verifies.

use ringcache_ondisk::{block_crc, crc32c};

fn block(fill: u8) -> Vec<u8> {
    (0..4096).map(|i| (i as u8) ^ fill).collect()
}

#[test]
fn equals_crc_of_seed_then_block() {
    let b = block(0x3c);
    let mut seeded = Vec::new();
    seeded.extend_from_slice(&17u64.to_le_bytes());
    seeded.extend_from_slice(&3u64.to_le_bytes());
    seeded.extend_from_slice(&42u64.to_le_bytes());
    seeded.extend_from_slice(&b);
    assert_eq!(block_crc(17, 3, 42, &b), crc32c(&seeded));
}

#[test]
fn another_object_generation_or_offset_does_not_verify() {
    let b = block(0);
    let c = block_crc(17, 3, 42, &b);
    assert_ne!(block_crc(18, 3, 42, &b), c, "another object");
    assert_ne!(block_crc(17, 2, 42, &b), c, "an older generation");
    assert_ne!(block_crc(17, 3, 43, &b), c, "another block of the object");
    assert_ne!(block_crc(17, 3, 42, &block(1)), c, "other data");
    assert_ne!(
        block_crc(0, 0, 0, &[0u8; 4096]),
        crc32c(&[0u8; 4096]),
        "even all-zero ids seed the crc"
    );
}
