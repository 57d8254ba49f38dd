//! One error type for everything that parsing the on-disk format can reject.
//!
//! Each kind of damage has its own variant so that callers (recovery, fsck)
//! can tell a torn write from a foreign device from a bit flip, and so that
//! each rejection has its own test.

use thiserror::Error;

/// Why some bytes were not accepted as a piece of the on-disk format.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// Fewer bytes than the structure needs.
    #[error("{what}: truncated: need {need} bytes, have {have}")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    /// The magic number is not ours: not a ringcache structure at all.
    #[error("{what}: bad magic {found:#018x} (expected {expected:#018x})")]
    BadMagic {
        what: &'static str,
        found: u64,
        expected: u64,
    },
    /// A format version this build does not know.
    #[error("{what}: unknown format version {version} (this build reads versions 1..={newest})")]
    UnknownVersion {
        what: &'static str,
        version: u32,
        newest: u32,
    },
    /// The stored crc32c does not match the bytes.
    #[error("{what}: checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadChecksum {
        what: &'static str,
        stored: u32,
        computed: u32,
    },
    /// A field holds a value the format does not allow.
    #[error("{what}: {field} = {value} is out of range: {why}")]
    OutOfRange {
        what: &'static str,
        field: &'static str,
        value: u64,
        why: &'static str,
    },
    /// A structure claims space beyond the end of the device.
    #[error("{what}: ends at byte {end}, past the end of the device ({device_bytes} bytes)")]
    PastDevice {
        what: &'static str,
        end: u64,
        device_bytes: u64,
    },
    /// Two areas of the layout claim the same bytes.
    #[error("{what}: overlaps {other}")]
    Overlap {
        what: &'static str,
        other: &'static str,
    },
    /// A valid structure, but written for another cache (another format run).
    #[error("{what}: belongs to another cache (uuid mismatch)")]
    ForeignUuid { what: &'static str },
    /// A record kind this version does not define.
    #[error("unknown record kind {kind}")]
    UnknownRecordKind { kind: u16 },
    /// Two extents of one object cover the same bytes.
    #[error("object {object_id}: extents overlap at logical offset {offset}")]
    OverlappingExtents { object_id: u64, offset: u64 },
}

/// Shorthand for results of on-disk parsing.
pub type Result<T> = std::result::Result<T, FormatError>;
