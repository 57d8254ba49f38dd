//! `ringcache stat --format prometheus` prints a running daemon's metrics
//! in the Prometheus text format: a latency histogram per op, counted for
//! the requests made, and the counters with HELP and TYPE lines; the same
//! text the daemon serves on `metrics_listen` (port 0 there: the daemon
//! picks a port and says which). `--format json` is what `--json` prints,
//! `--format text` what no option prints, and `--json` with another
//! `--format` is refused.

use std::io::{Read, Write};
use std::process::{Command, Output};

fn stat(args: &[&str], socket: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringcache"))
        .arg("stat")
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()
        .unwrap()
}

fn stdout_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The value of the sample named `name` (labels included, as written).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn stat_format_prometheus_prints_histograms_and_counters() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "dir {}\nsize 64M\nmetrics_listen 127.0.0.1:0\n",
        dir.path().display()
    );
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
    let k = c.acquire_cookie(v, b"k", b"", 4096).unwrap();
    c.use_cookie(k, false).unwrap();
    c.read(k, 0, 4096).unwrap();
    c.ping().unwrap();
    c.ping().unwrap();

    let out = stdout_of(&stat(&["--format", "prometheus"], &socket));
    let h = "ringcache_request_duration_seconds";
    assert!(out.contains(&format!("# TYPE {h} histogram\n")), "{out}");
    for (op, n) in [
        ("acquire_volume", 1.0),
        ("acquire_cookie", 1.0),
        ("use_cookie", 1.0),
        ("read", 1.0),
        ("ping", 2.0),
    ] {
        let count = sample(&out, &format!("{h}_count{{op=\"{op}\"}}"));
        assert_eq!(count, Some(n), "{op} in\n{out}");
        let inf = sample(&out, &format!("{h}_bucket{{op=\"{op}\",le=\"+Inf\"}}"));
        assert_eq!(inf, Some(n), "{op}");
        assert!(sample(&out, &format!("{h}_sum{{op=\"{op}\"}}")) > Some(0.0));
    }
    assert_eq!(
        sample(&out, &format!("{h}_count{{op=\"flush\"}}")),
        Some(0.0)
    );
    assert!(out.contains("# HELP ringcache_fscache_acquires_total Cookies acquired\n"));
    assert!(out.contains("# TYPE ringcache_fscache_acquires_total counter\n"));
    assert_eq!(sample(&out, "ringcache_fscache_acquires_total"), Some(1.0));
    assert!(out.contains("# TYPE ringcache_daemon_connections gauge\n"));
    assert_eq!(
        sample(&out, "ringcache_daemon_connections"),
        Some(2.0),
        "this client and the stat"
    );
    // Every sample line is `name{labels} value`, every name prefixed.
    for line in out.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').expect(line);
        assert!(name.starts_with("ringcache_"), "{line}");
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }

    // The same text over HTTP, on the port the daemon picked.
    let addr = handle.metrics_addr().expect("metrics_listen was set");
    assert_ne!(addr.port(), 0);
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(
        sample(&reply, &format!("{h}_count{{op=\"ping\"}}")) == Some(2.0),
        "{reply}"
    );

    // --format json is --json; --format text is the default.
    let json: serde_json::Value =
        serde_json::from_str(&stdout_of(&stat(&["--format", "json"], &socket))).unwrap();
    let alias: serde_json::Value =
        serde_json::from_str(&stdout_of(&stat(&["--json"], &socket))).unwrap();
    assert_eq!(json["fscache.acquires"], 1);
    assert_eq!(alias["fscache.acquires"], 1);
    let text = stdout_of(&stat(&["--format", "text"], &socket));
    assert!(
        text.contains("fscache:") && text.contains("  acquires"),
        "{text}"
    );
    let out = stat(&["--json", "--format", "prometheus"], &socket);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let out = stat(&["--format", "xml"], &socket);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("prometheus"));

    drop(c);
    handle.shutdown();
    daemon.join().unwrap();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the metrics listener closed with the daemon"
    );
}
