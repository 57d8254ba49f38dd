//! ringcache-tools: what the `ringcache` admin tool does, as a library
//! (the binary, `main.rs`, is its command line).
//!
//! - [`bench`]: `ringcache bench`, fio job files run against the store or
//!   through a running daemon (the `vs-fio` bench drives it too).
//! - [`inspect`] and [`fsck`]: an offline cache read as recovery would read
//!   it, and every checksum and the index verified.
//! - [`device`]: the read-only memory map those two read through, and the
//!   crate's only `unsafe`.
//! - [`text`]: how the tools print keys, uuids, times and sizes.
//! - [`guard`]: the store's loader run so that a panic in it is a message.
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod bench;
// The one exception to deny(unsafe_code): memmap2's map call is unsafe,
// because another process could change or truncate the file under the map;
// the shared lock the device is opened under rules that out for every
// cooperating writer, as the block's SAFETY comment spells out.
#[allow(unsafe_code)]
pub mod device;
pub mod fsck;
pub mod guard;
pub mod inspect;
pub mod text;
