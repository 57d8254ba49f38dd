//! The cache does its job, through a real `ringcached`: a cold read of a
//! 64 MiB file fetches it from the server, a warm re-read after an
//! unmount and remount fetches 0 bytes (the server counts the data bytes
//! it sends), a 4 KiB change made through another mount is fetched again
//! (one 1 MiB range) and the old bytes are never served; and a
//! `ringcached` killed with SIGKILL under the mount costs applications no
//! error, and caching resumes once it is back.

mod common;

use std::time::{Duration, Instant};

use common::mount::{CacheProc, MountProc, fuse_or_skip, read_direct, server_stat};
use common::{ServerProc, client, dirs};

const MIB: usize = 1 << 20;

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[test]
fn cold_fetches_warm_fetches_nothing_and_a_change_is_fetched_again() {
    if !fuse_or_skip() {
        return;
    }
    let d = dirs();
    let data = pattern(64 * MIB, 1);
    std::fs::write(d.export.join("big"), &data).expect("write the file on the server");
    let srv = ServerProc::start(&d.export, &d.state, &[]);
    let probe = client(srv.addr, "probe");
    let cache = CacheProc::start(&d.tmp.path().join("rc"));
    let sock = cache.socket().display().to_string();
    let cache_args = ["--cache-socket", sock.as_str()];
    let mnt = d.tmp.path().join("a");

    // Cold: the whole file comes from the server.
    let mut a = MountProc::start(srv.addr, &mnt, &cache_args, None);
    let before = server_stat(&probe, "read_bytes");
    let t = Instant::now();
    let got = std::fs::read(a.path("big")).expect("cold read");
    let cold = t.elapsed();
    assert!(got == data, "cold read returned other bytes");
    let cold_bytes = server_stat(&probe, "read_bytes") - before;
    assert!(
        cold_bytes >= data.len() as u64,
        "a cold read of 64 MiB fetched only {cold_bytes} bytes"
    );
    assert!(
        cold_bytes <= data.len() as u64 + 4 * MIB as u64,
        "a cold read fetched {cold_bytes} bytes: ranges fetched twice"
    );
    assert!(a.stop(), "clean unmount: {}", a.log_text());
    assert!(
        !common::mount::is_mounted(&mnt),
        "SIGTERM unmounts before the process exits"
    );

    // Warm: unmounted and mounted again, nothing is fetched.
    let mut a = MountProc::start(srv.addr, &mnt, &cache_args, None);
    let before = server_stat(&probe, "read_bytes");
    let t = Instant::now();
    let got = std::fs::read(a.path("big")).expect("warm read");
    let warm = t.elapsed();
    assert!(got == data, "warm read returned other bytes");
    assert_eq!(
        server_stat(&probe, "read_bytes") - before,
        0,
        "a warm re-read fetched from the server"
    );
    eprintln!("64 MiB: cold {cold:?}, warm {warm:?} (fetched {cold_bytes} bytes cold, 0 warm)");

    // B changes 4 KiB in the middle; A reads that range past its page
    // cache: one 1 MiB range is fetched, and the bytes are B's.
    let b_img = d.tmp.path().join("b.img").display().to_string();
    let b = MountProc::start(
        srv.addr,
        &d.tmp.path().join("b"),
        &["--cache-device", b_img.as_str(), "--cache-size", "256M"],
        None,
    );
    let at = 37 * MIB + 8192;
    let new = pattern(4096, 2);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(b.path("big"))
            .expect("open on B");
        f.write_all_at(&new, at as u64).expect("write on B");
    }
    let before = server_stat(&probe, "read_bytes");
    let seen = read_direct(&a.path("big"), at as u64, 4096).expect("read on A");
    assert!(seen == new, "A served the old bytes after B's change");
    let fetched = server_stat(&probe, "read_bytes") - before;
    assert_eq!(
        fetched, MIB as u64,
        "A fetched {fetched} bytes for one range"
    );
    let mut expect = data.clone();
    expect[at..at + 4096].copy_from_slice(&new);
    let all = std::fs::read(a.path("big")).expect("read on A");
    assert!(all == expect, "A's whole file is not B's version");
    drop(b);
    assert!(a.stop(), "clean unmount: {}", a.log_text());
}

#[test]
fn ringcached_killed_under_the_mount_costs_no_error_and_caching_resumes() {
    if !fuse_or_skip() {
        return;
    }
    let d = dirs();
    let data = pattern(8 * MIB, 3);
    std::fs::write(d.export.join("f"), &data).expect("write");
    let srv = ServerProc::start(&d.export, &d.state, &[]);
    let probe = client(srv.addr, "probe");
    let rc_dir = d.tmp.path().join("rc");
    let mut cache = CacheProc::start(&rc_dir);
    let sock = cache.socket().display().to_string();
    let mut a = MountProc::start(
        srv.addr,
        &d.tmp.path().join("a"),
        &["--cache-socket", sock.as_str()],
        None,
    );
    let path = a.path("f");
    assert!(read_direct(&path, 0, 8 * MIB).expect("read") == data);

    // Killed, reads keep working: every one goes to the server.
    cache.kill9();
    for round in 0..3 {
        for i in 0..8 {
            let off = i * MIB;
            let got = read_direct(&path, off as u64, MIB).expect("a read with the cache gone");
            assert!(got[..] == data[off..off + MIB], "round {round}, MiB {i}");
        }
    }
    std::fs::write(a.path("g"), b"written while the cache is down").expect("write");
    assert_eq!(
        std::fs::read(d.export.join("g")).expect("on the server"),
        b"written while the cache is down"
    );

    // Back: once the mount is connected again (it tries once a second),
    // reads are cached again: a second read of a range fetches nothing.
    let cache = CacheProc::start(&rc_dir);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        std::thread::sleep(Duration::from_millis(1100));
        let off = 5 * MIB;
        assert!(read_direct(&path, off as u64, MIB).expect("read")[..] == data[off..off + MIB]);
        let before = server_stat(&probe, "read_bytes");
        assert!(read_direct(&path, off as u64, MIB).expect("read")[..] == data[off..off + MIB]);
        if server_stat(&probe, "read_bytes") == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "20 s after ringcached came back reads still go to the server: {}",
            a.log_text()
        );
    }
    assert!(a.stop(), "clean unmount: {}", a.log_text());
    drop(cache);
}
