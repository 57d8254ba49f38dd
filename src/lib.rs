//! ringcache: a userspace cache backend for network filesystems.
//!
//! - [`io`]: one I/O trait and its engines (io_uring, psync, sim): the
//!   `ringcache-io` crate.
//! - [`store`]: the crash-safe, checksummed, log-structured object store.
//! - [`cookie`]: the fscache cookie layer over the store.
//! - [`callback`]: AFS-style callback promises and breaks over the cookie layer.
//! - [`daemon`]: `ringcached`, the cache as a service on a Unix socket.
//! - [`proto`] and [`client`]: the socket protocol and its client library.
//! - [`heap`]: giving the allocator's free pages back (the daemon's
//!   periodic `malloc_trim`).
//!
//! The admin tool and `ringcache bench` are the `ringcache-tools` crate.
// Unsafe code lives in the io_uring engine (the `ringcache-io` crate's
// `uring`, allowed there by name) and, here, only in `heap`: its one
// call into glibc's allocator, allowed by name.
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod callback;
pub mod client;
pub mod cookie;
pub mod daemon;
#[allow(unsafe_code)]
pub mod heap;
pub use ringcache_io as io;
pub mod proto;
pub mod store;
pub mod util;
