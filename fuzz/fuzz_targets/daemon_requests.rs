//! Every request body of the ringcached protocol, on hostile bytes,
//! through the daemon's own handlers (an in-process session with a cache
//! on a temporary file, kept across inputs so that volumes, cookies and
//! promises made by earlier inputs are there to be named), and the client
//! library's reply decoders on the same bytes. Byte 0 picks the op, the
//! rest is the body. The daemon must answer, never panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ringcache::client::{Frame, Requests, ZapEvent, reply};
use ringcache::daemon::{Config, Embedded, LocalSession};
use ringcache::io::EngineKind;
use ringcache::proto::{self, Op, Status};

struct Cache {
    _dir: tempfile::TempDir,
    _cache: Embedded,
    session: LocalSession,
}

fn cache() -> &'static Cache {
    static C: OnceLock<Cache> = OnceLock::new();
    C.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = Config::embedded();
        cfg.device = dir.path().join("cache.img");
        cfg.create_bytes = Some(64 << 20);
        cfg.engine = EngineKind::Psync;
        let cache = Embedded::open(cfg).expect("open the cache");
        let session = cache.session().expect("a session");
        Cache {
            _dir: dir,
            _cache: cache,
            session,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    // Every op but Hello (a session is greeted when it is made).
    let ops = &Op::ALL[1..];
    let op = ops[usize::from(pick) % ops.len()];
    let c = cache();
    let (st, reply_body) = c.session.request(op, body).expect("a local session answers");
    if st == Status::Ok && op == Op::Read {
        reply::read(st, &reply_body).expect("the daemon's own read reply decodes");
    }
    // The client's decoders on hostile replies.
    let _ = reply::read(Status::Ok, body);
    let _ = reply::occupancy(body);
    let _ = reply::stats(body);
    let _ = reply::metrics(body);
    let _ = reply::hello(body);
    let _ = reply::volume(body);
    let _ = ZapEvent::parse(&Frame {
        op: proto::EVENT | proto::EVENT_ZAP,
        id: 0,
        payload: body.to_vec(),
    });
    if let Some(h) = data.get(..16) {
        let _ = proto::parse_header(h.try_into().expect("sized"));
    }
});
