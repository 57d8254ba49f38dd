//! The daemon's metrics, end to end: with `metrics_listen` set, the real
//! `ringcached` answers `GET /metrics` over HTTP with the Prometheus text
//! of its counters and of a latency histogram per request op (counted for
//! the ops the client used, reads answered as their I/O completes
//! included), the `Metrics` op gives the same text over the socket, and
//! other paths, other methods and garbage get an HTTP error or a closed
//! connection while the daemon goes on serving both its socket and its
//! metrics. A daemon whose metrics address is taken does not start, and
//! says why.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::daemon::{DaemonProc, write_config};
use ringcache::client::ReadReply;
use ringcache::proto::Status;

/// A port nobody listens on now (bound, then let go).
fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn daemon_with_metrics() -> (tempfile::TempDir, DaemonProc, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_port();
    let config = write_config(dir.path(), &format!("metrics_listen {addr}\n"));
    let d = DaemonProc::start(dir.path(), &config);
    (dir, d, addr)
}

/// Send `request`, end the sending side, and read until the daemon
/// closes: the whole answer, or what came before an error (a reset counts
/// as a close).
fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                panic!("the daemon neither answered nor closed within 10 s")
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn get(addr: SocketAddr, path: &str) -> String {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: test\r\n\r\n").as_bytes(),
    )
}

/// The value of the sample named `name` (labels included, as written).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_endpoint_serves_latency_histograms_and_counters() {
    let (_dir, mut d, addr) = daemon_with_metrics();
    let mut c = d.client();
    let v = c.acquire_volume(b"vol", b"").unwrap();
    let k = c.acquire_cookie(v, b"obj", b"", 8192).unwrap();
    c.use_cookie(k, true).unwrap();
    assert_eq!(c.write(k, 0, &[7u8; 8192]).unwrap(), Status::Ok);
    for _ in 0..3 {
        assert!(matches!(c.read(k, 0, 8192).unwrap(), ReadReply::Data(_)));
    }

    let reply = get(addr, "/metrics");
    let (head, text) = reply.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(head.contains("Connection: close"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("a Content-Length")
        .parse()
        .unwrap();
    assert_eq!(length, text.len());

    let h = "ringcache_request_duration_seconds";
    assert!(
        text.contains(&format!("# TYPE {h} histogram\n")),
        "no histogram in\n{text}"
    );
    assert!(text.contains(&format!("# HELP {h} ")));
    for (op, n) in [
        ("read", 3.0),
        ("write", 1.0),
        ("acquire_cookie", 1.0),
        ("acquire_volume", 1.0),
        ("hello", 1.0),
    ] {
        let count = sample(text, &format!("{h}_count{{op=\"{op}\"}}"));
        // DaemonProc::start pinged on connections of its own.
        assert!(count >= Some(n), "{op}: _count {count:?} in\n{text}");
        let inf = sample(text, &format!("{h}_bucket{{op=\"{op}\",le=\"+Inf\"}}"));
        assert_eq!(inf, count, "{op}: +Inf bucket and _count");
        let sum = sample(text, &format!("{h}_sum{{op=\"{op}\"}}")).unwrap();
        assert!(sum > 0.0 && sum < 10.0, "{op}: {sum} s");
        let smallest = sample(text, &format!("{h}_bucket{{op=\"{op}\",le=\"5e-06\"}}"));
        assert!(smallest <= count, "{op}");
    }
    assert_eq!(
        sample(text, &format!("{h}_count{{op=\"invalidate\"}}")),
        Some(0.0),
        "unused ops are there at zero"
    );
    // The counters, with HELP and TYPE.
    assert_eq!(sample(text, "ringcache_fscache_acquires_total"), Some(1.0));
    assert!(text.contains("# TYPE ringcache_fscache_acquires_total counter\n"));
    assert!(text.contains("# HELP ringcache_store_reads_total "));
    assert!(sample(text, "ringcache_store_reads_total") >= Some(3.0));
    assert!(text.contains("# TYPE ringcache_space_regions_free gauge\n"));
    assert_eq!(sample(text, "ringcache_fscache_cookies"), Some(1.0));
    assert!(sample(text, "ringcache_daemon_requests_total") >= Some(8.0));

    // The same text over the socket, one scrape later.
    let via_socket = c.metrics().unwrap();
    assert!(
        sample(&via_socket, &format!("{h}_count{{op=\"read\"}}")) >= Some(3.0),
        "{via_socket}"
    );
    assert!(
        sample(&via_socket, &format!("{h}_count{{op=\"metrics\"}}")).is_some(),
        "{via_socket}"
    );
    // And the Metrics op is timed itself, the next time round.
    let again = c.metrics().unwrap();
    assert!(sample(&again, &format!("{h}_count{{op=\"metrics\"}}")) >= Some(1.0));

    // HEAD: the head alone; other paths and methods: errors.
    let reply = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(reply.ends_with("\r\n\r\n"), "no body for HEAD: {reply}");
    assert!(get(addr, "/").starts_with("HTTP/1.1 404 "));
    assert!(get(addr, "/metricsx").starts_with("HTTP/1.1 404 "));
    let reply = exchange(
        addr,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert!(reply.starts_with("HTTP/1.1 405 "), "{reply}");
    assert!(reply.contains("Allow: GET, HEAD\r\n"), "{reply}");

    drop(c);
    assert!(d.terminate(), "clean shutdown with the metrics listener");
    assert!(
        TcpStream::connect(addr).is_err(),
        "the metrics listener went with the daemon"
    );
}

#[test]
fn garbage_on_the_metrics_port_gets_an_error_or_a_close() {
    let (_dir, d, addr) = daemon_with_metrics();
    let big_header = format!(
        "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(16 << 10)
    );
    let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        ("binary", (0..=255u8).cycle().take(3000).collect(), None),
        (
            "a TLS hello",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n".to_vec(),
            Some("400"),
        ),
        ("no version", b"GET /metrics\r\n\r\n".to_vec(), Some("400")),
        (
            "HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            Some("400"),
        ),
        (
            "not UTF-8",
            b"G\xffT /metrics HTTP/1.1\r\n\r\n".to_vec(),
            Some("400"),
        ),
        ("empty lines", b"\r\n\r\n".to_vec(), Some("400")),
        (
            "headers past the limit",
            big_header.into_bytes(),
            Some("431"),
        ),
        ("no end of headers", vec![b'x'; 100 << 10], None),
        ("nothing then close", Vec::new(), None),
    ];
    for (what, bytes, want) in cases {
        let reply = exchange(addr, &bytes);
        match want {
            Some(code) => assert!(
                reply.starts_with(&format!("HTTP/1.1 {code} ")),
                "{what}: {reply:?}"
            ),
            // An HTTP error or nothing at all, as long as it closes.
            None => assert!(
                reply.is_empty() || reply.starts_with("HTTP/1.1 4"),
                "{what}: {reply:?}"
            ),
        }
    }
    // Too slow: the request line never ends; answered 408 (or closed)
    // within the request timeout, not left hanging.
    let t = Instant::now();
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /metr").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reply = String::new();
    let _ = slow.read_to_string(&mut reply);
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 408 "),
        "{reply:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    // A client that connects and goes away at once.
    drop(TcpStream::connect(addr).unwrap());

    // Still serving: the metrics and the socket.
    let reply = get(addr, "/metrics");
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(reply.contains("ringcache_request_duration_seconds_bucket"));
    d.client().ping().unwrap();
}

#[test]
fn a_taken_metrics_address_stops_the_daemon_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config = write_config(dir.path(), &format!("metrics_listen {addr}\n"));
    let out = std::process::Command::new(common::ringcached_bin::path())
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("binding metrics_listen {addr}")),
        "{err}"
    );
    assert!(
        !dir.path().join("rc.sock").exists(),
        "no socket left behind"
    );
}
