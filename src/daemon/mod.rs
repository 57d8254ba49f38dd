//! `ringcached`: the cache as a service on a Unix socket.
//!
//! Threads, not tasks: each connection has one thread that reads its
//! frames, starts its reads and, as their I/O completes, checks and
//! answers them (a batch of replies to one writev, the data straight from
//! the I/O buffers). It sleeps in one poll(2) on the socket and the ring
//! its reads went to (the kernel posts a completion from the thread that
//! submitted it, so that thread is the one to reap it), so a read crosses
//! no other thread, pool or queue between the socket and the device and
//! costs no allocation. Per connection, at most
//! [`MAX_INFLIGHT`] reads and 4 MiB of writes are in flight (writes are
//! committed and answered in the order they came); beyond that the daemon
//! stops reading the socket (back-pressure, never a silent drop); other
//! requests are served one at a time, in order, after the reads and
//! writes before them. A frame that is not complete within
//! [`FRAME_TIMEOUT`] closes the connection; other clients are served
//! throughout.
//!
//! Every request is timed, from its frame read whole to its reply handed
//! to the writer, into a latency histogram of its op (`metrics`: atomics,
//! no lock); with `metrics_listen` set, one more thread answers
//! `GET /metrics` over HTTP with them and the counters (`metrics_http`).
//!
//! Peer credentials (SO_PEERCRED) decide which volumes a client may
//! acquire; handles are per connection, so one client can never name
//! another's volumes or cookies. When a client goes away, its accesses are
//! released, its uses ended and its cookies relinquished.

mod callback_ops;
pub mod config;
mod connection;
mod events;
mod frames;
mod handlers;
mod lifecycle;
mod local;
mod local_reads;
mod metrics;
mod metrics_http;
mod reads;
#[cfg(test)]
mod registry_tests;
mod server;
mod writes;

pub use config::{Config, ConfigError};
pub use lifecycle::{ShutdownHandle, run};
pub use local::{Embedded, LocalSession};
pub use server::Daemon;

/// Reads in flight per connection.
pub const MAX_INFLIGHT: usize = 64;
/// How long connections get to finish their requests at shutdown before
/// the daemon closes them (a client that does not read its replies would
/// otherwise hold its connection's threads in a write).
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);
/// Time allowed to receive the rest of a frame once it has begun.
pub const FRAME_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
