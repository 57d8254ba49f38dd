//! A cache device opened read-only for the offline tools, mapped into
//! memory, and an [`IoEngine`] over the map so that the store's own
//! `store::load` rebuilds the index from it (the tools never carry a second
//! parser of the format).
//!
//! Opening takes the device's lock in shared mode (`io::open_device` with
//! `read_only`). A running `ringcached` holds it exclusively, so the tools
//! refuse a cache in use instead of reading it while it changes, and a
//! daemon cannot start on it while a tool reads it.
//!
//! The one module of the crate allowed `unsafe` (see `lib.rs`): the map.

use std::fs::File;
use std::path::Path;

use memmap2::{Mmap, MmapOptions};
use ringcache::io::{Completion, CompletionQueue, IoBuf, IoEngine, IoError, Op, OpKind};
use ringcache_ondisk::BLOCK_BYTES_U64;

/// Why a device could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// Another process (a daemon) holds the cache open for writing.
    Busy(String),
    /// Anything else: missing, permissions, empty.
    Other(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Busy(s) | OpenError::Other(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for OpenError {}

/// A device mapped read-only, with its shared lock held for as long as the
/// value lives.
pub struct Device {
    map: Mmap,
    device_bytes: u64,
    // Declared after `map`: fields drop in order, so the map goes before
    // the file (and its lock) does.
    _file: File,
}

impl Device {
    /// Open `path` read-only under a shared lock and map all of it.
    pub fn open(path: &Path) -> Result<Device, OpenError> {
        let (file, device_bytes, _direct) =
            ringcache::io::open_device(path, true).map_err(|e| {
                if e.kind() == std::io::ErrorKind::ResourceBusy {
                    OpenError::Busy(format!(
                        "{} is in use: another process holds it open for writing \
                     (is a ringcached running on it?). inspect and fsck read a cache \
                     offline only; stop the daemon first",
                        path.display()
                    ))
                } else {
                    OpenError::Other(format!("cannot open {}: {e}", path.display()))
                }
            })?;
        if device_bytes == 0 {
            return Err(OpenError::Other(format!(
                "{} is empty (0 bytes): not a ringcache cache",
                path.display()
            )));
        }
        let len = usize::try_from(device_bytes).map_err(|_| {
            OpenError::Other(format!(
                "{} is too large to map on this machine",
                path.display()
            ))
        })?;
        // SAFETY: the map is read-only (PROT_READ, MAP_SHARED) over a file we
        // hold open under a shared lock (`open_device` with read_only took
        // flock(LOCK_SH) and fails while anyone holds LOCK_EX). Every writer
        // of a ringcache device (ringcached, `ringcache format`) takes the
        // exclusive lock first, so no cooperating process writes to or
        // truncates the device while this map lives; the lock is released
        // only when `_file` drops, after `map`. The length comes from
        // seeking to the end of this same file (block devices report no
        // length in their metadata). A process that ignores the lock and
        // truncates the file could still make a read fault (SIGBUS); that is
        // outside what a file lock can prevent and is no memory unsafety
        // in this process's Rust data.
        let map = unsafe { MmapOptions::new().len(len).map(&file) }
            .map_err(|e| OpenError::Other(format!("cannot map {}: {e}", path.display())))?;
        Ok(Device {
            map,
            device_bytes,
            _file: file,
        })
    }

    /// Size of the device in bytes.
    // No is_empty: `open` refuses a device of 0 bytes, so it would always
    // say false.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u64 {
        self.device_bytes
    }

    /// `len` bytes at `offset`, or `None` past the end of the device.
    pub fn bytes(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        self.map.get(start..end)
    }

    /// Up to `len` bytes at `offset`: fewer where the device ends first.
    pub fn bytes_clamped(&self, offset: u64, len: u64) -> &[u8] {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.map.len());
        let end = start
            .saturating_add(usize::try_from(len).unwrap_or(usize::MAX))
            .min(self.map.len());
        self.map.get(start..end).unwrap_or(&[])
    }

    fn execute(&self, op: &mut Op) -> Result<usize, IoError> {
        match op.kind {
            OpKind::Read => {}
            OpKind::Write | OpKind::Flush => {
                return Err(IoError::BadRequest(
                    "the device is open read-only (offline tools never write)".into(),
                ));
            }
        }
        let len = op.buf.len() as u64;
        if !op.offset.is_multiple_of(BLOCK_BYTES_U64) || !len.is_multiple_of(BLOCK_BYTES_U64) {
            return Err(IoError::BadRequest(format!(
                "offset {} length {len} not 4096-aligned",
                op.offset
            )));
        }
        let src = self.bytes(op.offset, len).ok_or_else(|| {
            IoError::BadRequest(format!(
                "offset {} length {len} past the device end {}",
                op.offset, self.device_bytes
            ))
        })?;
        op.buf.copy_from_slice(src);
        Ok(src.len())
    }
}

impl IoEngine for Device {
    fn name(&self) -> &'static str {
        "mmap"
    }

    fn device_bytes(&self) -> u64 {
        self.device_bytes
    }

    fn submit(&self, ops: &mut Vec<Op>, cq: &CompletionQueue) {
        for mut op in ops.drain(..) {
            let result = self.execute(&mut op);
            cq.push(Completion {
                tag: op.tag,
                result,
                buf: op.buf,
            });
        }
    }

    fn alloc(&self, len: usize) -> IoBuf {
        IoBuf::new(len)
    }
}
