//! Where the `ringcached` binary is, for the tests and benches that start
//! the real daemon.
//!
//! The core package's own tests get it from cargo, which builds a
//! package's binaries for its tests and names them in
//! `CARGO_BIN_EXE_<name>`. The tools package (its bench tests, `vs-fio`)
//! gets no such variable for another package's binary, so there it is built
//! here, with the cargo that runs the test, into the same target directory
//! and profile; cargo holds no lock on the target directory while tests or
//! benches run, and a binary that is up to date costs only cargo's check.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `ringcached` binary of this build, built first if need be.
pub fn path() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_ringcached") {
        return PathBuf::from(p);
    }
    // This executable is TARGET_DIR/PROFILE_DIR/deps/NAME-HASH, and cargo
    // puts binaries in TARGET_DIR/PROFILE_DIR.
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("a test executable lives in PROFILE_DIR/deps");
    let target_dir = profile_dir
        .parent()
        .expect("PROFILE_DIR is inside the target directory");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => panic!("unexpected profile directory {}", profile_dir.display()),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", "ringcache", "--bin", "ringcached"])
        .args(["--profile", profile])
        .arg("--target-dir")
        .arg(target_dir)
        .status()
        .expect("running cargo to build ringcached");
    assert!(status.success(), "cargo could not build ringcached");
    let bin = profile_dir.join("ringcached");
    assert!(bin.is_file(), "no ringcached at {}", bin.display());
    bin
}
