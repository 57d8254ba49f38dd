//! The socket protocol between `ringcached` and its clients: framing,
//! opcodes, status codes and payload encoding. `docs/PROTOCOL.md` is the
//! reference; this module is its one implementation, shared by the daemon
//! and the client library.
//!
//! Every frame is a 16-byte header and a payload:
//!
//! ```text
//! off size field
//!  0   4   len    bytes after this field: 12 + payload (12 ..= MAX_FRAME)
//!  4   2   op     opcode (requests), op | 0x8000 (replies), 0xC000 | kind (events)
//!  6   2   flags  zero
//!  8   8   id     request id chosen by the client (never 0), echoed by the
//!                 reply; 0 marks an event
//! 16  ...  payload
//! ```
//!
//! All integers are little-endian. Payloads are read with [`Reader`], which
//! turns every short or inconsistent payload into [`ProtoError`], never a
//! panic.

/// Protocol version spoken by this build: 2 adds the callback layer
/// (servers, promises, breaks, zap events, the Revalidate status) and
/// Flush. A client greeting with version 1 is served as before (see
/// `docs/PROTOCOL.md`).
pub const VERSION: u32 = 2;
/// Oldest protocol version still served.
pub const MIN_VERSION: u32 = 1;
/// Bytes of a fetch token on the wire (`BeginFetch`'s reply): opaque to
/// clients, handed back with `InstallPromise`, `Revalidate` and
/// `WriteFetched`.
pub const TOKEN_BYTES: usize = 48;
/// Magic at the start of the HELLO payload.
pub const MAGIC: [u8; 8] = *b"RCPROTO\0";
/// Bytes of the header after the length field.
pub const HEADER_AFTER_LEN: usize = 12;
/// Most data one READ or WRITE carries.
pub const MAX_DATA: usize = 1 << 20;
/// Largest value of the length field.
pub const MAX_FRAME: usize = MAX_DATA + 4096;

/// Reply flag on opcodes.
pub const REPLY: u16 = 0x8000;
/// Event opcodes.
pub const EVENT: u16 = 0xC000;

/// The op of the reply to a request with op `op`: `op | REPLY`, with bit
/// 0x4000 cleared, so that no reply, whatever a client sent, has the
/// pattern of an event (`op & EVENT == EVENT`). Request opcodes are below
/// 0x4000, so for every real request this is just `op | REPLY`.
pub fn reply_op(op: u16) -> u16 {
    (op & !0x4000) | REPLY
}

/// Opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Op {
    Hello = 1,
    AcquireVolume = 2,
    RelinquishVolume = 3,
    AcquireCookie = 4,
    RelinquishCookie = 5,
    UseCookie = 6,
    UnuseCookie = 7,
    Read = 8,
    Write = 9,
    PrepareToWrite = 10,
    Invalidate = 11,
    Resize = 12,
    QueryOccupancy = 13,
    Stats = 14,
    Ping = 15,
    // Version 2: the callback layer.
    DeclareServer = 16,
    BeginFetch = 17,
    InstallPromise = 18,
    Validate = 19,
    Revalidate = 20,
    BreakFiles = 21,
    BreakVolume = 22,
    BreakServer = 23,
    Flush = 24,
    WriteFetched = 25,
    /// The daemon's metrics in the Prometheus text format.
    Metrics = 26,
}

impl Op {
    /// The opcode for `v`, if there is one.
    pub fn from_u16(v: u16) -> Option<Op> {
        use Op::*;
        Some(match v {
            1 => Hello,
            2 => AcquireVolume,
            3 => RelinquishVolume,
            4 => AcquireCookie,
            5 => RelinquishCookie,
            6 => UseCookie,
            7 => UnuseCookie,
            8 => Read,
            9 => Write,
            10 => PrepareToWrite,
            11 => Invalidate,
            12 => Resize,
            13 => QueryOccupancy,
            14 => Stats,
            15 => Ping,
            16 => DeclareServer,
            17 => BeginFetch,
            18 => InstallPromise,
            19 => Validate,
            20 => Revalidate,
            21 => BreakFiles,
            22 => BreakVolume,
            23 => BreakServer,
            24 => Flush,
            25 => WriteFetched,
            26 => Metrics,
            _ => return None,
        })
    }

    /// Every request opcode, in opcode order (1 ..= `ALL.len()`).
    pub const ALL: [Op; 26] = {
        use Op::*;
        [
            Hello,
            AcquireVolume,
            RelinquishVolume,
            AcquireCookie,
            RelinquishCookie,
            UseCookie,
            UnuseCookie,
            Read,
            Write,
            PrepareToWrite,
            Invalidate,
            Resize,
            QueryOccupancy,
            Stats,
            Ping,
            DeclareServer,
            BeginFetch,
            InstallPromise,
            Validate,
            Revalidate,
            BreakFiles,
            BreakVolume,
            BreakServer,
            Flush,
            WriteFetched,
            Metrics,
        ]
    };

    /// The op's name in snake case (`acquire_cookie`): the `op` label of
    /// the daemon's latency metrics.
    pub fn name(self) -> &'static str {
        use Op::*;
        match self {
            Hello => "hello",
            AcquireVolume => "acquire_volume",
            RelinquishVolume => "relinquish_volume",
            AcquireCookie => "acquire_cookie",
            RelinquishCookie => "relinquish_cookie",
            UseCookie => "use_cookie",
            UnuseCookie => "unuse_cookie",
            Read => "read",
            Write => "write",
            PrepareToWrite => "prepare_to_write",
            Invalidate => "invalidate",
            Resize => "resize",
            QueryOccupancy => "query_occupancy",
            Stats => "stats",
            Ping => "ping",
            DeclareServer => "declare_server",
            BeginFetch => "begin_fetch",
            InstallPromise => "install_promise",
            Validate => "validate",
            Revalidate => "revalidate",
            BreakFiles => "break_files",
            BreakVolume => "break_volume",
            BreakServer => "break_server",
            Flush => "flush",
            WriteFetched => "write_fetched",
            Metrics => "metrics",
        }
    }
}

/// Status codes: the first two bytes of every reply payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Status {
    Ok = 0,
    /// The payload does not parse (too short, lengths inconsistent).
    BadRequest = 1,
    UnknownOp = 2,
    /// No such handle on this connection.
    BadHandle = 3,
    /// The peer may not use this volume.
    Denied = 4,
    Busy = 5,
    /// A bad argument: key length, aux length, ...
    Invalid = 6,
    /// Offset or length out of range (overflow, past the object size).
    Range = 7,
    /// Nothing cached to read: fetch from the server.
    NoData = 8,
    /// Invalidated during the operation.
    Stale = 9,
    /// The write was not cached (cache withdrawn, no space).
    Dropped = 10,
    NoSpace = 11,
    /// The cache has failed (persistent device errors).
    Failed = 12,
    /// Protocol version not supported.
    Version = 13,
    /// The daemon is shutting down.
    ShuttingDown = 14,
    Internal = 15,
    /// Version 2: the object has no valid callback promise: ask the file
    /// server and `Revalidate` first. Nothing cached was returned.
    Revalidate = 16,
    /// Version 2: the fetch token was broken (a break arrived after it was
    /// taken): what the server said may be out of date; fetch again.
    Broken = 17,
}

impl Status {
    /// The status for `v` (unknown values read as Internal).
    pub fn from_u16(v: u16) -> Status {
        use Status::*;
        match v {
            0 => Ok,
            1 => BadRequest,
            2 => UnknownOp,
            3 => BadHandle,
            4 => Denied,
            5 => Busy,
            6 => Invalid,
            7 => Range,
            8 => NoData,
            9 => Stale,
            10 => Dropped,
            11 => NoSpace,
            12 => Failed,
            13 => Version,
            14 => ShuttingDown,
            16 => Revalidate,
            17 => Broken,
            _ => Internal,
        }
    }
}

/// Why a frame or payload was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("frame length {0} out of range (12 ..= {MAX_FRAME})")]
    FrameLength(u64),
    #[error("payload too short: need {need} more bytes at offset {at}")]
    Short { at: usize, need: usize },
    #[error("payload has {0} bytes past its last field")]
    Trailing(usize),
    #[error("{field} = {value} is out of range")]
    Field { field: &'static str, value: u64 },
}

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub op: u16,
    pub flags: u16,
    pub id: u64,
    /// Payload bytes that follow the header.
    pub payload_len: usize,
}

/// Parse the 16-byte header; checks the length field.
pub fn parse_header(b: &[u8; 16]) -> Result<Header, ProtoError> {
    let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    if !(HEADER_AFTER_LEN..=MAX_FRAME).contains(&len) {
        return Err(ProtoError::FrameLength(len as u64));
    }
    Ok(Header {
        op: u16::from_le_bytes([b[4], b[5]]),
        flags: u16::from_le_bytes([b[6], b[7]]),
        id: u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
        payload_len: len - HEADER_AFTER_LEN,
    })
}

/// Build a frame: header for `op`/`id` and the payload `body`.
pub fn frame(op: u16, id: u64, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(16 + body.len());
    f.extend_from_slice(&((HEADER_AFTER_LEN + body.len()) as u32).to_le_bytes());
    f.extend_from_slice(&op.to_le_bytes());
    f.extend_from_slice(&0u16.to_le_bytes());
    f.extend_from_slice(&id.to_le_bytes());
    f.extend_from_slice(body);
    f
}

/// Appends little-endian fields to a payload.
#[derive(Debug, Default, Clone)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    /// An empty payload.
    pub fn new() -> Self {
        Self::default()
    }
    pub fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    pub fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bytes(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }
    /// The payload.
    pub fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// Reads little-endian fields from a payload; every read is bounds-checked.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// Read `buf` from its start.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, at: 0 }
    }
    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(ProtoError::Short {
                at: self.at,
                need: n,
            })?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtoError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8, ProtoError> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u16(&mut self) -> Result<u16, ProtoError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, ProtoError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, ProtoError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// Bytes not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.at..];
        self.at = self.buf.len();
        s
    }
    /// Fail if anything is left.
    pub fn end(&self) -> Result<(), ProtoError> {
        match self.buf.len() - self.at {
            0 => Ok(()),
            n => Err(ProtoError::Trailing(n)),
        }
    }
}

/// Event kind: a zap (`EVENT | EVENT_ZAP`, id 0). Payload: handle u32,
/// reason u8, 3 reserved bytes. Drop what is cached of the file above the
/// cache (page cache, mappings) and revalidate before the next use.
pub const EVENT_ZAP: u16 = 1;
/// Zap reasons.
pub const ZAP_FILE: u8 = 1;
pub const ZAP_VOLUME: u8 = 2;
pub const ZAP_SERVER: u8 = 3;
/// Another client found a new data version and invalidated the data.
pub const ZAP_INVALIDATED: u8 = 4;

/// Kind of a segment in a READ reply.
pub const SEG_HOLE: u8 = 0;
/// See [`SEG_HOLE`].
pub const SEG_DATA: u8 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_limits() {
        let f = frame(Op::Ping as u16, 42, b"abc");
        let h = parse_header(f[..16].try_into().unwrap()).unwrap();
        assert_eq!((h.op, h.id, h.payload_len), (15, 42, 3));
        let mut bad = f.clone();
        bad[..4].copy_from_slice(&11u32.to_le_bytes());
        assert_eq!(
            parse_header(bad[..16].try_into().unwrap()),
            Err(ProtoError::FrameLength(11))
        );
        bad[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_header(bad[..16].try_into().unwrap()).is_err());
    }

    #[test]
    fn every_op_is_listed_once_in_opcode_order_with_its_own_name() {
        let mut names = std::collections::HashSet::new();
        for (i, op) in Op::ALL.iter().enumerate() {
            assert_eq!(*op as usize, i + 1, "{op:?}");
            assert_eq!(Op::from_u16(*op as u16), Some(*op));
            assert!(names.insert(op.name()), "{op:?}: name used twice");
        }
        assert_eq!(Op::from_u16(Op::ALL.len() as u16 + 1), None);
        assert_eq!(Op::from_u16(0), None);
    }

    #[test]
    fn reader_never_reads_past_the_end() {
        let mut r = Reader::new(&[1, 0, 0]);
        assert_eq!(r.u16(), Ok(1));
        assert_eq!(r.u16(), Err(ProtoError::Short { at: 2, need: 2 }));
        assert_eq!(
            r.bytes(usize::MAX).map(|_| ()),
            Err(ProtoError::Short {
                at: 2,
                need: usize::MAX
            })
        );
        assert_eq!(r.end(), Err(ProtoError::Trailing(1)));
    }
}
