//! [`Requests`]: the typed requests of the protocol over any way of
//! sending one and waiting for its reply: a [`SharedClient`] (the
//! daemon's socket, many threads on one connection) or an in-process
//! session with a daemon in the same process
//! (`crate::daemon::LocalSession`).
//!
//! [`SharedClient`]: super::SharedClient

use super::callback::{body, parse};
use super::{
    CookieHandle, ReadReply, ReadSegment, Result, Revalidation, VolumeHandle, WholeRead, ok_body,
    reply, request,
};
use crate::proto::{Op, Status, TOKEN_BYTES, Writer};

/// Appends the pieces of a read at `offset` to `out` if they follow one
/// another from `offset` on with no hole (`None`) or gap: `Data`; else
/// appends nothing: `Partial`. The one rule of [`Requests::read_whole`],
/// for every way of answering it.
pub fn append_whole<'a>(
    out: &mut Vec<u8>,
    offset: u64,
    pieces: impl IntoIterator<Item = Option<(u64, &'a [u8])>>,
) -> WholeRead {
    let start = out.len();
    let mut at = offset;
    for piece in pieces {
        match piece {
            Some((off, data)) if off == at => {
                out.extend_from_slice(data);
                at += data.len() as u64;
            }
            _ => {
                out.truncate(start);
                return WholeRead::Partial;
            }
        }
    }
    WholeRead::Data
}

/// What [`Requests::start_read_whole`] calls with a read's outcome and
/// the buffer its bytes were appended to.
pub type ReadWholeDone = Box<dyn FnOnce(Result<WholeRead>, Vec<u8>) + Send>;

/// The requests of the protocol, each one call, from many threads at once.
pub trait Requests: Send + Sync {
    /// Send a request and wait for its reply: (status, body).
    fn request(&self, op: Op, body: &[u8]) -> Result<(Status, Vec<u8>)>;

    /// Whether the way to the daemon is gone for good (make a new one).
    fn is_dead(&self) -> bool;

    /// A request whose status must be Ok.
    fn call(&self, op: Op, body: &[u8]) -> Result<Vec<u8>> {
        ok_body(self.request(op, body)?)
    }

    fn acquire_volume(&self, key: &[u8], aux: &[u8]) -> Result<VolumeHandle> {
        reply::volume(&self.call(Op::AcquireVolume, &request::acquire_volume(key, aux)?)?)
    }

    fn relinquish_volume(&self, v: VolumeHandle, invalidate: bool) -> Result<()> {
        self.call(
            Op::RelinquishVolume,
            &request::relinquish_volume(v, invalidate),
        )
        .map(|_| ())
    }

    fn acquire_cookie(
        &self,
        v: VolumeHandle,
        key: &[u8],
        aux: &[u8],
        size: u64,
    ) -> Result<CookieHandle> {
        reply::cookie(&self.call(
            Op::AcquireCookie,
            &request::acquire_cookie(v, key, aux, size)?,
        )?)
    }

    fn relinquish_cookie(&self, c: CookieHandle, retire: bool) -> Result<()> {
        self.call(Op::RelinquishCookie, &request::relinquish_cookie(c, retire))
            .map(|_| ())
    }

    fn use_cookie(&self, c: CookieHandle, will_modify: bool) -> Result<()> {
        self.call(Op::UseCookie, &request::use_cookie(c, will_modify))
            .map(|_| ())
    }

    fn unuse_cookie(&self, c: CookieHandle) -> Result<()> {
        self.call(Op::UnuseCookie, &request::unuse_cookie(c, None, None)?)
            .map(|_| ())
    }

    fn read(&self, c: CookieHandle, offset: u64, len: u32) -> Result<ReadReply> {
        let (st, body) = self.request(Op::Read, &request::read(c, offset, len))?;
        reply::read(st, &body)
    }

    /// A read whose bytes are wanted only if the cache holds them from
    /// `offset` on without a hole (the data may end early, at the end of
    /// the object): they are appended to `out`, and nothing is appended
    /// otherwise. A session in this process answers it without encoding
    /// a reply, copying the data once.
    fn read_whole(
        &self,
        c: CookieHandle,
        offset: u64,
        len: u32,
        out: &mut Vec<u8>,
    ) -> Result<WholeRead> {
        Ok(match self.read(c, offset, len)? {
            ReadReply::Data(segs) => append_whole(
                out,
                offset,
                segs.iter().map(|s| match s {
                    ReadSegment::Data { offset, data } => Some((*offset, data.as_slice())),
                    ReadSegment::Hole { .. } => None,
                }),
            ),
            ReadReply::NoData => WholeRead::NoData,
            ReadReply::Stale => WholeRead::Stale,
            ReadReply::Revalidate => WholeRead::Revalidate,
        })
    }

    /// [`Requests::read_whole`], answered later: `done` gets the outcome
    /// and `out` with the bytes appended. It may be called on another
    /// thread, and before this returns. The default reads here and now;
    /// a session in this process hands the read to its read thread,
    /// which sends the reads that arrive together to the device in one
    /// submission and answers each as its I/O completes, so the caller
    /// does not wait for the device. (A read that is alone, with no other
    /// outstanding nor others lately, it reads on the caller's thread,
    /// which is faster at queue depth 1; `LocalSession::hand_over_every_read`
    /// turns that off.)
    fn start_read_whole(
        &self,
        c: CookieHandle,
        offset: u64,
        len: u32,
        mut out: Vec<u8>,
        done: ReadWholeDone,
    ) {
        let r = self.read_whole(c, offset, len, &mut out);
        done(r, out);
    }

    fn query_occupancy(&self, c: CookieHandle) -> Result<Vec<(u64, u64)>> {
        reply::occupancy(&self.call(Op::QueryOccupancy, &request::cookie_only(c))?)
    }

    fn stats(&self) -> Result<Vec<(String, u64)>> {
        reply::stats(&self.call(Op::Stats, &[])?)
    }

    /// The daemon's metrics in the Prometheus text format.
    fn metrics(&self) -> Result<String> {
        reply::metrics(&self.call(Op::Metrics, &[])?)
    }

    /// The volume `v` is an export of `server`, now at `epoch`.
    fn declare_server(&self, v: VolumeHandle, server: &[u8], epoch: u64) -> Result<()> {
        self.call(Op::DeclareServer, &body::declare_server(v, server, epoch)?)
            .map(|_| ())
    }

    /// A fetch token for `c`: take it before asking the server.
    fn begin_fetch(&self, c: CookieHandle) -> Result<[u8; TOKEN_BYTES]> {
        parse::token(&self.call(Op::BeginFetch, &request::cookie_only(c))?)
    }

    /// The data version cached under a valid promise, or `None`.
    fn validate(&self, c: CookieHandle) -> Result<Option<u64>> {
        parse::validate(self.request(Op::Validate, &request::cookie_only(c))?)
    }

    /// The server says the file is at `data_version`, `size` bytes.
    fn revalidate(
        &self,
        c: CookieHandle,
        token: &[u8; TOKEN_BYTES],
        data_version: u64,
        size: u64,
        valid_ms: u32,
    ) -> Result<Revalidation> {
        let b = body::revalidate(c, token, data_version, size, valid_ms);
        parse::revalidation(&self.call(Op::Revalidate, &b)?)
    }

    /// Cache data fetched from the server under `token`.
    fn write_fetched(
        &self,
        c: CookieHandle,
        token: &[u8; TOKEN_BYTES],
        data_version: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<Status> {
        let b = body::write_fetched(c, token, data_version, offset, data)?;
        reply::write(self.request(Op::WriteFetched, &b)?.0)
    }

    /// The server broke its promises on these files of volume `v`.
    fn break_files(&self, v: VolumeHandle, keys: &[&[u8]]) -> Result<u32> {
        parse::count(&self.call(Op::BreakFiles, &body::break_files(v, keys)?)?)
    }

    /// The server of volume `v` broke all its promises.
    fn break_server(&self, v: VolumeHandle) -> Result<()> {
        self.call(Op::BreakServer, &Writer::new().u32(v.0).finish())
            .map(|_| ())
    }

    /// Returns once every acknowledged write is on the device.
    fn flush_cache(&self) -> Result<()> {
        self.call(Op::Flush, &[]).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::{WholeRead, append_whole};

    #[test]
    fn only_pieces_that_follow_on_from_the_offset_are_whole() {
        let mut out = b"x".to_vec();
        let (a, b) = ([1u8; 4], [2u8; 4]);
        let whole = [Some((0, &a[..])), Some((4, &b[..]))];
        assert_eq!(append_whole(&mut out, 0, whole), WholeRead::Data);
        assert_eq!(out, [&b"x"[..], &a, &b].concat());
        let mut out = Vec::new();
        assert_eq!(
            append_whole(&mut out, 100, []),
            WholeRead::Data,
            "at the end"
        );
        assert!(out.is_empty());
        let hole = [Some((0, &a[..])), None];
        assert_eq!(append_whole(&mut out, 0, hole), WholeRead::Partial);
        assert!(out.is_empty(), "nothing appended");
        let gap = [Some((8, &a[..]))];
        assert_eq!(append_whole(&mut out, 0, gap), WholeRead::Partial, "a gap");
        assert!(out.is_empty());
    }
}
