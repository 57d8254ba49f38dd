//! `ringcache stat` asks a running daemon for its counters and prints them,
//! as text grouped by prefix or as JSON; with no daemon it fails clearly.

use std::process::Command;

#[test]
fn stat_prints_the_daemons_counters() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("dir {}\nsize 64M\n", dir.path().display());
    let cfg = ringcache::daemon::Config::parse(&text, dir.path()).unwrap();
    let socket = cfg.socket.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let daemon = std::thread::spawn(move || {
        ringcache::daemon::run(cfg, move |h| {
            let _ = tx.send(h);
        })
        .unwrap();
    });
    let handle = rx.recv().unwrap();
    let mut c = ringcache::client::Client::connect(&socket).unwrap();
    let v = c.acquire_volume(b"v", b"").unwrap();
    let _k = c.acquire_cookie(v, b"k", b"", 4096).unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_ringcache"))
        .args(["stat", "--json", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["fscache.cookies"], 1);
    assert_eq!(json["fscache.acquires"], 1);
    assert_eq!(json["daemon.connections"], 2, "this client and the stat");

    let out = Command::new(env!("CARGO_BIN_EXE_ringcache"))
        .args(["stat", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("fscache:") && text.contains("store:") && text.contains("cookies"),
        "{text}"
    );

    drop(c);
    handle.shutdown();
    daemon.join().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ringcache"))
        .args(["stat", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("connecting to the daemon"));
}
