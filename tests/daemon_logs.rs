//! What the daemon logs when its stderr is a pipe or a file (journald, a
//! log file), at its default level: no terminal colour codes, and a first
//! start on a new cache file says it formatted one, with no "bad magic"
//! line that reads as if something were wrong (where log replay stopped is
//! news at DEBUG only). A second start on the same cache logs no warning.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::write_config;
use ringcache::client::Client;

/// Starts ringcached on `config` with stderr piped, waits until it serves,
/// shuts it down with SIGTERM and returns what it logged.
fn run_once(dir: &std::path::Path, config: &std::path::Path) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringcached"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let socket = dir.join("rc.sock");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = Client::connect(&socket)
            && c.ping().is_ok()
        {
            break;
        }
        assert!(Instant::now() < deadline, "ringcached did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(child.wait().unwrap().success());
    reader.join().unwrap()
}

#[test]
fn logs_to_a_pipe_have_no_colour_codes_and_a_fresh_start_no_bad_magic() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let first = run_once(dir.path(), &config);
    assert!(
        !first.contains('\u{1b}'),
        "colour codes in a pipe:\n{first}"
    );
    assert!(
        first.contains("formatted a new cache"),
        "a first start says it formatted:\n{first}"
    );
    assert!(
        !first.to_lowercase().contains("magic"),
        "a fresh start reads as if something were wrong:\n{first}"
    );
    for level in [" WARN ", " ERROR "] {
        assert!(!first.contains(level), "{level} on a fresh start:\n{first}");
    }
    let second = run_once(dir.path(), &config);
    assert!(!second.contains('\u{1b}'));
    assert!(!second.contains("formatted a new cache"), "{second}");
    for level in [" WARN ", " ERROR "] {
        assert!(
            !second.contains(level),
            "{level} on a clean restart:\n{second}"
        );
    }
    assert!(second.contains("clean_shutdown=true"), "{second}");
}
