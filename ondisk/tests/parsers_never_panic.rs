//! Property: no input makes a parser panic. 100k random buffers and 100k
//! random mutations of valid encodings (bit flips, overwritten fields,
//! interesting integers, truncation, extension, with the crc resealed half
//! of the time so the checks behind it are reached) go to every parser:
//! `Superblock::parse`, `Superblock::pick`, `CheckpointHeader::parse`,
//! `RegionHeader::parse`, `metalog::parse_block` and `RecordIter` (plus
//! `check_geometry` and `check_disjoint` on what they accept). Whatever is
//! accepted must also hold together: a parsed geometry validates, an
//! accepted record re-encodes to a record that parses back equal, the
//! iterator stops after its first error and otherwise consumes every byte.
//! A fixed seed makes a failure reproducible.

mod common;

use common::*;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringcache_ondisk::FormatError;
use ringcache_ondisk::record::{Crcs, ExtentEntry, Record, check_disjoint};
use ringcache_ondisk::superblock::Geometry;
use ringcache_ondisk::{
    BLOCK_BYTES, CheckpointHeader, RecordIter, RegionHeader, Superblock, metalog,
};
use std::collections::BTreeMap;
use zerocopy::IntoBytes;

const SEED: u64 = 0x5249_4e47_4341_4348;
const RANDOM_BUFFERS: usize = 100_000;
const MUTATIONS: usize = 100_000;

const MAGICS: [&[u8; 8]; 4] = [b"RINGCACH", b"RCCHKPT1", b"RCREGION", b"RCLOGBLK"];
const INTERESTING: [u64; 14] = [
    0,
    1,
    2,
    255,
    256,
    4095,
    4096,
    4097,
    4048,
    1 << 20,
    (1 << 20) + 1,
    u32::MAX as u64,
    u64::MAX - 4095,
    u64::MAX,
];

/// A geometry that validates and whose regions end near 2^64, so that any
/// unchecked offset arithmetic on the error paths would overflow.
fn geometry_near_top() -> Geometry {
    const GIB: u64 = 1 << 30;
    Geometry {
        device_bytes: u64::MAX,
        region_count: 2,
        region_bytes: GIB,
        regions_offset: u64::MAX - 2 * GIB - 4095,
        ckpt_offset: 8192,
        ckpt_slot_bytes: 8192,
        metalog_offset: 3 * 8192,
        metalog_bytes: 16384,
    }
}

/// The uuid to check against: ours, or (to get past the uuid check on
/// random bytes) the one the buffer carries at `at`.
fn uuid_for(rng: &mut ChaCha8Rng, bytes: &[u8], at: usize) -> [u8; 16] {
    match bytes.get(at..at + 16) {
        Some(u) if rng.random_bool(0.5) => u.try_into().unwrap(),
        _ => UUID,
    }
}

fn device_bytes(rng: &mut ChaCha8Rng) -> u64 {
    match rng.random_range(0..4) {
        0 => DEVICE_BYTES,
        1 => u64::MAX,
        2 => INTERESTING[rng.random_range(0..INTERESTING.len())],
        _ => rng.next_u64(),
    }
}

/// How often each parser gave each outcome, to show the inputs reach the
/// checks deep inside the parsers and not only the magic and the crc.
#[derive(Default)]
struct Tally(BTreeMap<(&'static str, &'static str), usize>);

impl Tally {
    fn note<T>(&mut self, parser: &'static str, r: &Result<T, FormatError>) {
        let outcome = match r {
            Ok(_) => "Ok",
            Err(FormatError::Truncated { .. }) => "Truncated",
            Err(FormatError::BadMagic { .. }) => "BadMagic",
            Err(FormatError::UnknownVersion { .. }) => "UnknownVersion",
            Err(FormatError::BadChecksum { .. }) => "BadChecksum",
            Err(FormatError::OutOfRange { .. }) => "OutOfRange",
            Err(FormatError::PastDevice { .. }) => "PastDevice",
            Err(FormatError::Overlap { .. }) => "Overlap",
            Err(FormatError::ForeignUuid { .. }) => "ForeignUuid",
            Err(FormatError::UnknownRecordKind { .. }) => "UnknownRecordKind",
            Err(FormatError::OverlappingExtents { .. }) => "OverlappingExtents",
        };
        *self.0.entry((parser, outcome)).or_default() += 1;
    }

    fn saw(&self, parser: &'static str, outcome: &'static str) -> bool {
        self.0.contains_key(&(parser, outcome))
    }
}

/// Feed `bytes` to every parser.
fn feed_all(rng: &mut ChaCha8Rng, t: &mut Tally, bytes: &[u8], other: &[u8]) {
    let actual = device_bytes(rng);
    let sb = Superblock::parse(bytes, actual);
    t.note("superblock", &sb);
    if let Ok(info) = sb {
        assert_eq!(info.geometry.validate(actual), Ok(()));
        let again = Superblock::parse(Superblock::new(&info).as_bytes(), actual).unwrap();
        assert_eq!(again.geometry, info.geometry);
        assert_eq!((again.sb_seq, again.uuid), (info.sb_seq, info.uuid));
        check_records(t, bytes, &info.geometry);
    }
    let _ = Superblock::pick(bytes, other, actual);
    let _ = Superblock::pick(other, bytes, actual);

    let uuid = uuid_for(rng, bytes, 16);
    let slot_bytes = device_bytes(rng);
    let ckpt = CheckpointHeader::parse(bytes, &uuid, slot_bytes);
    t.note("checkpoint header", &ckpt);
    if let Ok(info) = ckpt {
        assert!(info.payload_bytes <= slot_bytes.saturating_sub(BLOCK_BYTES as u64));
        let _ = ringcache_ondisk::checkpoint::check_payload(&info, other);
    }

    let uuid = uuid_for(rng, bytes, 24);
    let index = match bytes.get(12..16) {
        Some(i) if rng.random_bool(0.5) => get_u32(i, 0),
        _ => rng.next_u32(),
    };
    t.note("region header", &RegionHeader::parse(bytes, index, &uuid));

    let uuid = uuid_for(rng, bytes, 24);
    let block = metalog::parse_block(bytes, &uuid);
    t.note("log block", &block);
    if let Ok(block) = block {
        assert!(block.payload.len() <= metalog::LOG_PAYLOAD_MAX);
        check_records(t, block.payload, &geometry());
    }

    check_records(t, bytes, &geometry());
    check_records(t, bytes, &geometry_near_top());
}

/// Run the record iterator over `bytes` and check what it accepts.
fn check_records(t: &mut Tally, bytes: &[u8], g: &Geometry) {
    let mut it = RecordIter::new(bytes);
    let mut consumed = 0usize;
    let mut extents = Vec::new();
    let mut failed = false;
    for item in it.by_ref() {
        t.note("records", &item);
        match item {
            Ok(r) => {
                consumed += r.encoded_len();
                let mut again = Vec::new();
                r.encode(&mut again);
                assert_eq!(again.len(), r.encoded_len());
                assert_eq!(parse_one(&again), Ok(r));
                t.note("check_geometry", &r.check_geometry(g));
                match r {
                    Record::Extent { entry, .. } => {
                        extents.push((entry.logical_offset, u64::from(entry.length)))
                    }
                    Record::CkptExtent {
                        logical_offset,
                        length,
                        ..
                    } => extents.push((logical_offset, u64::from(length))),
                    _ => {}
                }
            }
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(it.next().is_none(), "nothing after the first error");
    if !failed {
        assert_eq!(consumed, bytes.len(), "good records cover the buffer");
    }
    t.note("check_disjoint", &check_disjoint(1, &mut extents));
}

fn random_bytes(rng: &mut ChaCha8Rng, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    rng.fill_bytes(&mut b);
    b
}

/// A random buffer, sometimes of a struct's exact size, sometimes with a
/// magic planted and the crc resealed so the parse goes past the first
/// checks.
fn random_buffer(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let len = match rng.random_range(0..6) {
        0 => 64,
        1 => 128,
        2 => BLOCK_BYTES,
        3 => rng.random_range(0..64),
        _ => rng.random_range(0..=BLOCK_BYTES + 100),
    };
    let mut b = random_bytes(rng, len);
    if len >= 8 && rng.random_bool(0.5) {
        let which = rng.random_range(0..MAGICS.len());
        b[..8].copy_from_slice(MAGICS[which]);
        if rng.random_bool(0.5) && len >= 12 {
            put_u32(&mut b, 8, 1);
        }
        reseal_as(&mut b, which);
    }
    b
}

/// Reseal the crc of `b` read as structure `which` (index into MAGICS).
fn reseal_as(b: &mut [u8], which: usize) {
    match which {
        0 if b.len() >= 4096 => reseal_header(&mut b[..4096]),
        1 if b.len() >= 128 => reseal_header(&mut b[..128]),
        2 if b.len() >= 64 => reseal_header(&mut b[..64]),
        3 if b.len() >= 48 && get_u32(b, 12) as usize <= b.len() - 48 => reseal_log_block(b),
        _ => {}
    }
}

/// Walk the record framing of `b` and reseal every Extent entry's crc.
fn reseal_extents(b: &mut [u8]) {
    let mut at = 0usize;
    while at + 8 <= b.len() {
        let kind = get_u16(b, at);
        let len = get_u32(b, at + 4) as usize;
        let Some(end) = (at + 8).checked_add(len).filter(|&e| e <= b.len()) else {
            break;
        };
        if kind == 4 && len >= 64 {
            reseal_extent(&mut b[at..end]);
        }
        at = end;
    }
}

/// A random, mostly valid record, its variable parts held by `store`.
fn random_record<'a>(rng: &mut ChaCha8Rng, store: &'a [u8], crcs: &'a [u32]) -> Record<'a> {
    let n = |rng: &mut ChaCha8Rng, max: usize| rng.random_range(0..=max);
    match rng.random_range(0..10) {
        0 => Record::Volume {
            volume_id: rng.next_u32(),
            key: &store[..n(rng, 254).max(1)],
        },
        1 => Record::VolumeDelete {
            volume_id: rng.next_u32(),
        },
        2 => Record::Object {
            object_id: rng.next_u64(),
            volume_id: rng.next_u32(),
            data_gen: rng.next_u64(),
            size: rng.next_u64(),
            flags: rng.random_range(0..2),
            key: &store[..n(rng, 255).max(1)],
            aux: &store[..n(rng, 255)],
        },
        3 => {
            let length = rng.random_range(1..=1u32 << 20);
            let entry = ExtentEntry {
                object_id: rng.next_u64(),
                object_gen: rng.next_u64(),
                logical_offset: (rng.next_u64() >> 1) & !4095,
                region_seq: rng.next_u64(),
                length,
                region_index: rng.random_range(0..40),
                region_block: rng.random_range(1..3000),
            };
            Record::Extent {
                entry,
                crcs: Crcs::Native(&crcs[..entry.block_count()]),
            }
        }
        4 => Record::Invalidate {
            object_id: rng.next_u64(),
            data_gen: rng.next_u64(),
            size: rng.next_u64(),
            aux: &store[..n(rng, 255)],
        },
        5 => Record::Resize {
            object_id: rng.next_u64(),
            size: rng.next_u64(),
        },
        6 => Record::Delete {
            object_id: rng.next_u64(),
        },
        7 => Record::Flags {
            object_id: rng.next_u64(),
            flags: rng.random_range(0..2),
        },
        8 => Record::Region {
            region_index: rng.random_range(0..40),
            region_seq: rng.next_u64(),
            crcs: Crcs::Native(&crcs[..n(rng, 300)]),
        },
        _ => Record::CkptExtent {
            object_id: rng.next_u64(),
            logical_offset: (rng.next_u64() >> 2) & !4095,
            length: rng.random_range(1..=1 << 20),
            region_index: rng.random_range(0..40),
            region_offset: rng.random_range(1..4096) * 4096,
        },
    }
}

/// A valid encoding of one structure, and which (index into MAGICS, or 4
/// for a bare record stream).
fn valid_encoding(rng: &mut ChaCha8Rng, store: &[u8], crcs: &[u32]) -> (Vec<u8>, usize) {
    let mut records = Vec::new();
    for _ in 0..rng.random_range(0..6) {
        let r = if rng.random_bool(0.5) {
            sample_records()[rng.random_range(0..10)]
        } else {
            random_record(rng, store, crcs)
        };
        r.encode(&mut records);
    }
    match rng.random_range(0..5) {
        0 => {
            let mut info = sb_info();
            info.sb_seq = rng.next_u64();
            (sb_bytes(&info), 0)
        }
        1 => (ckpt_bytes(&ckpt_info()), 1),
        2 => (region_bytes(), 2),
        3 => {
            records.truncate(metalog::LOG_PAYLOAD_MAX);
            (log_block(&records), 3)
        }
        _ => (records, 4),
    }
}

fn mutate(rng: &mut ChaCha8Rng, b: &mut Vec<u8>) {
    for _ in 0..rng.random_range(1..=4) {
        match rng.random_range(0..6) {
            0 if !b.is_empty() => {
                let at = rng.random_range(0..b.len());
                b[at] ^= 1 << rng.random_range(0..8);
            }
            1 if !b.is_empty() => {
                let at = rng.random_range(0..b.len());
                b[at] = rng.random();
            }
            2 => {
                // An interesting integer over a field-sized window; fields
                // of every struct here sit on 2-byte boundaries.
                let v = INTERESTING[rng.random_range(0..INTERESTING.len())];
                let width = [2usize, 4, 8][rng.random_range(0..3)];
                if b.len() >= width {
                    let at = rng.random_range(0..=(b.len() - width) / 2) * 2;
                    b[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
                }
            }
            3 => {
                let len = rng.random_range(0..=b.len());
                b.truncate(len);
            }
            4 => {
                let n = rng.random_range(1..64);
                let extra = random_bytes(rng, n);
                b.extend_from_slice(&extra);
            }
            _ => {
                if b.len() >= 8 {
                    let at = rng.random_range(0..=b.len() - 8) & !1;
                    b[at..at + 8].copy_from_slice(&rng.next_u64().to_le_bytes());
                }
            }
        }
    }
}

#[test]
fn random_buffers_never_panic() {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let other = sb_bytes(&sb_info());
    let mut t = Tally::default();
    for _ in 0..RANDOM_BUFFERS {
        let b = random_buffer(&mut rng);
        feed_all(&mut rng, &mut t, &b, &other);
    }
    // Planted magics with resealed crcs get past the first checks.
    for parser in ["superblock", "checkpoint header", "region header"] {
        assert!(t.saw(parser, "UnknownVersion"), "{parser}: {:?}", t.0);
        assert!(t.saw(parser, "OutOfRange"), "{parser}: {:?}", t.0);
    }
}

#[test]
fn mutated_encodings_never_panic() {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED ^ 1);
    let store = random_bytes(&mut rng, 512);
    let crcs: Vec<u32> = (0..512).map(|_| rng.next_u32()).collect();
    let good_sb = sb_bytes(&sb_info());
    let mut t = Tally::default();
    for _ in 0..MUTATIONS {
        let (mut b, which) = valid_encoding(&mut rng, &store, &crcs);
        if rng.random_bool(0.05) {
            // Unmutated: the valid encoding itself must be accepted.
            feed_all(&mut rng, &mut t, &b, &good_sb);
            continue;
        }
        mutate(&mut rng, &mut b);
        if rng.random_bool(0.5) {
            if which == 4 {
                reseal_extents(&mut b);
            } else {
                reseal_as(&mut b, which);
                if which == 3 && b.len() >= 48 {
                    let payload_bytes = get_u32(&b, 12) as usize;
                    if let Some(payload) = b.get_mut(48..48 + payload_bytes) {
                        reseal_extents(payload);
                    }
                    reseal_as(&mut b, 3);
                }
            }
        }
        feed_all(&mut rng, &mut t, &b, &good_sb);
    }
    // Every parser was driven past its crc to its later checks, and to
    // acceptance.
    let reached = [
        ("superblock", "Ok"),
        ("superblock", "BadChecksum"),
        ("superblock", "UnknownVersion"),
        ("superblock", "OutOfRange"),
        ("superblock", "Overlap"),
        ("superblock", "PastDevice"),
        ("checkpoint header", "Ok"),
        ("checkpoint header", "BadChecksum"),
        ("checkpoint header", "ForeignUuid"),
        ("checkpoint header", "OutOfRange"),
        ("region header", "Ok"),
        ("region header", "BadChecksum"),
        ("region header", "ForeignUuid"),
        ("region header", "OutOfRange"),
        ("log block", "Ok"),
        ("log block", "BadChecksum"),
        ("log block", "UnknownVersion"),
        ("log block", "ForeignUuid"),
        ("log block", "OutOfRange"),
        ("records", "Ok"),
        ("records", "BadChecksum"),
        ("records", "OutOfRange"),
        ("records", "Truncated"),
        ("records", "UnknownRecordKind"),
        ("check_geometry", "OutOfRange"),
        ("check_geometry", "PastDevice"),
        ("check_disjoint", "OverlappingExtents"),
    ];
    for (parser, outcome) in reached {
        assert!(t.saw(parser, outcome), "{parser} {outcome}: {:?}", t.0);
    }
}

#[test]
fn random_records_round_trip() {
    // The generator above makes valid records; check that it does, so the
    // mutation test starts from what it claims to.
    let mut rng = ChaCha8Rng::seed_from_u64(SEED ^ 2);
    let store = random_bytes(&mut rng, 512);
    let crcs: Vec<u32> = (0..512).map(|_| rng.next_u32()).collect();
    for _ in 0..10_000 {
        let r = random_record(&mut rng, &store, &crcs);
        let b = encode(&r);
        assert_eq!(parse_one(&b), Ok(r));
    }
}

#[test]
fn random_extent_lists_never_panic() {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED ^ 3);
    for _ in 0..10_000 {
        let mut e: Vec<(u64, u64)> = (0..rng.random_range(0..16))
            .map(|_| {
                let off = if rng.random_bool(0.1) {
                    u64::MAX - rng.random_range(0..8192)
                } else {
                    rng.random_range(0..1 << 16)
                };
                (off, rng.random_range(1..1 << 14))
            })
            .collect();
        let before = e.clone();
        let r = check_disjoint(9, &mut e);
        // Against a brute-force overlap check of every pair (extents are
        // never empty, so a shared start is always an overlap).
        let overlaps = before.iter().enumerate().any(|(i, a)| {
            before.iter().enumerate().any(|(j, b)| {
                i != j && a.0 <= b.0 && (a.0, i) < (b.0, j) && b.0 < a.0.saturating_add(a.1)
            })
        });
        assert_eq!(r.is_err(), overlaps, "{before:?}");
    }
}
