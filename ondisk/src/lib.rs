//! The on-disk format of a ringcache device, and nothing else.
//!
//! Every structure is a `#[repr(C)]` zerocopy struct of explicit
//! little-endian fields, carries a crc32c, and is checked for its size at
//! compile time. Parsing treats every byte as hostile: each kind of damage is
//! a typed [`FormatError`], never a panic. `docs/FORMAT.md` describes the
//! layout byte by byte and how recovery reads it.
//!
//! Device layout (every offset a multiple of [`BLOCK_BYTES`]):
//!
//! ```text
//! 0            superblock copy A (4 KiB)
//! 4 KiB        superblock copy B (4 KiB)
//! ckpt_offset  checkpoint slot 0, then slot 1 (ckpt_slot_bytes each)
//! metalog      metadata log: a ring of 4 KiB blocks
//! regions      region_count regions of region_bytes each
//! ```
#![forbid(unsafe_code)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub mod checkpoint;
pub mod error;
pub mod metalog;
pub mod record;
pub mod region;
pub mod superblock;
pub mod version;

pub use checkpoint::CheckpointHeader;
pub use error::{FormatError, Result};
pub use metalog::LogBlockHeader;
pub use record::{EntryHeader, Record, RecordIter};
pub use region::RegionHeader;
pub use superblock::{Geometry, Superblock};
pub use version::FormatVersion;

/// The unit of every on-disk offset and of O_DIRECT I/O.
pub const BLOCK_BYTES: usize = 4096;
/// [`BLOCK_BYTES`] as a u64, for offset arithmetic.
pub const BLOCK_BYTES_U64: u64 = BLOCK_BYTES as u64;

/// Longest volume key, in bytes (keys are 1..=this, printable, no '/').
pub const VOLUME_KEY_MAX: usize = 254;
/// Why a volume key breaks the rule for volume keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeKeyError {
    /// Empty or longer than [`VOLUME_KEY_MAX`]: the key's length.
    Length(usize),
    /// A byte outside printable ASCII, a space or a '/'.
    Character,
}

impl core::fmt::Display for VolumeKeyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VolumeKeyError::Length(n) => {
                write!(f, "volume key must be 1..={VOLUME_KEY_MAX} bytes, got {n}")
            }
            VolumeKeyError::Character => {
                f.write_str("volume key must be printable ASCII without '/' or spaces")
            }
        }
    }
}

/// The one rule for volume keys (the store, the cookie layer and the
/// daemon all apply this): 1..=[`VOLUME_KEY_MAX`] bytes of printable ASCII
/// without spaces or '/', so a key can name a directory or a log line
/// safely.
pub fn check_volume_key(key: &[u8]) -> core::result::Result<(), VolumeKeyError> {
    if key.is_empty() || key.len() > VOLUME_KEY_MAX {
        return Err(VolumeKeyError::Length(key.len()));
    }
    if key.iter().any(|&b| !(0x21..0x7f).contains(&b) || b == b'/') {
        return Err(VolumeKeyError::Character);
    }
    Ok(())
}

/// Longest object key, in bytes (keys are opaque bytes, 1..=this).
pub const OBJECT_KEY_MAX: usize = 255;
/// Longest coherency (auxiliary) data, in bytes (0..=this).
pub const AUX_MAX: usize = 255;
/// Most 4 KiB blocks one extent record covers (1 MiB).
pub const MAX_EXTENT_BLOCKS: usize = 256;

/// crc32c of `bytes`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// The crc32c of one 4 KiB data block, seeded with where the block belongs
/// (object, data generation, logical block number), so that a block written
/// for another object or an older generation never verifies.
pub fn block_crc(object_id: u64, object_gen: u64, logical_block: u64, block: &[u8]) -> u32 {
    let mut seed = [0u8; 24];
    let (a, rest) = seed.split_at_mut(8);
    let (b, c) = rest.split_at_mut(8);
    a.copy_from_slice(&object_id.to_le_bytes());
    b.copy_from_slice(&object_gen.to_le_bytes());
    c.copy_from_slice(&logical_block.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&seed), block)
}

/// Round `n` up to a multiple of [`BLOCK_BYTES`], or `None` on overflow.
pub fn round_up_block(n: u64) -> Option<u64> {
    n.checked_add(BLOCK_BYTES_U64 - 1)
        .map(|v| v & !(BLOCK_BYTES_U64 - 1))
}

/// The crc32c of a header: every byte but the trailing 4-byte crc field.
pub(crate) fn header_crc(bytes: &[u8]) -> u32 {
    let body = bytes.get(..bytes.len().saturating_sub(4)).unwrap_or(&[]);
    crc32c::crc32c(body)
}

/// Check a header's stored crc (its last 4 bytes, little-endian).
pub(crate) fn check_header_crc(what: &'static str, bytes: &[u8], stored: u32) -> Result<()> {
    let computed = header_crc(bytes);
    if computed != stored {
        return Err(FormatError::BadChecksum {
            what,
            stored,
            computed,
        });
    }
    Ok(())
}

/// Fixed-size prefix read that turns a short buffer into a typed error.
pub(crate) fn read_prefix<T: zerocopy::FromBytes + zerocopy::KnownLayout + zerocopy::Immutable>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T> {
    T::read_from_prefix(bytes)
        .map(|(t, _)| t)
        .map_err(|_| FormatError::Truncated {
            what,
            need: core::mem::size_of::<T>(),
            have: bytes.len(),
        })
}
