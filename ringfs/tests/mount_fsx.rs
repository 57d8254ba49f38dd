//! fsx (`tests/progs/fsx.c`, written for this project) against a real
//! `ringfs mount` with an embedded cache: reads, writes, truncations,
//! mapped reads and mapped writes checked against a model of the file,
//! 0 integrity failures. CI runs 20,000 operations of two seeds;
//! `RINGFS_FSX_OPS=100000` runs the documented longer one.

mod common;

use std::process::Command;

use common::mount::{MountProc, c_prog, fuse_or_skip};
use common::{ServerProc, dirs};

#[test]
fn fsx_with_mapped_io_finds_no_integrity_failure() {
    if !fuse_or_skip() {
        return;
    }
    let ops: u64 = std::env::var("RINGFS_FSX_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let d = dirs();
    let srv = ServerProc::start(&d.export, &d.state, &[]);
    let img = d.tmp.path().join("a.img").display().to_string();
    let m = MountProc::start(
        srv.addr,
        &d.tmp.path().join("mnt"),
        &["--cache-device", img.as_str(), "--cache-size", "256M"],
        None,
    );
    let fsx = c_prog("fsx", d.tmp.path());
    for seed in [1, 2] {
        let file = m.path(&format!("fsx.{seed}"));
        let out = Command::new(&fsx)
            .args(["-q", "-N", &ops.to_string(), "-S", &seed.to_string()])
            .arg(&file)
            .output()
            .expect("run fsx");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "fsx seed {seed} failed:\n{text}\nmount log:\n{}",
            m.log_text()
        );
        assert!(
            text.contains(&format!("{ops} ops, seed {seed}, 0 failures")),
            "{text}"
        );
        eprintln!("{}", text.trim());
        // The server holds what the model says: fsx's final read went
        // through the mount, this one reads the export directly.
        let via_mount = std::fs::read(&file).expect("read via the mount");
        let on_server = std::fs::read(d.export.join(format!("fsx.{seed}"))).expect("server");
        assert!(via_mount == on_server, "the mount and the server disagree");
    }
    drop(m);
}
