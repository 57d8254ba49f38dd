//! The ringfs wire format (`docs/RINGFS.md`): frame headers, the greeting,
//! every request and reply body, breaks. Both sides use this module; every
//! byte it parses is hostile, so every rejection is a [`WireError`] and
//! nothing here indexes a slice or unwraps.

#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic)
)]

use std::io::{self, Read, Write};

/// The greeting's magic.
pub const MAGIC: [u8; 8] = *b"RINGFS\0\0";
/// The protocol version this module speaks.
pub const VERSION: u32 = 1;
/// Bytes of a frame header, `len` included.
pub const HEADER_LEN: usize = 24;
/// Header bytes counted by `len` (all but `len` itself).
pub const HEADER_AFTER_LEN: u32 = 20;
/// Largest payload of a frame.
pub const MAX_PAYLOAD: usize = (1 << 20) + 4096;
/// Largest read or write.
pub const MAX_DATA: usize = 1 << 20;
/// Longest name.
pub const MAX_NAME: usize = 255;
/// Longest symlink target.
pub const MAX_TARGET: usize = 4095;
/// Longest client name in the greeting.
pub const MAX_CLIENT_NAME: usize = 255;
/// Most entries one ReadDir reply may hold.
pub const MAX_READDIR_ENTRIES: u32 = 4096;
/// Most bytes of entries in one ReadDir reply.
pub const MAX_READDIR_BYTES: usize = 1 << 20;
/// Longest message of an Error frame.
pub const MAX_ERROR_MSG: usize = 256;

/// Why bytes from the peer were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame length {0} outside {HEADER_AFTER_LEN}..={max}", max = HEADER_AFTER_LEN as usize + MAX_PAYLOAD)]
    FrameLength(u32),
    #[error("unknown frame kind {0}")]
    Kind(u8),
    #[error("{field}: needs {need} bytes, {have} left")]
    Short {
        field: &'static str,
        need: usize,
        have: usize,
    },
    #[error("{0} trailing bytes after the payload")]
    Trailing(usize),
    #[error("reserved field {0} is not zero")]
    Reserved(&'static str),
    #[error("unknown bits {bits:#x} in {field}")]
    Flags { field: &'static str, bits: u32 },
    #[error("unknown op {0}")]
    UnknownOp(u16),
    #[error("bad magic in the greeting")]
    Magic,
    #[error("unsupported protocol version {0}")]
    Version(u32),
    #[error("bad name: {0}")]
    Name(#[from] NameError),
    #[error("bad symlink target (empty, over {MAX_TARGET} bytes, or NUL)")]
    Target,
    #[error("{field} is {value}, over the limit {max}")]
    TooBig {
        field: &'static str,
        value: u64,
        max: u64,
    },
    #[error("bad value {value} for {field}")]
    Value { field: &'static str, value: u64 },
}

/// Why a name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("empty")]
    Empty,
    #[error("{0} bytes, over {MAX_NAME}")]
    TooLong(usize),
    #[error("`.` or `..`")]
    Dot,
    #[error("holds `/`")]
    Slash,
    #[error("holds NUL")]
    Nul,
}

/// One name component, as the protocol allows it.
pub fn check_name(name: &[u8]) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME {
        return Err(NameError::TooLong(name.len()));
    }
    if name == b"." || name == b".." {
        return Err(NameError::Dot);
    }
    if name.contains(&b'/') {
        return Err(NameError::Slash);
    }
    if name.contains(&0) {
        return Err(NameError::Nul);
    }
    Ok(())
}

fn check_target(target: &[u8]) -> Result<(), WireError> {
    if target.is_empty() || target.len() > MAX_TARGET || target.contains(&0) {
        return Err(WireError::Target);
    }
    Ok(())
}

/// Reply statuses (`docs/RINGFS.md`, Replies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Status {
    Ok = 0,
    BadFrame = 1,
    BadKind = 2,
    BadRequest = 3,
    UnknownOp = 4,
    NotGreeted = 5,
    Version = 6,
    Stale = 7,
    ReadOnly = 8,
    BadName = 9,
    Escape = 10,
    TooBig = 11,
    Busy = 12,
    TooManyClients = 13,
    Os = 14,
    Internal = 15,
    Replaced = 16,
    OldSeq = 17,
}

impl Status {
    pub fn from_u16(v: u16) -> Option<Status> {
        use Status::*;
        Some(match v {
            0 => Ok,
            1 => BadFrame,
            2 => BadKind,
            3 => BadRequest,
            4 => UnknownOp,
            5 => NotGreeted,
            6 => Version,
            7 => Stale,
            8 => ReadOnly,
            9 => BadName,
            10 => Escape,
            11 => TooBig,
            12 => Busy,
            13 => TooManyClients,
            14 => Os,
            15 => Internal,
            16 => Replaced,
            17 => OldSeq,
            _ => return None,
        })
    }
}

impl WireError {
    /// The status a request refused for this reason is answered with.
    pub fn status(&self) -> Status {
        match self {
            WireError::FrameLength(_) => Status::BadFrame,
            WireError::Kind(_) => Status::BadKind,
            WireError::UnknownOp(_) => Status::UnknownOp,
            WireError::Magic | WireError::Version(_) => Status::Version,
            WireError::Name(_) | WireError::Target => Status::BadName,
            WireError::TooBig { .. } => Status::TooBig,
            _ => Status::BadRequest,
        }
    }
}

/// Frame kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Request = 1,
    Reply = 2,
    Break = 3,
    BreakAck = 4,
    Error = 5,
}

impl Kind {
    pub fn from_u8(v: u8) -> Result<Kind, WireError> {
        Ok(match v {
            1 => Kind::Request,
            2 => Kind::Reply,
            3 => Kind::Break,
            4 => Kind::BreakAck,
            5 => Kind::Error,
            other => return Err(WireError::Kind(other)),
        })
    }
}

/// Break frame flag: delivered again because it was owed.
pub const BREAK_FLAG_OWED: u8 = 1;

/// A frame header whose length was checked; the kind is raw so that a
/// frame of an unknown kind can still be skipped whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub flags: u8,
    pub op: u16,
    pub seq: u64,
    pub ack: u64,
}

impl Header {
    pub fn new(kind: Kind, op: u16, seq: u64, ack: u64) -> Header {
        Header {
            kind: kind as u8,
            flags: 0,
            op,
            seq,
            ack,
        }
    }

    /// The header's bytes for a payload of `payload_len` bytes (at most
    /// [`MAX_PAYLOAD`]; the caller's to ensure).
    pub fn encode(&self, payload_len: usize, out: &mut Vec<u8>) {
        let len = HEADER_AFTER_LEN as usize + payload_len;
        out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
        out.push(self.kind);
        out.push(self.flags);
        out.extend_from_slice(&self.op.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.ack.to_le_bytes());
    }

    /// Parses a header; returns it and the payload length that follows.
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<(Header, usize), WireError> {
        let mut r = Reader::new(bytes);
        let len = r.u32("len")?;
        if len < HEADER_AFTER_LEN || len as usize > HEADER_AFTER_LEN as usize + MAX_PAYLOAD {
            return Err(WireError::FrameLength(len));
        }
        let h = Header {
            kind: r.u8("kind")?,
            flags: r.u8("flags")?,
            op: r.u16("op")?,
            seq: r.u64("seq")?,
            ack: r.u64("ack")?,
        };
        Ok((h, (len - HEADER_AFTER_LEN) as usize))
    }
}

/// A whole frame: header and payload in one buffer, ready to write.
pub fn frame(header: &Header, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    header.encode(payload.len(), &mut out);
    out.extend_from_slice(payload);
    out
}

/// Why a frame could not be read from a stream.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// Reads one frame into `payload` (resized to the payload's length).
/// A clean end of stream before the first byte is [`FrameError::Closed`].
pub fn read_frame(r: &mut impl Read, payload: &mut Vec<u8>) -> Result<Header, FrameError> {
    let mut hb = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let rest = hb.get_mut(got..).unwrap_or_default();
        match r.read(rest) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let (h, len) = Header::decode(&hb)?;
    payload.clear();
    payload.resize(len, 0);
    r.read_exact(payload)?;
    Ok(h)
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, header: &Header, payload: &[u8]) -> io::Result<()> {
    w.write_all(&frame(header, payload))
}

/// A bounds-checked little-endian reader over a payload.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Short {
                field,
                need: n,
                have: self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], WireError> {
        let b = self.bytes(N, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    pub fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        Ok(u8::from_le_bytes(self.array(field)?))
    }
    pub fn u16(&mut self, field: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }
    pub fn u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
    pub fn u64(&mut self, field: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }
    pub fn i64(&mut self, field: &'static str) -> Result<i64, WireError> {
        Ok(i64::from_le_bytes(self.array(field)?))
    }

    /// `n` reserved bytes, which must be zero.
    pub fn reserved(&mut self, n: usize, field: &'static str) -> Result<(), WireError> {
        if self.bytes(n, field)?.iter().any(|&b| b != 0) {
            return Err(WireError::Reserved(field));
        }
        Ok(())
    }

    /// Flag bits, refusing any outside `known`.
    pub fn flags(&mut self, known: u32, field: &'static str) -> Result<u32, WireError> {
        let v = self.u32(field)?;
        if v & !known != 0 {
            return Err(WireError::Flags {
                field,
                bits: v & !known,
            });
        }
        Ok(v)
    }

    /// Every byte must have been consumed.
    pub fn finish(self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::Trailing(self.buf.len()))
        }
    }

    fn file_id(&mut self) -> Result<FileId, WireError> {
        Ok(FileId {
            ino: self.u64("ino")?,
            gen_: self.u64("gen")?,
        })
    }

    fn time(&mut self, field: &'static str) -> Result<Time, WireError> {
        let sec = self.i64(field)?;
        let nsec = self.u32(field)?;
        if nsec >= 1_000_000_000 {
            return Err(WireError::Value {
                field,
                value: nsec.into(),
            });
        }
        self.reserved(4, field)?;
        Ok(Time { sec, nsec })
    }

    fn name(&mut self, len: u16, field: &'static str) -> Result<Vec<u8>, WireError> {
        let name = self.bytes(len.into(), field)?;
        check_name(name)?;
        Ok(name.to_vec())
    }

    fn name_with_len(&mut self, field: &'static str) -> Result<Vec<u8>, WireError> {
        let len = self.u16(field)?;
        self.name(len, field)
    }
}

/// Little-endian writers.
trait Put {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_u64(&mut self, v: u64);
    fn put_i64(&mut self, v: i64);
    fn put_zero(&mut self, n: usize);
    fn put_id(&mut self, id: FileId);
    fn put_time(&mut self, t: Time);
    fn put_len16(&mut self, b: &[u8]);
}

impl Put for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_i64(&mut self, v: i64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_zero(&mut self, n: usize) {
        self.resize(self.len() + n, 0);
    }
    fn put_id(&mut self, id: FileId) {
        self.put_u64(id.ino);
        self.put_u64(id.gen_);
    }
    fn put_time(&mut self, t: Time) {
        self.put_i64(t.sec);
        self.put_u32(t.nsec);
        self.put_zero(4);
    }
    /// A u16 length and the bytes (truncated to u16::MAX: callers check
    /// their limits first).
    fn put_len16(&mut self, b: &[u8]) {
        let n = b.len().min(u16::MAX as usize);
        self.put_u16(n as u16);
        self.extend_from_slice(b.get(..n).unwrap_or_default());
    }
}

/// A file's identity: inode number and a generation telling apart inodes
/// that reuse the number (the birth time in ns, or 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FileId {
    pub ino: u64,
    pub gen_: u64,
}

/// File kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FileKind {
    File = 1,
    Dir = 2,
    Symlink = 3,
    Fifo = 4,
    CharDev = 5,
    BlockDev = 6,
    Socket = 7,
}

impl FileKind {
    pub fn from_u8(v: u8) -> Result<FileKind, WireError> {
        use FileKind::*;
        Ok(match v {
            1 => File,
            2 => Dir,
            3 => Symlink,
            4 => Fifo,
            5 => CharDev,
            6 => BlockDev,
            7 => Socket,
            other => {
                return Err(WireError::Value {
                    field: "kind",
                    value: other.into(),
                });
            }
        })
    }
}

/// A timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Time {
    pub sec: i64,
    pub nsec: u32,
}

/// A file's attributes and data version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub id: FileId,
    pub kind: FileKind,
    /// `st_mode & 0o7777`.
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub blksize: u32,
    pub size: u64,
    /// In 512-byte units.
    pub blocks: u64,
    pub rdev: u64,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    pub data_version: u64,
}

/// Bytes of an encoded [`Attr`].
pub const ATTR_LEN: usize = 120;
/// Bytes of an encoded [`AttrReply`].
pub const ATTR_REPLY_LEN: usize = 128;

impl Attr {
    fn put(&self, out: &mut Vec<u8>) {
        out.put_id(self.id);
        out.put_u8(self.kind as u8);
        out.put_zero(3);
        out.put_u32(self.mode);
        out.put_u32(self.nlink);
        out.put_u32(self.uid);
        out.put_u32(self.gid);
        out.put_u32(self.blksize);
        out.put_u64(self.size);
        out.put_u64(self.blocks);
        out.put_u64(self.rdev);
        out.put_time(self.atime);
        out.put_time(self.mtime);
        out.put_time(self.ctime);
        out.put_u64(self.data_version);
    }

    fn get(r: &mut Reader<'_>) -> Result<Attr, WireError> {
        let id = r.file_id()?;
        let kind = FileKind::from_u8(r.u8("kind")?)?;
        r.reserved(3, "attr reserved")?;
        Ok(Attr {
            id,
            kind,
            mode: r.u32("mode")?,
            nlink: r.u32("nlink")?,
            uid: r.u32("uid")?,
            gid: r.u32("gid")?,
            blksize: r.u32("blksize")?,
            size: r.u64("size")?,
            blocks: r.u64("blocks")?,
            rdev: r.u64("rdev")?,
            atime: r.time("atime")?,
            mtime: r.time("mtime")?,
            ctime: r.time("ctime")?,
            data_version: r.u64("data_version")?,
        })
    }
}

/// Attributes with the promise that comes with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttrReply {
    pub attr: Attr,
    /// How long the promise lasts, from when the request was sent; 0: none.
    pub promise_ms: u32,
}

impl AttrReply {
    fn put(&self, out: &mut Vec<u8>) {
        self.attr.put(out);
        out.put_u32(self.promise_ms);
        out.put_zero(4);
    }

    fn get(r: &mut Reader<'_>) -> Result<AttrReply, WireError> {
        let attr = Attr::get(r)?;
        let promise_ms = r.u32("promise_ms")?;
        r.reserved(4, "attr reply reserved")?;
        Ok(AttrReply { attr, promise_ms })
    }
}

/// SetAttr mask bits.
pub mod setattr {
    pub const MODE: u32 = 1;
    pub const UID: u32 = 2;
    pub const GID: u32 = 4;
    pub const SIZE: u32 = 8;
    pub const ATIME: u32 = 16;
    pub const MTIME: u32 = 32;
    pub const ATIME_NOW: u32 = 64;
    pub const MTIME_NOW: u32 = 128;
    pub const ALL: u32 = 255;
}

/// Write flag: append at the end of the file.
pub const WRITE_APPEND: u32 = 1;
/// Create flag: fail if the name exists.
pub const CREATE_EXCLUSIVE: u32 = 1;
/// Create flag: truncate an existing file.
pub const CREATE_TRUNCATE: u32 = 2;
/// Rename flag: fail if the target exists.
pub const RENAME_NOREPLACE: u32 = 1;
/// Fsync flag: data only.
pub const FSYNC_DATASYNC: u32 = 1;

/// What SetAttr changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetAttr {
    pub mask: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub atime: Time,
    pub mtime: Time,
}

/// The greeting a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub version: u32,
    pub client_id: [u8; 16],
    pub incarnation: u64,
    pub name: Vec<u8>,
}

/// The server's answer to the greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcome {
    pub version: u32,
    pub read_only: bool,
    pub export_id: [u8; 16],
    pub epoch: u64,
    pub root: FileId,
    pub max_payload: u32,
    pub max_data: u32,
    pub max_inflight: u32,
    pub max_kept: u32,
    pub promise_ms: u32,
    pub break_timeout_ms: u32,
    pub idle_ms: u32,
    pub resumed: bool,
}

/// Op codes.
pub mod op {
    pub const HELLO: u16 = 1;
    pub const FAREWELL: u16 = 2;
    pub const PING: u16 = 3;
    pub const LOOKUP: u16 = 4;
    pub const GETATTR: u16 = 5;
    pub const SETATTR: u16 = 6;
    pub const READDIR: u16 = 7;
    pub const READ: u16 = 8;
    pub const WRITE: u16 = 9;
    pub const CREATE: u16 = 10;
    pub const MKDIR: u16 = 11;
    pub const UNLINK: u16 = 12;
    pub const RMDIR: u16 = 13;
    pub const RENAME: u16 = 14;
    pub const SYMLINK: u16 = 15;
    pub const READLINK: u16 = 16;
    pub const LINK: u16 = 17;
    pub const FSYNC: u16 = 18;
    pub const STATFS: u16 = 19;
    pub const STATS: u16 = 20;
}

/// A request, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Hello(Hello),
    Farewell,
    Ping,
    Lookup {
        dir: FileId,
        name: Vec<u8>,
    },
    GetAttr {
        id: FileId,
    },
    SetAttr {
        id: FileId,
        set: SetAttr,
    },
    ReadDir {
        dir: FileId,
        max_entries: u32,
        cursor: Vec<u8>,
    },
    Read {
        id: FileId,
        offset: u64,
        len: u32,
    },
    Write {
        id: FileId,
        offset: u64,
        flags: u32,
        data: Vec<u8>,
    },
    Create {
        dir: FileId,
        mode: u32,
        flags: u32,
        name: Vec<u8>,
    },
    Mkdir {
        dir: FileId,
        mode: u32,
        name: Vec<u8>,
    },
    Unlink {
        dir: FileId,
        name: Vec<u8>,
    },
    Rmdir {
        dir: FileId,
        name: Vec<u8>,
    },
    Rename {
        from_dir: FileId,
        to_dir: FileId,
        flags: u32,
        from: Vec<u8>,
        to: Vec<u8>,
    },
    Symlink {
        dir: FileId,
        name: Vec<u8>,
        target: Vec<u8>,
    },
    ReadLink {
        id: FileId,
    },
    Link {
        id: FileId,
        dir: FileId,
        name: Vec<u8>,
    },
    Fsync {
        id: FileId,
        flags: u32,
    },
    StatFs,
    /// The server's counters.
    Stats,
}

impl Request {
    pub fn op(&self) -> u16 {
        match self {
            Request::Hello(_) => op::HELLO,
            Request::Farewell => op::FAREWELL,
            Request::Ping => op::PING,
            Request::Lookup { .. } => op::LOOKUP,
            Request::GetAttr { .. } => op::GETATTR,
            Request::SetAttr { .. } => op::SETATTR,
            Request::ReadDir { .. } => op::READDIR,
            Request::Read { .. } => op::READ,
            Request::Write { .. } => op::WRITE,
            Request::Create { .. } => op::CREATE,
            Request::Mkdir { .. } => op::MKDIR,
            Request::Unlink { .. } => op::UNLINK,
            Request::Rmdir { .. } => op::RMDIR,
            Request::Rename { .. } => op::RENAME,
            Request::Symlink { .. } => op::SYMLINK,
            Request::ReadLink { .. } => op::READLINK,
            Request::Link { .. } => op::LINK,
            Request::Fsync { .. } => op::FSYNC,
            Request::StatFs => op::STATFS,
            Request::Stats => op::STATS,
        }
    }

    /// Whether the server keeps this request's reply for exactly-once.
    pub fn is_kept(&self) -> bool {
        matches!(
            self,
            Request::SetAttr { .. }
                | Request::Write { .. }
                | Request::Create { .. }
                | Request::Mkdir { .. }
                | Request::Unlink { .. }
                | Request::Rmdir { .. }
                | Request::Rename { .. }
                | Request::Symlink { .. }
                | Request::Link { .. }
        )
    }

    /// Whether the request may be sent again to a server that has no
    /// kept reply for it (a new epoch, or `resumed` 0).
    pub fn is_repeatable(&self) -> bool {
        match self {
            Request::Write { flags, .. } => flags & WRITE_APPEND == 0,
            Request::Create { flags, .. } => flags & (CREATE_EXCLUSIVE | CREATE_TRUNCATE) == 0,
            Request::Mkdir { .. }
            | Request::Unlink { .. }
            | Request::Rmdir { .. }
            | Request::Rename { .. }
            | Request::Symlink { .. }
            | Request::Link { .. }
            | Request::Hello(_) => false,
            _ => true,
        }
    }

    /// Whether the request changes the export.
    pub fn is_change(&self) -> bool {
        self.is_kept()
    }

    /// The payload's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Vec::new();
        match self {
            Request::Hello(h) => {
                o.extend_from_slice(&MAGIC);
                o.put_u32(h.version);
                o.put_u32(0);
                o.extend_from_slice(&h.client_id);
                o.put_u64(h.incarnation);
                o.put_len16(&h.name);
            }
            Request::Farewell | Request::Ping | Request::StatFs | Request::Stats => {}
            Request::Lookup { dir, name }
            | Request::Unlink { dir, name }
            | Request::Rmdir { dir, name } => {
                o.put_id(*dir);
                o.put_len16(name);
            }
            Request::GetAttr { id } | Request::ReadLink { id } => o.put_id(*id),
            Request::SetAttr { id, set } => {
                o.put_id(*id);
                o.put_u32(set.mask);
                o.put_u32(set.mode);
                o.put_u32(set.uid);
                o.put_u32(set.gid);
                o.put_u64(set.size);
                o.put_time(set.atime);
                o.put_time(set.mtime);
            }
            Request::ReadDir {
                dir,
                max_entries,
                cursor,
            } => {
                o.put_id(*dir);
                o.put_u32(*max_entries);
                o.put_len16(cursor);
            }
            Request::Read { id, offset, len } => {
                o.put_id(*id);
                o.put_u64(*offset);
                o.put_u32(*len);
            }
            Request::Write {
                id,
                offset,
                flags,
                data,
            } => {
                o.put_id(*id);
                o.put_u64(*offset);
                o.put_u32(*flags);
                o.put_u32(u32::try_from(data.len()).unwrap_or(u32::MAX));
                o.extend_from_slice(data);
            }
            Request::Create {
                dir,
                mode,
                flags,
                name,
            } => {
                o.put_id(*dir);
                o.put_u32(*mode);
                o.put_u32(*flags);
                o.put_len16(name);
            }
            Request::Mkdir { dir, mode, name } => {
                o.put_id(*dir);
                o.put_u32(*mode);
                o.put_len16(name);
            }
            Request::Rename {
                from_dir,
                to_dir,
                flags,
                from,
                to,
            } => {
                o.put_id(*from_dir);
                o.put_id(*to_dir);
                o.put_u32(*flags);
                o.put_u16(from.len().min(u16::MAX as usize) as u16);
                o.put_u16(to.len().min(u16::MAX as usize) as u16);
                o.extend_from_slice(from);
                o.extend_from_slice(to);
            }
            Request::Symlink { dir, name, target } => {
                o.put_id(*dir);
                o.put_u16(name.len().min(u16::MAX as usize) as u16);
                o.put_u16(target.len().min(u16::MAX as usize) as u16);
                o.extend_from_slice(name);
                o.extend_from_slice(target);
            }
            Request::Link { id, dir, name } => {
                o.put_id(*id);
                o.put_id(*dir);
                o.put_len16(name);
            }
            Request::Fsync { id, flags } => {
                o.put_id(*id);
                o.put_u32(*flags);
            }
        }
        o
    }

    /// Parses the payload of a request with `op`.
    pub fn decode(op_code: u16, payload: &[u8]) -> Result<Request, WireError> {
        let mut r = Reader::new(payload);
        let req = match op_code {
            op::HELLO => {
                if r.array::<8>("magic")? != MAGIC {
                    return Err(WireError::Magic);
                }
                let version = r.u32("version")?;
                if version != VERSION {
                    return Err(WireError::Version(version));
                }
                r.flags(0, "hello flags")?;
                let client_id = r.array::<16>("client_id")?;
                if client_id == [0; 16] {
                    return Err(WireError::Value {
                        field: "client_id",
                        value: 0,
                    });
                }
                let incarnation = r.u64("incarnation")?;
                if incarnation == 0 {
                    return Err(WireError::Value {
                        field: "incarnation",
                        value: 0,
                    });
                }
                let len = r.u16("name_len")?;
                if len as usize > MAX_CLIENT_NAME {
                    return Err(WireError::TooBig {
                        field: "client name",
                        value: len.into(),
                        max: MAX_CLIENT_NAME as u64,
                    });
                }
                let name = r.bytes(len.into(), "client name")?.to_vec();
                Request::Hello(Hello {
                    version,
                    client_id,
                    incarnation,
                    name,
                })
            }
            op::FAREWELL => Request::Farewell,
            op::PING => Request::Ping,
            op::STATFS => Request::StatFs,
            op::STATS => Request::Stats,
            op::LOOKUP => Request::Lookup {
                dir: r.file_id()?,
                name: r.name_with_len("name")?,
            },
            op::UNLINK => Request::Unlink {
                dir: r.file_id()?,
                name: r.name_with_len("name")?,
            },
            op::RMDIR => Request::Rmdir {
                dir: r.file_id()?,
                name: r.name_with_len("name")?,
            },
            op::GETATTR => Request::GetAttr { id: r.file_id()? },
            op::READLINK => Request::ReadLink { id: r.file_id()? },
            op::SETATTR => {
                let id = r.file_id()?;
                let mask = r.flags(setattr::ALL, "setattr mask")?;
                let set = SetAttr {
                    mask,
                    mode: r.u32("mode")?,
                    uid: r.u32("uid")?,
                    gid: r.u32("gid")?,
                    size: r.u64("size")?,
                    atime: r.time("atime")?,
                    mtime: r.time("mtime")?,
                };
                if mask & setattr::MODE != 0 && set.mode & !0o7777 != 0 {
                    return Err(WireError::Value {
                        field: "mode",
                        value: set.mode.into(),
                    });
                }
                if mask & setattr::SIZE != 0 && set.size > i64::MAX as u64 {
                    return Err(WireError::TooBig {
                        field: "size",
                        value: set.size,
                        max: i64::MAX as u64,
                    });
                }
                Request::SetAttr { id, set }
            }
            op::READDIR => {
                let dir = r.file_id()?;
                let max_entries = r.u32("max_entries")?;
                if max_entries == 0 {
                    return Err(WireError::Value {
                        field: "max_entries",
                        value: 0,
                    });
                }
                if max_entries > MAX_READDIR_ENTRIES {
                    return Err(WireError::TooBig {
                        field: "max_entries",
                        value: max_entries.into(),
                        max: MAX_READDIR_ENTRIES.into(),
                    });
                }
                let len = r.u16("cursor_len")?;
                let cursor = r.bytes(len.into(), "cursor")?.to_vec();
                if !cursor.is_empty() {
                    check_name(&cursor)?;
                }
                Request::ReadDir {
                    dir,
                    max_entries,
                    cursor,
                }
            }
            op::READ => {
                let id = r.file_id()?;
                let offset = r.u64("offset")?;
                let len = r.u32("len")?;
                if len as usize > MAX_DATA {
                    return Err(WireError::TooBig {
                        field: "read len",
                        value: len.into(),
                        max: MAX_DATA as u64,
                    });
                }
                check_offset(offset, len.into())?;
                Request::Read { id, offset, len }
            }
            op::WRITE => {
                let id = r.file_id()?;
                let offset = r.u64("offset")?;
                let flags = r.flags(WRITE_APPEND, "write flags")?;
                let len = r.u32("data_len")?;
                if len as usize > MAX_DATA {
                    return Err(WireError::TooBig {
                        field: "write len",
                        value: len.into(),
                        max: MAX_DATA as u64,
                    });
                }
                if flags & WRITE_APPEND == 0 {
                    check_offset(offset, len.into())?;
                }
                let data = r.bytes(len as usize, "data")?.to_vec();
                Request::Write {
                    id,
                    offset,
                    flags,
                    data,
                }
            }
            op::CREATE => {
                let dir = r.file_id()?;
                let mode = mode_bits(r.u32("mode")?)?;
                let flags = r.flags(CREATE_EXCLUSIVE | CREATE_TRUNCATE, "create flags")?;
                Request::Create {
                    dir,
                    mode,
                    flags,
                    name: r.name_with_len("name")?,
                }
            }
            op::MKDIR => {
                let dir = r.file_id()?;
                let mode = mode_bits(r.u32("mode")?)?;
                Request::Mkdir {
                    dir,
                    mode,
                    name: r.name_with_len("name")?,
                }
            }
            op::RENAME => {
                let from_dir = r.file_id()?;
                let to_dir = r.file_id()?;
                let flags = r.flags(RENAME_NOREPLACE, "rename flags")?;
                let from_len = r.u16("from_len")?;
                let to_len = r.u16("to_len")?;
                let from = r.name(from_len, "from")?;
                let to = r.name(to_len, "to")?;
                Request::Rename {
                    from_dir,
                    to_dir,
                    flags,
                    from,
                    to,
                }
            }
            op::SYMLINK => {
                let dir = r.file_id()?;
                let name_len = r.u16("name_len")?;
                let target_len = r.u16("target_len")?;
                let name = r.name(name_len, "name")?;
                let target = r.bytes(target_len.into(), "target")?.to_vec();
                check_target(&target)?;
                Request::Symlink { dir, name, target }
            }
            op::LINK => Request::Link {
                id: r.file_id()?,
                dir: r.file_id()?,
                name: r.name_with_len("name")?,
            },
            op::FSYNC => Request::Fsync {
                id: r.file_id()?,
                flags: r.flags(FSYNC_DATASYNC, "fsync flags")?,
            },
            other => return Err(WireError::UnknownOp(other)),
        };
        r.finish()?;
        Ok(req)
    }
}

fn check_offset(offset: u64, len: u64) -> Result<(), WireError> {
    match offset.checked_add(len) {
        Some(end) if end <= i64::MAX as u64 => Ok(()),
        _ => Err(WireError::TooBig {
            field: "offset + len",
            value: offset,
            max: i64::MAX as u64,
        }),
    }
}

fn mode_bits(mode: u32) -> Result<u32, WireError> {
    if mode & !0o7777 != 0 {
        return Err(WireError::Value {
            field: "mode",
            value: mode.into(),
        });
    }
    Ok(mode)
}

/// A ReadDir entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub ino: u64,
    pub kind: FileKind,
    pub name: Vec<u8>,
}

impl Entry {
    /// Bytes the entry takes in a reply.
    pub fn wire_len(&self) -> usize {
        12 + self.name.len()
    }
}

/// A ReadDir reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirPage {
    pub dir_version: u64,
    pub promise_ms: u32,
    pub eof: bool,
    pub entries: Vec<Entry>,
}

/// A StatFs reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub frsize: u32,
    pub namemax: u32,
}

/// A reply body (status Ok).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyBody {
    Empty,
    Welcome(Welcome),
    Attr(AttrReply),
    Dir(DirPage),
    Read {
        attr: AttrReply,
        data: Vec<u8>,
    },
    Write {
        offset: u64,
        written: u32,
        attr: AttrReply,
    },
    Create {
        attr: AttrReply,
        created: bool,
    },
    Target(Vec<u8>),
    StatFs(StatFs),
    /// (name, value) pairs; names are ASCII, at most 255 bytes.
    Stats(Vec<(String, u64)>),
}

/// A reply, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: Status,
    pub errno: u32,
    pub body: ReplyBody,
}

/// A reply's payload: `status, reserved, errno`, then the body if Ok.
pub fn encode_reply(status: Status, errno: u32, body: &ReplyBody) -> Vec<u8> {
    let mut o = Vec::new();
    o.put_u16(status as u16);
    o.put_u16(0);
    o.put_u32(errno);
    if status != Status::Ok {
        return o;
    }
    match body {
        ReplyBody::Empty => {}
        ReplyBody::Welcome(w) => {
            o.put_u32(w.version);
            o.put_u32(u32::from(w.read_only));
            o.extend_from_slice(&w.export_id);
            o.put_u64(w.epoch);
            o.put_id(w.root);
            o.put_u32(w.max_payload);
            o.put_u32(w.max_data);
            o.put_u32(w.max_inflight);
            o.put_u32(w.max_kept);
            o.put_u32(w.promise_ms);
            o.put_u32(w.break_timeout_ms);
            o.put_u32(w.idle_ms);
            o.put_u8(u8::from(w.resumed));
            o.put_zero(7);
        }
        ReplyBody::Attr(a) => a.put(&mut o),
        ReplyBody::Dir(d) => {
            o.put_u64(d.dir_version);
            o.put_u32(d.promise_ms);
            o.put_u8(u8::from(d.eof));
            o.put_zero(3);
            o.put_u32(u32::try_from(d.entries.len()).unwrap_or(u32::MAX));
            for e in &d.entries {
                o.put_u64(e.ino);
                o.put_u8(e.kind as u8);
                o.put_u8(0);
                o.put_len16(&e.name);
            }
        }
        ReplyBody::Read { attr, data } => {
            attr.put(&mut o);
            o.put_u32(u32::try_from(data.len()).unwrap_or(u32::MAX));
            o.extend_from_slice(data);
        }
        ReplyBody::Write {
            offset,
            written,
            attr,
        } => {
            o.put_u64(*offset);
            o.put_u32(*written);
            o.put_u32(0);
            attr.put(&mut o);
        }
        ReplyBody::Create { attr, created } => {
            attr.put(&mut o);
            o.put_u8(u8::from(*created));
            o.put_zero(7);
        }
        ReplyBody::Target(t) => o.put_len16(t),
        ReplyBody::StatFs(s) => {
            o.put_u64(s.blocks);
            o.put_u64(s.bfree);
            o.put_u64(s.bavail);
            o.put_u64(s.files);
            o.put_u64(s.ffree);
            o.put_u32(s.bsize);
            o.put_u32(s.frsize);
            o.put_u32(s.namemax);
            o.put_u32(0);
        }
        ReplyBody::Stats(v) => {
            o.put_u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
            for (name, value) in v {
                let n = name.len().min(255);
                o.put_u8(n as u8);
                o.extend_from_slice(name.as_bytes().get(..n).unwrap_or_default());
                o.put_u64(*value);
            }
        }
    }
    o
}

/// Parses the payload of a reply to a request with `op`.
pub fn decode_reply(op_code: u16, payload: &[u8]) -> Result<Reply, WireError> {
    let mut r = Reader::new(payload);
    let raw = r.u16("status")?;
    let status = Status::from_u16(raw).ok_or(WireError::Value {
        field: "status",
        value: raw.into(),
    })?;
    r.reserved(2, "reply reserved")?;
    let errno = r.u32("errno")?;
    if status != Status::Ok {
        // A Version refusal carries the server's version; other error
        // bodies are empty.
        if status == Status::Version && r.remaining() == 4 {
            let v = r.u32("version")?;
            return Ok(Reply {
                status,
                errno,
                body: ReplyBody::Welcome(Welcome {
                    version: v,
                    ..Welcome::default()
                }),
            });
        }
        r.finish()?;
        return Ok(Reply {
            status,
            errno,
            body: ReplyBody::Empty,
        });
    }
    let body = match op_code {
        op::HELLO => {
            let version = r.u32("version")?;
            let flags = r.flags(1, "welcome flags")?;
            let export_id = r.array::<16>("export_id")?;
            let epoch = r.u64("epoch")?;
            let root = r.file_id()?;
            let w = Welcome {
                version,
                read_only: flags & 1 != 0,
                export_id,
                epoch,
                root,
                max_payload: r.u32("max_payload")?,
                max_data: r.u32("max_data")?,
                max_inflight: r.u32("max_inflight")?,
                max_kept: r.u32("max_kept")?,
                promise_ms: r.u32("promise_ms")?,
                break_timeout_ms: r.u32("break_timeout_ms")?,
                idle_ms: r.u32("idle_ms")?,
                resumed: r.u8("resumed")? != 0,
            };
            r.reserved(7, "welcome reserved")?;
            ReplyBody::Welcome(w)
        }
        op::FAREWELL | op::PING | op::UNLINK | op::RMDIR | op::RENAME | op::FSYNC => {
            ReplyBody::Empty
        }
        op::LOOKUP | op::GETATTR | op::SETATTR | op::MKDIR | op::SYMLINK | op::LINK => {
            ReplyBody::Attr(AttrReply::get(&mut r)?)
        }
        op::READDIR => {
            let dir_version = r.u64("dir_version")?;
            let promise_ms = r.u32("promise_ms")?;
            let eof = r.u8("eof")? != 0;
            r.reserved(3, "readdir reserved")?;
            let n = r.u32("n")?;
            if n > MAX_READDIR_ENTRIES {
                return Err(WireError::TooBig {
                    field: "entries",
                    value: n.into(),
                    max: MAX_READDIR_ENTRIES.into(),
                });
            }
            let mut entries = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let ino = r.u64("entry ino")?;
                let kind = FileKind::from_u8(r.u8("entry kind")?)?;
                r.reserved(1, "entry reserved")?;
                let name = r.name_with_len("entry name")?;
                entries.push(Entry { ino, kind, name });
            }
            ReplyBody::Dir(DirPage {
                dir_version,
                promise_ms,
                eof,
                entries,
            })
        }
        op::READ => {
            let attr = AttrReply::get(&mut r)?;
            let len = r.u32("data_len")?;
            if len as usize > MAX_DATA {
                return Err(WireError::TooBig {
                    field: "data_len",
                    value: len.into(),
                    max: MAX_DATA as u64,
                });
            }
            let data = r.bytes(len as usize, "data")?.to_vec();
            ReplyBody::Read { attr, data }
        }
        op::WRITE => {
            let offset = r.u64("offset")?;
            let written = r.u32("written")?;
            r.reserved(4, "write reserved")?;
            let attr = AttrReply::get(&mut r)?;
            ReplyBody::Write {
                offset,
                written,
                attr,
            }
        }
        op::CREATE => {
            let attr = AttrReply::get(&mut r)?;
            let created = r.u8("created")? != 0;
            r.reserved(7, "create reserved")?;
            ReplyBody::Create { attr, created }
        }
        op::READLINK => {
            let len = r.u16("target_len")?;
            let t = r.bytes(len.into(), "target")?.to_vec();
            check_target(&t)?;
            ReplyBody::Target(t)
        }
        op::STATFS => {
            let s = StatFs {
                blocks: r.u64("blocks")?,
                bfree: r.u64("bfree")?,
                bavail: r.u64("bavail")?,
                files: r.u64("files")?,
                ffree: r.u64("ffree")?,
                bsize: r.u32("bsize")?,
                frsize: r.u32("frsize")?,
                namemax: r.u32("namemax")?,
            };
            r.reserved(4, "statfs reserved")?;
            ReplyBody::StatFs(s)
        }
        op::STATS => {
            let n = r.u32("stats count")?;
            let mut v = Vec::new();
            for _ in 0..n {
                let len = r.u8("stat name_len")?;
                let name = String::from_utf8_lossy(r.bytes(len.into(), "stat name")?).into_owned();
                v.push((name, r.u64("stat value")?));
            }
            ReplyBody::Stats(v)
        }
        other => return Err(WireError::UnknownOp(other)),
    };
    r.finish()?;
    Ok(Reply {
        status,
        errno,
        body,
    })
}

impl Default for Welcome {
    fn default() -> Self {
        Welcome {
            version: VERSION,
            read_only: false,
            export_id: [0; 16],
            epoch: 0,
            root: FileId::default(),
            max_payload: MAX_PAYLOAD as u32,
            max_data: MAX_DATA as u32,
            max_inflight: 0,
            max_kept: 0,
            promise_ms: 0,
            break_timeout_ms: 0,
            idle_ms: 0,
            resumed: false,
        }
    }
}

/// The payload of a `Version` refusal: the server's version.
pub fn encode_version_refusal() -> Vec<u8> {
    let mut o = encode_reply(Status::Version, 0, &ReplyBody::Empty);
    o.put_u32(VERSION);
    o
}

/// Break scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakScope {
    File(FileId),
    All,
}

/// Why a break was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BreakReason {
    /// Another client changed it.
    Client = 1,
    /// A local process changed it.
    Local = 2,
    /// The server's event queue overflowed (scope All).
    Overflow = 3,
    /// Too many owed breaks were collapsed (scope All).
    OwedCollapsed = 4,
}

/// A Break frame's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Break {
    pub scope: BreakScope,
    pub reason: BreakReason,
}

impl Break {
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Vec::with_capacity(24);
        let (scope, id) = match self.scope {
            BreakScope::File(id) => (1, id),
            BreakScope::All => (2, FileId::default()),
        };
        o.put_u8(scope);
        o.put_u8(self.reason as u8);
        o.put_zero(6);
        o.put_id(id);
        o
    }

    pub fn decode(payload: &[u8]) -> Result<Break, WireError> {
        let mut r = Reader::new(payload);
        let scope = r.u8("scope")?;
        let reason = match r.u8("reason")? {
            1 => BreakReason::Client,
            2 => BreakReason::Local,
            3 => BreakReason::Overflow,
            4 => BreakReason::OwedCollapsed,
            other => {
                return Err(WireError::Value {
                    field: "reason",
                    value: other.into(),
                });
            }
        };
        r.reserved(6, "break reserved")?;
        let id = r.file_id()?;
        r.finish()?;
        let scope = match scope {
            1 => BreakScope::File(id),
            2 => BreakScope::All,
            other => {
                return Err(WireError::Value {
                    field: "scope",
                    value: other.into(),
                });
            }
        };
        Ok(Break { scope, reason })
    }
}

/// An Error frame's payload.
pub fn encode_error(status: Status, msg: &str) -> Vec<u8> {
    let mut o = encode_reply(status, 0, &ReplyBody::Empty);
    let mut end = msg.len().min(MAX_ERROR_MSG);
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    o.put_len16(msg.as_bytes().get(..end).unwrap_or_default());
    o
}

/// Parses an Error frame's payload: its status and message.
pub fn decode_error(payload: &[u8]) -> Result<(Status, String), WireError> {
    let mut r = Reader::new(payload);
    let raw = r.u16("status")?;
    let status = Status::from_u16(raw).ok_or(WireError::Value {
        field: "status",
        value: raw.into(),
    })?;
    r.reserved(2, "error reserved")?;
    r.u32("errno")?;
    let len = r.u16("msg_len")?;
    if len as usize > MAX_ERROR_MSG {
        return Err(WireError::TooBig {
            field: "msg_len",
            value: len.into(),
            max: MAX_ERROR_MSG as u64,
        });
    }
    let msg = String::from_utf8_lossy(r.bytes(len.into(), "msg")?).into_owned();
    r.finish()?;
    Ok((status, msg))
}

#[cfg(test)]
mod tests;
