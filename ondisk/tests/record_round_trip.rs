//! Every record kind survives encode then parse with every field equal,
//! alone and packed with others; the lengths at the limits (longest keys
//! and aux, a 1 MiB extent, empty crc lists) round-trip too; and the bytes
//! are those of the record table in docs/FORMAT.md.

mod common;

use common::*;
use ringcache_ondisk::record::{Crcs, ExtentEntry, Record, RecordKind};
use ringcache_ondisk::{AUX_MAX, OBJECT_KEY_MAX, RecordIter, VOLUME_KEY_MAX, crc32c};

#[test]
fn every_kind_round_trips() {
    let records = sample_records();
    let kinds: Vec<u16> = records.iter().map(|r| r.kind() as u16).collect();
    assert_eq!(kinds, (1..=10).collect::<Vec<u16>>(), "one of each kind");
    for r in &records {
        let bytes = encode(r);
        assert_eq!(bytes.len(), r.encoded_len(), "{r:?}");
        assert_eq!(get_u16(&bytes, 0), r.kind() as u16);
        assert_eq!(get_u16(&bytes, 2), 0, "reserved");
        assert_eq!(get_u32(&bytes, 4) as usize, bytes.len() - 8, "len");
        assert_eq!(parse_one(&bytes), Ok(*r));
    }
}

#[test]
fn packed_records_come_back_in_order() {
    let records = sample_records();
    let mut bytes = Vec::new();
    for r in records.iter().chain(records.iter().rev()) {
        r.encode(&mut bytes);
    }
    let parsed: Vec<Record<'_>> = RecordIter::new(&bytes).collect::<Result<_, _>>().unwrap();
    let want: Vec<Record<'_>> = records
        .iter()
        .chain(records.iter().rev())
        .copied()
        .collect();
    assert_eq!(parsed, want);
    assert_eq!(
        RecordIter::new(&[]).count(),
        0,
        "an empty payload holds no records"
    );
}

#[test]
fn lengths_at_their_limits_round_trip() {
    let vkey = vec![b'v'; VOLUME_KEY_MAX];
    let okey = vec![0xffu8; OBJECT_KEY_MAX];
    let aux = vec![0u8; AUX_MAX];
    let crcs_max: Vec<u32> = (0..256).collect();
    let crcs_one = [7u32];
    let one_block = ExtentEntry {
        length: 1,
        ..extent_entry()
    };
    let one_mib = ExtentEntry {
        length: 1 << 20,
        logical_offset: u64::MAX - (1 << 20) - 4095,
        ..extent_entry()
    };
    assert_eq!(one_mib.logical_offset % 4096, 0);
    let records = [
        Record::Volume {
            volume_id: u32::MAX,
            key: &vkey,
        },
        Record::Volume {
            volume_id: 0,
            key: b"v",
        },
        Record::Object {
            object_id: u64::MAX,
            volume_id: u32::MAX,
            data_gen: u64::MAX,
            size: u64::MAX,
            flags: 0,
            key: &okey,
            aux: &aux,
        },
        Record::Object {
            object_id: 0,
            volume_id: 0,
            data_gen: 0,
            size: 0,
            flags: 0,
            key: b"k",
            aux: b"",
        },
        Record::Extent {
            entry: one_block,
            crcs: Crcs::Native(&crcs_one),
        },
        Record::Extent {
            entry: one_mib,
            crcs: Crcs::Native(&crcs_max),
        },
        Record::Invalidate {
            object_id: 1,
            data_gen: u64::MAX,
            size: 0,
            aux: b"",
        },
        Record::Invalidate {
            object_id: 1,
            data_gen: 0,
            size: u64::MAX,
            aux: &aux,
        },
        Record::Region {
            region_index: 0,
            region_seq: 0,
            crcs: Crcs::Native(&[]),
        },
        Record::Region {
            region_index: u32::MAX,
            region_seq: u64::MAX,
            crcs: Crcs::Native(&crcs_max),
        },
        Record::CkptExtent {
            object_id: 1,
            logical_offset: 0,
            length: 1 << 20,
            region_index: 0,
            region_offset: u32::MAX - 4095,
        },
    ];
    for r in &records {
        let bytes = encode(r);
        assert_eq!(bytes.len(), r.encoded_len());
        assert_eq!(parse_one(&bytes), Ok(*r), "{r:?}");
    }
}

#[test]
fn crcs_compare_by_value_whatever_their_form() {
    let native = [1u32, 0xdead_beef];
    let le = [1u8, 0, 0, 0, 0xef, 0xbe, 0xad, 0xde];
    assert_eq!(Crcs::Native(&native), Crcs::Le(&le));
    assert_ne!(Crcs::Native(&native[..1]), Crcs::Le(&le));
    assert_eq!(Crcs::Le(&le).get(1), Some(0xdead_beef));
    assert_eq!(Crcs::Le(&le).get(2), None);
}

/// The fixed part of every body, field by field, as the record table says.
#[test]
fn bodies_follow_the_record_table() {
    let r = sample_records();
    let body = |i: usize| encode(&r[i])[8..].to_vec();

    let b = body(0); // Volume
    assert_eq!(get_u16(&encode(&r[0]), 0), RecordKind::Volume as u16);
    assert_eq!(get_u32(&b, 0), 3);
    assert_eq!(get_u16(&b, 4) as usize, VOLUME_KEY.len());
    assert_eq!(get_u16(&b, 6), 0);
    assert_eq!(&b[8..], VOLUME_KEY);

    let b = body(1); // VolumeDelete
    assert_eq!(b.len(), 8);
    assert_eq!(get_u32(&b, 0), 3);
    assert_eq!(get_u32(&b, 4), 0);

    let b = body(2); // Object
    assert_eq!(get_u64(&b, 0), 17);
    assert_eq!(get_u64(&b, 8), 2);
    assert_eq!(get_u64(&b, 16), 123_456);
    assert_eq!(get_u32(&b, 24), 3);
    assert_eq!(get_u32(&b, 28), 1);
    assert_eq!(get_u16(&b, 32) as usize, OBJECT_KEY.len());
    assert_eq!(get_u16(&b, 34) as usize, AUX.len());
    assert_eq!(get_u32(&b, 36), 0);
    assert_eq!(&b[40..40 + OBJECT_KEY.len()], OBJECT_KEY);
    assert_eq!(&b[40 + OBJECT_KEY.len()..], AUX);

    let b = body(3); // Extent: EntryHeader then crcs
    let e = extent_entry();
    assert_eq!(get_u64(&b, 0), e.object_id);
    assert_eq!(get_u64(&b, 8), e.object_gen);
    assert_eq!(get_u64(&b, 16), e.logical_offset);
    assert_eq!(get_u64(&b, 24), e.region_seq);
    assert_eq!(get_u32(&b, 32), e.length);
    assert_eq!(get_u32(&b, 36), e.region_index);
    assert_eq!(get_u32(&b, 40), e.region_block);
    assert!(b[44..60].iter().all(|&x| x == 0));
    assert_eq!(get_u32(&b, 60), crc32c(&[&b[..60], &b[64..]].concat()));
    assert_eq!(b.len(), 64 + 4 * 3);
    for (i, c) in EXTENT_CRCS.iter().enumerate() {
        assert_eq!(get_u32(&b, 64 + 4 * i), *c);
    }

    let b = body(4); // Invalidate
    assert_eq!(get_u64(&b, 0), 17);
    assert_eq!(get_u64(&b, 8), 4);
    assert_eq!(get_u64(&b, 16), 99);
    assert_eq!(get_u16(&b, 24) as usize, AUX.len());
    assert!(b[26..32].iter().all(|&x| x == 0));
    assert_eq!(&b[32..], AUX);

    let b = body(5); // Resize
    assert_eq!(b.len(), 16);
    assert_eq!((get_u64(&b, 0), get_u64(&b, 8)), (17, 1 << 40));

    let b = body(6); // Delete
    assert_eq!(b.len(), 8);
    assert_eq!(get_u64(&b, 0), 17);

    let b = body(7); // Flags
    assert_eq!(b.len(), 16);
    assert_eq!(
        (get_u64(&b, 0), get_u32(&b, 8), get_u32(&b, 12)),
        (17, 0, 0)
    );

    let b = body(8); // Region
    assert_eq!(get_u32(&b, 0), 1);
    assert_eq!(get_u32(&b, 4), 0);
    assert_eq!(get_u64(&b, 8), 99);
    assert_eq!(get_u32(&b, 16), 5);
    assert_eq!(get_u32(&b, 20), 0);
    assert_eq!(b.len(), 24 + 4 * 5);
    assert_eq!(get_u32(&b, 24 + 4 * 3), 0xffff_ffff);

    let b = body(9); // CkptExtent
    assert_eq!(b.len(), 32);
    assert_eq!(get_u64(&b, 0), 17);
    assert_eq!(get_u64(&b, 8), 5 * 4096);
    assert_eq!(get_u32(&b, 16), 3 * 4096 - 100);
    assert_eq!(get_u32(&b, 20), 1);
    assert_eq!(get_u32(&b, 24), 10 * 4096);
    assert_eq!(get_u32(&b, 28), 0);
}

#[test]
fn extent_block_count_rounds_up() {
    let e = |length| ExtentEntry {
        length,
        ..extent_entry()
    };
    assert_eq!(e(1).block_count(), 1);
    assert_eq!(e(4096).block_count(), 1);
    assert_eq!(e(4097).block_count(), 2);
    assert_eq!(e(1 << 20).block_count(), 256);
}
