//! The ringfs wire decoders on hostile bytes: frame headers, every
//! request and reply body, breaks and error frames. Byte 0..2 of the
//! input is the op (little-endian), the rest the payload. Besides "no
//! panic": a request that decodes re-encodes to one that decodes equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringfs::wire::{Break, HEADER_LEN, Header, Request, decode_error, decode_reply};

fuzz_target!(|data: &[u8]| {
    if let Some(h) = data.get(..HEADER_LEN) {
        let h: &[u8; HEADER_LEN] = h.try_into().expect("sized");
        let _ = Header::decode(h);
    }
    let Some((op, payload)) = data.split_first_chunk::<2>() else {
        return;
    };
    let op = u16::from_le_bytes(*op);
    if let Ok(req) = Request::decode(op, payload) {
        let again = Request::decode(req.op(), &req.encode()).expect("a re-encoded request decodes");
        assert_eq!(again, req);
    }
    let _ = decode_reply(op, payload);
    let _ = Break::decode(payload);
    let _ = decode_error(payload);
});
