//! Every way a checkpoint header (and its payload) can be damaged is
//! rejected with its own error: bad magic, a bit flip anywhere in the 128
//! bytes, an unknown version, a header of another cache (foreign uuid), a
//! payload longer than the slot holds, a short read of any length, and a
//! payload whose crc does not match the header's.

mod common;

use common::*;
use ringcache_ondisk::checkpoint::{CKPT_MAGIC, check_payload};
use ringcache_ondisk::{CheckpointHeader, FormatError, crc32c};

const SLOT_BYTES: u64 = 1 << 20;
const W: &str = "checkpoint header";

fn parse(b: &[u8]) -> Result<ringcache_ondisk::checkpoint::CheckpointInfo, FormatError> {
    CheckpointHeader::parse(b, &UUID, SLOT_BYTES)
}

#[test]
fn bad_magic() {
    let mut b = ckpt_bytes(&ckpt_info());
    b[7] = b'2';
    reseal_header(&mut b);
    assert_eq!(
        parse(&b),
        Err(FormatError::BadMagic {
            what: W,
            found: u64::from_le_bytes(*b"RCCHKPT2"),
            expected: CKPT_MAGIC,
        })
    );
    // A region header is not a checkpoint header.
    assert!(matches!(
        parse(&region_bytes()),
        Err(FormatError::Truncated { .. })
    ));
    let mut region_block = region_bytes();
    region_block.resize(4096, 0);
    assert!(matches!(
        parse(&region_block),
        Err(FormatError::BadMagic { what: W, .. })
    ));
}

#[test]
fn unknown_version() {
    for version in [0u32, 2, u32::MAX] {
        let mut b = ckpt_bytes(&ckpt_info());
        put_u32(&mut b, 8, version);
        reseal_header(&mut b);
        assert_eq!(
            parse(&b),
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
    let good = ckpt_bytes(&ckpt_info());
    let stored = get_u32(&good, 124);
    for byte in 0..good.len() {
        for bit in 0..8 {
            let mut b = good.clone();
            b[byte] ^= 1 << bit;
            let r = parse(&b);
            if byte < 8 {
                assert!(
                    matches!(r, Err(FormatError::BadMagic { what: W, .. })),
                    "byte {byte} bit {bit}: {r:?}"
                );
            } else {
                let want_stored = if byte >= 124 {
                    stored ^ (1 << (8 * (byte - 124) + bit))
                } else {
                    stored
                };
                assert!(
                    matches!(
                        r,
                        Err(FormatError::BadChecksum { what: W, stored: s, computed: c })
                            if s == want_stored && c == crc32c(&b[..124])
                    ),
                    "byte {byte} bit {bit}: {r:?}"
                );
            }
        }
    }
}

#[test]
fn every_short_read_is_truncated() {
    let good = ckpt_bytes(&ckpt_info());
    for len in 0..good.len() {
        assert_eq!(
            parse(&good[..len]),
            Err(FormatError::Truncated {
                what: W,
                need: 128,
                have: len
            }),
            "length {len}"
        );
    }
}

#[test]
fn foreign_uuid() {
    let b = ckpt_bytes(&ckpt_info());
    assert_eq!(
        CheckpointHeader::parse(&b, &OTHER_UUID, SLOT_BYTES),
        Err(FormatError::ForeignUuid { what: W })
    );
}

#[test]
fn payload_longer_than_the_slot() {
    // The slot holds the header block and slot_bytes - 4096 of payload.
    let mut info = ckpt_info();
    info.payload_bytes = SLOT_BYTES - 4096;
    assert!(parse(&ckpt_bytes(&info)).is_ok());
    for payload_bytes in [SLOT_BYTES - 4095, SLOT_BYTES, u64::MAX] {
        info.payload_bytes = payload_bytes;
        assert_eq!(
            parse(&ckpt_bytes(&info)),
            Err(FormatError::OutOfRange {
                what: W,
                field: "payload_bytes",
                value: payload_bytes,
                why: "larger than the checkpoint slot",
            })
        );
    }
}

#[test]
fn a_slot_smaller_than_a_block_holds_no_payload() {
    let mut info = ckpt_info();
    info.payload_bytes = 1;
    assert!(matches!(
        CheckpointHeader::parse(&ckpt_bytes(&info), &UUID, 100),
        Err(FormatError::OutOfRange {
            field: "payload_bytes",
            ..
        })
    ));
    info.payload_bytes = 0;
    assert!(CheckpointHeader::parse(&ckpt_bytes(&info), &UUID, 0).is_ok());
}

#[test]
fn payload_crc_mismatch() {
    let payload = log_payload();
    let mut info = ckpt_info();
    info.payload_bytes = payload.len() as u64;
    info.payload_crc = crc32c(&payload);
    for byte in 0..payload.len() {
        let mut p = payload.clone();
        p[byte] ^= 0x01;
        assert_eq!(
            check_payload(&info, &p),
            Err(FormatError::BadChecksum {
                what: "checkpoint payload",
                stored: info.payload_crc,
                computed: crc32c(&p),
            })
        );
    }
    // A torn payload (a prefix of it) is a mismatch too.
    assert!(matches!(
        check_payload(&info, &payload[..payload.len() - 1]),
        Err(FormatError::BadChecksum { .. })
    ));
}
