//! Builders shared by the ondisk tests: one valid instance of every
//! structure, and the byte-level tools to damage it and reseal its crc so a
//! test reaches exactly the check it is about.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use ringcache_ondisk::checkpoint::{CheckpointHeader, CheckpointInfo};
use ringcache_ondisk::metalog;
use ringcache_ondisk::record::{Crcs, ExtentEntry, Record};
use ringcache_ondisk::superblock::{Geometry, GeometryParams, SuperblockInfo};
use ringcache_ondisk::{
    BLOCK_BYTES, FormatError, FormatVersion, RecordIter, RegionHeader, Superblock, crc32c,
};
use zerocopy::IntoBytes;

/// The uuid of "our" cache.
pub const UUID: [u8; 16] = *b"ringcache-test-1";
/// The uuid of some other cache.
pub const OTHER_UUID: [u8; 16] = *b"another-cache-99";
/// Size of the device the test geometry is planned for.
pub const DEVICE_BYTES: u64 = 256 << 20;

/// The default layout of a 256 MiB device.
pub fn geometry() -> Geometry {
    Geometry::plan(DEVICE_BYTES, GeometryParams::default()).unwrap()
}

/// A superblock description with every field set to something non-zero.
pub fn sb_info() -> SuperblockInfo {
    SuperblockInfo {
        version: FormatVersion::CURRENT,
        clean: true,
        sb_seq: 41,
        uuid: UUID,
        geometry: geometry(),
        created_unix_secs: 1_700_000_000,
        tag: "test-tag".into(),
        durable_log_seq: 77,
    }
}

/// The 4096 bytes of a superblock for `info`.
pub fn sb_bytes(info: &SuperblockInfo) -> Vec<u8> {
    Superblock::new(info).as_bytes().to_vec()
}

/// The 4096 bytes of a superblock laid out as `g` (not validated).
pub fn sb_bytes_with(g: Geometry) -> Vec<u8> {
    let mut info = sb_info();
    info.geometry = g;
    sb_bytes(&info)
}

/// A checkpoint description with every field set to something distinct.
pub fn ckpt_info() -> CheckpointInfo {
    CheckpointInfo {
        ckpt_seq: 12,
        log_seq: 3456,
        next_object_id: 789,
        next_region_seq: 55,
        next_volume_id: 4,
        payload_bytes: 8192,
        payload_crc: 0xdead_beef,
        volume_count: 3,
        object_count: 700,
        extent_count: 1234,
        created_unix_secs: 1_700_000_123,
    }
}

/// The 128 bytes of a checkpoint header for `info` of the cache [`UUID`].
pub fn ckpt_bytes(info: &CheckpointInfo) -> Vec<u8> {
    CheckpointHeader::new(info, UUID).as_bytes().to_vec()
}

/// The 64 bytes of the header of region 5, region_seq 99.
pub fn region_bytes() -> Vec<u8> {
    RegionHeader::new(5, 99, UUID).as_bytes().to_vec()
}

/// A 4096-byte metadata-log block, seq 1000, holding `payload`.
pub fn log_block(payload: &[u8]) -> Vec<u8> {
    let mut block = vec![0xa5u8; BLOCK_BYTES];
    assert!(metalog::encode_block(&mut block, 1000, UUID, 2, payload));
    block
}

/// The payload the sample log block carries: two encoded records.
pub fn log_payload() -> Vec<u8> {
    let mut out = Vec::new();
    Record::Resize {
        object_id: 7,
        size: 4096,
    }
    .encode(&mut out);
    Record::Delete { object_id: 8 }.encode(&mut out);
    out
}

/// Recompute the trailing crc32c of a header (superblock, checkpoint header,
/// region header): crc32c of every byte but the last four.
pub fn reseal_header(bytes: &mut [u8]) {
    let n = bytes.len() - 4;
    let crc = crc32c(&bytes[..n]);
    bytes[n..].copy_from_slice(&crc.to_le_bytes());
}

/// Recompute the crc of a log block (bytes 0..44, then the payload).
pub fn reseal_log_block(block: &mut [u8]) {
    let payload_bytes = get_u32(block, 12) as usize;
    let mut covered = block[..44].to_vec();
    covered.extend_from_slice(&block[48..48 + payload_bytes]);
    let crc = crc32c(&covered);
    block[44..48].copy_from_slice(&crc.to_le_bytes());
}

/// Recompute the EntryHeader crc of an encoded Extent record (record header
/// at byte 0, entry header at byte 8, block crcs after it).
pub fn reseal_extent(record: &mut [u8]) {
    let mut covered = record[8..8 + 60].to_vec();
    covered.extend_from_slice(&record[8 + 64..]);
    let crc = crc32c(&covered);
    record[8 + 60..8 + 64].copy_from_slice(&crc.to_le_bytes());
}

pub fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
pub fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
pub fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
pub fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
pub fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
pub fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

pub static VOLUME_KEY: &[u8] = b"afs.example.org/root.cell";
pub static OBJECT_KEY: &[u8] = b"\x00\x01vnode-17\xff";
pub static AUX: &[u8] = b"mtime=1700000000;dv=42";
pub static EXTENT_CRCS: [u32; 3] = [0x1111_1111, 0x2222_2222, 0x3333_3333];
pub static REGION_CRCS: [u32; 5] = [1, 2, 3, 0xffff_ffff, 0x8000_0000];

/// An extent of 3 blocks (the last one partial) in region 1, block 10.
pub fn extent_entry() -> ExtentEntry {
    ExtentEntry {
        object_id: 17,
        object_gen: 3,
        logical_offset: 5 * 4096,
        region_seq: 99,
        length: 3 * 4096 - 100,
        region_index: 1,
        region_block: 10,
    }
}

/// One record of every kind, each field set to something distinct.
pub fn sample_records() -> Vec<Record<'static>> {
    vec![
        Record::Volume {
            volume_id: 3,
            key: VOLUME_KEY,
        },
        Record::VolumeDelete { volume_id: 3 },
        Record::Object {
            object_id: 17,
            volume_id: 3,
            data_gen: 2,
            size: 123_456,
            flags: ringcache_ondisk::record::OBJECT_FLAG_DIRTY,
            key: OBJECT_KEY,
            aux: AUX,
        },
        Record::Extent {
            entry: extent_entry(),
            crcs: Crcs::Native(&EXTENT_CRCS),
        },
        Record::Invalidate {
            object_id: 17,
            data_gen: 4,
            size: 99,
            aux: AUX,
        },
        Record::Resize {
            object_id: 17,
            size: 1 << 40,
        },
        Record::Delete { object_id: 17 },
        Record::Flags {
            object_id: 17,
            flags: 0,
        },
        Record::Region {
            region_index: 1,
            region_seq: 99,
            crcs: Crcs::Native(&REGION_CRCS),
        },
        Record::CkptExtent {
            object_id: 17,
            logical_offset: 5 * 4096,
            length: 3 * 4096 - 100,
            region_index: 1,
            region_offset: 10 * 4096,
        },
    ]
}

/// The bytes of one record.
pub fn encode(r: &Record<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    r.encode(&mut out);
    out
}

/// Parse exactly one record out of `bytes`. Checks the iterator contract on
/// the way: after an error it yields nothing more, and after a good record
/// it has consumed the whole buffer.
pub fn parse_one(bytes: &[u8]) -> Result<Record<'_>, FormatError> {
    let mut it = RecordIter::new(bytes);
    let r = it.next().expect("a non-empty buffer yields an item");
    assert!(it.next().is_none(), "one record per buffer");
    r
}

/// Every item the iterator yields for `bytes`.
pub fn parse_all(bytes: &[u8]) -> Vec<Result<Record<'_>, FormatError>> {
    RecordIter::new(bytes).collect()
}
