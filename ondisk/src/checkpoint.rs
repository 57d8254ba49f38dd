//! Checkpoints: a full snapshot of the index in one of two slots.
//!
//! A slot is a header block followed by the payload: a stream of records
//! (see `record`: Volume, Object, Region and CkptExtent records). The header
//! carries a crc32c of the whole payload, so a torn checkpoint is rejected
//! as a whole and recovery falls back to the other slot.
//!
//! Header byte map (128 bytes; the rest of the header block is zero):
//!
//! ```text
//! off size field
//!   0   8  magic             "RCCHKPT1"
//!   8   4  format_version
//!  12   4  next_volume_id
//!  16  16  uuid              the cache's uuid
//!  32   8  ckpt_seq          the valid slot with the highest ckpt_seq wins
//!  40   8  log_seq           replay the metadata log from this block seq
//!  48   8  next_object_id
//!  56   8  next_region_seq
//!  64   8  payload_bytes
//!  72   8  volume_count
//!  80   8  object_count
//!  88   8  extent_count
//!  96   8  created_unix_secs
//! 104   4  payload_crc32c
//! 108  16  reserved
//! 124   4  crc32c of bytes 0..124
//! ```

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{FormatError, Result};
use crate::version::FormatVersion;
use crate::{BLOCK_BYTES_U64, check_header_crc, header_crc, read_prefix};

/// Magic of a checkpoint header.
pub const CKPT_MAGIC: u64 = u64::from_le_bytes(*b"RCCHKPT1");

/// See the module docs for the byte map.
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct CheckpointHeader {
    pub magic: U64,
    pub format_version: U32,
    pub next_volume_id: U32,
    pub uuid: [u8; 16],
    pub ckpt_seq: U64,
    pub log_seq: U64,
    pub next_object_id: U64,
    pub next_region_seq: U64,
    pub payload_bytes: U64,
    pub volume_count: U64,
    pub object_count: U64,
    pub extent_count: U64,
    pub created_unix_secs: U64,
    pub payload_crc: U32,
    pub reserved: [u8; 16],
    pub crc: U32,
}

const _: () = assert!(core::mem::size_of::<CheckpointHeader>() == 128);

/// The numbers of a checkpoint header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckpointInfo {
    pub ckpt_seq: u64,
    pub log_seq: u64,
    pub next_object_id: u64,
    pub next_region_seq: u64,
    pub next_volume_id: u32,
    pub payload_bytes: u64,
    pub payload_crc: u32,
    pub volume_count: u64,
    pub object_count: u64,
    pub extent_count: u64,
    pub created_unix_secs: u64,
}

impl CheckpointHeader {
    /// A header for `info` with its crc filled in.
    pub fn new(info: &CheckpointInfo, uuid: [u8; 16]) -> CheckpointHeader {
        let mut h = CheckpointHeader {
            magic: CKPT_MAGIC.into(),
            format_version: (FormatVersion::CURRENT as u32).into(),
            next_volume_id: info.next_volume_id.into(),
            uuid,
            ckpt_seq: info.ckpt_seq.into(),
            log_seq: info.log_seq.into(),
            next_object_id: info.next_object_id.into(),
            next_region_seq: info.next_region_seq.into(),
            payload_bytes: info.payload_bytes.into(),
            volume_count: info.volume_count.into(),
            object_count: info.object_count.into(),
            extent_count: info.extent_count.into(),
            created_unix_secs: info.created_unix_secs.into(),
            payload_crc: info.payload_crc.into(),
            reserved: [0; 16],
            crc: 0.into(),
        };
        h.crc = header_crc(h.as_bytes()).into();
        h
    }

    /// Parse a checkpoint header of the cache `uuid` stored in a slot of
    /// `slot_bytes`.
    pub fn parse(bytes: &[u8], uuid: &[u8; 16], slot_bytes: u64) -> Result<CheckpointInfo> {
        const W: &str = "checkpoint header";
        let h: CheckpointHeader = read_prefix(W, bytes)?;
        if h.magic.get() != CKPT_MAGIC {
            return Err(FormatError::BadMagic {
                what: W,
                found: h.magic.get(),
                expected: CKPT_MAGIC,
            });
        }
        check_header_crc(W, h.as_bytes(), h.crc.get())?;
        FormatVersion::parse(W, h.format_version.get())?;
        if &h.uuid != uuid {
            return Err(FormatError::ForeignUuid { what: W });
        }
        let payload_bytes = h.payload_bytes.get();
        if payload_bytes > slot_bytes.saturating_sub(BLOCK_BYTES_U64) {
            return Err(FormatError::OutOfRange {
                what: W,
                field: "payload_bytes",
                value: payload_bytes,
                why: "larger than the checkpoint slot",
            });
        }
        Ok(CheckpointInfo {
            ckpt_seq: h.ckpt_seq.get(),
            log_seq: h.log_seq.get(),
            next_object_id: h.next_object_id.get(),
            next_region_seq: h.next_region_seq.get(),
            next_volume_id: h.next_volume_id.get(),
            payload_bytes,
            payload_crc: h.payload_crc.get(),
            volume_count: h.volume_count.get(),
            object_count: h.object_count.get(),
            extent_count: h.extent_count.get(),
            created_unix_secs: h.created_unix_secs.get(),
        })
    }
}

/// Check a checkpoint payload against its header's crc.
pub fn check_payload(info: &CheckpointInfo, payload: &[u8]) -> Result<()> {
    let computed = crate::crc32c(payload);
    if computed != info.payload_crc {
        return Err(FormatError::BadChecksum {
            what: "checkpoint payload",
            stored: info.payload_crc,
            computed,
        });
    }
    Ok(())
}
