//! `GET /metrics` over plain HTTP/1.1, on the TCP address of
//! `metrics_listen`: one thread accepts connections and answers one
//! request on each, then closes it.
//!
//! A request is read whole before it is answered: its request line and
//! headers, [`MAX_REQUEST_BYTES`] at most, within [`REQUEST_TIMEOUT`]; the
//! reply gets [`REPLY_TIMEOUT`] to go out. Bytes from the network are
//! hostile: anything that is not a well-formed HTTP/1.x request line gets
//! `400 Bad Request`, a request too large `431`, one too slow `408`, a
//! method other than GET and HEAD `405`, any path but `/metrics` `404`,
//! and every connection is closed after its answer. One slow client holds
//! the thread for those timeouts at most; scrapes are rare, and a thread
//! per scrape would let a flood of connections cost threads.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::lifecycle::Lifecycle;
use super::metrics::CONTENT_TYPE;
use super::server::Daemon;

/// Bytes of a request's line and headers read at most.
pub(super) const MAX_REQUEST_BYTES: usize = 8 << 10;
/// Time a client gets to send its request line and headers.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Time a client gets to take the whole reply.
pub(super) const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long, and how many bytes, the connection is drained after the
/// reply: closing a socket with unread bytes resets it, and a reset can
/// make the client lose the reply it has not read yet.
const LINGER: Duration = Duration::from_millis(200);
const LINGER_BYTES: usize = 64 << 10;

/// Accept and answer connections until shutdown begins (`Lifecycle::stop`
/// shuts the listener down, which wakes the accept).
pub(super) fn serve(d: &Daemon, listener: &TcpListener, life: &Lifecycle) {
    for stream in listener.incoming() {
        if life.stopping() {
            break;
        }
        match stream {
            Ok(s) => answer(d, s),
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                // Out of descriptors, say: do not spin.
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Why a request gets no metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Not an HTTP/1.x request line.
    Malformed,
    /// No end of the headers within [`MAX_REQUEST_BYTES`].
    TooLarge,
    /// No end of the headers within [`REQUEST_TIMEOUT`].
    Timeout,
    /// The client closed (or the connection failed) before its request
    /// was whole: nobody to answer.
    Gone,
}

/// What a well-formed request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Metrics { head_only: bool },
    NotFound,
    MethodNotAllowed,
}

fn answer(d: &Daemon, mut s: TcpStream) {
    let request = read_request(&mut s);
    let (status, extra, body, head_only): (&str, &str, String, bool) = match request {
        Ok(Route::Metrics { head_only }) => ("200 OK", "", d.metrics_text(), head_only),
        Ok(Route::NotFound) => (
            "404 Not Found",
            "",
            "not found: the metrics are at /metrics\n".into(),
            false,
        ),
        Ok(Route::MethodNotAllowed) => (
            "405 Method Not Allowed",
            "Allow: GET, HEAD\r\n",
            "only GET and HEAD are served\n".into(),
            false,
        ),
        Err(Refusal::Malformed) => ("400 Bad Request", "", "bad request\n".into(), false),
        Err(Refusal::TooLarge) => (
            "431 Request Header Fields Too Large",
            "",
            "request too large\n".into(),
            false,
        ),
        Err(Refusal::Timeout) => (
            "408 Request Timeout",
            "",
            "request too slow\n".into(),
            false,
        ),
        Err(Refusal::Gone) => return,
    };
    if let Err(why) = request {
        tracing::debug!(?why, "metrics: request refused");
    }
    let content_type = if status.starts_with("200") {
        CONTENT_TYPE
    } else {
        "text/plain; charset=utf-8"
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    let deadline = Instant::now() + REPLY_TIMEOUT;
    let sent = write_all_by(&mut s, head.as_bytes(), deadline).and_then(|()| {
        if head_only {
            Ok(())
        } else {
            write_all_by(&mut s, body.as_bytes(), deadline)
        }
    });
    if let Err(e) = sent {
        tracing::debug!(error = %e, "metrics: the reply did not go out");
        return;
    }
    linger(&mut s);
}

/// Write all of `bytes` by `deadline` (a socket timeout bounds one write
/// only; a client that takes a byte at a time would stretch it).
fn write_all_by(s: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> std::io::Result<()> {
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        s.set_write_timeout(Some(left))?;
        match s.write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Close gracefully: end our side, then take what the client still sends
/// (bounded in time and bytes) so that the close does not reset the
/// connection under a reply it has not read.
fn linger(s: &mut TcpStream) {
    if s.shutdown(Shutdown::Write).is_err() || s.set_read_timeout(Some(LINGER)).is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    let mut buf = [0u8; 4096];
    let mut drained = 0;
    while drained < LINGER_BYTES && Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

/// Read a request's line and headers and say what it asks for.
fn read_request(s: &mut TcpStream) -> Result<Route, Refusal> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut buf = vec![0u8; MAX_REQUEST_BYTES];
    let mut len = 0;
    loop {
        if let Some(end) = end_of_head(&buf[..len]) {
            return route(&buf[..end]);
        }
        if len == buf.len() {
            return Err(Refusal::TooLarge);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            return Err(Refusal::Timeout);
        }
        match s.read(&mut buf[len..]) {
            Ok(0) => return Err(Refusal::Gone),
            Ok(n) => len += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(Refusal::Timeout);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Err(Refusal::Gone),
        }
    }
}

/// Where the headers end (the empty line; a bare LF is accepted as a
/// line end, as RFC 9112 allows), if they have.
fn end_of_head(b: &[u8]) -> Option<usize> {
    let crlf = b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = b.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What the request line of `head` asks for.
fn route(head: &[u8]) -> Result<Route, Refusal> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = std::str::from_utf8(line).map_err(|_| Refusal::Malformed)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::Malformed);
    };
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphabetic());
    if !token(method) || !matches!(version, "HTTP/1.0" | "HTTP/1.1") || !target.starts_with('/') {
        return Err(Refusal::Malformed);
    }
    if target.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(Refusal::Malformed);
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Ok(Route::MethodNotAllowed),
    };
    let path = target.split('?').next().unwrap_or_default();
    Ok(if path == "/metrics" {
        Route::Metrics { head_only }
    } else {
        Route::NotFound
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        let ok = |h: &[u8]| route(h);
        assert_eq!(
            ok(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok(Route::Metrics { head_only: false })
        );
        assert_eq!(
            ok(b"HEAD /metrics?x=1 HTTP/1.0\n\n"),
            Ok(Route::Metrics { head_only: true })
        );
        assert_eq!(ok(b"GET / HTTP/1.1\r\n\r\n"), Ok(Route::NotFound));
        assert_eq!(ok(b"GET /metrics/x HTTP/1.1\r\n\r\n"), Ok(Route::NotFound));
        assert_eq!(
            ok(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Ok(Route::MethodNotAllowed)
        );
        for bad in [
            &b""[..],
            b"\r\n\r\n",
            b"GET /metrics\r\n\r\n",
            b"GET /metrics HTTP/2.0\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1 x\r\n\r\n",
            b"G\xffT /metrics HTTP/1.1\r\n\r\n",
            b"GET /me\x01trics HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ] {
            assert_eq!(ok(bad), Err(Refusal::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn the_head_ends_at_the_first_empty_line() {
        assert_eq!(end_of_head(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
        assert_eq!(end_of_head(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(end_of_head(b"GET / HTTP/1.1\n\nbody\r\n\r\n"), Some(16));
        assert_eq!(end_of_head(b""), None);
    }
}
