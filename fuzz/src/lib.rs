//! What the fuzz targets share: how an input is framed, valid encodings to
//! mutate, crc resealing (so the fuzzer gets past the checksums to the
//! checks behind them), and the properties everything a parser accepts must
//! have.
//!
//! Input framing, for every target:
//!
//! ```text
//! byte 0     mode: bit 0 reseal the crc(s) before parsing,
//!                  bit 1 start from a valid encoding and apply `rest` as
//!                        edits, else parse `rest` as it is,
//!                  bit 2 check against the uuid found in the bytes, else ours
//! bytes 1..9 a number, little-endian: device size, slot size or index
//! rest       the bytes, or the edits
//! ```

use ringcache_ondisk::record::{Crcs, ExtentEntry, Record, check_disjoint};
use ringcache_ondisk::superblock::{Geometry, GeometryParams, SuperblockInfo};
use ringcache_ondisk::{FormatVersion, RecordIter, crc32c};

pub const MODE_RESEAL: u8 = 1;
pub const MODE_EDIT_TEMPLATE: u8 = 2;
pub const MODE_UUID_FROM_INPUT: u8 = 4;

/// The uuid the templates carry.
pub const UUID: [u8; 16] = *b"ringcache-fuzz-1";

/// One fuzz input, split as the module docs say.
pub struct Input<'a> {
    pub mode: u8,
    pub num: u64,
    pub rest: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn split(data: &'a [u8]) -> Self {
        let mode = data.first().copied().unwrap_or(0);
        let mut num = [0u8; 8];
        for (d, s) in num.iter_mut().zip(data.iter().skip(1)) {
            *d = *s;
        }
        Input {
            mode,
            num: u64::from_le_bytes(num),
            rest: data.get(9..).unwrap_or(&[]),
        }
    }

    pub fn has(&self, bit: u8) -> bool {
        self.mode & bit != 0
    }

    /// The bytes to parse: `rest` itself, or `template` edited by `rest`.
    pub fn bytes(&self, template: &[u8]) -> Vec<u8> {
        if self.has(MODE_EDIT_TEMPLATE) {
            let mut b = template.to_vec();
            apply_edits(&mut b, self.rest);
            b
        } else {
            self.rest.to_vec()
        }
    }

    /// Ours, or the 16 bytes at `at` of `bytes` (so a uuid check passes).
    pub fn uuid(&self, bytes: &[u8], at: usize) -> [u8; 16] {
        if self.has(MODE_UUID_FROM_INPUT)
            && let Some(u) = bytes.get(at..at + 16)
        {
            let mut out = [0u8; 16];
            out.copy_from_slice(u);
            return out;
        }
        UUID
    }
}

const INTERESTING: [u64; 16] = [
    0,
    1,
    2,
    255,
    256,
    4048,
    4095,
    4096,
    4097,
    65536,
    1 << 20,
    (1 << 20) + 1,
    1 << 30,
    u32::MAX as u64,
    u64::MAX - 4095,
    u64::MAX,
];

/// Apply edits to `buf`. Each edit is an op byte and a 2-byte offset:
/// op % 4 == 0 overwrites (op >> 2) bytes taken from the edit stream,
/// 1 truncates at the offset, 2 flips bit (op >> 2) & 7, 3 writes an
/// interesting integer (op >> 4) as 2, 4 or 8 bytes ((op >> 2) & 3).
pub fn apply_edits(buf: &mut Vec<u8>, mut edits: &[u8]) {
    while let [op, lo, hi, rest @ ..] = edits {
        let at = usize::from(u16::from_le_bytes([*lo, *hi]));
        edits = rest;
        match op % 4 {
            0 => {
                let n = usize::from(op >> 2).min(edits.len());
                let (src, more) = edits.split_at(n);
                edits = more;
                let at = at % (buf.len() + 1);
                for (i, &x) in src.iter().enumerate() {
                    match buf.get_mut(at + i) {
                        Some(b) => *b = x,
                        None => buf.push(x),
                    }
                }
            }
            1 => buf.truncate(at % (buf.len() + 1)),
            2 => {
                if !buf.is_empty() {
                    let at = at % buf.len();
                    buf[at] ^= 1 << ((op >> 2) & 7);
                }
            }
            _ => {
                let v = INTERESTING[usize::from(op >> 4) % INTERESTING.len()];
                let width = [2usize, 4, 8, 8][usize::from((op >> 2) & 3)];
                if buf.len() >= width {
                    let at = at % (buf.len() - width + 1);
                    buf[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
                }
            }
        }
    }
}

fn get_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Reseal the trailing crc of a header of `size` bytes at the start of `b`.
pub fn reseal_header(b: &mut [u8], size: usize) {
    if b.len() >= size && size >= 4 {
        let crc = crc32c(&b[..size - 4]);
        b[size - 4..size].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Reseal the Extent entries in a record stream, then nothing else.
pub fn reseal_extents(b: &mut [u8]) {
    let mut at = 0usize;
    while at + 8 <= b.len() {
        let kind = u16::from_le_bytes([b[at], b[at + 1]]);
        let Some(len) = get_u32(b, at + 4) else { break };
        let Some(end) = (at + 8).checked_add(len as usize).filter(|&e| e <= b.len()) else {
            break;
        };
        if kind == 4 && len >= 64 {
            let mut covered = b[at + 8..at + 8 + 60].to_vec();
            covered.extend_from_slice(&b[at + 8 + 64..end]);
            let crc = crc32c(&covered);
            b[at + 8 + 60..at + 8 + 64].copy_from_slice(&crc.to_le_bytes());
        }
        at = end;
    }
}

/// Reseal a metadata-log block: its extents, then its block crc.
pub fn reseal_log_block(b: &mut [u8]) {
    let Some(payload_bytes) = get_u32(b, 12) else {
        return;
    };
    let Some(end) = 48usize
        .checked_add(payload_bytes as usize)
        .filter(|&e| e <= b.len())
    else {
        return;
    };
    reseal_extents(&mut b[48..end]);
    let mut covered = b[..44].to_vec();
    covered.extend_from_slice(&b[48..end]);
    let crc = crc32c(&covered);
    b[44..48].copy_from_slice(&crc.to_le_bytes());
}

/// The default layout of a 256 MiB device.
pub fn geometry() -> Geometry {
    Geometry::plan(256 << 20, GeometryParams::default()).expect("256 MiB is a valid device")
}

/// A valid layout whose last region ends 4 KiB short of 2^64: unchecked
/// offset arithmetic on it overflows.
pub fn geometry_near_top() -> Geometry {
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

pub fn sb_info() -> SuperblockInfo {
    SuperblockInfo {
        version: FormatVersion::CURRENT,
        clean: false,
        sb_seq: 7,
        uuid: UUID,
        geometry: geometry(),
        created_unix_secs: 1_700_000_000,
        tag: "fuzz".into(),
        durable_log_seq: 0,
    }
}

static KEY: &[u8] = b"volume/key";
static AUX: &[u8] = b"aux-data";
static CRCS: [u32; 4] = [1, 2, 3, 4];

/// One record of every kind, encoded back to back.
pub fn records_template() -> Vec<u8> {
    let entry = ExtentEntry {
        object_id: 5,
        object_gen: 1,
        logical_offset: 8192,
        region_seq: 3,
        length: 4 * 4096,
        region_index: 1,
        region_block: 1,
    };
    let records = [
        Record::Volume {
            volume_id: 1,
            key: KEY,
        },
        Record::VolumeDelete { volume_id: 1 },
        Record::Object {
            object_id: 5,
            volume_id: 1,
            data_gen: 1,
            size: 20000,
            flags: 1,
            key: KEY,
            aux: AUX,
        },
        Record::Extent {
            entry,
            crcs: Crcs::Native(&CRCS),
        },
        Record::Invalidate {
            object_id: 5,
            data_gen: 2,
            size: 0,
            aux: AUX,
        },
        Record::Resize {
            object_id: 5,
            size: 4096,
        },
        Record::Delete { object_id: 5 },
        Record::Flags {
            object_id: 5,
            flags: 0,
        },
        Record::Region {
            region_index: 1,
            region_seq: 3,
            crcs: Crcs::Native(&CRCS),
        },
        Record::CkptExtent {
            object_id: 5,
            logical_offset: 8192,
            length: 4 * 4096,
            region_index: 1,
            region_offset: 4096,
        },
    ];
    let mut out = Vec::new();
    for r in &records {
        r.encode(&mut out);
    }
    out
}

/// Iterate over `bytes` as records and check what is accepted: it
/// re-encodes to a record that parses back equal, the iterator yields
/// nothing after an error and otherwise consumes every byte; and
/// `check_geometry` and `check_disjoint` run on it.
pub fn check_records(bytes: &[u8], geometries: &[Geometry]) {
    let mut it = RecordIter::new(bytes);
    let mut consumed = 0usize;
    let mut failed = false;
    let mut extents = Vec::new();
    for item in it.by_ref() {
        let Ok(r) = item else {
            failed = true;
            break;
        };
        consumed += r.encoded_len();
        let mut again = Vec::new();
        r.encode(&mut again);
        assert_eq!(again.len(), r.encoded_len());
        let mut reparsed = RecordIter::new(&again);
        assert_eq!(reparsed.next(), Some(Ok(r)), "re-encoded record differs");
        assert!(reparsed.next().is_none());
        for g in geometries {
            let _ = r.check_geometry(g);
        }
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
    assert!(it.next().is_none(), "the iterator must stop after an error");
    if !failed {
        assert_eq!(consumed, bytes.len(), "accepted records cover the input");
    }
    let _ = check_disjoint(0, &mut extents);
}

/// Exercise every offset helper and the error paths of check_geometry on a
/// geometry that parsed (and so validated): records placed at the very end
/// of the last region, one past it, and in a region that does not exist.
pub fn probe_geometry(g: &Geometry) {
    let last = g.region_count.saturating_sub(1);
    let blocks = g.region_blocks();
    let _ = g.ckpt_slot_offset(0);
    let _ = g.ckpt_slot_offset(1);
    let _ = g.metalog_block_offset(0);
    let _ = g.metalog_block_offset(u64::MAX);
    let _ = g.region_offset(last);
    let crcs = [0u32; 256];
    for (index, block, length) in [
        (last, blocks.saturating_sub(1), 4096),
        (last, blocks.saturating_sub(1), 1 << 20),
        (last, u32::MAX, 1),
        (g.region_count, 1, 1),
    ] {
        let entry = ExtentEntry {
            object_id: 1,
            object_gen: 1,
            logical_offset: 0,
            region_seq: 1,
            length,
            region_index: index,
            region_block: block,
        };
        let r = Record::Extent {
            entry,
            crcs: Crcs::Native(&crcs[..entry.block_count()]),
        };
        let _ = r.check_geometry(g);
        let r = Record::CkptExtent {
            object_id: 1,
            logical_offset: 0,
            length: u32::MAX,
            region_index: index,
            region_offset: block.saturating_mul(4096),
        };
        let _ = r.check_geometry(g);
        let r = Record::Region {
            region_index: index,
            region_seq: 1,
            crcs: Crcs::Native(&crcs),
        };
        let _ = r.check_geometry(g);
    }
}
