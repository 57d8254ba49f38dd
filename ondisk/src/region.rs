//! The region header: the first 64 bytes of a region's first block.
//!
//! Byte map (64 bytes; the rest of the block is reserved, zero):
//!
//! ```text
//! off size field
//!  0   8   magic        "RCREGION"
//!  8   4   format_version
//! 12   4   region_index  must match the region's position
//! 16   8   region_seq    unique over the whole cache, bumped at every reuse;
//!                        extents name the region_seq they were written under,
//!                        so extents of an earlier use never match
//! 24  16   uuid          the cache's uuid
//! 40  20   reserved
//! 60   4   crc32c of bytes 0..60
//! ```
//!
//! Data blocks follow the header block: block 1 .. region_blocks.

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{FormatError, Result};
use crate::version::FormatVersion;
use crate::{check_header_crc, header_crc, read_prefix};

/// Magic of a region header.
pub const REGION_MAGIC: u64 = u64::from_le_bytes(*b"RCREGION");

/// See the module docs for the byte map.
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RegionHeader {
    pub magic: U64,
    pub format_version: U32,
    pub region_index: U32,
    pub region_seq: U64,
    pub uuid: [u8; 16],
    pub reserved: [u8; 20],
    pub crc: U32,
}

const _: () = assert!(core::mem::size_of::<RegionHeader>() == 64);

impl RegionHeader {
    /// A header with its crc filled in.
    pub fn new(region_index: u32, region_seq: u64, uuid: [u8; 16]) -> RegionHeader {
        let mut h = RegionHeader {
            magic: REGION_MAGIC.into(),
            format_version: (FormatVersion::CURRENT as u32).into(),
            region_index: region_index.into(),
            region_seq: region_seq.into(),
            uuid,
            reserved: [0; 20],
            crc: 0.into(),
        };
        h.crc = header_crc(h.as_bytes()).into();
        h
    }

    /// Parse the header of region `expected_index` of the cache `uuid`;
    /// returns its region_seq.
    pub fn parse(bytes: &[u8], expected_index: u32, uuid: &[u8; 16]) -> Result<u64> {
        const W: &str = "region header";
        let h: RegionHeader = read_prefix(W, bytes)?;
        if h.magic.get() != REGION_MAGIC {
            return Err(FormatError::BadMagic {
                what: W,
                found: h.magic.get(),
                expected: REGION_MAGIC,
            });
        }
        check_header_crc(W, h.as_bytes(), h.crc.get())?;
        FormatVersion::parse(W, h.format_version.get())?;
        if &h.uuid != uuid {
            return Err(FormatError::ForeignUuid { what: W });
        }
        if h.region_index.get() != expected_index {
            return Err(FormatError::OutOfRange {
                what: W,
                field: "region_index",
                value: u64::from(h.region_index.get()),
                why: "does not match the region's position (misdirected write?)",
            });
        }
        Ok(h.region_seq.get())
    }
}
