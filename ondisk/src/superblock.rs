//! The superblock: the device's geometry and identity, stored twice.
//!
//! Byte map (4096 bytes, all integers little-endian):
//!
//! ```text
//! off  size  field
//!   0     8  magic               "RINGCACH"
//!   8     4  format_version      FormatVersion
//!  12     4  flags               bit 0: clean shutdown
//!  16     8  sb_seq              bumped on every superblock write; the valid
//!                                copy with the highest sb_seq wins
//!  24    16  uuid                random at format; every other header repeats it
//!  40     8  device_bytes        size the cache was formatted for
//!  48     4  block_bytes         4096
//!  52     4  region_count
//!  56     8  region_bytes
//!  64     8  regions_offset
//!  72     8  ckpt_offset         slot 0; slot 1 follows it
//!  80     8  ckpt_slot_bytes
//!  88     8  metalog_offset
//!  96     8  metalog_bytes
//! 104     8  created_unix_secs
//! 112    32  tag                 UTF-8, NUL-padded
//! 144     8  durable_log_seq     every metadata-log block up to this seq was
//!                                made durable by a completed flush (0: not
//!                                known; caches written before it say 0)
//! 152  3940  reserved            zero
//! 4092    4  crc32c              of bytes 0..4092
//! ```
//!
//! Copy A lives at byte 0, copy B at byte 4096. Writes alternate between
//! them (copy = sb_seq % 2), so a torn superblock write leaves the other.

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{FormatError, Result};
use crate::version::FormatVersion;
use crate::{BLOCK_BYTES, BLOCK_BYTES_U64, check_header_crc, header_crc, read_prefix};

/// Magic of the superblock.
pub const SUPERBLOCK_MAGIC: u64 = u64::from_le_bytes(*b"RINGCACH");
/// Byte offsets of the two superblock copies.
pub const SUPERBLOCK_OFFSETS: [u64; 2] = [0, BLOCK_BYTES_U64];
/// Superblock flag: the cache was closed cleanly.
pub const SB_FLAG_CLEAN: u32 = 1;

/// Smallest region (64 KiB) and largest (1 GiB, so in-region byte offsets fit u32).
pub const REGION_BYTES_MIN: u64 = 64 * 1024;
/// See [`REGION_BYTES_MIN`].
pub const REGION_BYTES_MAX: u64 = 1 << 30;
/// A cache needs at least this many regions (one open, one to cull into).
pub const REGION_COUNT_MIN: u32 = 2;

/// The on-disk superblock. See the module docs for the byte map.
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Superblock {
    pub magic: U64,
    pub format_version: U32,
    pub flags: U32,
    pub sb_seq: U64,
    pub uuid: [u8; 16],
    pub device_bytes: U64,
    pub block_bytes: U32,
    pub region_count: U32,
    pub region_bytes: U64,
    pub regions_offset: U64,
    pub ckpt_offset: U64,
    pub ckpt_slot_bytes: U64,
    pub metalog_offset: U64,
    pub metalog_bytes: U64,
    pub created_unix_secs: U64,
    pub tag: [u8; 32],
    pub durable_log_seq: U64,
    pub reserved: [u8; 3940],
    pub crc: U32,
}

const _: () = assert!(core::mem::size_of::<Superblock>() == BLOCK_BYTES);
const _: () = assert!(core::mem::align_of::<Superblock>() == 1);

/// Where everything lives on a device: the validated numbers of a superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub device_bytes: u64,
    pub region_count: u32,
    pub region_bytes: u64,
    pub regions_offset: u64,
    pub ckpt_offset: u64,
    pub ckpt_slot_bytes: u64,
    pub metalog_offset: u64,
    pub metalog_bytes: u64,
}

/// Optional overrides for [`Geometry::plan`]; `None` picks the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct GeometryParams {
    pub region_bytes: Option<u64>,
    pub metalog_bytes: Option<u64>,
    pub ckpt_slot_bytes: Option<u64>,
}

fn clamp_blocks(v: u64, min: u64, max: u64) -> u64 {
    v.clamp(min, max) & !(BLOCK_BYTES_U64 - 1)
}

impl Geometry {
    /// Lay out a device of `device_bytes`. Defaults: 8 MiB regions, a
    /// metadata log of 1/128 of the device (1..=64 MiB) and checkpoint slots
    /// of 1/64 of the device each (1..=1024 MiB).
    pub fn plan(device_bytes: u64, params: GeometryParams) -> Result<Geometry> {
        const MIB: u64 = 1 << 20;
        let region_bytes = params.region_bytes.unwrap_or(8 * MIB);
        let metalog_bytes = params
            .metalog_bytes
            .unwrap_or_else(|| clamp_blocks(device_bytes / 128, MIB, 64 * MIB));
        let ckpt_slot_bytes = params
            .ckpt_slot_bytes
            .unwrap_or_else(|| clamp_blocks(device_bytes / 64, MIB, 1024 * MIB));
        let ckpt_offset = 2 * BLOCK_BYTES_U64;
        let metalog_offset = ckpt_offset.saturating_add(ckpt_slot_bytes.saturating_mul(2));
        // Regions start on a 1 MiB boundary, which suits every device.
        let regions_offset = metalog_offset
            .saturating_add(metalog_bytes)
            .saturating_add(MIB - 1)
            & !(MIB - 1);
        // region_bytes 0 gives 0 regions; validate() then refuses it.
        let region_count = device_bytes
            .saturating_sub(regions_offset)
            .checked_div(region_bytes)
            .unwrap_or(0);
        let g = Geometry {
            device_bytes,
            region_count: u32::try_from(region_count).unwrap_or(u32::MAX),
            region_bytes,
            regions_offset,
            ckpt_offset,
            ckpt_slot_bytes,
            metalog_offset,
            metalog_bytes,
        };
        g.validate(device_bytes)?;
        Ok(g)
    }

    /// Check that the layout is self-consistent and fits a device of
    /// `actual_device_bytes`.
    pub fn validate(&self, actual_device_bytes: u64) -> Result<()> {
        const W: &str = "superblock";
        let aligned = |field: &'static str, v: u64| -> Result<()> {
            if !v.is_multiple_of(BLOCK_BYTES_U64) {
                return Err(FormatError::OutOfRange {
                    what: W,
                    field,
                    value: v,
                    why: "not a multiple of 4096",
                });
            }
            Ok(())
        };
        aligned("region_bytes", self.region_bytes)?;
        aligned("regions_offset", self.regions_offset)?;
        aligned("ckpt_offset", self.ckpt_offset)?;
        aligned("ckpt_slot_bytes", self.ckpt_slot_bytes)?;
        aligned("metalog_offset", self.metalog_offset)?;
        aligned("metalog_bytes", self.metalog_bytes)?;
        if !(REGION_BYTES_MIN..=REGION_BYTES_MAX).contains(&self.region_bytes) {
            return Err(FormatError::OutOfRange {
                what: W,
                field: "region_bytes",
                value: self.region_bytes,
                why: "must be 64 KiB ..= 1 GiB",
            });
        }
        if self.region_count < REGION_COUNT_MIN {
            return Err(FormatError::OutOfRange {
                what: W,
                field: "region_count",
                value: u64::from(self.region_count),
                why: "a cache needs at least 2 regions",
            });
        }
        if self.ckpt_slot_bytes < 2 * BLOCK_BYTES_U64 {
            return Err(FormatError::OutOfRange {
                what: W,
                field: "ckpt_slot_bytes",
                value: self.ckpt_slot_bytes,
                why: "a checkpoint slot needs at least 2 blocks",
            });
        }
        if self.metalog_bytes < 4 * BLOCK_BYTES_U64 {
            return Err(FormatError::OutOfRange {
                what: W,
                field: "metalog_bytes",
                value: self.metalog_bytes,
                why: "the metadata log needs at least 4 blocks",
            });
        }
        // Areas in order: superblocks, slots, log, regions; no overlap.
        let sb_end = 2 * BLOCK_BYTES_U64;
        let ckpt_end =
            self.ckpt_offset
                .checked_add(self.ckpt_slot_bytes.checked_mul(2).ok_or(
                    FormatError::OutOfRange {
                        what: W,
                        field: "ckpt_slot_bytes",
                        value: self.ckpt_slot_bytes,
                        why: "overflows",
                    },
                )?);
        let ckpt_end = ckpt_end.ok_or(FormatError::OutOfRange {
            what: W,
            field: "ckpt_offset",
            value: self.ckpt_offset,
            why: "overflows",
        })?;
        let log_end =
            self.metalog_offset
                .checked_add(self.metalog_bytes)
                .ok_or(FormatError::OutOfRange {
                    what: W,
                    field: "metalog_bytes",
                    value: self.metalog_bytes,
                    why: "overflows",
                })?;
        let regions_end = u64::from(self.region_count)
            .checked_mul(self.region_bytes)
            .and_then(|b| b.checked_add(self.regions_offset))
            .ok_or(FormatError::OutOfRange {
                what: W,
                field: "region_count",
                value: u64::from(self.region_count),
                why: "regions overflow the address space",
            })?;
        if self.ckpt_offset < sb_end {
            return Err(FormatError::Overlap {
                what: "checkpoint slots",
                other: "superblocks",
            });
        }
        if self.metalog_offset < ckpt_end {
            return Err(FormatError::Overlap {
                what: "metadata log",
                other: "checkpoint slots",
            });
        }
        if self.regions_offset < log_end {
            return Err(FormatError::Overlap {
                what: "regions",
                other: "metadata log",
            });
        }
        if regions_end > self.device_bytes {
            return Err(FormatError::PastDevice {
                what: "regions",
                end: regions_end,
                device_bytes: self.device_bytes,
            });
        }
        if self.device_bytes > actual_device_bytes {
            return Err(FormatError::PastDevice {
                what: "superblock device_bytes (device truncated?)",
                end: self.device_bytes,
                device_bytes: actual_device_bytes,
            });
        }
        Ok(())
    }

    /// Byte offset of checkpoint slot `slot` (0 or 1).
    pub fn ckpt_slot_offset(&self, slot: usize) -> u64 {
        self.ckpt_offset + self.ckpt_slot_bytes * (slot as u64 & 1)
    }

    /// Number of 4 KiB blocks in the metadata log ring.
    pub fn metalog_blocks(&self) -> u64 {
        self.metalog_bytes / BLOCK_BYTES_U64
    }

    /// Byte offset of the log block that holds sequence number `seq`.
    pub fn metalog_block_offset(&self, seq: u64) -> u64 {
        self.metalog_offset + (seq % self.metalog_blocks()) * BLOCK_BYTES_U64
    }

    /// Byte offset of region `index`.
    pub fn region_offset(&self, index: u32) -> u64 {
        self.regions_offset + u64::from(index) * self.region_bytes
    }

    /// 4 KiB blocks per region, the header block included.
    pub fn region_blocks(&self) -> u32 {
        (self.region_bytes / BLOCK_BYTES_U64) as u32
    }
}

/// Everything a superblock says, parsed and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuperblockInfo {
    pub version: FormatVersion,
    pub clean: bool,
    pub sb_seq: u64,
    pub uuid: [u8; 16],
    pub geometry: Geometry,
    pub created_unix_secs: u64,
    pub tag: String,
    /// Every log block up to this seq was durable when this copy was
    /// written (0: not known). A block at or below it that does not
    /// verify was damaged after it was flushed, not torn by a crash.
    pub durable_log_seq: u64,
}

impl Superblock {
    /// Build a superblock for `info` with its crc filled in.
    pub fn new(info: &SuperblockInfo) -> Superblock {
        let g = &info.geometry;
        let mut tag = [0u8; 32];
        for (dst, src) in tag.iter_mut().zip(info.tag.as_bytes()) {
            *dst = *src;
        }
        let mut sb = Superblock {
            magic: SUPERBLOCK_MAGIC.into(),
            format_version: (info.version as u32).into(),
            flags: if info.clean { SB_FLAG_CLEAN } else { 0 }.into(),
            sb_seq: info.sb_seq.into(),
            uuid: info.uuid,
            device_bytes: g.device_bytes.into(),
            block_bytes: (BLOCK_BYTES as u32).into(),
            region_count: g.region_count.into(),
            region_bytes: g.region_bytes.into(),
            regions_offset: g.regions_offset.into(),
            ckpt_offset: g.ckpt_offset.into(),
            ckpt_slot_bytes: g.ckpt_slot_bytes.into(),
            metalog_offset: g.metalog_offset.into(),
            metalog_bytes: g.metalog_bytes.into(),
            created_unix_secs: info.created_unix_secs.into(),
            tag,
            durable_log_seq: info.durable_log_seq.into(),
            reserved: [0; 3940],
            crc: 0.into(),
        };
        sb.crc = header_crc(sb.as_bytes()).into();
        sb
    }

    /// Parse and validate one superblock copy read from a device of
    /// `actual_device_bytes`.
    pub fn parse(bytes: &[u8], actual_device_bytes: u64) -> Result<SuperblockInfo> {
        const W: &str = "superblock";
        let sb: Superblock = read_prefix(W, bytes)?;
        if sb.magic.get() != SUPERBLOCK_MAGIC {
            return Err(FormatError::BadMagic {
                what: W,
                found: sb.magic.get(),
                expected: SUPERBLOCK_MAGIC,
            });
        }
        check_header_crc(W, sb.as_bytes(), sb.crc.get())?;
        let version = FormatVersion::parse(W, sb.format_version.get())?;
        if sb.block_bytes.get() as usize != BLOCK_BYTES {
            return Err(FormatError::OutOfRange {
                what: W,
                field: "block_bytes",
                value: u64::from(sb.block_bytes.get()),
                why: "must be 4096",
            });
        }
        let geometry = Geometry {
            device_bytes: sb.device_bytes.get(),
            region_count: sb.region_count.get(),
            region_bytes: sb.region_bytes.get(),
            regions_offset: sb.regions_offset.get(),
            ckpt_offset: sb.ckpt_offset.get(),
            ckpt_slot_bytes: sb.ckpt_slot_bytes.get(),
            metalog_offset: sb.metalog_offset.get(),
            metalog_bytes: sb.metalog_bytes.get(),
        };
        geometry.validate(actual_device_bytes)?;
        let tag_len = sb.tag.iter().position(|&b| b == 0).unwrap_or(sb.tag.len());
        let tag = String::from_utf8_lossy(sb.tag.get(..tag_len).unwrap_or(&[])).into_owned();
        Ok(SuperblockInfo {
            version,
            clean: sb.flags.get() & SB_FLAG_CLEAN != 0,
            sb_seq: sb.sb_seq.get(),
            uuid: sb.uuid,
            geometry,
            created_unix_secs: sb.created_unix_secs.get(),
            tag,
            durable_log_seq: sb.durable_log_seq.get(),
        })
    }

    /// Pick the newest valid copy out of the two. Returns the winner and the
    /// error of each copy that failed (for fsck), or both copies' errors
    /// when neither is valid.
    // The large Err is fine here: pick runs once per open, and the two
    // errors are what fsck reports.
    #[allow(clippy::result_large_err)]
    pub fn pick(
        copy_a: &[u8],
        copy_b: &[u8],
        actual_device_bytes: u64,
    ) -> std::result::Result<(SuperblockInfo, [Option<FormatError>; 2]), [FormatError; 2]> {
        let a = Self::parse(copy_a, actual_device_bytes);
        let b = Self::parse(copy_b, actual_device_bytes);
        match (a, b) {
            (Ok(a), Ok(b)) => {
                if a.uuid != b.uuid {
                    // Two valid copies of different caches: trust the newer
                    // but report the other as foreign.
                    let err = Some(FormatError::ForeignUuid { what: "superblock" });
                    return Ok(if b.sb_seq > a.sb_seq {
                        (b, [err, None])
                    } else {
                        (a, [None, err])
                    });
                }
                Ok(if b.sb_seq > a.sb_seq {
                    (b, [None, None])
                } else {
                    (a, [None, None])
                })
            }
            (Ok(a), Err(e)) => Ok((a, [None, Some(e)])),
            (Err(e), Ok(b)) => Ok((b, [Some(e), None])),
            (Err(ea), Err(eb)) => Err([ea, eb]),
        }
    }
}

#[cfg(test)]
// The crate denies unwrap for its parsing code; a test may unwrap.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn info() -> SuperblockInfo {
        SuperblockInfo {
            version: FormatVersion::CURRENT,
            clean: true,
            sb_seq: 7,
            uuid: [9; 16],
            geometry: Geometry::plan(256 << 20, GeometryParams::default()).unwrap(),
            created_unix_secs: 1,
            tag: "test".into(),
            durable_log_seq: 5,
        }
    }

    #[test]
    fn round_trip() {
        let i = info();
        let sb = Superblock::new(&i);
        assert_eq!(Superblock::parse(sb.as_bytes(), 256 << 20).unwrap(), i);
    }

    #[test]
    fn plan_refuses_tiny_device() {
        assert!(matches!(
            Geometry::plan(4 << 20, GeometryParams::default()),
            Err(FormatError::OutOfRange {
                field: "region_count",
                ..
            })
        ));
    }
}
