//! AFS-style callback promises and breaks over the cookie layer: whether
//! cached data may be served without asking the file server, and who must
//! be told when it may not any more.
//!
//! The model is the Linux AFS client (`fs/afs/callback.c`,
//! `fs/afs/validation.c`):
//!
//! - A file server ([`ServerId`]) has an *epoch* that changes when it
//!   restarts, and a break counter. A whole-server break (AFS
//!   `InitCallBackState`), or a volume declaring the server with an epoch
//!   other than the one recorded, bumps it.
//! - A volume belongs to one server and has its own break counter; moving
//!   it to another server is a volume break.
//! - An object (a cookie's file) has its own break counter, an optional
//!   [`Promise`] and the data version its cached data belongs to. The
//!   promise records the three counters as they were when it was
//!   *requested* (the `cb_break_before` rule): a break that arrives while
//!   the request is in flight makes it worthless.
//!
//! Validity is decided on use, in O(1) (three counter comparisons and a
//! clock comparison); a break of one file, one volume or one server is one
//! counter bump, plus a zap for every holder of an object in use, found
//! through per-volume indexes of objects in use, so a mass break costs
//! O(objects in use), never O(objects cached).
//!
//! Files:
//! - this one: configuration, the types the API speaks, errors;
//! - [`registry`]: [`Callbacks`], the counters, promises and holds;
//! - [`coherent`]: [`Coherent`], the façade that keeps the cookie layer's
//!   data and the promises in step (no stale reads).
//!
//! Promises live in memory only: after a restart every object needs
//! revalidation. The protocol and the ordering arguments are in
//! `docs/CALLBACK.md`.

pub mod coherent;
pub mod registry;

use std::time::{Duration, Instant};

pub use coherent::{Coherent, CoherentRead, Revalidated, version_aux};
pub use registry::Callbacks;

use crate::cookie::CacheError;

/// Longest server id, in bytes.
pub const SERVER_ID_MAX: usize = 64;

/// Configuration of the callback layer.
#[derive(Debug, Clone)]
pub struct CallbackConfig {
    /// A promise that expires within this margin is treated as expired:
    /// the answer to a request issued now would not be back in time. AFS
    /// uses a few seconds; the default is 10 s.
    pub margin: Duration,
}

impl Default for CallbackConfig {
    fn default() -> Self {
        CallbackConfig {
            margin: Duration::from_secs(10),
        }
    }
}

/// A file server's identity (its UUID, or an address), 1..=64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerId(Box<[u8]>);

impl ServerId {
    /// A server id from its bytes.
    pub fn new(bytes: &[u8]) -> Result<ServerId, CallbackError> {
        if bytes.is_empty() || bytes.len() > SERVER_ID_MAX {
            return Err(CallbackError::InvalidServerId { len: bytes.len() });
        }
        Ok(ServerId(bytes.into()))
    }

    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A callback promise: the server will tell us (break it) before the file
/// changes, until `expires_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promise {
    /// `issue_time + duration`, where `issue_time` is when the request that
    /// obtained the promise was *sent*, not when the reply arrived: the
    /// server's clock started when it answered, which is after the send,
    /// so counting from the send errs on the safe side, and a reply that
    /// lingered in a queue cannot stretch the promise.
    pub expires_at: Instant,
    /// The file's data version the server reported with the promise.
    pub data_version: u64,
}

/// Whether cached data may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// The promise holds beyond the margin and nothing was broken since it
    /// was requested: cached data of `data_version` may be served.
    Valid { data_version: u64 },
    /// Ask the server first (no promise, broken, expiring, or the object's
    /// data is being invalidated).
    Revalidate,
}

/// A compact handle on an object record: a slab index and the record's
/// generation. A handle on a forgotten record never aliases a new record
/// in the same slot: generations are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObjectRef {
    index: usize,
    generation: u64,
}

/// The three break counters as one snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamps {
    object: u64,
    volume: u64,
    server: u64,
}

/// What [`Callbacks::begin_fetch`] saw: take one *before* sending a
/// request to the server and hand it back with the reply. If a break of
/// the object, its volume or its server arrives in between, the token is
/// broken and the reply's promise is worthless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchToken {
    obj: ObjectRef,
    seen: Stamps,
    /// The registry's stamp when the token was taken, to tell tokens taken
    /// before the object's last data-version change.
    taken: u64,
}

impl FetchToken {
    /// The object the token was taken for.
    pub fn object(&self) -> ObjectRef {
        self.obj
    }

    /// The token on the wire: six little-endian u64s (record index and
    /// generation, the three stamps, the registry stamp when taken).
    pub fn to_bytes(&self) -> [u8; 48] {
        let mut out = [0u8; 48];
        let fields = [
            self.obj.index as u64,
            self.obj.generation,
            self.seen.object,
            self.seen.volume,
            self.seen.server,
            self.taken,
        ];
        for (chunk, v) in out.chunks_exact_mut(8).zip(fields) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// A token from the wire; `None` unless exactly 48 bytes. A token a
    /// client made up names no live record or carries stamps that do not
    /// match: it is simply broken, never a way to another record.
    pub fn from_bytes(b: &[u8]) -> Option<FetchToken> {
        if b.len() != 48 {
            return None;
        }
        let mut f = [0u64; 6];
        for (v, chunk) in f.iter_mut().zip(b.chunks_exact(8)) {
            let mut a = [0u8; 8];
            a.copy_from_slice(chunk);
            *v = u64::from_le_bytes(a);
        }
        Some(FetchToken {
            obj: ObjectRef {
                index: usize::try_from(f[0]).ok()?,
                generation: f[1],
            },
            seen: Stamps {
                object: f[2],
                volume: f[3],
                server: f[4],
            },
            taken: f[5],
        })
    }
}

/// Why a holder is told to drop what it has of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ZapReason {
    /// The server broke the promise on this file.
    FileBreak,
    /// The server broke every promise on the file's volume, or the volume
    /// moved to another server.
    VolumeBreak,
    /// The server broke all its promises, or restarted (new epoch).
    ServerBreak,
    /// Another holder found a new data version and invalidated the data.
    Invalidated,
}

/// Tell `holder` to drop what it has of its object `tag` (for a FUSE
/// client, `notify_inval_inode`: page cache and mapped pages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Zap {
    pub holder: u64,
    pub tag: u32,
    pub reason: ZapReason,
    pub object: ObjectRef,
}

/// Errors of the callback layer.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// The fetch token was broken (a break came after it was taken, the
    /// object's data version changed since, or the record was forgotten):
    /// what the reply says may be out of date. Fetch again.
    #[error("the callback was broken while the request was in flight")]
    Broken,
    /// The object record was forgotten (the cookie was relinquished).
    #[error("the object record has been forgotten")]
    Forgotten,
    /// A promise for another data version than the cached data's: go
    /// through [`Coherent::revalidate`], which invalidates the data first.
    #[error("promise for data version {promised}, cached data is of {cached:?}")]
    OtherVersion { cached: Option<u64>, promised: u64 },
    /// A server id must be 1..=64 bytes.
    #[error("a server id must be 1..={SERVER_ID_MAX} bytes, not {len}")]
    InvalidServerId { len: usize },
    /// The cookie handed in is not the object record's.
    #[error("the cookie is not the one the object record was made for")]
    WrongCookie,
    /// The cookie layer failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// Counts, for tests and `stat`. All O(1) to take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallbackStats {
    pub servers: usize,
    pub volumes: usize,
    /// Object records.
    pub objects: usize,
    /// Objects with at least one hold.
    pub objects_in_use: usize,
    /// (object, holder) pairs.
    pub holds: usize,
    /// Holders with at least one hold.
    pub holders: usize,
    /// Objects whose data is being invalidated.
    pub invalidating: usize,
    /// Objects broken one by one.
    pub file_breaks: u64,
    pub volume_breaks: u64,
    /// Whole-server breaks, including new epochs.
    pub server_breaks: u64,
    pub zaps: u64,
    /// Object records the breaks looked at: a volume or server break adds
    /// the objects in use, never the objects cached.
    pub break_visits: u64,
}
