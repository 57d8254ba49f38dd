//! Helpers shared by the tools' tests: cache images built through the
//! store on the sim engine, written to temp files, damaged on purpose, and
//! the built `ringcache` binary run over them.
#![allow(dead_code)]

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use ringcache::io::IoEngine;
use ringcache::io::sim::{SimEngine, SimFaults};
use ringcache::store::{FormatOptions, Loaded, Store, StoreConfig, format, load};
use ringcache_ondisk::superblock::GeometryParams;
use serde_json::Value;

/// 64 regions of 64 KiB (15 data blocks each), a 16-block log and 256 KiB
/// checkpoint slots: small enough to build in milliseconds.
pub fn small_geometry() -> GeometryParams {
    GeometryParams {
        region_bytes: Some(64 << 10),
        metalog_bytes: Some(64 << 10),
        ckpt_slot_bytes: Some(256 << 10),
    }
}

/// Device bytes that fit [`small_geometry`] with 64 regions.
pub const SMALL_DEVICE: u64 = (1 << 20) + 64 * (64 << 10);

/// The binary key of the object `beta` (not printable: shown as hex).
pub const BETA_KEY: &[u8] = &[0, 1, 2, 0xff];

/// Deterministic content.
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i * 7 % 251) as u8))
        .collect()
}

/// A freshly formatted sim device (nothing opened yet).
pub fn formatted() -> Arc<SimEngine> {
    let sim = Arc::new(SimEngine::new(SMALL_DEVICE, SimFaults::default()));
    format(
        sim.as_ref(),
        &FormatOptions {
            tag: "tools-test".into(),
            geometry: small_geometry(),
            force: false,
        },
    )
    .expect("format");
    sim
}

/// Volume `vol1` with `alpha` (40000 bytes, all cached) and `beta` (binary
/// key, 8192 bytes, coherency data "v1"); volume `vol2` with `gamma`
/// (100000 bytes, the first 65536 cached, across two regions).
pub fn populate(store: &Store) {
    let v1 = store.volume(b"vol1", true).expect("vol1");
    let v2 = store.volume(b"vol2", true).expect("vol2");
    let a = store.create(v1, b"alpha", b"", 40_000).expect("alpha");
    store.write(a, 0, &pattern(1, 40_000)).expect("write alpha");
    let b = store.create(v1, BETA_KEY, b"v1", 8192).expect("beta");
    store.write(b, 0, &pattern(2, 8192)).expect("write beta");
    let g = store
        .create(v2, b"gamma", b"\x01\x02", 100_000)
        .expect("gamma");
    store.write(g, 0, &pattern(3, 65_536)).expect("write gamma");
}

/// A populated cache, closed cleanly.
pub fn clean_image() -> Vec<u8> {
    let sim = formatted();
    let store = Store::open(sim.clone(), StoreConfig::default()).expect("open");
    populate(&store);
    store.close().expect("close");
    sim.current_image()
}

/// A populated cache left open (as after a crash, with every write
/// flushed): the metadata log after the last checkpoint holds two blocks,
/// the first with the volumes and objects, the second with one more
/// object.
pub fn unclean_image() -> Vec<u8> {
    unclean_after(false)
}

/// As [`unclean_image`], then one more periodic flush, which records in
/// the superblock that the log is durable through its last block: the
/// image of a daemon killed a second after its last write.
pub fn durable_image() -> Vec<u8> {
    unclean_after(true)
}

/// Populated, `delta` written, two flushes (and with `periodic_flush` the
/// flush that writes the durable log mark), then dropped without close.
fn unclean_after(periodic_flush: bool) -> Vec<u8> {
    let sim = formatted();
    let store = Store::open(sim.clone(), StoreConfig::default()).expect("open");
    populate(&store);
    store.flush().expect("flush 1");
    let v1 = store.volume(b"vol1", false).expect("vol1");
    let d = store.create(v1, b"delta", b"", 4096).expect("delta");
    store.write(d, 0, &pattern(4, 4096)).expect("write delta");
    store.flush().expect("flush 2");
    if periodic_flush {
        assert!(
            store.flush_if_dirty().expect("flush 3"),
            "the durable log seq still had to be written"
        );
    }
    let image = sim.current_image();
    // The store is dropped without close: the superblock stays unclean.
    drop(store);
    image
}

/// The index recovery rebuilds from `image` (through the store itself).
pub fn load_image(image: &[u8]) -> Loaded {
    let sim: Arc<dyn IoEngine> =
        Arc::new(SimEngine::from_image(image.to_vec(), SimFaults::default()));
    load(sim.as_ref()).expect("load")
}

/// `image` in a new temp file.
pub fn temp_image(image: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(image).expect("write image");
    f.flush().expect("flush image");
    f
}

/// Flip one bit of the file at `offset`.
pub fn flip_bit(path: &Path, offset: u64, bit: u8) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open image");
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.read_exact(&mut b).expect("read byte");
    b[0] ^= 1 << bit;
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.write_all(&b).expect("write byte");
}

/// What one run of the binary gave.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Run `ringcache ARGS`.
pub fn ringcache(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_ringcache"))
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("run ringcache");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        !run.stderr.contains("panicked"),
        "ringcache {args:?} panicked: {}",
        run.stderr
    );
    assert!(
        (0..=2).contains(&run.code),
        "ringcache {args:?} exited with {} (killed by a signal?): {}",
        run.code,
        run.stderr
    );
    run
}

/// `ringcache fsck --json PATH`: the exit code and the parsed report.
pub fn fsck(path: &Path) -> (i32, Value) {
    let p = path.to_str().expect("utf-8 temp path");
    let run = ringcache(&["fsck", "--json", p]);
    let v: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("fsck --json is not JSON ({e}): {}", run.stdout));
    assert_eq!(
        v["exit_code"].as_i64(),
        Some(i64::from(run.code)),
        "exit_code in the report"
    );
    // The text report runs the same checks and must agree.
    let text = ringcache(&["fsck", p]);
    assert_eq!(text.code, run.code, "text and JSON fsck disagree");
    (run.code, v)
}

/// The findings of `report` of `severity` about `structure`.
pub fn findings<'a>(report: &'a Value, severity: &str, structure: &str) -> Vec<&'a Value> {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["severity"] == severity && f["structure"] == structure)
        .collect()
}

/// Every view of `inspect` on `path` runs without crashing; returns the
/// exit code of the summary.
pub fn inspect_survives(path: &Path) -> i32 {
    let p = path.to_str().expect("utf-8 temp path");
    let code = ringcache(&["inspect", p, "--json"]).code;
    for view in [
        &["volumes"][..],
        &["objects"],
        &["regions"],
        &["region", "0"],
    ] {
        let mut args = vec!["inspect", p];
        args.extend_from_slice(view);
        args.push("--json");
        let r = ringcache(&args);
        assert_eq!(r.code, code, "inspect {view:?} and the summary disagree");
    }
    code
}

/// (slot, device offset of the slot, its header) of the checkpoint
/// recovery loads from `image`.
pub fn loaded_checkpoint(
    image: &[u8],
) -> (usize, u64, ringcache_ondisk::checkpoint::CheckpointInfo) {
    let l = load_image(image);
    let g = l.sb.geometry;
    let slot = l.ckpt_slot.expect("a valid checkpoint");
    let off = g.ckpt_slot_offset(slot);
    let head = &image[off as usize..off as usize + 4096];
    let info = ringcache_ondisk::CheckpointHeader::parse(head, &l.sb.uuid, g.ckpt_slot_bytes)
        .expect("checkpoint header");
    (slot, off, info)
}

/// Run fsck on `image` damaged by `damage` (given the temp file's path) and
/// check: the exit code, at least one finding of `severity` about
/// `structure`, and that every inspect view survives. Returns the report.
pub fn fsck_damaged(
    image: &[u8],
    damage: impl FnOnce(&Path),
    want_code: i32,
    severity: &str,
    structure: &str,
) -> Value {
    let f = temp_image(image);
    damage(f.path());
    let (code, report) = fsck(f.path());
    assert_eq!(code, want_code, "fsck exit code: {report:#}");
    assert!(
        !findings(&report, severity, structure).is_empty(),
        "no {severity} finding about {structure}: {report:#}"
    );
    inspect_survives(f.path());
    report
}

// The core's helpers for starting the real daemon, shared with its tests
// rather than copied (`target=daemon` runs through it).
#[path = "../../../tests/common/daemon.rs"]
pub mod daemon;
#[path = "../../../tests/common/ringcached_bin.rs"]
pub mod ringcached_bin;
