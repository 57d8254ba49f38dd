//! Every way a metadata-log block can be damaged is rejected with its own
//! error: bad magic, a bit flip in the header or the payload, a
//! payload_bytes larger than a block holds, an unknown version, a block of
//! another cache (foreign uuid), and a short read of any length (header or
//! payload cut off). Bytes after the payload are not covered by the crc and
//! a flip there does not lose the block's records.

mod common;

use common::*;
use ringcache_ondisk::metalog::{self, LOG_MAGIC, LOG_PAYLOAD_MAX};
use ringcache_ondisk::{FormatError, crc32c};

const W: &str = "metadata log block";

fn block_crc_of(b: &[u8]) -> u32 {
    let payload_bytes = get_u32(b, 12) as usize;
    let mut covered = b[..44].to_vec();
    covered.extend_from_slice(&b[48..48 + payload_bytes]);
    crc32c(&covered)
}

#[test]
fn bad_magic() {
    let mut b = log_block(&log_payload());
    b[0..8].copy_from_slice(b"RCLOGBLX");
    reseal_log_block(&mut b);
    assert_eq!(
        metalog::parse_block(&b, &UUID).map(|_| ()),
        Err(FormatError::BadMagic {
            what: W,
            found: u64::from_le_bytes(*b"RCLOGBLX"),
            expected: LOG_MAGIC,
        })
    );
    assert!(matches!(
        metalog::parse_block(&[0u8; 4096], &UUID),
        Err(FormatError::BadMagic { found: 0, .. })
    ));
}

#[test]
fn unknown_version() {
    for version in [0u32, 2, u32::MAX] {
        let mut b = log_block(&log_payload());
        put_u32(&mut b, 8, version);
        reseal_log_block(&mut b);
        assert_eq!(
            metalog::parse_block(&b, &UUID).map(|_| ()),
            Err(FormatError::UnknownVersion {
                what: W,
                version,
                newest: 1
            })
        );
    }
}

#[test]
fn foreign_uuid() {
    let b = log_block(&log_payload());
    assert_eq!(
        metalog::parse_block(&b, &OTHER_UUID).map(|_| ()),
        Err(FormatError::ForeignUuid { what: W })
    );
}

#[test]
fn payload_bytes_larger_than_a_block_holds() {
    for payload_bytes in [LOG_PAYLOAD_MAX as u32 + 1, 4096, u32::MAX] {
        let mut b = log_block(&log_payload());
        put_u32(&mut b, 12, payload_bytes);
        assert_eq!(
            metalog::parse_block(&b, &UUID).map(|_| ()),
            Err(FormatError::OutOfRange {
                what: W,
                field: "payload_bytes",
                value: payload_bytes.into(),
                why: "larger than a block holds",
            })
        );
    }
}

/// Flip every bit of the header and of the payload. The magic is checked
/// first; payload_bytes is range-checked before the crc; everything else
/// (the crc field and the payload included) is a checksum mismatch.
#[test]
fn bit_flip_in_header_or_payload_is_caught() {
    let payload = log_payload();
    let good = log_block(&payload);
    let covered_end = 48 + payload.len();
    for byte in 0..covered_end {
        for bit in 0..8 {
            let mut b = good.clone();
            b[byte] ^= 1 << bit;
            let r = metalog::parse_block(&b, &UUID).map(|_| ());
            if byte < 8 {
                assert!(
                    matches!(r, Err(FormatError::BadMagic { .. })),
                    "byte {byte} bit {bit}: {r:?}"
                );
            } else if (12..16).contains(&byte) && get_u32(&b, 12) as usize > LOG_PAYLOAD_MAX {
                assert!(
                    matches!(
                        r,
                        Err(FormatError::OutOfRange {
                            field: "payload_bytes",
                            ..
                        })
                    ),
                    "byte {byte} bit {bit}: {r:?}"
                );
            } else {
                assert_eq!(
                    r,
                    Err(FormatError::BadChecksum {
                        what: W,
                        stored: get_u32(&b, 44),
                        computed: block_crc_of(&b),
                    }),
                    "byte {byte} bit {bit}"
                );
            }
        }
    }
}

#[test]
fn bytes_after_the_payload_are_not_covered() {
    let payload = log_payload();
    let good = log_block(&payload);
    for byte in [48 + payload.len(), 2000, 4095] {
        let mut b = good.clone();
        b[byte] ^= 0xff;
        let parsed = metalog::parse_block(&b, &UUID).unwrap();
        assert_eq!(parsed.payload, &payload[..]);
    }
}

#[test]
fn every_short_read_is_truncated() {
    let payload = log_payload();
    let good = log_block(&payload);
    for len in 0..48 {
        assert_eq!(
            metalog::parse_block(&good[..len], &UUID).map(|_| ()),
            Err(FormatError::Truncated {
                what: W,
                need: 48,
                have: len
            }),
            "length {len}"
        );
    }
    let need = 48 + payload.len();
    for len in 48..need {
        assert_eq!(
            metalog::parse_block(&good[..len], &UUID).map(|_| ()),
            Err(FormatError::Truncated {
                what: W,
                need,
                have: len
            }),
            "length {len}"
        );
    }
    // The header and payload alone are enough; the padding is not needed.
    assert!(metalog::parse_block(&good[..need], &UUID).is_ok());
}
