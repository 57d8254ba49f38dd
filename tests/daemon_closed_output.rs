//! A daemon whose stdout and stderr are gone (a log pipe whose reader
//! exited, a journal that went away) keeps serving and still shuts down
//! cleanly on SIGTERM. Before, the "serving on" line panicked at start
//! with stdout closed, every log line with stderr closed, and a failed
//! log line in the signal thread left the daemon running after SIGTERM.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::write_config;
use ringcache::client::Client;

#[test]
fn sigterm_shuts_down_cleanly_with_stdout_and_stderr_closed() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringcached"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Nobody reads the daemon's output any more.
    drop(child.stdout.take());
    drop(child.stderr.take());
    let socket = dir.path().join("rc.sock");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = Client::connect(&socket)
            && c.ping().is_ok()
        {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the daemon died with its output closed"
        );
        assert!(Instant::now() < deadline, "ringcached did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut c = Client::connect(&socket).unwrap();
    let v = c.acquire_volume(b"vol", b"").unwrap();
    let k = c.acquire_cookie(v, b"k", b"", 4096).unwrap();
    c.use_cookie(k, false).unwrap();
    drop(c);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("SIGTERM did not stop the daemon");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}
