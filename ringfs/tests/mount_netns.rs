//! Three hosts: the server and two clients A and B, each in its own
//! network namespace joined by veth pairs the test makes (and removes,
//! also on failure). Each host mounts with `nsenter --net`, so its mount
//! lives in the test's mount namespace and the test's processes play the
//! applications of each host.
//!
//! - mmap coherency, the two-mode test of the AFS fix: on A a process maps
//!   a file and reads a counter in a loop (`tests/progs/mmap_watch.c`); B
//!   changes it 100 times; A must see every change within 1 s. The same
//!   with a reader using `pread()`. The p50 and p99 time to visibility are
//!   printed (`cargo test ... -- --nocapture`).
//! - server restart: kill -9 and start again; the files A has open and
//!   mapped are revalidated, and A's mapping sees B's next change.
//!
//! Without root, `ip`, `nsenter` or /dev/fuse the tests print why and
//! skip; under CI=true they fail.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::mount::{MountProc, c_prog, fuse_or_skip};
use common::netns::{Topology, make_or_skip};
use common::{Dirs, ServerProc, dirs};

/// Dropped in this order: mounts, server, namespaces, directories.
struct Hosts {
    a: MountProc,
    b: MountProc,
    srv: ServerProc,
    topo: Topology,
    d: Dirs,
}

fn addr_for(topo: &Topology, srv: &ServerProc, i: usize) -> SocketAddr {
    format!("{}:{}", topo.server_addr[i], srv.addr.port())
        .parse()
        .expect("an address")
}

fn hosts(tag: &str) -> Option<Hosts> {
    if !fuse_or_skip() {
        return None;
    }
    let topo = make_or_skip(tag, 2)?;
    let d = dirs();
    let srv = ServerProc::spawn(&d.export, &d.state, "0.0.0.0:0", &[], Some(&topo.server_ns));
    let mount = |i: usize, name: &str| {
        let img = d
            .tmp
            .path()
            .join(format!("{name}.img"))
            .display()
            .to_string();
        MountProc::start(
            addr_for(&topo, &srv, i),
            &d.tmp.path().join(name),
            &["--cache-device", img.as_str(), "--cache-size", "256M"],
            Some(&topo.client_ns[i]),
        )
    };
    let a = mount(0, "a");
    let b = mount(1, "b");
    Some(Hosts { a, b, srv, topo, d })
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// A running `mmap_watch`: its `seen VALUE T_NS` lines.
struct Watch {
    child: Child,
    lines: Receiver<String>,
}

impl Watch {
    fn start(prog: &Path, mode: &str, file: &Path, count: u64) -> Watch {
        let mut child = Command::new(prog)
            .arg(mode)
            .arg(file)
            .arg(count.to_string())
            .arg("30000")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mmap_watch");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let w = Watch { child, lines: rx };
        let first = w.lines.recv_timeout(Duration::from_secs(10));
        assert_eq!(first.as_deref(), Ok("ready"), "mmap_watch did not start");
        w
    }

    /// Waits for `seen VALUE` up to `within`; its timestamp.
    fn wait_for(&self, value: u64, within: Duration) -> Option<i128> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let l = self.lines.recv_timeout(left).ok()?;
            let mut w = l.split_whitespace();
            match (w.next(), w.next(), w.next()) {
                (Some("seen"), Some(v), Some(t)) => {
                    let v: u64 = v.parse().expect("a value");
                    let t: i128 = t.parse().expect("a time");
                    if v == value {
                        return Some(t);
                    }
                    assert!(v < value, "mmap_watch saw {v} before {value} was written");
                }
                _ => panic!("mmap_watch said {l:?}"),
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_counter(path: &Path, v: u64) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open on B");
    f.write_all_at(&v.to_le_bytes(), 0).expect("write on B");
}

fn percentile(sorted: &[i128], p: f64) -> i128 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn coherency(mode: &str) {
    let Some(h) = hosts(if mode == "mmap" { "mm" } else { "rd" }) else {
        return;
    };
    let prog = c_prog("mmap_watch", h.d.tmp.path());
    let file_b = h.b.path("counter");
    std::fs::write(&file_b, [0u8; 4096]).expect("create on B");
    let file_a: PathBuf = h.a.path("counter");
    let watch = Watch::start(&prog, mode, &file_a, 100);
    assert!(watch.wait_for(0, Duration::from_secs(5)).is_some());
    let mut lat = Vec::new();
    for v in 1..=100u64 {
        write_counter(&file_b, v);
        let written = now_ns();
        let Some(seen) = watch.wait_for(v, Duration::from_secs(1)) else {
            panic!(
                "{mode}: A did not see change {v} within 1 s\nA: {}\nB: {}",
                h.a.log_text(),
                h.b.log_text()
            );
        };
        lat.push((seen - written).max(0));
    }
    lat.sort_unstable();
    eprintln!(
        "{mode} coherency across hosts: 100/100 changes seen; time to visibility p50 {} us, p99 {} us, max {} us",
        percentile(&lat, 0.5) / 1000,
        percentile(&lat, 0.99) / 1000,
        lat.last().copied().unwrap_or(0) / 1000
    );
    drop(watch);
    drop(h);
}

#[test]
fn mmap_on_a_sees_every_change_made_on_b_within_1s() {
    coherency("mmap");
}

#[test]
fn read_on_a_sees_every_change_made_on_b_within_1s() {
    coherency("read");
}

#[test]
fn a_server_restart_revalidates_open_and_mapped_files() {
    let Some(mut h) = hosts("rs") else {
        return;
    };
    let prog = c_prog("mmap_watch", h.d.tmp.path());
    let file_b = h.b.path("counter");
    std::fs::write(&file_b, [0u8; 4096]).expect("create on B");
    let mapped = Watch::start(&prog, "mmap", &h.a.path("counter"), 10);
    let open = Watch::start(&prog, "read", &h.a.path("counter"), 10);
    write_counter(&file_b, 1);
    assert!(mapped.wait_for(1, Duration::from_secs(1)).is_some());
    assert!(open.wait_for(1, Duration::from_secs(1)).is_some());

    h.srv.kill9();
    h.srv.restart();
    // B's next change, once B is connected again (the write waits for
    // it), must reach A's mapping and A's open file.
    write_counter(&file_b, 2);
    let t = Instant::now();
    assert!(
        mapped.wait_for(2, Duration::from_secs(15)).is_some(),
        "A's mapping did not see B's change after the restart: {}",
        h.a.log_text()
    );
    assert!(
        open.wait_for(2, Duration::from_secs(15)).is_some(),
        "A's open file did not see B's change after the restart"
    );
    eprintln!(
        "after the restart, B's change reached A in {:?}",
        t.elapsed()
    );
    // And coherency goes on as before.
    for v in 3..=10 {
        write_counter(&file_b, v);
        assert!(
            mapped.wait_for(v, Duration::from_secs(1)).is_some(),
            "change {v}"
        );
        assert!(
            open.wait_for(v, Duration::from_secs(1)).is_some(),
            "change {v}"
        );
    }
    let _ = &h.topo;
}
