//! The version-2 requests of the blocking client: the callback layer
//! (declare a volume's server, fetch tokens, promises, validation,
//! revalidation, breaks, writes of fetched data), Flush, and zap events.

use std::time::{Duration, Instant};

use super::{Client, CookieHandle, Frame, Result, VolumeHandle};
use crate::proto::{EVENT, EVENT_ZAP, Op, Reader, TOKEN_BYTES, Writer};

/// A zap event: drop what is cached above the cache of the file behind
/// `handle` (0: every handle of the connection) and revalidate before its
/// next use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZapEvent {
    pub handle: u32,
    /// `proto::ZAP_FILE`, `ZAP_VOLUME`, `ZAP_SERVER` or `ZAP_INVALIDATED`.
    pub reason: u8,
}

impl ZapEvent {
    /// The zap a frame carries, if it is one.
    pub fn parse(f: &Frame) -> Option<ZapEvent> {
        if f.id != 0 || f.op != EVENT | EVENT_ZAP {
            return None;
        }
        let mut r = Reader::new(&f.payload);
        let handle = r.u32().ok()?;
        let reason = r.u8().ok()?;
        Some(ZapEvent { handle, reason })
    }
}

/// What a revalidation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revalidation {
    /// The server's version is the cached data's: the data was kept.
    pub kept: bool,
    /// The promise was installed (false: a break came meanwhile).
    pub installed: bool,
}

impl Client {
    /// The volume `v` is an export of `server`, now at `epoch`.
    pub fn declare_server(&mut self, v: VolumeHandle, server: &[u8], epoch: u64) -> Result<()> {
        let body = body::declare_server(v, server, epoch)?;
        self.call(Op::DeclareServer, &body).map(|_| ())
    }

    /// A fetch token for `c`: take it before asking the server.
    pub fn begin_fetch(&mut self, c: CookieHandle) -> Result<[u8; TOKEN_BYTES]> {
        parse::token(&self.call(Op::BeginFetch, &super::request::cookie_only(c))?)
    }

    /// Install a promise for the data version cached, lasting `valid_ms`
    /// from now (count it from when the server request was sent).
    pub fn install_promise(
        &mut self,
        c: CookieHandle,
        token: &[u8; TOKEN_BYTES],
        data_version: u64,
        valid_ms: u32,
    ) -> Result<()> {
        let body = body::install_promise(c, token, data_version, valid_ms);
        self.call(Op::InstallPromise, &body).map(|_| ())
    }

    /// The data version cached under a valid promise, or `None` when the
    /// server must be asked first.
    pub fn validate(&mut self, c: CookieHandle) -> Result<Option<u64>> {
        let id = self.send(Op::Validate, &super::request::cookie_only(c))?;
        parse::validate(self.recv(id)?)
    }

    /// The server says the file is at `data_version`, `size` bytes, with a
    /// promise lasting `valid_ms`.
    pub fn revalidate(
        &mut self,
        c: CookieHandle,
        token: &[u8; TOKEN_BYTES],
        data_version: u64,
        size: u64,
        valid_ms: u32,
    ) -> Result<Revalidation> {
        let body = body::revalidate(c, token, data_version, size, valid_ms);
        parse::revalidation(&self.call(Op::Revalidate, &body)?)
    }

    /// The server broke its promises on these files of volume `v`;
    /// returns how many had records.
    pub fn break_files(&mut self, v: VolumeHandle, keys: &[&[u8]]) -> Result<u32> {
        let body = body::break_files(v, keys)?;
        parse::count(&self.call(Op::BreakFiles, &body)?)
    }

    /// The server broke every promise on volume `v`.
    pub fn break_volume(&mut self, v: VolumeHandle) -> Result<()> {
        self.call(Op::BreakVolume, &Writer::new().u32(v.0).finish())
            .map(|_| ())
    }

    /// The server of volume `v` broke all its promises.
    pub fn break_server(&mut self, v: VolumeHandle) -> Result<()> {
        self.call(Op::BreakServer, &Writer::new().u32(v.0).finish())
            .map(|_| ())
    }

    /// Returns once every acknowledged write is on the device.
    pub fn flush_cache(&mut self) -> Result<()> {
        self.call(Op::Flush, &[]).map(|_| ())
    }

    /// Cache data fetched from the server under `token`, of
    /// `data_version`; `Ok(Status::Ok)` when cached, `Ok(Dropped |
    /// Stale)` when not, `Err(Status(Broken))` if a break came since.
    pub fn write_fetched(
        &mut self,
        c: CookieHandle,
        token: &[u8; TOKEN_BYTES],
        data_version: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<crate::proto::Status> {
        let body = body::write_fetched(c, token, data_version, offset, data)?;
        let id = self.send(Op::WriteFetched, &body)?;
        super::reply::write(self.recv(id)?.0)
    }

    /// The next zap event: one that arrived already, or one that arrives
    /// within `timeout` (`None` if none does).
    pub fn wait_zap(&mut self, timeout: Duration) -> Result<Option<ZapEvent>> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(f) = self.events.pop_front() {
                if let Some(z) = ZapEvent::parse(&f) {
                    return Ok(Some(z));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.flush()?;
            if self.reader.buffer().is_empty() {
                self.stream.set_read_timeout(Some(left))?;
                let mut probe = [0u8; 1];
                let r = {
                    use std::os::fd::AsRawFd;
                    nix::sys::socket::recv(
                        self.stream.as_raw_fd(),
                        &mut probe,
                        nix::sys::socket::MsgFlags::MSG_PEEK,
                    )
                    .map(|_| ())
                    .map_err(std::io::Error::from)
                };
                self.stream.set_read_timeout(None)?;
                match r {
                    Ok(()) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        return Ok(None);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let f = self.read_frame()?;
            if f.id == 0 {
                self.events.push_back(f);
            } else {
                self.early.insert(f.id, f);
            }
        }
    }
}

/// Request bodies of the version-2 operations, shared by the blocking and
/// the shared client. Lengths that do not fit their field are errors.
pub(super) mod body {
    use super::super::request::fits;
    use super::super::{CookieHandle, Result, VolumeHandle};
    use crate::proto::{TOKEN_BYTES, Writer};

    pub fn declare_server(v: VolumeHandle, server: &[u8], epoch: u64) -> Result<Vec<u8>> {
        let n: u8 = fits(server.len(), "a server id")?;
        Ok(Writer::new()
            .u32(v.0)
            .u64(epoch)
            .u8(n)
            .u8(0)
            .u16(0)
            .bytes(server)
            .finish())
    }

    pub fn install_promise(
        c: CookieHandle,
        token: &[u8; TOKEN_BYTES],
        data_version: u64,
        valid_ms: u32,
    ) -> Vec<u8> {
        Writer::new()
            .u32(c.0)
            .u32(valid_ms)
            .u64(data_version)
            .bytes(token)
            .finish()
    }

    pub fn revalidate(
        c: CookieHandle,
        token: &[u8; TOKEN_BYTES],
        data_version: u64,
        size: u64,
        valid_ms: u32,
    ) -> Vec<u8> {
        Writer::new()
            .u32(c.0)
            .u32(valid_ms)
            .u64(data_version)
            .u64(size)
            .bytes(token)
            .finish()
    }

    pub fn break_files(v: VolumeHandle, keys: &[&[u8]]) -> Result<Vec<u8>> {
        let mut w = Writer::new().u32(v.0).u32(fits(keys.len(), "a key list")?);
        for k in keys {
            w = w.u16(fits(k.len(), "a key")?).bytes(k);
        }
        Ok(w.finish())
    }

    pub fn write_fetched(
        c: CookieHandle,
        token: &[u8; TOKEN_BYTES],
        data_version: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        Ok(Writer::new()
            .u32(c.0)
            .u32(fits(data.len(), "a write")?)
            .u64(offset)
            .u64(data_version)
            .bytes(token)
            .bytes(data)
            .finish())
    }
}

/// Reply decoding of the version-2 operations (bounds-checked).
pub(super) mod parse {
    use super::super::{ClientError, Result};
    use super::Revalidation;
    use crate::proto::{Reader, Status, TOKEN_BYTES};

    pub fn token(b: &[u8]) -> Result<[u8; TOKEN_BYTES]> {
        b.try_into()
            .map_err(|_| ClientError::Protocol(format!("a token of {} bytes", b.len())))
    }

    pub fn validate((status, b): (Status, Vec<u8>)) -> Result<Option<u64>> {
        match status {
            Status::Ok => {
                let mut r = Reader::new(&b);
                let v = r.u64()?;
                r.end()?;
                Ok(Some(v))
            }
            Status::Revalidate => Ok(None),
            st => Err(ClientError::Status(st)),
        }
    }

    pub fn revalidation(b: &[u8]) -> Result<Revalidation> {
        let mut r = Reader::new(b);
        let kept = r.u8()? != 0;
        let installed = r.u8()? != 0;
        let _ = r.u16()?;
        r.end()?;
        Ok(Revalidation { kept, installed })
    }

    pub fn count(b: &[u8]) -> Result<u32> {
        let mut r = Reader::new(b);
        let n = r.u32()?;
        r.end()?;
        Ok(n)
    }
}
