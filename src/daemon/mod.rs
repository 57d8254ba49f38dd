//! `ringcached`: the cache as a service on a Unix socket.
//!
//! The control plane runs on tokio (one task per connection, a writer task
//! per connection for replies and events); cache operations block on the
//! store's I/O, so they run on tokio's blocking pool. Per connection, at
//! most [`MAX_INFLIGHT`] requests and [`MAX_INFLIGHT_BYTES`] of request
//! data are in flight; beyond that the daemon stops reading the socket
//! (back-pressure, never a silent drop). A frame that is not complete
//! within [`FRAME_TIMEOUT`] closes the connection; other clients are
//! served throughout.
//!
//! Peer credentials (SO_PEERCRED) decide which volumes a client may
//! acquire; handles are per connection, so one client can never name
//! another's volumes or cookies. When a client goes away, its accesses are
//! released, its uses ended and its cookies relinquished.

pub mod config;
mod server;

pub use config::{Config, ConfigError};
pub use server::{Daemon, ShutdownHandle, run};

/// Requests in flight per connection.
pub const MAX_INFLIGHT: usize = 64;
/// Request payload bytes in flight per connection.
pub const MAX_INFLIGHT_BYTES: usize = 32 << 20;
/// Time allowed to receive the rest of a frame once it has begun.
pub const FRAME_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
