//! ringcache: a userspace cache backend for network filesystems.
//!
//! - [`io`]: one I/O trait and its engines (io_uring, psync, sim).
//! - [`store`]: the crash-safe, checksummed, log-structured object store.
//! - [`bench`]: `ringcache bench`, fio job files run against the store.
#![deny(clippy::unwrap_used)]

pub mod bench;
pub mod cookie;
pub mod io;
pub mod store;
pub mod util;
