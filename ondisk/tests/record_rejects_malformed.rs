//! Every rejection the record parser makes, each on a record that is valid
//! but for the one damage: a short buffer at every length, an unknown kind,
//! a body shorter than its kind's fixed part, a `len` that does not match
//! the fields (too long or too short), keys and aux out of range, unknown
//! flag bits, extent lengths of 0 or over 1 MiB, a damaged extent entry
//! (bit flip under its crc), unaligned or overflowing offsets, block 0 of a
//! region, and garbage after the last record. After an error the iterator
//! yields nothing more.

mod common;

use common::*;
use ringcache_ondisk::record::{Crcs, ExtentEntry, Record};
use ringcache_ondisk::{FormatError, RecordIter};

/// (what, fixed body bytes) of kinds 1..=10, as the parser names them.
const KINDS: [(&str, usize); 10] = [
    ("volume record", 8),
    ("volume delete record", 8),
    ("object record", 40),
    ("extent entry", 64),
    ("invalidate record", 32),
    ("resize record", 16),
    ("delete record", 8),
    ("flags record", 16),
    ("region record", 24),
    ("checkpoint extent", 32),
];

fn len_mismatch(what: &'static str, body_len: usize) -> FormatError {
    FormatError::OutOfRange {
        what,
        field: "len",
        value: body_len as u64,
        why: "record length does not match its fields",
    }
}

#[test]
fn every_short_buffer_is_truncated() {
    for r in sample_records() {
        let good = encode(&r);
        assert!(
            RecordIter::new(&good[..0]).next().is_none(),
            "nothing to parse"
        );
        for len in 1..8 {
            assert_eq!(
                parse_one(&good[..len]),
                Err(FormatError::Truncated {
                    what: "record header",
                    need: 8,
                    have: len
                }),
                "{r:?} cut to {len}"
            );
        }
        for len in 8..good.len() {
            assert_eq!(
                parse_one(&good[..len]),
                Err(FormatError::Truncated {
                    what: "record",
                    need: good.len(),
                    have: len
                }),
                "{r:?} cut to {len}"
            );
        }
    }
}

#[test]
fn unknown_kind() {
    for kind in [0u16, 11, 12, 0x100, u16::MAX] {
        let mut b = encode(&Record::Delete { object_id: 1 });
        put_u16(&mut b, 0, kind);
        assert_eq!(parse_one(&b), Err(FormatError::UnknownRecordKind { kind }));
    }
    // The kind is checked before the length is trusted.
    let mut b = vec![0u8; 8];
    put_u16(&mut b, 0, 99);
    put_u32(&mut b, 4, u32::MAX);
    assert_eq!(
        parse_one(&b),
        Err(FormatError::UnknownRecordKind { kind: 99 })
    );
}

#[test]
fn body_shorter_than_the_fixed_part() {
    for (i, (what, fixed)) in KINDS.iter().enumerate() {
        for have in 0..*fixed {
            let mut b = vec![0u8; 8 + have];
            put_u16(&mut b, 0, i as u16 + 1);
            put_u32(&mut b, 4, have as u32);
            assert_eq!(
                parse_one(&b),
                Err(FormatError::Truncated {
                    what,
                    need: *fixed,
                    have
                }),
                "kind {} body {have}",
                i + 1
            );
        }
    }
}

#[test]
fn len_longer_than_the_fields() {
    for r in sample_records() {
        let what = KINDS[r.kind() as usize - 1].0;
        for extra in [1usize, 4, 100] {
            let mut b = encode(&r);
            b.extend(std::iter::repeat_n(0u8, extra));
            let body_len = b.len() - 8;
            put_u32(&mut b, 4, body_len as u32);
            assert_eq!(
                parse_one(&b),
                Err(len_mismatch(what, body_len)),
                "{r:?} + {extra}"
            );
        }
    }
}

#[test]
fn len_shorter_than_the_fields() {
    // Kinds with variable parts: the fixed part is whole, the tail is not.
    for r in sample_records() {
        let (what, fixed) = KINDS[r.kind() as usize - 1];
        let good = encode(&r);
        for body_len in fixed..good.len() - 8 {
            let mut b = good[..8 + body_len].to_vec();
            put_u32(&mut b, 4, body_len as u32);
            assert_eq!(
                parse_one(&b),
                Err(len_mismatch(what, body_len)),
                "{r:?} body {body_len}"
            );
        }
    }
}

#[test]
fn volume_key_length_out_of_range() {
    for key_len in [0usize, 255, 300] {
        let key = vec![b'k'; key_len];
        let b = encode(&Record::Volume {
            volume_id: 1,
            key: &key,
        });
        assert_eq!(
            parse_one(&b),
            Err(FormatError::OutOfRange {
                what: "volume record",
                field: "key_len",
                value: key_len as u64,
                why: "volume keys are 1..=254 bytes",
            })
        );
    }
}

fn object<'a>(key: &'a [u8], aux: &'a [u8], flags: u32) -> Record<'a> {
    Record::Object {
        object_id: 1,
        volume_id: 1,
        data_gen: 1,
        size: 1,
        flags,
        key,
        aux,
    }
}

#[test]
fn object_key_length_out_of_range() {
    for key_len in [0usize, 256, 1000] {
        let key = vec![1u8; key_len];
        assert_eq!(
            parse_one(&encode(&object(&key, b"", 0))),
            Err(FormatError::OutOfRange {
                what: "object record",
                field: "key_len",
                value: key_len as u64,
                why: "object keys are 1..=255 bytes",
            })
        );
    }
}

#[test]
fn aux_too_long() {
    let aux = vec![0u8; 256];
    assert_eq!(
        parse_one(&encode(&object(b"k", &aux, 0))),
        Err(FormatError::OutOfRange {
            what: "object record",
            field: "aux_len",
            value: 256,
            why: "coherency data is at most 255 bytes",
        })
    );
    let b = encode(&Record::Invalidate {
        object_id: 1,
        data_gen: 2,
        size: 3,
        aux: &aux,
    });
    assert_eq!(
        parse_one(&b),
        Err(FormatError::OutOfRange {
            what: "invalidate record",
            field: "aux_len",
            value: 256,
            why: "coherency data is at most 255 bytes",
        })
    );
}

#[test]
fn unknown_flag_bits() {
    for flags in [2u32, 0x8000_0000, u32::MAX] {
        assert_eq!(
            parse_one(&encode(&object(b"k", b"", flags))),
            Err(FormatError::OutOfRange {
                what: "object record",
                field: "flags",
                value: flags.into(),
                why: "unknown flag bits",
            })
        );
        assert_eq!(
            parse_one(&encode(&Record::Flags {
                object_id: 1,
                flags
            })),
            Err(FormatError::OutOfRange {
                what: "flags record",
                field: "flags",
                value: flags.into(),
                why: "unknown flag bits",
            })
        );
    }
}

fn extent_bytes(entry: ExtentEntry) -> Vec<u8> {
    let crcs = vec![0xabcd_u32; entry.block_count()];
    encode(&Record::Extent {
        entry,
        crcs: Crcs::Native(&crcs),
    })
}

#[test]
fn extent_length_zero_or_over_one_mib() {
    for length in [0u32, (1 << 20) + 1, 2 << 20, u32::MAX] {
        let b = extent_bytes(ExtentEntry {
            length,
            ..extent_entry()
        });
        assert_eq!(
            parse_one(&b),
            Err(FormatError::OutOfRange {
                what: "extent entry",
                field: "length",
                value: length.into(),
                why: "extents are 1 byte ..= 1 MiB",
            }),
            "length {length}"
        );
    }
    let b = extent_bytes(ExtentEntry {
        length: 1 << 20,
        ..extent_entry()
    });
    assert!(parse_one(&b).is_ok(), "exactly 1 MiB is allowed");
}

/// Flip every bit of the entry header and its crcs. A flip of `length`
/// that changes the block count is caught by the range or length check
/// first; every other flip (reserved bytes and the crc itself included)
/// is a checksum mismatch.
#[test]
fn extent_bit_flip_is_caught() {
    let good = encode(&sample_records()[3]);
    let blocks = extent_entry().block_count();
    for byte in 8..good.len() {
        for bit in 0..8 {
            let mut b = good.clone();
            b[byte] ^= 1 << bit;
            let r = parse_one(&b);
            let length = get_u32(&b, 8 + 32);
            let new_blocks = (length as usize).div_ceil(4096);
            if (8 + 32..8 + 36).contains(&byte) && (length == 0 || new_blocks > 256) {
                assert!(
                    matches!(
                        r,
                        Err(FormatError::OutOfRange {
                            field: "length",
                            ..
                        })
                    ),
                    "byte {byte} bit {bit}: {r:?}"
                );
            } else if new_blocks != blocks {
                assert_eq!(r, Err(len_mismatch("extent entry", good.len() - 8)));
            } else {
                assert!(
                    matches!(
                        r,
                        Err(FormatError::BadChecksum {
                            what: "extent entry",
                            ..
                        })
                    ),
                    "byte {byte} bit {bit}: {r:?}"
                );
            }
        }
    }
}

#[test]
fn extent_logical_offset_not_block_aligned() {
    for off in [1u64, 512, 4095, 4097] {
        let mut b = encode(&sample_records()[3]);
        put_u64(&mut b, 8 + 16, off);
        reseal_extent(&mut b);
        assert_eq!(
            parse_one(&b),
            Err(FormatError::OutOfRange {
                what: "extent entry",
                field: "logical_offset",
                value: off,
                why: "not a multiple of 4096",
            })
        );
    }
}

#[test]
fn extent_end_overflows() {
    let off = u64::MAX - 4095;
    let b = extent_bytes(ExtentEntry {
        logical_offset: off,
        length: 4097,
        ..extent_entry()
    });
    assert_eq!(
        parse_one(&b),
        Err(FormatError::OutOfRange {
            what: "extent entry",
            field: "logical_offset",
            value: off,
            why: "offset + length overflows",
        })
    );
    let b = extent_bytes(ExtentEntry {
        logical_offset: off,
        length: 4095,
        ..extent_entry()
    });
    assert!(parse_one(&b).is_ok(), "ending at u64::MAX is fine");
}

#[test]
fn extent_in_the_region_header_block() {
    let b = extent_bytes(ExtentEntry {
        region_block: 0,
        ..extent_entry()
    });
    assert_eq!(
        parse_one(&b),
        Err(FormatError::OutOfRange {
            what: "extent entry",
            field: "region_block",
            value: 0,
            why: "block 0 is the region header",
        })
    );
}

fn ckpt_extent(logical_offset: u64, length: u32, region_offset: u32) -> Vec<u8> {
    encode(&Record::CkptExtent {
        object_id: 1,
        logical_offset,
        length,
        region_index: 0,
        region_offset,
    })
}

#[test]
fn checkpoint_extent_damage() {
    let err = |field, value, why| {
        Err(FormatError::OutOfRange {
            what: "checkpoint extent",
            field,
            value,
            why,
        })
    };
    assert_eq!(
        parse_one(&ckpt_extent(0, 0, 4096)),
        err("length", 0, "extents are 1 byte ..= 1 MiB")
    );
    assert_eq!(
        parse_one(&ckpt_extent(0, (1 << 20) + 1, 4096)),
        err("length", (1 << 20) + 1, "extents are 1 byte ..= 1 MiB"),
        "longer than the store writes (and than its index can hold)"
    );
    assert!(parse_one(&ckpt_extent(0, 1 << 20, 4096)).is_ok());
    for region_offset in [0u32, 1, 4095] {
        assert_eq!(
            parse_one(&ckpt_extent(0, 1, region_offset)),
            err(
                "region_offset",
                region_offset.into(),
                "block 0 is the region header"
            )
        );
    }
    for region_offset in [4097u32, 8191, u32::MAX] {
        assert_eq!(
            parse_one(&ckpt_extent(0, 1, region_offset)),
            err(
                "region_offset",
                region_offset.into(),
                "not a multiple of 4096"
            )
        );
    }
    for off in [1u64, 4095, u64::MAX] {
        assert_eq!(
            parse_one(&ckpt_extent(off, 1, 4096)),
            err("logical_offset", off, "not a multiple of 4096")
        );
    }
    let off = u64::MAX - 4095;
    assert_eq!(
        parse_one(&ckpt_extent(off, 4097, 4096)),
        err("logical_offset", off, "offset + length overflows")
    );
    assert!(parse_one(&ckpt_extent(off, 4096, 4096)).is_err());
    assert!(parse_one(&ckpt_extent(off, 4095, 4096)).is_ok());
}

#[test]
fn garbage_after_the_last_record() {
    let records = sample_records();
    let mut good = Vec::new();
    for r in &records {
        r.encode(&mut good);
    }
    let n = records.len();

    // Fewer than 8 bytes: a record header cut short.
    for extra in 1..8 {
        let mut b = good.clone();
        b.extend(std::iter::repeat_n(0x77u8, extra));
        let items = parse_all(&b);
        assert_eq!(items.len(), n + 1);
        assert!(items[..n].iter().all(Result::is_ok));
        assert_eq!(
            items[n],
            Err(FormatError::Truncated {
                what: "record header",
                need: 8,
                have: extra
            })
        );
    }

    // Zero padding (a block's unused tail fed in by mistake): kind 0.
    let mut b = good.clone();
    b.extend([0u8; 64]);
    let items = parse_all(&b);
    assert_eq!(items.len(), n + 1);
    assert_eq!(items[n], Err(FormatError::UnknownRecordKind { kind: 0 }));

    // A plausible header whose body runs past the end.
    let mut b = good.clone();
    b.extend([7, 0, 0, 0, 8, 0, 0, 0, 1, 2, 3]);
    let items = parse_all(&b);
    assert_eq!(
        items[n],
        Err(FormatError::Truncated {
            what: "record",
            need: 16,
            have: 11
        })
    );
}

#[test]
fn iteration_stops_at_the_first_bad_record() {
    let mut b = Vec::new();
    Record::Delete { object_id: 1 }.encode(&mut b);
    let bad_at = b.len();
    Record::Delete { object_id: 2 }.encode(&mut b);
    Record::Delete { object_id: 3 }.encode(&mut b);
    put_u16(&mut b, bad_at, 0xbeef);
    let mut it = RecordIter::new(&b);
    assert_eq!(it.next(), Some(Ok(Record::Delete { object_id: 1 })));
    assert_eq!(
        it.next(),
        Some(Err(FormatError::UnknownRecordKind { kind: 0xbeef }))
    );
    assert_eq!(it.next(), None, "record 3 cannot be framed");
    assert_eq!(it.next(), None);
}
