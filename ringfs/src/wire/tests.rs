use super::*;

fn id(n: u64) -> FileId {
    FileId {
        ino: n,
        gen_: n * 7,
    }
}

fn attr() -> AttrReply {
    AttrReply {
        attr: Attr {
            id: id(3),
            kind: FileKind::File,
            mode: 0o644,
            nlink: 1,
            uid: 10,
            gid: 20,
            blksize: 4096,
            size: 12345,
            blocks: 32,
            rdev: 0,
            atime: Time { sec: 1, nsec: 2 },
            mtime: Time { sec: -3, nsec: 4 },
            ctime: Time {
                sec: 5,
                nsec: 999_999_999,
            },
            data_version: 77,
        },
        promise_ms: 60_000,
    }
}

fn every_request() -> Vec<Request> {
    vec![
        Request::Hello(Hello {
            version: VERSION,
            client_id: [9; 16],
            incarnation: 5,
            name: b"host-a".to_vec(),
        }),
        Request::Farewell,
        Request::Ping,
        Request::Lookup {
            dir: id(1),
            name: b"a".to_vec(),
        },
        Request::GetAttr { id: id(2) },
        Request::SetAttr {
            id: id(2),
            set: SetAttr {
                mask: setattr::MODE | setattr::SIZE | setattr::MTIME,
                mode: 0o600,
                uid: 0,
                gid: 0,
                size: 10,
                atime: Time::default(),
                mtime: Time { sec: 9, nsec: 1 },
            },
        },
        Request::ReadDir {
            dir: id(1),
            max_entries: 100,
            cursor: b"m".to_vec(),
        },
        Request::Read {
            id: id(2),
            offset: 4096,
            len: 8192,
        },
        Request::Write {
            id: id(2),
            offset: 0,
            flags: WRITE_APPEND,
            data: b"hello".to_vec(),
        },
        Request::Create {
            dir: id(1),
            mode: 0o644,
            flags: CREATE_EXCLUSIVE,
            name: b"new".to_vec(),
        },
        Request::Mkdir {
            dir: id(1),
            mode: 0o755,
            name: b"d".to_vec(),
        },
        Request::Unlink {
            dir: id(1),
            name: b"x".to_vec(),
        },
        Request::Rmdir {
            dir: id(1),
            name: b"d".to_vec(),
        },
        Request::Rename {
            from_dir: id(1),
            to_dir: id(4),
            flags: RENAME_NOREPLACE,
            from: b"a".to_vec(),
            to: b"b".to_vec(),
        },
        Request::Symlink {
            dir: id(1),
            name: b"l".to_vec(),
            target: b"../x".to_vec(),
        },
        Request::ReadLink { id: id(5) },
        Request::Link {
            id: id(2),
            dir: id(1),
            name: b"h".to_vec(),
        },
        Request::Fsync {
            id: id(2),
            flags: FSYNC_DATASYNC,
        },
        Request::StatFs,
    ]
}

#[test]
fn every_request_round_trips() {
    for req in every_request() {
        let bytes = req.encode();
        assert_eq!(
            Request::decode(req.op(), &bytes),
            Ok(req.clone()),
            "{req:?}"
        );
        // Every strict prefix is refused, never a panic.
        for cut in 0..bytes.len() {
            assert!(
                Request::decode(req.op(), bytes.get(..cut).unwrap_or_default()).is_err()
                    || cut == 0 && bytes.is_empty(),
                "{req:?} cut at {cut}"
            );
        }
        // Trailing bytes are refused.
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            Request::decode(req.op(), &long),
            Err(WireError::Trailing(1)),
            "{req:?}"
        );
    }
}

#[test]
fn every_reply_round_trips() {
    let cases = [
        (op::PING, ReplyBody::Empty),
        (
            op::HELLO,
            ReplyBody::Welcome(Welcome {
                epoch: 3,
                root: id(1),
                resumed: true,
                read_only: true,
                ..Welcome::default()
            }),
        ),
        (op::GETATTR, ReplyBody::Attr(attr())),
        (
            op::READDIR,
            ReplyBody::Dir(DirPage {
                dir_version: 4,
                promise_ms: 1,
                eof: true,
                entries: vec![Entry {
                    ino: 5,
                    kind: FileKind::Dir,
                    name: b"sub".to_vec(),
                }],
            }),
        ),
        (
            op::READ,
            ReplyBody::Read {
                attr: attr(),
                data: vec![1, 2, 3],
            },
        ),
        (
            op::WRITE,
            ReplyBody::Write {
                offset: 10,
                written: 3,
                attr: attr(),
            },
        ),
        (
            op::CREATE,
            ReplyBody::Create {
                attr: attr(),
                created: true,
            },
        ),
        (op::READLINK, ReplyBody::Target(b"t".to_vec())),
        (
            op::STATFS,
            ReplyBody::StatFs(StatFs {
                blocks: 1,
                bsize: 4096,
                ..StatFs::default()
            }),
        ),
    ];
    for (op_code, body) in cases {
        let bytes = encode_reply(Status::Ok, 0, &body);
        let reply = decode_reply(op_code, &bytes).expect("decodes");
        assert_eq!(reply.body, body);
        for cut in 0..bytes.len() {
            assert!(decode_reply(op_code, bytes.get(..cut).unwrap_or_default()).is_err());
        }
    }
    let err = encode_reply(Status::Os, 2, &ReplyBody::Empty);
    let reply = decode_reply(op::LOOKUP, &err).expect("decodes");
    assert_eq!((reply.status, reply.errno), (Status::Os, 2));
}

#[test]
fn header_limits() {
    let h = Header::new(Kind::Request, op::PING, 1, 0);
    let f = frame(&h, &[]);
    let hb: [u8; HEADER_LEN] = f.as_slice().try_into().expect("24 bytes");
    assert_eq!(Header::decode(&hb), Ok((h, 0)));
    for len in [
        0u32,
        19,
        (HEADER_AFTER_LEN as usize + MAX_PAYLOAD + 1) as u32,
        u32::MAX,
    ] {
        let mut b = hb;
        b[..4].copy_from_slice(&len.to_le_bytes());
        assert_eq!(Header::decode(&b), Err(WireError::FrameLength(len)));
    }
}

#[test]
fn breaks_and_errors_round_trip() {
    for b in [
        Break {
            scope: BreakScope::File(id(8)),
            reason: BreakReason::Local,
        },
        Break {
            scope: BreakScope::All,
            reason: BreakReason::Overflow,
        },
    ] {
        assert_eq!(Break::decode(&b.encode()), Ok(b));
    }
    assert!(Break::decode(&[3; 24]).is_err());
    let e = encode_error(Status::BadFrame, "x".repeat(1000).as_str());
    let (s, m) = decode_error(&e).expect("decodes");
    assert_eq!((s, m.len()), (Status::BadFrame, MAX_ERROR_MSG));
}

/// One malformed request payload and what it must be refused with.
struct Bad {
    what: &'static str,
    op: u16,
    payload: Vec<u8>,
    status: Status,
}

/// Malformed requests, each with the status the server answers.
pub fn malformed_requests() -> Vec<(&'static str, u16, Vec<u8>, Status)> {
    let good_lookup = Request::Lookup {
        dir: id(1),
        name: b"a".to_vec(),
    }
    .encode();
    let mut table = Vec::new();
    let mut push = |what, op, payload: Vec<u8>, status| {
        table.push(Bad {
            what,
            op,
            payload,
            status,
        })
    };
    push("unknown op", 999, vec![], Status::UnknownOp);
    push(
        "lookup, empty payload",
        op::LOOKUP,
        vec![],
        Status::BadRequest,
    );
    push(
        "lookup, name length past the end",
        op::LOOKUP,
        {
            let mut p = id_bytes();
            p.extend_from_slice(&50u16.to_le_bytes());
            p.extend_from_slice(b"ab");
            p
        },
        Status::BadRequest,
    );
    push(
        "lookup, trailing byte",
        op::LOOKUP,
        [good_lookup.clone(), vec![0]].concat(),
        Status::BadRequest,
    );
    for (what, name) in [
        ("lookup of ..", b"..".to_vec()),
        ("lookup of .", b".".to_vec()),
        ("lookup of a/b", b"a/b".to_vec()),
        ("lookup of /etc", b"/etc".to_vec()),
        ("lookup with NUL", b"a\0b".to_vec()),
        ("lookup of an empty name", vec![]),
        ("lookup of a 256-byte name", vec![b'x'; 256]),
    ] {
        push(
            what,
            op::LOOKUP,
            Request::Lookup { dir: id(1), name }.encode(),
            Status::BadName,
        );
    }
    push(
        "read over 1 MiB",
        op::READ,
        Request::Read {
            id: id(1),
            offset: 0,
            len: (MAX_DATA + 1) as u32,
        }
        .encode(),
        Status::TooBig,
    );
    push(
        "read, offset + len overflows",
        op::READ,
        Request::Read {
            id: id(1),
            offset: u64::MAX - 1,
            len: 10,
        }
        .encode(),
        Status::TooBig,
    );
    push(
        "write, data_len says more than sent",
        op::WRITE,
        {
            let mut p = Request::Write {
                id: id(1),
                offset: 0,
                flags: 0,
                data: b"abc".to_vec(),
            }
            .encode();
            p.truncate(p.len() - 1);
            p
        },
        Status::BadRequest,
    );
    push(
        "write, unknown flag",
        op::WRITE,
        Request::Write {
            id: id(1),
            offset: 0,
            flags: 0x80,
            data: vec![],
        }
        .encode(),
        Status::BadRequest,
    );
    push(
        "setattr, unknown mask bit",
        op::SETATTR,
        Request::SetAttr {
            id: id(1),
            set: SetAttr {
                mask: 1 << 20,
                ..SetAttr::default()
            },
        }
        .encode(),
        Status::BadRequest,
    );
    push(
        "setattr, nsec over a second",
        op::SETATTR,
        Request::SetAttr {
            id: id(1),
            set: SetAttr {
                mask: setattr::MTIME,
                mtime: Time {
                    sec: 0,
                    nsec: 2_000_000_000,
                },
                ..SetAttr::default()
            },
        }
        .encode(),
        Status::BadRequest,
    );
    push(
        "create, mode with type bits",
        op::CREATE,
        Request::Create {
            dir: id(1),
            mode: 0o100644,
            flags: 0,
            name: b"f".to_vec(),
        }
        .encode(),
        Status::BadRequest,
    );
    push(
        "symlink, empty target",
        op::SYMLINK,
        Request::Symlink {
            dir: id(1),
            name: b"l".to_vec(),
            target: vec![],
        }
        .encode(),
        Status::BadName,
    );
    push(
        "readdir, max_entries 0",
        op::READDIR,
        Request::ReadDir {
            dir: id(1),
            max_entries: 0,
            cursor: vec![],
        }
        .encode(),
        Status::BadRequest,
    );
    push(
        "readdir, max_entries over the limit",
        op::READDIR,
        Request::ReadDir {
            dir: id(1),
            max_entries: MAX_READDIR_ENTRIES + 1,
            cursor: vec![],
        }
        .encode(),
        Status::TooBig,
    );
    push(
        "rename, to = ..",
        op::RENAME,
        Request::Rename {
            from_dir: id(1),
            to_dir: id(1),
            flags: 0,
            from: b"a".to_vec(),
            to: b"..".to_vec(),
        }
        .encode(),
        Status::BadName,
    );
    push(
        "hello again, bad magic",
        op::HELLO,
        vec![0; 40],
        Status::Version,
    );
    table
        .into_iter()
        .map(|b| (b.what, b.op, b.payload, b.status))
        .collect()
}

fn id_bytes() -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&1u64.to_le_bytes());
    p.extend_from_slice(&7u64.to_le_bytes());
    p
}

#[test]
fn malformed_requests_are_typed_errors() {
    let table = malformed_requests();
    assert!(table.len() >= 15);
    for (what, op_code, payload, status) in table {
        match Request::decode(op_code, &payload) {
            Ok(r) => panic!("{what}: accepted as {r:?}"),
            Err(e) => assert_eq!(e.status(), status, "{what}: {e}"),
        }
    }
}

#[test]
fn names() {
    assert_eq!(check_name(b"ok.txt"), Ok(()));
    assert_eq!(check_name(b"..."), Ok(()));
    assert_eq!(check_name(b""), Err(NameError::Empty));
    assert_eq!(check_name(b".."), Err(NameError::Dot));
    assert_eq!(check_name(b"a/b"), Err(NameError::Slash));
    assert_eq!(check_name(b"a\0"), Err(NameError::Nul));
    assert_eq!(check_name(&[b'a'; 256]), Err(NameError::TooLong(256)));
}

#[test]
fn random_bytes_never_panic() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..20_000 {
        let len = rng.random_range(0..200);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let op_code = rng.random_range(0..22);
        let _ = Request::decode(op_code, &bytes);
        let _ = decode_reply(op_code, &bytes);
        let _ = Break::decode(&bytes);
        let _ = decode_error(&bytes);
    }
}
