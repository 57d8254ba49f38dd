//! Giving the allocator's free pages back to the system.
//!
//! The daemon runs one thread per connection, and glibc gives threads
//! arenas of their own (up to eight per core). Memory a connection frees
//! stays in its arena; glibc returns only the free space at the top of an
//! arena, so with a thousand connections allocating and freeing, the free
//! pages between live chunks add up and resident memory creeps upward
//! while the live heap stays flat (seen in the soak: 193 MiB in use
//! throughout, the arenas' system bytes 222 -> 234 MiB in four minutes).
//! `malloc_trim(0)` releases every whole free page of every arena
//! (`madvise(MADV_DONTNEED)`); live chunks are untouched.
//!
//! This module is the core crate's one place allowed `unsafe` (by name,
//! in `lib.rs`): the one call into the C library's allocator.

/// Whether [`release_free_pages`] does anything here (glibc on Linux).
pub const SUPPORTED: bool = cfg!(all(target_os = "linux", target_env = "gnu"));

/// Release the free pages of every glibc arena; whether any were released.
/// Elsewhere (another libc) nothing is done.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn release_free_pages() -> bool {
    // SAFETY: malloc_trim takes no pointers and is MT-safe (malloc_trim(3)):
    // glibc locks each arena while it walks it, as for every other
    // allocator call, and only gives back pages of free chunks; no live
    // allocation is moved or freed, so no Rust reference is invalidated.
    let released = unsafe { libc::malloc_trim(0) };
    released != 0
}

/// Release the free pages of every glibc arena; whether any were released.
/// Elsewhere (another libc) nothing is done.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_pages() -> bool {
    false
}
