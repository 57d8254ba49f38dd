//! What the server keeps in its state directory: the lock, the export it
//! belongs to, the export id, the epoch (bumped at every start) and the
//! data versions (an append-only log of checksummed records).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::wire::FileId;

use super::ServerError;

/// The state directory, locked for this server.
pub struct StateDir {
    _lock: Flock<File>,
    pub dir: PathBuf,
    pub epoch: u64,
    pub export_id: [u8; 16],
}

fn io_err(path: &Path, e: io::Error) -> ServerError {
    ServerError::State {
        path: path.to_path_buf(),
        source: e,
    }
}

/// Writes `bytes` to `dir/name` crash-safely: a temporary file, fsync,
/// rename over, fsync of the directory.
fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

impl StateDir {
    /// Opens (creating if need be) and locks the state directory of the
    /// export `export` (canonical), and starts a new epoch.
    pub fn open(dir: &Path, export: &Path) -> Result<StateDir, ServerError> {
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let canon = dir.canonicalize().map_err(|e| io_err(dir, e))?;
        if canon.starts_with(export) {
            return Err(ServerError::StateInsideExport(canon));
        }
        let lock_path = canon.join("lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_err(&lock_path, e))?;
        let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock)
            .map_err(|_| ServerError::StateLocked(canon.clone()))?;

        let export_path = canon.join("export");
        let export_text = export.to_string_lossy().into_owned();
        match fs::read_to_string(&export_path) {
            Ok(recorded) if recorded.trim_end() == export_text => {}
            Ok(recorded) => {
                return Err(ServerError::StateOfAnotherExport {
                    state: canon,
                    recorded: recorded.trim_end().to_string(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                replace_file(&canon, "export", format!("{export_text}\n").as_bytes())
                    .map_err(|e| io_err(&export_path, e))?;
            }
            Err(e) => return Err(io_err(&export_path, e)),
        }

        let id_path = canon.join("export-id");
        let export_id = match fs::read_to_string(&id_path) {
            Ok(text) => parse_hex16(text.trim()).ok_or_else(|| {
                io_err(
                    &id_path,
                    io::Error::new(io::ErrorKind::InvalidData, "not 32 hex digits"),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let id: [u8; 16] = rand::random();
                replace_file(&canon, "export-id", format!("{}\n", hex(&id)).as_bytes())
                    .map_err(|e| io_err(&id_path, e))?;
                id
            }
            Err(e) => return Err(io_err(&id_path, e)),
        };

        let epoch_path = canon.join("epoch");
        let old = match fs::read_to_string(&epoch_path) {
            Ok(text) => text.trim().parse::<u64>().map_err(|_| {
                io_err(
                    &epoch_path,
                    io::Error::new(io::ErrorKind::InvalidData, "not a number"),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_err(&epoch_path, e)),
        };
        let epoch = old + 1;
        replace_file(&canon, "epoch", format!("{epoch}\n").as_bytes())
            .map_err(|e| io_err(&epoch_path, e))?;
        Ok(StateDir {
            _lock: lock,
            dir: canon,
            epoch,
            export_id,
        })
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn parse_hex16(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// What a data version was assigned for: the file as it was then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fingerprint {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl Fingerprint {
    pub fn of(md: &fs::Metadata) -> Fingerprint {
        Fingerprint {
            size: md.size(),
            mtime_ns: md
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(md.mtime_nsec()),
            ctime_ns: md
                .ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(md.ctime_nsec()),
        }
    }
}

struct Rec {
    version: u64,
    fp: Fingerprint,
    /// The overflow generation this version was last trusted at.
    checked: u64,
    /// When the server last changed the file, or saw it as `fp` says.
    seen_at: Option<Instant>,
}

struct VersionsInner {
    map: HashMap<FileId, Rec>,
    /// The highest version handed out.
    high: u64,
    /// Bumped at every event-queue overflow: a record checked before it
    /// gets a new version at its next use.
    suspect: u64,
    log: File,
    path: PathBuf,
    log_records: u64,
    dirty: bool,
}

/// Data versions of files, persisted.
pub struct Versions {
    inner: Mutex<VersionsInner>,
}

/// A change this close after the server's own change, leaving the
/// fingerprint the server recorded, is taken for the server's own.
pub const OWN_WINDOW: Duration = Duration::from_secs(2);

const REC_LEN: usize = 64;

fn encode_rec(id: FileId, version: u64, fp: Fingerprint) -> [u8; REC_LEN] {
    let mut b = [0u8; REC_LEN];
    let fields = [
        id.ino,
        id.gen_,
        version,
        fp.size,
        fp.mtime_ns as u64,
        fp.ctime_ns as u64,
    ];
    for (chunk, v) in b.chunks_exact_mut(8).zip(fields) {
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    let crc = crc32c::crc32c(b.get(..60).unwrap_or_default());
    if let Some(tail) = b.get_mut(60..64) {
        tail.copy_from_slice(&crc.to_le_bytes());
    }
    b
}

fn decode_rec(b: &[u8]) -> Option<(FileId, u64, Fingerprint)> {
    if b.len() != REC_LEN {
        return None;
    }
    let crc = u32::from_le_bytes(b.get(60..64)?.try_into().ok()?);
    if crc != crc32c::crc32c(b.get(..60)?) || b.get(48..60)?.iter().any(|&x| x != 0) {
        return None;
    }
    let mut f = [0u64; 6];
    for (v, chunk) in f.iter_mut().zip(b.chunks_exact(8)) {
        *v = u64::from_le_bytes(chunk.try_into().ok()?);
    }
    let [ino, gen_, version, size, mtime, ctime] = f;
    Some((
        FileId { ino, gen_ },
        version,
        Fingerprint {
            size,
            mtime_ns: mtime as i64,
            ctime_ns: ctime as i64,
        },
    ))
}

impl Versions {
    /// Loads `dir/versions.log` (dropping a torn or corrupt tail) and
    /// compacts it.
    pub fn open(dir: &Path) -> Result<Versions, ServerError> {
        let path = dir.join("versions.log");
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes).map_err(|e| io_err(&path, e))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path, e)),
        }
        let mut map = HashMap::new();
        let mut high = 0u64;
        for (good, chunk) in bytes.chunks(REC_LEN).enumerate() {
            let Some((id, version, fp)) = decode_rec(chunk) else {
                tracing::warn!(
                    offset = good * REC_LEN,
                    "versions.log: torn or corrupt record; the rest is dropped"
                );
                break;
            };
            high = high.max(version);
            if id != FileId::default() {
                map.insert(
                    id,
                    Rec {
                        version,
                        fp,
                        checked: 0,
                        seen_at: None,
                    },
                );
            }
        }
        // Compact: the live records and the high-water mark, into a new
        // file renamed over the old one.
        let mut out = Vec::with_capacity((map.len() + 1) * REC_LEN);
        out.extend_from_slice(&encode_rec(FileId::default(), high, Fingerprint::default()));
        for (id, r) in &map {
            out.extend_from_slice(&encode_rec(*id, r.version, r.fp));
        }
        replace_file(dir, "versions.log", &out).map_err(|e| io_err(&path, e))?;
        let log = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        let log_records = map.len() as u64 + 1;
        Ok(Versions {
            inner: Mutex::new(VersionsInner {
                map,
                high,
                suspect: 0,
                log,
                path,
                log_records,
                dirty: false,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VersionsInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The file's current data version: assigned at first sight, and new
    /// if the file is not as the version was recorded for (changed
    /// unseen) or was last trusted before an event-queue overflow. The
    /// flag says the version changed for a file that had one: promises
    /// on it must be broken.
    pub fn current(&self, id: FileId, fp: Fingerprint) -> io::Result<(u64, bool)> {
        let mut g = self.lock();
        let suspect = g.suspect;
        match g.map.get_mut(&id) {
            Some(r) if r.fp == fp && r.checked >= suspect => {
                r.seen_at = Some(Instant::now());
                Ok((r.version, false))
            }
            // Changed unseen, or trusted again only under a new version.
            Some(_) => g.bump(id, fp).map(|v| (v, true)),
            None => g.bump(id, fp).map(|v| (v, false)),
        }
    }

    /// The server changed the file's data (or a directory's entries).
    pub fn bump_own(&self, id: FileId, fp: Fingerprint) -> io::Result<u64> {
        self.lock().bump(id, fp)
    }

    /// The server changed only the file's attributes: the version stays,
    /// the fingerprint follows.
    pub fn refresh_own(&self, id: FileId, fp: Fingerprint) -> io::Result<u64> {
        let mut g = self.lock();
        let suspect = g.suspect;
        match g.map.get_mut(&id) {
            Some(r) if r.checked >= suspect => {
                r.fp = fp;
                r.seen_at = Some(Instant::now());
                let (v, rec) = (r.version, encode_rec(id, r.version, fp));
                g.append(&rec)?;
                Ok(v)
            }
            _ => g.bump(id, fp),
        }
    }

    /// An event says a local process changed the file: a new version,
    /// unless the file is as the server last saw it within
    /// [`OWN_WINDOW`] (the event is of the server's own change, or of one
    /// it already gave a version, and broke, when it saw it), or nobody
    /// was ever told a version.
    pub fn local_event(&self, id: FileId, fp: Fingerprint) -> io::Result<Option<u64>> {
        let mut g = self.lock();
        let Some(r) = g.map.get(&id) else {
            return Ok(None);
        };
        let seen = r.fp == fp && r.seen_at.is_some_and(|t| t.elapsed() < OWN_WINDOW);
        if seen {
            return Ok(None);
        }
        g.bump(id, fp).map(Some)
    }

    /// An event queue overflow: every version is suspect.
    pub fn suspect_all(&self) {
        self.lock().suspect += 1;
    }

    /// The file is gone.
    pub fn forget(&self, id: FileId) {
        self.lock().map.remove(&id);
    }

    /// Syncs the log if anything was appended since the last sync.
    pub fn sync(&self) -> io::Result<()> {
        let mut g = self.lock();
        if g.dirty {
            g.log.sync_data()?;
            g.dirty = false;
        }
        Ok(())
    }
}

impl VersionsInner {
    fn bump(&mut self, id: FileId, fp: Fingerprint) -> io::Result<u64> {
        self.high += 1;
        let version = self.high;
        let suspect = self.suspect;
        self.map.insert(
            id,
            Rec {
                version,
                fp,
                checked: suspect,
                seen_at: Some(Instant::now()),
            },
        );
        self.append(&encode_rec(id, version, fp))?;
        Ok(version)
    }

    fn append(&mut self, rec: &[u8; REC_LEN]) -> io::Result<()> {
        self.log.write_all(rec)?;
        self.dirty = true;
        self.log_records += 1;
        if self.log_records > 2 * self.map.len() as u64 + 65_536 {
            self.compact()?;
        }
        Ok(())
    }

    fn compact(&mut self) -> io::Result<()> {
        let mut out = Vec::with_capacity((self.map.len() + 1) * REC_LEN);
        out.extend_from_slice(&encode_rec(
            FileId::default(),
            self.high,
            Fingerprint::default(),
        ));
        for (id, r) in &self.map {
            out.extend_from_slice(&encode_rec(*id, r.version, r.fp));
        }
        let dir = self
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        replace_file(&dir, "versions.log", &out)?;
        self.log = OpenOptions::new().append(true).open(&self.path)?;
        self.log_records = self.map.len() as u64 + 1;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(n: i64) -> Fingerprint {
        Fingerprint {
            size: 1,
            mtime_ns: n,
            ctime_ns: n,
        }
    }

    #[test]
    fn versions_survive_reopen_and_never_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let a = FileId { ino: 5, gen_: 1 };
        let v1;
        let v2;
        {
            let v = Versions::open(dir.path()).unwrap();
            v1 = v.current(a, fp(1)).unwrap().0;
            assert_eq!(v.current(a, fp(1)).unwrap(), (v1, false));
            // Same fingerprint, own change: still a new version.
            v2 = v.bump_own(a, fp(1)).unwrap();
            assert!(v2 > v1);
            // A local event with the server's fingerprint right after its
            // own change is the server's own.
            assert_eq!(v.local_event(a, fp(1)).unwrap(), None);
            // ...with another fingerprint it is not.
            let v3 = v.local_event(a, fp(2)).unwrap().unwrap();
            assert!(v3 > v2);
            v.forget(a);
        }
        let v = Versions::open(dir.path()).unwrap();
        // Forgotten in memory only before the restart: the log still
        // has the record, and the high-water mark is kept either way.
        let again = v.current(FileId { ino: 9, gen_: 9 }, fp(0)).unwrap().0;
        assert!(again > v2 + 1);
    }

    #[test]
    fn a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let a = FileId { ino: 5, gen_: 1 };
        let v1 = {
            let v = Versions::open(dir.path()).unwrap();
            v.current(a, fp(1)).unwrap().0
        };
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("versions.log"))
            .unwrap();
        f.write_all(&[7u8; 30]).unwrap();
        drop(f);
        let v = Versions::open(dir.path()).unwrap();
        assert_eq!(v.current(a, fp(1)).unwrap(), (v1, false));
        // Changed while nobody looked: a new version, to be broken.
        let (v2, changed) = v.current(a, fp(3)).unwrap();
        assert!(v2 > v1 && changed);
    }

    #[test]
    fn overflow_makes_every_version_new() {
        let dir = tempfile::tempdir().unwrap();
        let v = Versions::open(dir.path()).unwrap();
        let a = FileId { ino: 5, gen_: 1 };
        let (v1, _) = v.current(a, fp(1)).unwrap();
        v.suspect_all();
        let (v2, changed) = v.current(a, fp(1)).unwrap();
        assert!(v1 != v2 && changed);
        assert_eq!(v.current(a, fp(1)).unwrap(), (v2, false));
    }

    #[test]
    fn the_epoch_grows_at_every_open() {
        let dir = tempfile::tempdir().unwrap();
        let export = tempfile::tempdir().unwrap();
        let e = export.path().canonicalize().unwrap();
        let s = dir.path().join("state");
        let first = StateDir::open(&s, &e).unwrap();
        assert!(matches!(
            StateDir::open(&s, &e),
            Err(ServerError::StateLocked(_))
        ));
        let (epoch, id) = (first.epoch, first.export_id);
        drop(first);
        let second = StateDir::open(&s, &e).unwrap();
        assert_eq!((second.epoch, second.export_id), (epoch + 1, id));
        drop(second);
        assert!(matches!(
            StateDir::open(&s, Path::new("/elsewhere")),
            Err(ServerError::StateOfAnotherExport { .. })
        ));
        assert!(matches!(
            StateDir::open(&e.join("inside"), &e),
            Err(ServerError::StateInsideExport(_))
        ));
    }
}
