//! Every way a single superblock copy can be damaged is rejected with its
//! own error: foreign magic, a crc that does not match (a bit flip anywhere
//! in the 4096 bytes), an unknown format version, a block size other than
//! 4096, and a short read of any length. None of them panics.

mod common;

use common::*;
use ringcache_ondisk::superblock::SUPERBLOCK_MAGIC;
use ringcache_ondisk::{FormatError, Superblock};

#[test]
fn bad_magic() {
    let mut b = sb_bytes(&sb_info());
    b[0..8].copy_from_slice(b"EXT4FS\0\0");
    reseal_header(&mut b);
    assert_eq!(
        Superblock::parse(&b, DEVICE_BYTES),
        Err(FormatError::BadMagic {
            what: "superblock",
            found: u64::from_le_bytes(*b"EXT4FS\0\0"),
            expected: SUPERBLOCK_MAGIC,
        })
    );
}

#[test]
fn all_zero_block_is_bad_magic() {
    let b = vec![0u8; 4096];
    assert!(matches!(
        Superblock::parse(&b, DEVICE_BYTES),
        Err(FormatError::BadMagic { found: 0, .. })
    ));
}

#[test]
fn unknown_version() {
    for version in [0u32, 2, 0x0100_0000, u32::MAX] {
        let mut b = sb_bytes(&sb_info());
        put_u32(&mut b, 8, version);
        reseal_header(&mut b);
        assert_eq!(
            Superblock::parse(&b, DEVICE_BYTES),
            Err(FormatError::UnknownVersion {
                what: "superblock",
                version,
                newest: 1,
            })
        );
    }
}

#[test]
fn block_bytes_other_than_4096() {
    for block_bytes in [0u32, 512, 4095, 8192] {
        let mut b = sb_bytes(&sb_info());
        put_u32(&mut b, 48, block_bytes);
        reseal_header(&mut b);
        assert_eq!(
            Superblock::parse(&b, DEVICE_BYTES),
            Err(FormatError::OutOfRange {
                what: "superblock",
                field: "block_bytes",
                value: u64::from(block_bytes),
                why: "must be 4096",
            })
        );
    }
}

/// Flip every bit of the 4096 bytes, one at a time. A flip in the magic is
/// caught as bad magic (it is checked first); anywhere else, the tag, the
/// reserved bytes and the crc itself included, as a checksum mismatch.
#[test]
fn bit_flip_anywhere_is_caught() {
    let good = sb_bytes(&sb_info());
    let stored = get_u32(&good, 4092);
    for byte in 0..good.len() {
        for bit in 0..8 {
            let mut b = good.clone();
            b[byte] ^= 1 << bit;
            let r = Superblock::parse(&b, DEVICE_BYTES);
            if byte < 8 {
                assert!(
                    matches!(r, Err(FormatError::BadMagic { .. })),
                    "byte {byte} bit {bit}: {r:?}"
                );
            } else if byte >= 4092 {
                assert_eq!(
                    r,
                    Err(FormatError::BadChecksum {
                        what: "superblock",
                        stored: stored ^ (1 << (8 * (byte - 4092) + bit)),
                        computed: stored,
                    }),
                    "byte {byte} bit {bit}"
                );
            } else {
                assert!(
                    matches!(
                        r,
                        Err(FormatError::BadChecksum { what: "superblock", stored: s, .. }) if s == stored
                    ),
                    "byte {byte} bit {bit}: {r:?}"
                );
            }
        }
    }
}

#[test]
fn every_short_read_is_truncated() {
    let good = sb_bytes(&sb_info());
    for len in 0..good.len() {
        assert_eq!(
            Superblock::parse(&good[..len], DEVICE_BYTES),
            Err(FormatError::Truncated {
                what: "superblock",
                need: 4096,
                have: len,
            }),
            "length {len}"
        );
    }
}

#[test]
fn nonzero_reserved_bytes_with_a_good_crc_are_accepted() {
    // Reserved bytes are for later versions: a reader ignores them as long
    // as the crc (which covers them) matches.
    let info = sb_info();
    let mut b = sb_bytes(&info);
    b[152..4092].fill(0x5a);
    reseal_header(&mut b);
    assert_eq!(Superblock::parse(&b, DEVICE_BYTES).unwrap(), info);
}
