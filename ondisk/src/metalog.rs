//! The metadata log: a ring of 4 KiB blocks, each a header and packed records.
//!
//! Block byte map:
//!
//! ```text
//! off size field
//!  0   8   magic          "RCLOGBLK"
//!  8   4   format_version
//! 12   4   payload_bytes  bytes of records after the header (<= 4048)
//! 16   8   seq            log sequence number; block seq lives at ring
//!                         position seq % metalog_blocks
//! 24  16   uuid           the cache's uuid
//! 40   4   record_count
//! 44   4   crc32c         of bytes 0..44, then of the payload
//! 48  ...  records        (see `record`), payload_bytes of them
//! ```
//!
//! A block is written once and never rewritten: a flush of a partly filled
//! block closes it, so a torn rewrite can never take acknowledged records
//! with it. Replay starts at the checkpoint's log_seq and stops at the first
//! block that is invalid or whose seq is not the next one.

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{FormatError, Result};
use crate::version::FormatVersion;
use crate::{BLOCK_BYTES, read_prefix};

/// Magic of a metadata-log block.
pub const LOG_MAGIC: u64 = u64::from_le_bytes(*b"RCLOGBLK");
/// Bytes of records one log block holds.
pub const LOG_PAYLOAD_MAX: usize = BLOCK_BYTES - core::mem::size_of::<LogBlockHeader>();

/// See the module docs for the byte map.
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct LogBlockHeader {
    pub magic: U64,
    pub format_version: U32,
    pub payload_bytes: U32,
    pub seq: U64,
    pub uuid: [u8; 16],
    pub record_count: U32,
    pub crc: U32,
}

const _: () = assert!(core::mem::size_of::<LogBlockHeader>() == 48);

fn block_crc(header: &[u8], payload: &[u8]) -> u32 {
    let head = header.get(..44).unwrap_or(header);
    crc32c::crc32c_append(crc32c::crc32c(head), payload)
}

/// Fill `block` (4096 bytes) with a log block holding `payload`.
/// Returns false if the payload does not fit or `block` is not 4096 bytes.
pub fn encode_block(
    block: &mut [u8],
    seq: u64,
    uuid: [u8; 16],
    record_count: u32,
    payload: &[u8],
) -> bool {
    if block.len() != BLOCK_BYTES || payload.len() > LOG_PAYLOAD_MAX {
        return false;
    }
    let mut h = LogBlockHeader {
        magic: LOG_MAGIC.into(),
        format_version: (FormatVersion::CURRENT as u32).into(),
        payload_bytes: (payload.len() as u32).into(),
        seq: seq.into(),
        uuid,
        record_count: record_count.into(),
        crc: 0.into(),
    };
    h.crc = block_crc(h.as_bytes(), payload).into();
    let (head, rest) = block.split_at_mut(core::mem::size_of::<LogBlockHeader>());
    head.copy_from_slice(h.as_bytes());
    let (body, tail) = rest.split_at_mut(payload.len());
    body.copy_from_slice(payload);
    tail.fill(0);
    true
}

/// A parsed log block: its sequence number, record count and payload.
#[derive(Debug, Clone, Copy)]
pub struct LogBlock<'a> {
    pub seq: u64,
    pub record_count: u32,
    pub payload: &'a [u8],
}

/// Parse one log block of the cache `uuid`.
pub fn parse_block<'a>(block: &'a [u8], uuid: &[u8; 16]) -> Result<LogBlock<'a>> {
    const W: &str = "metadata log block";
    let h: LogBlockHeader = read_prefix(W, block)?;
    if h.magic.get() != LOG_MAGIC {
        return Err(FormatError::BadMagic {
            what: W,
            found: h.magic.get(),
            expected: LOG_MAGIC,
        });
    }
    let payload_bytes = h.payload_bytes.get() as usize;
    if payload_bytes > LOG_PAYLOAD_MAX {
        return Err(FormatError::OutOfRange {
            what: W,
            field: "payload_bytes",
            value: payload_bytes as u64,
            why: "larger than a block holds",
        });
    }
    let start = core::mem::size_of::<LogBlockHeader>();
    let payload = block
        .get(start..start + payload_bytes)
        .ok_or(FormatError::Truncated {
            what: W,
            need: start + payload_bytes,
            have: block.len(),
        })?;
    let computed = block_crc(h.as_bytes(), payload);
    if computed != h.crc.get() {
        return Err(FormatError::BadChecksum {
            what: W,
            stored: h.crc.get(),
            computed,
        });
    }
    FormatVersion::parse(W, h.format_version.get())?;
    if &h.uuid != uuid {
        return Err(FormatError::ForeignUuid { what: W });
    }
    Ok(LogBlock {
        seq: h.seq.get(),
        record_count: h.record_count.get(),
        payload,
    })
}
