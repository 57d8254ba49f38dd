//! The exported tree: the table of file ids the server handed out (each
//! an `O_PATH` descriptor, so an id survives renames) and every name
//! resolved beneath its directory with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV)`: nothing ever leaves the export.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;

use crate::wire::{Attr, FileId, FileKind, Status, Time};

use super::ServerError;

/// Why an operation failed, as the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpError {
    Status(Status),
    Os(Errno),
}

impl OpError {
    pub fn status_errno(&self) -> (Status, u32) {
        match self {
            OpError::Status(s) => (*s, 0),
            OpError::Os(e) => (Status::Os, *e as i32 as u32),
        }
    }
}

impl From<Errno> for OpError {
    fn from(e: Errno) -> OpError {
        OpError::Os(e)
    }
}

impl From<std::io::Error> for OpError {
    fn from(e: std::io::Error) -> OpError {
        match e.raw_os_error() {
            Some(n) => OpError::Os(Errno::from_raw(n)),
            None => OpError::Status(Status::Internal),
        }
    }
}

/// Errors of name resolution: `EXDEV` (a mount point, or a path that
/// would leave the export) is an escape.
fn resolve_err(e: Errno) -> OpError {
    match e {
        Errno::EXDEV => OpError::Status(Status::Escape),
        other => OpError::Os(other),
    }
}

/// A file the server handed out an id for.
pub struct Inode {
    pub id: FileId,
    pub kind: FileKind,
    /// `O_PATH` descriptor of the file.
    pub path: File,
    /// A read-only descriptor, opened at the first read and kept (a
    /// writable one is not kept: it would make executing the file fail
    /// with ETXTBSY).
    reader: Mutex<Option<Arc<File>>>,
    last_used: AtomicU64,
}

impl Inode {
    /// The file's metadata (statx on the descriptor).
    pub fn stat(&self) -> Result<Metadata, OpError> {
        Ok(self.path.metadata()?)
    }

    /// `/proc/self/fd/N` of the descriptor: how an `O_PATH` descriptor is
    /// opened for I/O (the magic link names this very inode).
    pub fn proc_path(&self) -> String {
        format!("/proc/self/fd/{}", self.path.as_raw_fd())
    }

    /// The kept read-only descriptor of a regular file.
    pub fn reader(&self) -> Result<Arc<File>, OpError> {
        let mut r = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = r.as_ref() {
            return Ok(f.clone());
        }
        let f = Arc::new(self.reopen(OFlag::O_RDONLY)?);
        *r = Some(f.clone());
        Ok(f)
    }

    /// Opens the file itself for I/O.
    pub fn reopen(&self, flags: OFlag) -> Result<File, OpError> {
        if self.kind == FileKind::Dir {
            let fd = nix::fcntl::openat(
                self.path.as_fd(),
                ".",
                flags | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            return Ok(File::from(fd));
        }
        if self.kind != FileKind::File {
            return Err(OpError::Os(Errno::EINVAL));
        }
        // The magic link names this very inode (a regular file, checked
        // above), never a path: it cannot lead out of the export.
        let fd = nix::fcntl::open(
            self.proc_path().as_str(),
            flags | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
            Mode::empty(),
        )?;
        Ok(File::from(fd))
    }
}

/// The id of a file from its metadata.
pub fn id_of(md: &Metadata) -> FileId {
    let gen_ = md
        .created()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    FileId {
        ino: md.ino(),
        gen_,
    }
}

pub fn kind_of(md: &Metadata) -> FileKind {
    let t = md.file_type();
    if t.is_dir() {
        FileKind::Dir
    } else if t.is_symlink() {
        FileKind::Symlink
    } else if t.is_fifo() {
        FileKind::Fifo
    } else if t.is_char_device() {
        FileKind::CharDev
    } else if t.is_block_device() {
        FileKind::BlockDev
    } else if t.is_socket() {
        FileKind::Socket
    } else {
        FileKind::File
    }
}

pub fn kind_of_mode(mode: u32) -> FileKind {
    match mode & libc_s_ifmt() {
        0o040000 => FileKind::Dir,
        0o120000 => FileKind::Symlink,
        0o010000 => FileKind::Fifo,
        0o020000 => FileKind::CharDev,
        0o060000 => FileKind::BlockDev,
        0o140000 => FileKind::Socket,
        _ => FileKind::File,
    }
}

const fn libc_s_ifmt() -> u32 {
    0o170000
}

fn time(sec: i64, nsec: i64) -> Time {
    Time {
        sec,
        nsec: u32::try_from(nsec.clamp(0, 999_999_999)).unwrap_or(0),
    }
}

/// The wire attributes of a file.
pub fn attr_of(md: &Metadata, data_version: u64) -> Attr {
    Attr {
        id: id_of(md),
        kind: kind_of(md),
        mode: md.mode() & 0o7777,
        nlink: u32::try_from(md.nlink()).unwrap_or(u32::MAX),
        uid: md.uid(),
        gid: md.gid(),
        blksize: u32::try_from(md.blksize()).unwrap_or(u32::MAX),
        size: md.size(),
        blocks: md.blocks(),
        rdev: md.rdev(),
        atime: time(md.atime(), md.atime_nsec()),
        mtime: time(md.mtime(), md.mtime_nsec()),
        ctime: time(md.ctime(), md.ctime_nsec()),
        data_version,
    }
}

/// How every name is resolved: one component, beneath the directory, no
/// symlink followed, no mount crossed.
fn how(flags: OFlag, mode: Mode) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .mode(mode)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_XDEV
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        )
}

/// Opens `name` beneath `dir`.
pub fn open_beneath(dir: &File, name: &[u8], flags: OFlag, mode: Mode) -> Result<OwnedFd, OpError> {
    openat2(dir.as_fd(), OsStr::from_bytes(name), how(flags, mode)).map_err(resolve_err)
}

/// A directory and a name in it.
type Place = (Arc<Inode>, Vec<u8>);

/// Where each inode number was seen by the last walk of the tree: how an
/// id the table does not hold (handed out before a restart, or evicted)
/// is found again.
struct Hints {
    names: HashMap<u64, Vec<Place>>,
    built: Instant,
}

/// A walk is not repeated more often than this.
const HINTS_MIN_AGE: Duration = Duration::from_secs(2);

/// The table of ids handed out.
pub struct Export {
    pub root: Arc<Inode>,
    table: Mutex<HashMap<FileId, Arc<Inode>>>,
    hints: Mutex<Option<Hints>>,
    tick: AtomicU64,
    max_files: usize,
    pub read_only: bool,
}

impl Export {
    pub fn open(dir: &Path, read_only: bool, max_files: usize) -> Result<Export, ServerError> {
        let fd = nix::fcntl::open(
            dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ServerError::Export {
            path: dir.to_path_buf(),
            source: e.into(),
        })?;
        let path = File::from(fd);
        let md = path.metadata().map_err(|e| ServerError::Export {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let root = Arc::new(Inode {
            id: id_of(&md),
            kind: FileKind::Dir,
            path,
            reader: Mutex::new(None),
            last_used: AtomicU64::new(u64::MAX),
        });
        let mut table = HashMap::new();
        table.insert(root.id, root.clone());
        Ok(Export {
            root,
            table: Mutex::new(table),
            hints: Mutex::new(None),
            tick: AtomicU64::new(0),
            max_files: max_files.max(16),
            read_only,
        })
    }

    /// The inode of an id: from the table, or found again in the tree
    /// (an id from before a restart, or evicted); `Stale` if the file is
    /// gone.
    pub fn get(&self, id: FileId) -> Result<Arc<Inode>, OpError> {
        {
            let t = self.table.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(ino) = t.get(&id) {
                if ino.last_used.load(Ordering::Relaxed) != u64::MAX {
                    ino.last_used
                        .store(self.tick.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
                }
                return Ok(ino.clone());
            }
        }
        self.find(id)
    }

    /// Finds an id by its inode number where the last walk saw it,
    /// walking the tree again if that fails (at most every 2 s).
    fn find(&self, id: FileId) -> Result<Arc<Inode>, OpError> {
        let mut hints = self.hints.lock().unwrap_or_else(|p| p.into_inner());
        for attempt in 0..2 {
            if let Some(h) = hints.as_ref()
                && let Some(places) = h.names.get(&id.ino)
            {
                for (dir, name) in places {
                    if let Ok((inode, _)) = self.lookup(dir, name)
                        && inode.id == id
                    {
                        return Ok(inode);
                    }
                }
            }
            let fresh = hints
                .as_ref()
                .is_some_and(|h| h.built.elapsed() < HINTS_MIN_AGE);
            if attempt == 1 || fresh {
                break;
            }
            *hints = Some(self.walk());
        }
        Err(OpError::Status(Status::Stale))
    }

    /// Every name in the tree by inode number (readdir only: no stat but
    /// for directories, which are opened to go on).
    fn walk(&self) -> Hints {
        let started = Instant::now();
        let mut names: HashMap<u64, Vec<Place>> = HashMap::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(f) = dir.reopen(OFlag::O_RDONLY) else {
                continue;
            };
            let Ok(mut listing) = nix::dir::Dir::from_fd(f.into()) else {
                continue;
            };
            for e in listing.iter().flatten() {
                let name = e.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                names
                    .entry(e.ino())
                    .or_default()
                    .push((dir.clone(), name.to_vec()));
                if matches!(e.file_type(), Some(nix::dir::Type::Directory) | None)
                    && let Ok(fd) = open_beneath(
                        &dir.path,
                        name,
                        OFlag::O_PATH | OFlag::O_DIRECTORY,
                        Mode::empty(),
                    )
                {
                    let path = File::from(fd);
                    if let Ok(md) = path.metadata() {
                        stack.push(Arc::new(Inode {
                            id: id_of(&md),
                            kind: FileKind::Dir,
                            path,
                            reader: Mutex::new(None),
                            last_used: AtomicU64::new(0),
                        }));
                    }
                }
            }
        }
        tracing::info!(
            inodes = names.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "walked the export to find ids handed out earlier"
        );
        Hints {
            names,
            built: Instant::now(),
        }
    }

    /// The inode of a directory id.
    pub fn dir(&self, id: FileId) -> Result<Arc<Inode>, OpError> {
        let d = self.get(id)?;
        if d.kind != FileKind::Dir {
            return Err(OpError::Os(Errno::ENOTDIR));
        }
        Ok(d)
    }

    /// Enters an `O_PATH` descriptor in the table (or finds the entry the
    /// id already has) and returns the inode with its metadata.
    pub fn enter(&self, fd: OwnedFd) -> Result<(Arc<Inode>, Metadata), OpError> {
        let path = File::from(fd);
        let md = path.metadata()?;
        let id = id_of(&md);
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let tick = self.tick.fetch_add(1, Ordering::Relaxed);
        if let Some(existing) = t.get(&id) {
            if existing.last_used.load(Ordering::Relaxed) != u64::MAX {
                existing.last_used.store(tick, Ordering::Relaxed);
            }
            return Ok((existing.clone(), md));
        }
        if t.len() >= self.max_files {
            // Drop the least recently used eighth (never the root).
            let mut ages: Vec<(u64, FileId)> = t
                .values()
                .map(|i| (i.last_used.load(Ordering::Relaxed), i.id))
                .filter(|(age, _)| *age != u64::MAX)
                .collect();
            ages.sort_unstable();
            for (_, old) in ages.iter().take(self.max_files / 8 + 1) {
                t.remove(old);
            }
        }
        let inode = Arc::new(Inode {
            id,
            kind: kind_of(&md),
            path,
            reader: Mutex::new(None),
            last_used: AtomicU64::new(tick),
        });
        t.insert(id, inode.clone());
        Ok((inode, md))
    }

    /// Resolves `name` in `dir` (never following a symlink) and enters it.
    pub fn lookup(&self, dir: &Inode, name: &[u8]) -> Result<(Arc<Inode>, Metadata), OpError> {
        let fd = open_beneath(&dir.path, name, OFlag::O_PATH, Mode::empty())?;
        self.enter(fd)
    }

    /// The file is gone (its last link was removed through the server).
    pub fn forget(&self, id: FileId) {
        if id != self.root.id {
            self.table
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        }
    }

    pub fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
