//! The format version and its changelog.
//!
//! Changelog (never reuse a number; never reuse a retired field):
//! - 1: first format. Two superblock copies, two checkpoint slots, a ring
//!   metadata log of 4 KiB blocks, fixed-size data regions with a header
//!   block and per-4-KiB-block crc32c kept in extent records.
//!   Later in 1, without a new number because older readers ignore it
//!   (they read it as reserved zero and write zero): the superblock's
//!   `durable_log_seq` at byte 144, 0 meaning "not known".

use crate::error::{FormatError, Result};

/// Every format version this build can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum FormatVersion {
    /// The first format (ringcache 0.1).
    V1 = 1,
}

impl FormatVersion {
    /// The version new caches are formatted with.
    pub const CURRENT: FormatVersion = FormatVersion::V1;

    /// Parse a stored version, naming the structure in the error.
    pub fn parse(what: &'static str, version: u32) -> Result<Self> {
        match version {
            1 => Ok(FormatVersion::V1),
            _ => Err(FormatError::UnknownVersion {
                what,
                version,
                newest: FormatVersion::CURRENT as u32,
            }),
        }
    }
}

impl TryFrom<u32> for FormatVersion {
    type Error = FormatError;
    fn try_from(v: u32) -> Result<Self> {
        Self::parse("format", v)
    }
}
