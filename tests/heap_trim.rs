//! The allocator's free pages go back to the system: pages freed between
//! live chunks (which glibc keeps resident on its own) are released by
//! `heap::release_free_pages`, and the daemon does that every `heap_trim`
//! seconds (never with `heap_trim 0`), counting it in its stats.

mod common;

use std::time::Duration;

use common::daemon::{DaemonProc, stat, write_config};
use ringcache::client::Client;

/// This process's resident memory, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

// What glibc does; another libc's allocator is not asked.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn free_pages_between_live_chunks_are_released() {
    const CHUNK: usize = 4096;
    const CHUNKS: usize = 16 << 10; // 64 MiB
    // On a thread of its own, as the daemon's connections are (its own
    // arena, where glibc returns only the free space at the top).
    let (before, after) = std::thread::spawn(|| {
        let mut chunks: Vec<Vec<u8>> = (0..CHUNKS).map(|i| vec![i as u8 | 1; CHUNK]).collect();
        // Every 64th chunk stays live: 252 KiB free between live ones.
        let mut i = 0;
        chunks.retain(|_| {
            i += 1;
            i % 64 == 0
        });
        let before = rss_kib();
        let released = ringcache::heap::release_free_pages();
        let after = rss_kib();
        assert!(released, "glibc reports that it released nothing");
        // The live chunks are intact.
        assert!(
            chunks
                .iter()
                .all(|c| c.iter().all(|&b| b == c[0] && b & 1 == 1))
        );
        (before, after)
    })
    .join()
    .unwrap();
    assert!(
        before.saturating_sub(after) >= 32 << 10,
        "resident {before} KiB before, {after} KiB after: under 32 MiB of the 63 MiB freed went back"
    );
}

/// The daemon's trim stats `wait` after it accepted a client, with
/// `extra` in its configuration: (trims, microseconds in all, longest).
fn trims_after(extra: &str, wait: Duration) -> (u64, u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), extra);
    let d = DaemonProc::start(dir.path(), &config);
    let mut c = Client::connect(&d.socket).unwrap();
    std::thread::sleep(wait);
    (
        stat(&mut c, "daemon.heap_trims"),
        stat(&mut c, "daemon.heap_trim_us"),
        stat(&mut c, "daemon.heap_trim_us_most"),
    )
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn the_daemon_trims_every_heap_trim_seconds_and_never_with_zero() {
    // Housekeeping runs once a second: with heap_trim 1, a trim a pass.
    let wait = Duration::from_millis(3500);
    let (trims, us, most) = trims_after("heap_trim 1\n", wait);
    assert!(
        (2..=6).contains(&trims),
        "{trims} trims in {wait:?} after start-up with heap_trim 1 (one a second)"
    );
    assert!(
        most <= us,
        "the longest trim ({most} us) is part of all ({us} us)"
    );
    assert_eq!(
        trims_after("heap_trim 0\n", Duration::from_millis(2500)).0,
        0,
        "heap_trim 0 turns it off"
    );
}
