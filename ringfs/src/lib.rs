//! ringfs: a network file system over ringcache. This crate holds the wire
//! protocol (`docs/RINGFS.md`), the file server (`ringfs serve`), the
//! client library that connects, reconnects, resends and hands breaks to
//! its user, and the FUSE client cached by ringcache (`ringfs mount`).

#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod client;
pub mod mount;
pub mod server;
pub mod wire;
