//! Records: the unit of the metadata log and of checkpoint payloads.
//!
//! Every record is an 8-byte header followed by `len` bytes of body:
//!
//! ```text
//! off size field
//!  0   2   kind      RecordKind
//!  2   2   reserved  zero
//!  4   4   len       body bytes that follow
//! ```
//!
//! Bodies (fixed part, then variable bytes):
//!
//! | kind | name         | fixed part                                                                 | then |
//! |------|--------------|----------------------------------------------------------------------------|------|
//! | 1    | Volume       | volume_id u32, key_len u16, reserved u16 (8)                                | key |
//! | 2    | VolumeDelete | volume_id u32, reserved u32 (8)                                             | |
//! | 3    | Object       | object_id u64, data_gen u64, size u64, volume_id u32, flags u32, key_len u16, aux_len u16, reserved u32 (40) | key, aux |
//! | 4    | Extent       | EntryHeader (64, log only)                                                  | block crcs, u32 each |
//! | 5    | Invalidate   | object_id u64, data_gen u64, size u64, aux_len u16, reserved 6 (32)              | aux |
//! | 6    | Resize       | object_id u64, size u64 (16)                                                | |
//! | 7    | Delete       | object_id u64 (8)                                                           | |
//! | 8    | Flags        | object_id u64, flags u32, reserved u32 (16)                                 | |
//! | 9    | Region       | region_index u32, reserved u32, region_seq u64, crc_count u32, reserved u32 (24, checkpoint only) | block crcs |
//! | 10   | CkptExtent   | object_id u64, logical_offset u64, length u32, region_index u32, region_offset u32, reserved u32 (32, checkpoint only) | |
//!
//! The log block's crc (or the checkpoint's payload crc) covers every
//! record; an Extent record's EntryHeader has its own crc as well, over its
//! first 60 bytes and its block crcs, so one damaged entry is told apart.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{FormatError, Result};
use crate::superblock::Geometry;
use crate::{
    AUX_MAX, BLOCK_BYTES, BLOCK_BYTES_U64, MAX_EXTENT_BLOCKS, OBJECT_KEY_MAX, VOLUME_KEY_MAX,
    read_prefix,
};

/// Object flag: prepared for local modification; a crash while set makes
/// the object stale at the next lookup.
pub const OBJECT_FLAG_DIRTY: u32 = 1;
/// Every object flag this version defines.
pub const OBJECT_FLAGS_KNOWN: u32 = OBJECT_FLAG_DIRTY;

/// The record kinds. Numbers are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum RecordKind {
    Volume = 1,
    VolumeDelete = 2,
    Object = 3,
    Extent = 4,
    Invalidate = 5,
    Resize = 6,
    Delete = 7,
    Flags = 8,
    Region = 9,
    CkptExtent = 10,
}

impl RecordKind {
    fn parse(kind: u16) -> Result<Self> {
        Ok(match kind {
            1 => Self::Volume,
            2 => Self::VolumeDelete,
            3 => Self::Object,
            4 => Self::Extent,
            5 => Self::Invalidate,
            6 => Self::Resize,
            7 => Self::Delete,
            8 => Self::Flags,
            9 => Self::Region,
            10 => Self::CkptExtent,
            _ => return Err(FormatError::UnknownRecordKind { kind }),
        })
    }
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RecordHeader {
    kind: U16,
    reserved: U16,
    len: U32,
}
const _: () = assert!(core::mem::size_of::<RecordHeader>() == 8);

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct VolumeBody {
    volume_id: U32,
    key_len: U16,
    reserved: U16,
}
const _: () = assert!(core::mem::size_of::<VolumeBody>() == 8);

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct VolumeDeleteBody {
    volume_id: U32,
    reserved: U32,
}
const _: () = assert!(core::mem::size_of::<VolumeDeleteBody>() == 8);

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct ObjectBody {
    object_id: U64,
    data_gen: U64,
    size: U64,
    volume_id: U32,
    flags: U32,
    key_len: U16,
    aux_len: U16,
    reserved: U32,
}
const _: () = assert!(core::mem::size_of::<ObjectBody>() == 40);

/// The header of one extent written to a region (the "entry header").
///
/// ```text
/// off size field
///  0   8   object_id
///  8   8   object_gen      the object's data generation when written
/// 16   8   logical_offset  multiple of 4096
/// 24   8   region_seq      the region_seq of the region header it was written under
/// 32   4   length          bytes, 1 ..= 256 blocks
/// 36   4   region_index
/// 40   4   region_block    first data block within the region (>= 1)
/// 44  16   reserved
/// 60   4   crc32c          of bytes 0..60, then of the block crcs that follow
/// ```
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct EntryHeader {
    pub object_id: U64,
    pub object_gen: U64,
    pub logical_offset: U64,
    pub region_seq: U64,
    pub length: U32,
    pub region_index: U32,
    pub region_block: U32,
    pub reserved: [u8; 16],
    pub crc: U32,
}
const _: () = assert!(core::mem::size_of::<EntryHeader>() == 64);

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct InvalidateBody {
    object_id: U64,
    data_gen: U64,
    size: U64,
    aux_len: U16,
    reserved: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<InvalidateBody>() == 32);

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct ResizeBody {
    object_id: U64,
    size: U64,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct DeleteBody {
    object_id: U64,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct FlagsBody {
    object_id: U64,
    flags: U32,
    reserved: U32,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RegionBody {
    region_index: U32,
    reserved: U32,
    region_seq: U64,
    crc_count: U32,
    reserved2: U32,
}
const _: () = assert!(core::mem::size_of::<RegionBody>() == 24);

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct CkptExtentBody {
    object_id: U64,
    logical_offset: U64,
    length: U32,
    region_index: U32,
    region_offset: U32,
    reserved: U32,
}
const _: () = assert!(core::mem::size_of::<CkptExtentBody>() == 32);

/// A list of block crcs: borrowed from disk bytes or from memory.
/// Two lists are equal when they hold the same crcs, whatever their form.
#[derive(Debug, Clone, Copy)]
pub enum Crcs<'a> {
    /// Little-endian u32s as stored.
    Le(&'a [u8]),
    /// Native u32s, for encoding.
    Native(&'a [u32]),
}

impl Crcs<'_> {
    /// Number of crcs.
    pub fn len(&self) -> usize {
        match self {
            Crcs::Le(b) => b.len() / 4,
            Crcs::Native(v) => v.len(),
        }
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The `i`th crc.
    pub fn get(&self, i: usize) -> Option<u32> {
        match self {
            Crcs::Le(b) => {
                let s = b.get(i.checked_mul(4)?..i.checked_mul(4)?.checked_add(4)?)?;
                let mut w = [0u8; 4];
                w.copy_from_slice(s);
                Some(u32::from_le_bytes(w))
            }
            Crcs::Native(v) => v.get(i).copied(),
        }
    }
    /// All crcs in order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Crcs::Le(b) => out.extend_from_slice(b),
            Crcs::Native(v) => {
                for c in v.iter() {
                    out.extend_from_slice(&c.to_le_bytes());
                }
            }
        }
    }
    fn bytes_crc(&self, seed: u32) -> u32 {
        match self {
            Crcs::Le(b) => crc32c::crc32c_append(seed, b),
            Crcs::Native(v) => v
                .iter()
                .fold(seed, |c, x| crc32c::crc32c_append(c, &x.to_le_bytes())),
        }
    }
}

impl PartialEq for Crcs<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Crcs<'_> {}

/// Where an extent's data was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtentEntry {
    pub object_id: u64,
    pub object_gen: u64,
    pub logical_offset: u64,
    pub region_seq: u64,
    pub length: u32,
    pub region_index: u32,
    pub region_block: u32,
}

impl ExtentEntry {
    /// How many 4 KiB blocks (and crcs) the extent covers.
    pub fn block_count(&self) -> usize {
        (self.length as usize).div_ceil(BLOCK_BYTES)
    }

    fn header(&self, crcs: &Crcs<'_>) -> EntryHeader {
        let mut h = EntryHeader {
            object_id: self.object_id.into(),
            object_gen: self.object_gen.into(),
            logical_offset: self.logical_offset.into(),
            region_seq: self.region_seq.into(),
            length: self.length.into(),
            region_index: self.region_index.into(),
            region_block: self.region_block.into(),
            reserved: [0; 16],
            crc: 0.into(),
        };
        h.crc = entry_crc(&h, crcs).into();
        h
    }
}

fn entry_crc(h: &EntryHeader, crcs: &Crcs<'_>) -> u32 {
    let bytes = h.as_bytes();
    let head = bytes.get(..60).unwrap_or(bytes);
    crcs.bytes_crc(crc32c::crc32c(head))
}

/// One record, parsed (borrowing its variable bytes) or to be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    Volume {
        volume_id: u32,
        key: &'a [u8],
    },
    VolumeDelete {
        volume_id: u32,
    },
    /// An object's whole state (created, or snapshotted in a checkpoint).
    Object {
        object_id: u64,
        volume_id: u32,
        data_gen: u64,
        size: u64,
        flags: u32,
        key: &'a [u8],
        aux: &'a [u8],
    },
    /// Data written to a region (log only).
    Extent {
        entry: ExtentEntry,
        crcs: Crcs<'a>,
    },
    /// New coherency data and size; all data of older generations is gone.
    Invalidate {
        object_id: u64,
        data_gen: u64,
        size: u64,
        aux: &'a [u8],
    },
    /// New object size; data past it is gone.
    Resize {
        object_id: u64,
        size: u64,
    },
    Delete {
        object_id: u64,
    },
    Flags {
        object_id: u64,
        flags: u32,
    },
    /// A region in use and the crcs of its data blocks (checkpoint only).
    Region {
        region_index: u32,
        region_seq: u64,
        crcs: Crcs<'a>,
    },
    /// A live extent (checkpoint only); its block crcs are in the Region
    /// record, so the region must appear before its extents.
    CkptExtent {
        object_id: u64,
        logical_offset: u64,
        length: u32,
        region_index: u32,
        region_offset: u32,
    },
}

fn out_of_range(
    what: &'static str,
    field: &'static str,
    value: u64,
    why: &'static str,
) -> FormatError {
    FormatError::OutOfRange {
        what,
        field,
        value,
        why,
    }
}

impl<'a> Record<'a> {
    /// This record's kind.
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::Volume { .. } => RecordKind::Volume,
            Record::VolumeDelete { .. } => RecordKind::VolumeDelete,
            Record::Object { .. } => RecordKind::Object,
            Record::Extent { .. } => RecordKind::Extent,
            Record::Invalidate { .. } => RecordKind::Invalidate,
            Record::Resize { .. } => RecordKind::Resize,
            Record::Delete { .. } => RecordKind::Delete,
            Record::Flags { .. } => RecordKind::Flags,
            Record::Region { .. } => RecordKind::Region,
            Record::CkptExtent { .. } => RecordKind::CkptExtent,
        }
    }

    /// Bytes this record takes encoded, header included.
    pub fn encoded_len(&self) -> usize {
        8 + match self {
            Record::Volume { key, .. } => 8 + key.len(),
            Record::VolumeDelete { .. } => 8,
            Record::Object { key, aux, .. } => 40 + key.len() + aux.len(),
            Record::Extent { crcs, .. } => 64 + 4 * crcs.len(),
            Record::Invalidate { aux, .. } => 32 + aux.len(),
            Record::Resize { .. } => 16,
            Record::Delete { .. } => 8,
            Record::Flags { .. } => 16,
            Record::Region { crcs, .. } => 24 + 4 * crcs.len(),
            Record::CkptExtent { .. } => 32,
        }
    }

    /// Append the encoded record to `out`. The caller keeps lengths within
    /// the limits; `validate` is the check the parser applies.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let len = (self.encoded_len() - 8) as u32;
        let h = RecordHeader {
            kind: (self.kind() as u16).into(),
            reserved: 0.into(),
            len: len.into(),
        };
        out.extend_from_slice(h.as_bytes());
        match *self {
            Record::Volume { volume_id, key } => {
                let b = VolumeBody {
                    volume_id: volume_id.into(),
                    key_len: (key.len() as u16).into(),
                    reserved: 0.into(),
                };
                out.extend_from_slice(b.as_bytes());
                out.extend_from_slice(key);
            }
            Record::VolumeDelete { volume_id } => {
                let b = VolumeDeleteBody {
                    volume_id: volume_id.into(),
                    reserved: 0.into(),
                };
                out.extend_from_slice(b.as_bytes());
            }
            Record::Object {
                object_id,
                volume_id,
                data_gen,
                size,
                flags,
                key,
                aux,
            } => {
                let b = ObjectBody {
                    object_id: object_id.into(),
                    data_gen: data_gen.into(),
                    size: size.into(),
                    volume_id: volume_id.into(),
                    flags: flags.into(),
                    key_len: (key.len() as u16).into(),
                    aux_len: (aux.len() as u16).into(),
                    reserved: 0.into(),
                };
                out.extend_from_slice(b.as_bytes());
                out.extend_from_slice(key);
                out.extend_from_slice(aux);
            }
            Record::Extent { entry, crcs } => {
                out.extend_from_slice(entry.header(&crcs).as_bytes());
                crcs.encode(out);
            }
            Record::Invalidate {
                object_id,
                data_gen,
                size,
                aux,
            } => {
                let b = InvalidateBody {
                    object_id: object_id.into(),
                    data_gen: data_gen.into(),
                    size: size.into(),
                    aux_len: (aux.len() as u16).into(),
                    reserved: [0; 6],
                };
                out.extend_from_slice(b.as_bytes());
                out.extend_from_slice(aux);
            }
            Record::Resize { object_id, size } => {
                let b = ResizeBody {
                    object_id: object_id.into(),
                    size: size.into(),
                };
                out.extend_from_slice(b.as_bytes());
            }
            Record::Delete { object_id } => {
                let b = DeleteBody {
                    object_id: object_id.into(),
                };
                out.extend_from_slice(b.as_bytes());
            }
            Record::Flags { object_id, flags } => {
                let b = FlagsBody {
                    object_id: object_id.into(),
                    flags: flags.into(),
                    reserved: 0.into(),
                };
                out.extend_from_slice(b.as_bytes());
            }
            Record::Region {
                region_index,
                region_seq,
                crcs,
            } => {
                let b = RegionBody {
                    region_index: region_index.into(),
                    reserved: 0.into(),
                    region_seq: region_seq.into(),
                    crc_count: (crcs.len() as u32).into(),
                    reserved2: 0.into(),
                };
                out.extend_from_slice(b.as_bytes());
                crcs.encode(out);
            }
            Record::CkptExtent {
                object_id,
                logical_offset,
                length,
                region_index,
                region_offset,
            } => {
                let b = CkptExtentBody {
                    object_id: object_id.into(),
                    logical_offset: logical_offset.into(),
                    length: length.into(),
                    region_index: region_index.into(),
                    region_offset: region_offset.into(),
                    reserved: 0.into(),
                };
                out.extend_from_slice(b.as_bytes());
            }
        }
    }

    /// Check that the locations this record names lie within `g` (a
    /// geometry that passed [`Geometry::validate`]).
    pub fn check_geometry(&self, g: &Geometry) -> Result<()> {
        match *self {
            Record::Extent { entry, .. } => {
                const W: &str = "extent entry";
                if entry.region_index >= g.region_count {
                    return Err(out_of_range(
                        W,
                        "region_index",
                        entry.region_index.into(),
                        "no such region",
                    ));
                }
                let end = u64::from(entry.region_block) + entry.block_count() as u64;
                if end > u64::from(g.region_blocks()) {
                    let (start, region_end) = region_span(g, entry.region_index);
                    return Err(FormatError::PastDevice {
                        what: "extent entry (end of its region)",
                        end: start.saturating_add(end.saturating_mul(BLOCK_BYTES_U64)),
                        device_bytes: region_end,
                    });
                }
                Ok(())
            }
            Record::CkptExtent {
                region_index,
                region_offset,
                length,
                ..
            } => {
                const W: &str = "checkpoint extent";
                if region_index >= g.region_count {
                    return Err(out_of_range(
                        W,
                        "region_index",
                        region_index.into(),
                        "no such region",
                    ));
                }
                let end = u64::from(region_offset) + u64::from(length);
                if end > g.region_bytes {
                    let (start, region_end) = region_span(g, region_index);
                    return Err(FormatError::PastDevice {
                        what: "checkpoint extent (end of its region)",
                        end: start.saturating_add(end),
                        device_bytes: region_end,
                    });
                }
                Ok(())
            }
            Record::Region {
                region_index, crcs, ..
            } => {
                const W: &str = "region record";
                if region_index >= g.region_count {
                    return Err(out_of_range(
                        W,
                        "region_index",
                        region_index.into(),
                        "no such region",
                    ));
                }
                if crcs.len() > g.region_blocks() as usize {
                    return Err(out_of_range(
                        W,
                        "crc_count",
                        crcs.len() as u64,
                        "more crcs than the region has blocks",
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Device byte range of region `index`, for error reports. Saturating: the
/// error path must not overflow even on a geometry that ends near 2^64.
fn region_span(g: &Geometry, index: u32) -> (u64, u64) {
    let start = g
        .regions_offset
        .saturating_add(u64::from(index).saturating_mul(g.region_bytes));
    (start, start.saturating_add(g.region_bytes))
}

fn body_prefix<T: FromBytes + KnownLayout + Immutable>(
    what: &'static str,
    body: &[u8],
) -> Result<T> {
    read_prefix(what, body)
}

fn tail<'a>(
    what: &'static str,
    body: &'a [u8],
    start: usize,
    lens: &[usize],
) -> Result<Vec<&'a [u8]>> {
    // Checked: on a 32-bit target a hostile crc_count * 4 can reach usize::MAX.
    let total = lens.iter().try_fold(start, |acc, &l| acc.checked_add(l));
    if total != Some(body.len()) {
        return Err(out_of_range(
            what,
            "len",
            body.len() as u64,
            "record length does not match its fields",
        ));
    }
    let mut at = start;
    let mut parts = Vec::with_capacity(lens.len());
    for &l in lens {
        // Cannot fail: the lengths add up to body.len() (checked above).
        let end = at.saturating_add(l);
        parts.push(body.get(at..end).ok_or(FormatError::Truncated {
            what,
            need: end,
            have: body.len(),
        })?);
        at = end;
    }
    Ok(parts)
}

fn check_object_key(what: &'static str, len: usize) -> Result<()> {
    if len == 0 || len > OBJECT_KEY_MAX {
        return Err(out_of_range(
            what,
            "key_len",
            len as u64,
            "object keys are 1..=255 bytes",
        ));
    }
    Ok(())
}

fn check_aux(what: &'static str, len: usize) -> Result<()> {
    if len > AUX_MAX {
        return Err(out_of_range(
            what,
            "aux_len",
            len as u64,
            "coherency data is at most 255 bytes",
        ));
    }
    Ok(())
}

fn parse_body<'a>(kind: RecordKind, body: &'a [u8]) -> Result<Record<'a>> {
    Ok(match kind {
        RecordKind::Volume => {
            const W: &str = "volume record";
            let b: VolumeBody = body_prefix(W, body)?;
            let key_len = b.key_len.get() as usize;
            if key_len == 0 || key_len > VOLUME_KEY_MAX {
                return Err(out_of_range(
                    W,
                    "key_len",
                    key_len as u64,
                    "volume keys are 1..=254 bytes",
                ));
            }
            let parts = tail(W, body, 8, &[key_len])?;
            Record::Volume {
                volume_id: b.volume_id.get(),
                key: parts.first().copied().unwrap_or(&[]),
            }
        }
        RecordKind::VolumeDelete => {
            const W: &str = "volume delete record";
            let b: VolumeDeleteBody = body_prefix(W, body)?;
            tail(W, body, 8, &[])?;
            Record::VolumeDelete {
                volume_id: b.volume_id.get(),
            }
        }
        RecordKind::Object => {
            const W: &str = "object record";
            let b: ObjectBody = body_prefix(W, body)?;
            let key_len = b.key_len.get() as usize;
            let aux_len = b.aux_len.get() as usize;
            check_object_key(W, key_len)?;
            check_aux(W, aux_len)?;
            if b.flags.get() & !OBJECT_FLAGS_KNOWN != 0 {
                return Err(out_of_range(
                    W,
                    "flags",
                    b.flags.get().into(),
                    "unknown flag bits",
                ));
            }
            let parts = tail(W, body, 40, &[key_len, aux_len])?;
            Record::Object {
                object_id: b.object_id.get(),
                volume_id: b.volume_id.get(),
                data_gen: b.data_gen.get(),
                size: b.size.get(),
                flags: b.flags.get(),
                key: parts.first().copied().unwrap_or(&[]),
                aux: parts.get(1).copied().unwrap_or(&[]),
            }
        }
        RecordKind::Extent => {
            const W: &str = "extent entry";
            let h: EntryHeader = body_prefix(W, body)?;
            let entry = ExtentEntry {
                object_id: h.object_id.get(),
                object_gen: h.object_gen.get(),
                logical_offset: h.logical_offset.get(),
                region_seq: h.region_seq.get(),
                length: h.length.get(),
                region_index: h.region_index.get(),
                region_block: h.region_block.get(),
            };
            if entry.length == 0 || entry.block_count() > MAX_EXTENT_BLOCKS {
                return Err(out_of_range(
                    W,
                    "length",
                    entry.length.into(),
                    "extents are 1 byte ..= 1 MiB",
                ));
            }
            let parts = tail(W, body, 64, &[entry.block_count() * 4])?;
            let crcs = Crcs::Le(parts.first().copied().unwrap_or(&[]));
            let computed = entry_crc(&h, &crcs);
            if computed != h.crc.get() {
                return Err(FormatError::BadChecksum {
                    what: W,
                    stored: h.crc.get(),
                    computed,
                });
            }
            if !entry.logical_offset.is_multiple_of(BLOCK_BYTES_U64) {
                return Err(out_of_range(
                    W,
                    "logical_offset",
                    entry.logical_offset,
                    "not a multiple of 4096",
                ));
            }
            if entry
                .logical_offset
                .checked_add(entry.length.into())
                .is_none()
            {
                return Err(out_of_range(
                    W,
                    "logical_offset",
                    entry.logical_offset,
                    "offset + length overflows",
                ));
            }
            if entry.region_block == 0 {
                return Err(out_of_range(
                    W,
                    "region_block",
                    0,
                    "block 0 is the region header",
                ));
            }
            Record::Extent { entry, crcs }
        }
        RecordKind::Invalidate => {
            const W: &str = "invalidate record";
            let b: InvalidateBody = body_prefix(W, body)?;
            let aux_len = b.aux_len.get() as usize;
            check_aux(W, aux_len)?;
            let parts = tail(W, body, 32, &[aux_len])?;
            Record::Invalidate {
                object_id: b.object_id.get(),
                data_gen: b.data_gen.get(),
                size: b.size.get(),
                aux: parts.first().copied().unwrap_or(&[]),
            }
        }
        RecordKind::Resize => {
            const W: &str = "resize record";
            let b: ResizeBody = body_prefix(W, body)?;
            tail(W, body, 16, &[])?;
            Record::Resize {
                object_id: b.object_id.get(),
                size: b.size.get(),
            }
        }
        RecordKind::Delete => {
            const W: &str = "delete record";
            let b: DeleteBody = body_prefix(W, body)?;
            tail(W, body, 8, &[])?;
            Record::Delete {
                object_id: b.object_id.get(),
            }
        }
        RecordKind::Flags => {
            const W: &str = "flags record";
            let b: FlagsBody = body_prefix(W, body)?;
            tail(W, body, 16, &[])?;
            if b.flags.get() & !OBJECT_FLAGS_KNOWN != 0 {
                return Err(out_of_range(
                    W,
                    "flags",
                    b.flags.get().into(),
                    "unknown flag bits",
                ));
            }
            Record::Flags {
                object_id: b.object_id.get(),
                flags: b.flags.get(),
            }
        }
        RecordKind::Region => {
            const W: &str = "region record";
            let b: RegionBody = body_prefix(W, body)?;
            let n = b.crc_count.get() as usize;
            let parts = tail(W, body, 24, &[n.saturating_mul(4)])?;
            Record::Region {
                region_index: b.region_index.get(),
                region_seq: b.region_seq.get(),
                crcs: Crcs::Le(parts.first().copied().unwrap_or(&[])),
            }
        }
        RecordKind::CkptExtent => {
            const W: &str = "checkpoint extent";
            let b: CkptExtentBody = body_prefix(W, body)?;
            tail(W, body, 32, &[])?;
            if b.length.get() == 0 || b.length.get() as usize > MAX_EXTENT_BLOCKS * BLOCK_BYTES {
                return Err(out_of_range(
                    W,
                    "length",
                    b.length.get().into(),
                    "extents are 1 byte ..= 1 MiB",
                ));
            }
            if u64::from(b.region_offset.get()) < BLOCK_BYTES_U64 {
                return Err(out_of_range(
                    W,
                    "region_offset",
                    b.region_offset.get().into(),
                    "block 0 is the region header",
                ));
            }
            // Block crcs are per 4 KiB block of the region and of the object,
            // so an extent that starts inside a block cannot be verified.
            if !u64::from(b.region_offset.get()).is_multiple_of(BLOCK_BYTES_U64) {
                return Err(out_of_range(
                    W,
                    "region_offset",
                    b.region_offset.get().into(),
                    "not a multiple of 4096",
                ));
            }
            if !b.logical_offset.get().is_multiple_of(BLOCK_BYTES_U64) {
                return Err(out_of_range(
                    W,
                    "logical_offset",
                    b.logical_offset.get(),
                    "not a multiple of 4096",
                ));
            }
            if b.logical_offset
                .get()
                .checked_add(b.length.get().into())
                .is_none()
            {
                return Err(out_of_range(
                    W,
                    "logical_offset",
                    b.logical_offset.get(),
                    "offset + length overflows",
                ));
            }
            Record::CkptExtent {
                object_id: b.object_id.get(),
                logical_offset: b.logical_offset.get(),
                length: b.length.get(),
                region_index: b.region_index.get(),
                region_offset: b.region_offset.get(),
            }
        }
    })
}

/// Iterates over the records packed in `bytes`. After the first error it
/// yields nothing more: what follows a damaged record cannot be framed.
pub struct RecordIter<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> RecordIter<'a> {
    /// Iterate over the records in `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        RecordIter {
            rest: bytes,
            failed: false,
        }
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<Record<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.failed {
            return None;
        }
        let r = (|| {
            let h: RecordHeader = read_prefix("record header", self.rest)?;
            let kind = RecordKind::parse(h.kind.get())?;
            let len = h.len.get() as usize;
            let body =
                self.rest
                    .get(8..8usize.saturating_add(len))
                    .ok_or(FormatError::Truncated {
                        what: "record",
                        need: 8usize.saturating_add(len),
                        have: self.rest.len(),
                    })?;
            let rec = parse_body(kind, body)?;
            self.rest = self.rest.get(8 + len..).unwrap_or(&[]);
            Ok(rec)
        })();
        if r.is_err() {
            self.failed = true;
        }
        Some(r)
    }
}

/// Check that the extents of one object do not overlap. `extents` are
/// (logical_offset, length) pairs in any order.
pub fn check_disjoint(object_id: u64, extents: &mut [(u64, u64)]) -> Result<()> {
    extents.sort_unstable();
    let mut end = 0u64;
    for (i, &(off, len)) in extents.iter().enumerate() {
        if i > 0 && off < end {
            return Err(FormatError::OverlappingExtents {
                object_id,
                offset: off,
            });
        }
        end = off.saturating_add(len);
    }
    Ok(())
}
