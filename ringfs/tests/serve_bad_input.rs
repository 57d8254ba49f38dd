//! Bad input: a table of malformed frames and values, each answered
//! with an error within 100 ms while another client keeps being served;
//! framing errors close only their own connection; names that would
//! leave the export are refused.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{ServerProc, client, dirs};
use ringfs::client::{ClientError, new_client_id, read_one};
use ringfs::wire::{
    self, FileId, HEADER_AFTER_LEN, Header, Hello, Kind, MAX_DATA, MAX_PAYLOAD,
    MAX_READDIR_ENTRIES, Request, SetAttr, Status, Time, decode_error, decode_reply, frame, op,
    setattr,
};

/// What an answer must be.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// A Reply with this status.
    Reply(Status),
    /// An Error frame with this status.
    Error(Status),
}

struct Case {
    what: &'static str,
    bytes: Vec<u8>,
    want: Want,
}

fn raw(kind: u8, flags: u8, op_code: u16, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut h = Header::new(Kind::Request, op_code, seq, 0);
    h.kind = kind;
    h.flags = flags;
    frame(&h, payload)
}

fn req(op_code: u16, seq: u64, payload: &[u8]) -> Vec<u8> {
    raw(Kind::Request as u8, 0, op_code, seq, payload)
}

fn hello_payload() -> Vec<u8> {
    Request::Hello(Hello {
        version: wire::VERSION,
        client_id: new_client_id(),
        incarnation: 7,
        name: b"raw".to_vec(),
    })
    .encode()
}

/// Greets on a raw connection; returns the root id.
fn greet(s: &mut TcpStream) -> FileId {
    s.write_all(&req(op::HELLO, 0, &hello_payload()))
        .expect("send hello");
    let (h, p) = read_one(s).expect("welcome");
    assert_eq!(h.kind, Kind::Reply as u8);
    match decode_reply(op::HELLO, &p).expect("decode").body {
        wire::ReplyBody::Welcome(w) => w.root,
        other => panic!("not a welcome: {other:?}"),
    }
}

fn table(root: FileId) -> Vec<Case> {
    let lookup = |name: &[u8]| {
        Request::Lookup {
            dir: root,
            name: name.to_vec(),
        }
        .encode()
    };
    let mut seq = 100;
    let mut next = || {
        seq += 1;
        seq
    };
    let r = |s| Want::Reply(s);
    let mut cases = vec![
        Case {
            what: "unknown op",
            bytes: req(999, next(), &[]),
            want: r(Status::UnknownOp),
        },
        Case {
            what: "lookup, empty payload",
            bytes: req(op::LOOKUP, next(), &[]),
            want: r(Status::BadRequest),
        },
        Case {
            what: "lookup, name length past the end",
            bytes: req(op::LOOKUP, next(), &{
                let mut p = lookup(b"ab");
                let at = p.len() - 4;
                p[at..at + 2].copy_from_slice(&60u16.to_le_bytes());
                p
            }),
            want: r(Status::BadRequest),
        },
        Case {
            what: "lookup, trailing byte",
            bytes: req(op::LOOKUP, next(), &[lookup(b"a"), vec![0]].concat()),
            want: r(Status::BadRequest),
        },
        Case {
            what: "lookup of ..",
            bytes: req(op::LOOKUP, next(), &lookup(b"..")),
            want: r(Status::BadName),
        },
        Case {
            what: "lookup of an absolute name",
            bytes: req(op::LOOKUP, next(), &lookup(b"/etc/passwd")),
            want: r(Status::BadName),
        },
        Case {
            what: "lookup of a path",
            bytes: req(op::LOOKUP, next(), &lookup(b"a/../../etc")),
            want: r(Status::BadName),
        },
        Case {
            what: "lookup with NUL",
            bytes: req(op::LOOKUP, next(), &lookup(b"a\0b")),
            want: r(Status::BadName),
        },
        Case {
            what: "lookup of a 256-byte name",
            bytes: req(op::LOOKUP, next(), &lookup(&[b'x'; 256])),
            want: r(Status::BadName),
        },
        Case {
            what: "read over 1 MiB",
            bytes: req(
                op::READ,
                next(),
                &Request::Read {
                    id: root,
                    offset: 0,
                    len: MAX_DATA as u32 + 1,
                }
                .encode(),
            ),
            want: r(Status::TooBig),
        },
        Case {
            what: "read, offset + len overflows",
            bytes: req(
                op::READ,
                next(),
                &Request::Read {
                    id: root,
                    offset: u64::MAX - 3,
                    len: 10,
                }
                .encode(),
            ),
            want: r(Status::TooBig),
        },
        Case {
            what: "write, data_len larger than the data",
            bytes: req(op::WRITE, next(), &{
                let mut p = Request::Write {
                    id: root,
                    offset: 0,
                    flags: 0,
                    data: b"abc".to_vec(),
                }
                .encode();
                p.pop();
                p
            }),
            want: r(Status::BadRequest),
        },
        Case {
            what: "write, unknown flag bit",
            bytes: req(
                op::WRITE,
                next(),
                &Request::Write {
                    id: root,
                    offset: 0,
                    flags: 0x40,
                    data: vec![],
                }
                .encode(),
            ),
            want: r(Status::BadRequest),
        },
        Case {
            what: "setattr, unknown mask bit",
            bytes: req(
                op::SETATTR,
                next(),
                &Request::SetAttr {
                    id: root,
                    set: SetAttr {
                        mask: 1 << 30,
                        ..SetAttr::default()
                    },
                }
                .encode(),
            ),
            want: r(Status::BadRequest),
        },
        Case {
            what: "setattr, nsec over a second",
            bytes: req(
                op::SETATTR,
                next(),
                &Request::SetAttr {
                    id: root,
                    set: SetAttr {
                        mask: setattr::MTIME,
                        mtime: Time {
                            sec: 1,
                            nsec: 1_500_000_000,
                        },
                        ..SetAttr::default()
                    },
                }
                .encode(),
            ),
            want: r(Status::BadRequest),
        },
        Case {
            what: "create, mode with file-type bits",
            bytes: req(
                op::CREATE,
                next(),
                &Request::Create {
                    dir: root,
                    mode: 0o100644,
                    flags: 0,
                    name: b"f".to_vec(),
                }
                .encode(),
            ),
            want: r(Status::BadRequest),
        },
        Case {
            what: "symlink, empty target",
            bytes: req(
                op::SYMLINK,
                next(),
                &Request::Symlink {
                    dir: root,
                    name: b"l".to_vec(),
                    target: vec![],
                }
                .encode(),
            ),
            want: r(Status::BadName),
        },
        Case {
            what: "readdir, max_entries 0",
            bytes: req(
                op::READDIR,
                next(),
                &Request::ReadDir {
                    dir: root,
                    max_entries: 0,
                    cursor: vec![],
                }
                .encode(),
            ),
            want: r(Status::BadRequest),
        },
        Case {
            what: "readdir, max_entries over the limit",
            bytes: req(
                op::READDIR,
                next(),
                &Request::ReadDir {
                    dir: root,
                    max_entries: MAX_READDIR_ENTRIES + 1,
                    cursor: vec![],
                }
                .encode(),
            ),
            want: r(Status::TooBig),
        },
        Case {
            what: "rename to ..",
            bytes: req(
                op::RENAME,
                next(),
                &Request::Rename {
                    from_dir: root,
                    to_dir: root,
                    flags: 0,
                    from: b"a".to_vec(),
                    to: b"..".to_vec(),
                }
                .encode(),
            ),
            want: r(Status::BadName),
        },
        Case {
            what: "a file id the server never handed out",
            bytes: req(
                op::GETATTR,
                next(),
                &Request::GetAttr {
                    id: FileId {
                        ino: 0xdead_beef_0000,
                        gen_: 1,
                    },
                }
                .encode(),
            ),
            want: r(Status::Stale),
        },
        Case {
            what: "a request with flags set",
            bytes: raw(
                Kind::Request as u8,
                3,
                op::GETATTR,
                next(),
                &Request::GetAttr { id: root }.encode(),
            ),
            want: r(Status::BadRequest),
        },
        Case {
            what: "a request numbered 0",
            bytes: req(op::GETATTR, 0, &Request::GetAttr { id: root }.encode()),
            want: r(Status::OldSeq),
        },
        Case {
            what: "an unknown frame kind",
            bytes: raw(9, 0, 0, 1, &[]),
            want: Want::Error(Status::BadKind),
        },
        Case {
            what: "a Reply frame from a client",
            bytes: raw(Kind::Reply as u8, 0, op::PING, 1, &[0; 8]),
            want: Want::Error(Status::BadKind),
        },
        Case {
            what: "a BreakAck with a payload",
            bytes: raw(Kind::BreakAck as u8, 0, 0, 1, &[1, 2, 3]),
            want: Want::Error(Status::BadRequest),
        },
    ];
    // Mode bits of mkdir, too.
    cases.push(Case {
        what: "mkdir, mode over 0o7777",
        bytes: req(
            op::MKDIR,
            next(),
            &Request::Mkdir {
                dir: root,
                mode: 0o170000,
                name: b"d".to_vec(),
            }
            .encode(),
        ),
        want: r(Status::BadRequest),
    });
    cases
}

/// Reads the answer to one case, skipping nothing: the next frame must be it.
fn answer(s: &mut TcpStream) -> (Header, Vec<u8>) {
    read_one(s).expect("an answer")
}

fn check(what: &str, want: Want, h: &Header, p: &[u8]) {
    match want {
        Want::Reply(st) => {
            assert_eq!(h.kind, Kind::Reply as u8, "{what}: a reply");
            let got = decode_reply(h.op, p).map(|r| r.status).or_else(|_| {
                // An error reply to an op the table made up has no body.
                wire::Status::from_u16(u16::from_le_bytes([p[0], p[1]])).ok_or(())
            });
            assert_eq!(got, Ok(st), "{what}");
        }
        Want::Error(st) => {
            assert_eq!(h.kind, Kind::Error as u8, "{what}: an Error frame");
            assert_eq!(decode_error(p).expect("decode").0, st, "{what}");
        }
    }
}

/// Another client, served all along: counts its replies and records the
/// slowest.
fn bystander(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    slowest_us: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let c = client(addr, "bystander");
        let root = c.root();
        let (f, _) = c.create(root, b"bystander", 0o644, 0).expect("create");
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            c.write(f.attr.id, 0, b"still here").expect("write");
            c.read(f.attr.id, 0, 10).expect("read");
            slowest_us.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
            served.fetch_add(1, Ordering::Relaxed);
        }
    })
}

#[test]
fn malformed_frames_get_errors_within_100ms_while_others_are_served() {
    let d = dirs();
    let srv = ServerProc::start(&d.export, &d.state, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let slowest = Arc::new(AtomicU64::new(0));
    let by = bystander(srv.addr, stop.clone(), served.clone(), slowest.clone());
    while served.load(Ordering::Relaxed) == 0 {
        std::thread::sleep(Duration::from_millis(5));
    }

    let mut s = TcpStream::connect(srv.addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let root = greet(&mut s);
    let cases = table(root);
    assert!(cases.len() >= 15, "{} cases", cases.len());
    for c in &cases {
        let t = Instant::now();
        s.write_all(&c.bytes).expect("send");
        let (h, p) = answer(&mut s);
        let took = t.elapsed();
        check(c.what, c.want, &h, &p);
        assert!(
            took < Duration::from_millis(100),
            "{}: answered in {took:?}",
            c.what
        );
    }
    // The connection still serves good requests after all that.
    s.write_all(&req(
        op::GETATTR,
        1,
        &Request::GetAttr { id: root }.encode(),
    ))
    .expect("send");
    let (h, p) = answer(&mut s);
    assert_eq!(decode_reply(h.op, &p).expect("decode").status, Status::Ok);
    // A second greeting is refused and closes the connection.
    s.write_all(&req(op::HELLO, 2, &hello_payload()))
        .expect("send");
    let (h, p) = answer(&mut s);
    check("a second hello", Want::Reply(Status::NotGreeted), &h, &p);
    assert!(read_one(&mut s).is_err(), "closed after a second hello");

    // Framing errors and bad greetings, each on its own connection.
    let framing: Vec<(&str, Vec<u8>, bool, Want)> = vec![
        (
            "frame length over the limit",
            {
                let mut b = req(op::PING, 1, &[]);
                b[..4].copy_from_slice(&(HEADER_AFTER_LEN + MAX_PAYLOAD as u32 + 1).to_le_bytes());
                b
            },
            true,
            Want::Error(Status::BadFrame),
        ),
        (
            "frame length under the header",
            {
                let mut b = req(op::PING, 1, &[]);
                b[..4].copy_from_slice(&3u32.to_le_bytes());
                b
            },
            true,
            Want::Error(Status::BadFrame),
        ),
        (
            "frame length 4 GiB",
            {
                let mut b = req(op::PING, 1, &[]);
                b[..4].copy_from_slice(&u32::MAX.to_le_bytes());
                b
            },
            true,
            Want::Error(Status::BadFrame),
        ),
        (
            "a request before the greeting",
            req(op::GETATTR, 1, &Request::GetAttr { id: root }.encode()),
            false,
            Want::Reply(Status::NotGreeted),
        ),
        (
            "a greeting with a bad magic",
            req(op::HELLO, 0, &{
                let mut p = hello_payload();
                p[0] = b'X';
                p
            }),
            false,
            Want::Reply(Status::Version),
        ),
        (
            "a greeting of version 2",
            req(op::HELLO, 0, &{
                let mut p = hello_payload();
                p[8..12].copy_from_slice(&2u32.to_le_bytes());
                p
            }),
            false,
            Want::Reply(Status::Version),
        ),
        (
            "a greeting with a zero client id",
            req(op::HELLO, 0, &{
                let mut p = hello_payload();
                p[16..32].fill(0);
                p
            }),
            false,
            Want::Reply(Status::BadRequest),
        ),
    ];
    for (what, bytes, _framing, want) in framing {
        let mut s = TcpStream::connect(srv.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let t = Instant::now();
        s.write_all(&bytes).expect("send");
        let (h, p) = answer(&mut s);
        let took = t.elapsed();
        check(what, want, &h, &p);
        assert!(
            took < Duration::from_millis(100),
            "{what}: answered in {took:?}"
        );
        assert!(
            read_one(&mut s).is_err(),
            "{what}: the connection is closed"
        );
    }

    stop.store(true, Ordering::Relaxed);
    by.join().expect("bystander");
    assert!(served.load(Ordering::Relaxed) > 10);
    let slowest = Duration::from_micros(slowest.load(Ordering::Relaxed));
    assert!(
        slowest < Duration::from_secs(1),
        "the bystander waited {slowest:?}"
    );
}

#[test]
fn names_that_would_leave_the_export_are_refused() {
    let d = dirs();
    let outside = d.tmp.path().join("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    std::fs::write(outside.join("secret"), b"secret").expect("write");
    std::os::unix::fs::symlink(&outside, d.export.join("out")).expect("symlink");
    std::os::unix::fs::symlink("../outside/secret", d.export.join("rel")).expect("symlink");
    std::fs::create_dir(d.export.join("sub")).expect("mkdir");
    let srv = ServerProc::start(&d.export, &d.state, &[]);
    let c = client(srv.addr, "c");
    let root = c.root();

    for name in [
        b"..".as_slice(),
        b"/etc/passwd",
        b"sub/../..",
        b"out/secret",
    ] {
        let e = c.lookup(root, name).expect_err("refused");
        assert!(
            matches!(e, ClientError::Status(Status::BadName)),
            "{name:?}: {e:?}"
        );
    }
    // A symlink pointing outside is returned as itself, never followed.
    let out = c.lookup(root, b"out").expect("lookup");
    assert_eq!(out.attr.kind, wire::FileKind::Symlink);
    assert_eq!(
        c.lookup(out.attr.id, b"secret")
            .expect_err("not a dir")
            .errno(),
        Some(20)
    );
    assert!(c.read(out.attr.id, 0, 10).is_err());
    let rel = c.lookup(root, b"rel").expect("lookup");
    assert!(c.read(rel.attr.id, 0, 10).is_err());
    assert_eq!(
        c.readlink(rel.attr.id).expect("readlink"),
        b"../outside/secret"
    );
    // Creating or writing through a symlink is refused; nothing appears outside.
    assert_eq!(
        c.create(root, b"rel", 0o644, 0)
            .expect_err("a symlink")
            .errno(),
        Some(40)
    );
    assert!(c.write(rel.attr.id, 0, b"x").is_err());
    assert!(
        c.setattr(
            rel.attr.id,
            SetAttr {
                mask: setattr::SIZE,
                ..SetAttr::default()
            }
        )
        .is_err()
    );
    assert!(
        c.setattr(
            rel.attr.id,
            SetAttr {
                mask: setattr::MODE,
                mode: 0o777,
                ..SetAttr::default()
            }
        )
        .is_err()
    );
    // A hard link of a symlink links the symlink, not its target.
    let l = c.link(rel.attr.id, root, b"rel2").expect("link");
    assert_eq!(l.attr.kind, wire::FileKind::Symlink);
    assert_eq!(
        std::fs::read(outside.join("secret")).expect("read"),
        b"secret"
    );
    assert_eq!(std::fs::read_dir(&outside).expect("ls").count(), 1);

    // A mount point inside the export is not crossed (where mounts can be made).
    let mnt = d.export.join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "none"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if mounted {
        let e = c.lookup(root, b"mnt").expect_err("a mount point");
        let _ = std::process::Command::new("umount").arg(&mnt).status();
        assert!(matches!(e, ClientError::Status(Status::Escape)), "{e:?}");
    } else {
        eprintln!("mount point case skipped: cannot mount a tmpfs here");
    }
}
