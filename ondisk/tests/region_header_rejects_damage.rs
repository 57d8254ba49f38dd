//! Every way a region header can be damaged is rejected with its own error:
//! bad magic, a bit flip anywhere in the 64 bytes, an unknown version, a
//! header of another cache (foreign uuid), a header found at another
//! region's position (misdirected write), and a short read of any length.

mod common;

use common::*;
use ringcache_ondisk::region::REGION_MAGIC;
use ringcache_ondisk::{FormatError, RegionHeader, crc32c};

const W: &str = "region header";

#[test]
fn bad_magic() {
    let mut b = region_bytes();
    b[0] = b'X';
    reseal_header(&mut b);
    assert_eq!(
        RegionHeader::parse(&b, 5, &UUID),
        Err(FormatError::BadMagic {
            what: W,
            found: u64::from_le_bytes(*b"XCREGION"),
            expected: REGION_MAGIC,
        })
    );
    // Data where a header should be (a region never written, or zeros).
    assert!(matches!(
        RegionHeader::parse(&[0u8; 4096], 5, &UUID),
        Err(FormatError::BadMagic { found: 0, .. })
    ));
}

#[test]
fn unknown_version() {
    for version in [0u32, 2, u32::MAX] {
        let mut b = region_bytes();
        put_u32(&mut b, 8, version);
        reseal_header(&mut b);
        assert_eq!(
            RegionHeader::parse(&b, 5, &UUID),
            Err(FormatError::UnknownVersion {
                what: W,
                version,
                newest: 1
            })
        );
    }
}

#[test]
fn bit_flip_anywhere_is_caught() {
    let good = region_bytes();
    let stored = get_u32(&good, 60);
    for byte in 0..good.len() {
        for bit in 0..8 {
            let mut b = good.clone();
            b[byte] ^= 1 << bit;
            let r = RegionHeader::parse(&b, 5, &UUID);
            if byte < 8 {
                assert!(
                    matches!(r, Err(FormatError::BadMagic { what: W, .. })),
                    "byte {byte} bit {bit}: {r:?}"
                );
            } else {
                let want_stored = if byte >= 60 {
                    stored ^ (1 << (8 * (byte - 60) + bit))
                } else {
                    stored
                };
                assert_eq!(
                    r,
                    Err(FormatError::BadChecksum {
                        what: W,
                        stored: want_stored,
                        computed: crc32c(&b[..60]),
                    }),
                    "byte {byte} bit {bit}"
                );
            }
        }
    }
}

#[test]
fn every_short_read_is_truncated() {
    let good = region_bytes();
    for len in 0..good.len() {
        assert_eq!(
            RegionHeader::parse(&good[..len], 5, &UUID),
            Err(FormatError::Truncated {
                what: W,
                need: 64,
                have: len
            }),
            "length {len}"
        );
    }
}

#[test]
fn foreign_uuid() {
    assert_eq!(
        RegionHeader::parse(&region_bytes(), 5, &OTHER_UUID),
        Err(FormatError::ForeignUuid { what: W })
    );
}

#[test]
fn header_of_another_region() {
    for expected in [0u32, 4, 6, u32::MAX] {
        assert_eq!(
            RegionHeader::parse(&region_bytes(), expected, &UUID),
            Err(FormatError::OutOfRange {
                what: W,
                field: "region_index",
                value: 5,
                why: "does not match the region's position (misdirected write?)",
            })
        );
    }
}
