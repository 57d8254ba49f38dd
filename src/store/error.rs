//! The store's error type: I/O, corruption and the caller's mistakes kept apart.

use ringcache_ondisk::FormatError;

use crate::io::IoError;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The device failed an I/O.
    #[error(transparent)]
    Io(#[from] IoError),
    /// On-disk structures are damaged beyond what recovery tolerates.
    #[error("corrupt cache: {0}")]
    Corrupt(#[from] FormatError),
    /// The device does not hold a ringcache cache (or holds another thing).
    #[error("not a ringcache cache: {0}")]
    NotACache(String),
    /// No such object (deleted, culled, or never created).
    #[error("no such object")]
    NoSuchObject,
    /// No such volume.
    #[error("no such volume")]
    NoSuchVolume,
    /// An object with this key exists already.
    #[error("object exists")]
    Exists,
    /// A bad argument (key too long, unaligned offset, overflow, ...).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// Every region holds data of objects in use: nothing can be culled.
    #[error("no space: every region holds data of objects in use")]
    NoSpace,
    /// The object was invalidated while the operation ran.
    #[error("stale: the object was invalidated during the operation")]
    Stale,
    /// Persistent device errors: the store accepts nothing more.
    #[error("the cache has failed: {0}")]
    Failed(String),
}

/// Result of store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

pub(super) fn invalid(msg: impl Into<String>) -> StoreError {
    StoreError::Invalid(msg.into())
}
