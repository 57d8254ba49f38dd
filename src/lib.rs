//! ringcache: a userspace cache backend for network filesystems.
//!
//! - [`io`]: one I/O trait and its engines (io_uring, psync, sim).
//! - [`store`]: the crash-safe, checksummed, log-structured object store.
//! - [`cookie`]: the fscache cookie layer over the store.
//! - [`daemon`]: `ringcached`, the cache as a service on a Unix socket.
//! - [`proto`] and [`client`]: the socket protocol and its client library.
//!
//! The admin tool and `ringcache bench` are the `ringcache-tools` crate.
#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod client;
pub mod cookie;
pub mod daemon;
pub mod io;
pub mod proto;
pub mod store;
pub mod util;
