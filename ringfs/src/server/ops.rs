//! One function per operation: resolve beneath the export, record the
//! promise before reading, break before changing, bump the data version.

use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::atomic::Ordering;

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{FchmodatFlags, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags};

use crate::wire::{
    AttrReply, CREATE_EXCLUSIVE, CREATE_TRUNCATE, DirPage, Entry, FSYNC_DATASYNC, FileId, FileKind,
    MAX_DATA, MAX_READDIR_BYTES, RENAME_NOREPLACE, ReplyBody, Request, SetAttr, StatFs, Status,
    WRITE_APPEND, setattr,
};

use super::Server;
use super::coherency::ClientKey;
use super::export::{Inode, OpError, attr_of, kind_of_mode, open_beneath};
use super::state::Fingerprint;

fn internal(e: std::io::Error) -> OpError {
    tracing::error!("data version log: {e}");
    OpError::Status(Status::Internal)
}

impl Server {
    /// The file's data version; a change nobody reported (a local one
    /// inotify missed, or one while the server was down) breaks every
    /// promise on it first.
    fn version(&self, md: &Metadata) -> Result<u64, OpError> {
        let id = super::export::id_of(md);
        let (v, changed) = self
            .versions
            .current(id, Fingerprint::of(md))
            .map_err(internal)?;
        if changed {
            self.co.break_local(&[id]);
        }
        Ok(v)
    }

    fn bump_own(&self, md: &Metadata) -> Result<u64, OpError> {
        let id = super::export::id_of(md);
        self.versions
            .bump_own(id, Fingerprint::of(md))
            .map_err(internal)
    }

    fn refresh_own(&self, md: &Metadata) -> Result<u64, OpError> {
        let id = super::export::id_of(md);
        self.versions
            .refresh_own(id, Fingerprint::of(md))
            .map_err(internal)
    }

    /// Attributes with a promise: recorded first, then read.
    fn attr_reply(&self, inode: &Inode, client: &ClientKey) -> Result<AttrReply, OpError> {
        let t = self.co.promise_begin(inode.id, client);
        let md = inode.stat()?;
        let v = self.version(&md)?;
        let promise_ms = self.co.promise_end(t);
        Ok(AttrReply {
            attr: attr_of(&md, v),
            promise_ms,
        })
    }

    fn check_writable(&self) -> Result<(), OpError> {
        if self.export.read_only {
            Err(OpError::Status(Status::ReadOnly))
        } else {
            Ok(())
        }
    }

    /// Serves one request (not Hello, Ping or Farewell).
    pub fn serve(&self, client: &ClientKey, req: &Request) -> Result<ReplyBody, OpError> {
        if req.is_change() {
            self.check_writable()?;
        }
        match req {
            Request::Hello(_) => Err(OpError::Status(Status::NotGreeted)),
            Request::Ping | Request::Farewell => Ok(ReplyBody::Empty),
            Request::Lookup { dir, name } => {
                let d = self.export.dir(*dir)?;
                // The looker's promise on the directory's entries.
                let td = self.co.promise_begin(d.id, client);
                let (child, _) = self.export.lookup(&d, name)?;
                let mut a = self.attr_reply(&child, client)?;
                // The name may have changed meanwhile: then no promise.
                if self.co.promise_end(td) == 0 {
                    a.promise_ms = 0;
                }
                Ok(ReplyBody::Attr(a))
            }
            Request::GetAttr { id } => {
                let i = self.export.get(*id)?;
                Ok(ReplyBody::Attr(self.attr_reply(&i, client)?))
            }
            Request::SetAttr { id, set } => self.setattr(client, *id, set),
            Request::ReadDir {
                dir,
                max_entries,
                cursor,
            } => self.readdir(client, *dir, *max_entries, cursor),
            Request::Read { id, offset, len } => self.read(client, *id, *offset, *len),
            Request::Write {
                id,
                offset,
                flags,
                data,
            } => self.write(client, *id, *offset, *flags, data),
            Request::Create {
                dir,
                mode,
                flags,
                name,
            } => self.create(client, *dir, *mode, *flags, name),
            Request::Mkdir { dir, mode, name } => {
                let d = self.export.dir(*dir)?;
                let change = self.co.change(&[d.id], Some(client));
                nix::sys::stat::mkdirat(
                    d.path.as_fd(),
                    OsStr::from_bytes(name),
                    Mode::from_bits_truncate(*mode),
                )?;
                self.bump_own(&d.stat()?)?;
                let (child, _) = self.export.lookup(&d, name)?;
                change.finish(None);
                Ok(ReplyBody::Attr(self.attr_reply(&child, client)?))
            }
            Request::Unlink { dir, name } => self.remove(client, *dir, name, false),
            Request::Rmdir { dir, name } => self.remove(client, *dir, name, true),
            Request::Rename {
                from_dir,
                to_dir,
                flags,
                from,
                to,
            } => self.rename(client, *from_dir, *to_dir, *flags, from, to),
            Request::Symlink { dir, name, target } => {
                let d = self.export.dir(*dir)?;
                let change = self.co.change(&[d.id], Some(client));
                nix::unistd::symlinkat(
                    OsStr::from_bytes(target),
                    d.path.as_fd(),
                    OsStr::from_bytes(name),
                )?;
                self.bump_own(&d.stat()?)?;
                let (child, _) = self.export.lookup(&d, name)?;
                change.finish(None);
                Ok(ReplyBody::Attr(self.attr_reply(&child, client)?))
            }
            Request::ReadLink { id } => {
                let i = self.export.get(*id)?;
                if i.kind != FileKind::Symlink {
                    return Err(OpError::Os(Errno::EINVAL));
                }
                let t = nix::fcntl::readlinkat(i.path.as_fd(), "")?;
                Ok(ReplyBody::Target(t.as_bytes().to_vec()))
            }
            Request::Link { id, dir, name } => {
                let i = self.export.get(*id)?;
                let d = self.export.dir(*dir)?;
                if i.kind == FileKind::Dir {
                    return Err(OpError::Os(Errno::EPERM));
                }
                let change = self.co.change(&[d.id, i.id], Some(client));
                // The descriptor itself (needs CAP_DAC_READ_SEARCH); else,
                // for anything but a symlink (which the magic link could
                // follow), through /proc.
                let direct = nix::unistd::linkat(
                    i.path.as_fd(),
                    "",
                    d.path.as_fd(),
                    OsStr::from_bytes(name),
                    AtFlags::AT_EMPTY_PATH,
                );
                match direct {
                    Ok(()) => {}
                    Err(Errno::ENOENT | Errno::EPERM) if i.kind != FileKind::Symlink => {
                        nix::unistd::linkat(
                            AT_FDCWD,
                            i.proc_path().as_str(),
                            d.path.as_fd(),
                            OsStr::from_bytes(name),
                            AtFlags::AT_SYMLINK_FOLLOW,
                        )?;
                    }
                    Err(e) => return Err(e.into()),
                }
                self.bump_own(&d.stat()?)?;
                let md = i.stat()?;
                let v = self.refresh_own(&md)?;
                let promise_ms = change.finish(Some(i.id));
                Ok(ReplyBody::Attr(AttrReply {
                    attr: attr_of(&md, v),
                    promise_ms,
                }))
            }
            Request::Fsync { id, flags } => {
                let i = self.export.get(*id)?;
                if !matches!(i.kind, FileKind::File | FileKind::Dir) {
                    return Ok(ReplyBody::Empty);
                }
                let f = i.reopen(OFlag::O_RDONLY)?;
                if flags & FSYNC_DATASYNC != 0 {
                    f.sync_data()?;
                } else {
                    f.sync_all()?;
                }
                Ok(ReplyBody::Empty)
            }
            Request::Stats => Ok(ReplyBody::Stats(self.stats.list())),
            Request::StatFs => {
                let s = nix::sys::statvfs::fstatvfs(self.export.root.path.as_fd())?;
                Ok(ReplyBody::StatFs(StatFs {
                    blocks: s.blocks(),
                    bfree: s.blocks_free(),
                    bavail: s.blocks_available(),
                    files: s.files(),
                    ffree: s.files_free(),
                    bsize: u32::try_from(s.block_size()).unwrap_or(u32::MAX),
                    frsize: u32::try_from(s.fragment_size()).unwrap_or(u32::MAX),
                    namemax: u32::try_from(s.name_max()).unwrap_or(u32::MAX),
                }))
            }
        }
    }

    fn read(
        &self,
        client: &ClientKey,
        id: FileId,
        offset: u64,
        len: u32,
    ) -> Result<ReplyBody, OpError> {
        let i = self.export.get(id)?;
        match i.kind {
            FileKind::File => {}
            FileKind::Dir => return Err(OpError::Os(Errno::EISDIR)),
            _ => return Err(OpError::Os(Errno::EINVAL)),
        }
        let t = self.co.promise_begin(i.id, client);
        // Attributes first, then the data: the version is never newer
        // than the data (a local change in between changes it again).
        let before = i.stat()?;
        let v = self.version(&before)?;
        let f = i.reader()?;
        let want = (len as usize).min(MAX_DATA);
        let mut data = vec![0u8; want];
        let mut got = 0;
        while got < want {
            let n = f.read_at(data.get_mut(got..).unwrap_or_default(), offset + got as u64)?;
            if n == 0 {
                break;
            }
            got += n;
        }
        data.truncate(got);
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        self.stats
            .read_bytes
            .fetch_add(got as u64, Ordering::Relaxed);
        let after = i.stat()?;
        let mut promise_ms = self.co.promise_end(t);
        if Fingerprint::of(&after) != Fingerprint::of(&before) {
            promise_ms = 0;
        }
        Ok(ReplyBody::Read {
            attr: AttrReply {
                attr: attr_of(&before, v),
                promise_ms,
            },
            data,
        })
    }

    fn write(
        &self,
        client: &ClientKey,
        id: FileId,
        offset: u64,
        flags: u32,
        data: &[u8],
    ) -> Result<ReplyBody, OpError> {
        let i = self.export.get(id)?;
        match i.kind {
            FileKind::File => {}
            FileKind::Dir => return Err(OpError::Os(Errno::EISDIR)),
            _ => return Err(OpError::Os(Errno::EINVAL)),
        }
        let change = self.co.change(&[i.id], Some(client));
        let append = flags & WRITE_APPEND != 0;
        let mut oflags = OFlag::O_WRONLY;
        if append {
            oflags |= OFlag::O_APPEND;
        }
        let mut f = i.reopen(oflags)?;
        let at = if append {
            // One write(2) with O_APPEND: atomic against other appends.
            f.write_all(data)?;
            f.metadata()?.size().saturating_sub(data.len() as u64)
        } else {
            f.write_all_at(data, offset)?;
            offset
        };
        drop(f);
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        self.stats
            .write_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        let md = i.stat()?;
        let v = self.bump_own(&md)?;
        let promise_ms = change.finish(Some(i.id));
        Ok(ReplyBody::Write {
            offset: at,
            written: u32::try_from(data.len()).unwrap_or(u32::MAX),
            attr: AttrReply {
                attr: attr_of(&md, v),
                promise_ms,
            },
        })
    }

    fn setattr(&self, client: &ClientKey, id: FileId, set: &SetAttr) -> Result<ReplyBody, OpError> {
        let i = self.export.get(id)?;
        let change = self.co.change(&[i.id], Some(client));
        let m = set.mask;
        if m & setattr::MODE != 0 {
            if i.kind == FileKind::Symlink {
                return Err(OpError::Os(Errno::EOPNOTSUPP));
            }
            nix::sys::stat::fchmodat(
                AT_FDCWD,
                i.proc_path().as_str(),
                Mode::from_bits_truncate(set.mode),
                FchmodatFlags::FollowSymlink,
            )?;
        }
        if m & (setattr::UID | setattr::GID) != 0 {
            let uid = (m & setattr::UID != 0).then(|| Uid::from_raw(set.uid));
            let gid = (m & setattr::GID != 0).then(|| Gid::from_raw(set.gid));
            nix::unistd::fchownat(i.path.as_fd(), "", uid, gid, AtFlags::AT_EMPTY_PATH)?;
        }
        if m & setattr::SIZE != 0 {
            if i.kind != FileKind::File {
                return Err(OpError::Os(if i.kind == FileKind::Dir {
                    Errno::EISDIR
                } else {
                    Errno::EINVAL
                }));
            }
            i.reopen(OFlag::O_WRONLY)?.set_len(set.size)?;
        }
        let times = setattr::ATIME | setattr::MTIME | setattr::ATIME_NOW | setattr::MTIME_NOW;
        if m & times != 0 {
            if i.kind == FileKind::Symlink {
                // The link itself, through its O_PATH descriptor (utimensat
                // with AT_EMPTY_PATH, Linux 5.8 and later).
                let pick = |now: u32, given: u32, t: crate::wire::Time| {
                    let tv_nsec = if m & now != 0 {
                        rustix::fs::UTIME_NOW
                    } else if m & given != 0 {
                        t.nsec.into()
                    } else {
                        rustix::fs::UTIME_OMIT
                    };
                    rustix::fs::Timespec {
                        tv_sec: t.sec,
                        tv_nsec,
                    }
                };
                let ts = rustix::fs::Timestamps {
                    last_access: pick(setattr::ATIME_NOW, setattr::ATIME, set.atime),
                    last_modification: pick(setattr::MTIME_NOW, setattr::MTIME, set.mtime),
                };
                rustix::fs::utimensat(
                    &i.path,
                    "",
                    &ts,
                    rustix::fs::AtFlags::EMPTY_PATH | rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| OpError::Os(Errno::from_raw(e.raw_os_error())))?;
            } else {
                let pick = |now: u32, given: u32, t: crate::wire::Time| {
                    if m & now != 0 {
                        TimeSpec::UTIME_NOW
                    } else if m & given != 0 {
                        TimeSpec::new(t.sec, i64::from(t.nsec))
                    } else {
                        TimeSpec::UTIME_OMIT
                    }
                };
                let at = pick(setattr::ATIME_NOW, setattr::ATIME, set.atime);
                let mt = pick(setattr::MTIME_NOW, setattr::MTIME, set.mtime);
                nix::sys::stat::utimensat(
                    AT_FDCWD,
                    i.proc_path().as_str(),
                    &at,
                    &mt,
                    UtimensatFlags::FollowSymlink,
                )?;
            }
        }
        let md = i.stat()?;
        let v = if m & setattr::SIZE != 0 {
            self.bump_own(&md)?
        } else {
            self.refresh_own(&md)?
        };
        let promise_ms = change.finish(Some(i.id));
        Ok(ReplyBody::Attr(AttrReply {
            attr: attr_of(&md, v),
            promise_ms,
        }))
    }

    fn readdir(
        &self,
        client: &ClientKey,
        dir: FileId,
        max_entries: u32,
        cursor: &[u8],
    ) -> Result<ReplyBody, OpError> {
        let d = self.export.dir(dir)?;
        let t = self.co.promise_begin(d.id, client);
        let md = d.stat()?;
        let v = self.version(&md)?;
        let f = d.reopen(OFlag::O_RDONLY)?;
        let mut listing = nix::dir::Dir::from_fd(f.into())?;
        let mut all: Vec<Entry> = Vec::new();
        for e in listing.iter() {
            let e = e?;
            let name = e.file_name().to_bytes();
            if name == b"." || name == b".." || name <= cursor {
                continue;
            }
            let kind = match e.file_type() {
                Some(nix::dir::Type::Directory) => FileKind::Dir,
                Some(nix::dir::Type::File) => FileKind::File,
                Some(nix::dir::Type::Symlink) => FileKind::Symlink,
                Some(nix::dir::Type::Fifo) => FileKind::Fifo,
                Some(nix::dir::Type::CharacterDevice) => FileKind::CharDev,
                Some(nix::dir::Type::BlockDevice) => FileKind::BlockDev,
                Some(nix::dir::Type::Socket) => FileKind::Socket,
                None => match nix::sys::stat::fstatat(
                    d.path.as_fd(),
                    OsStr::from_bytes(name),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                ) {
                    Ok(st) => kind_of_mode(st.st_mode),
                    Err(_) => continue,
                },
            };
            all.push(Entry {
                ino: e.ino(),
                kind,
                name: name.to_vec(),
            });
        }
        all.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        let mut entries = Vec::new();
        let mut bytes = 0;
        let total = all.len();
        for e in all {
            if entries.len() >= max_entries as usize || bytes + e.wire_len() > MAX_READDIR_BYTES {
                break;
            }
            bytes += e.wire_len();
            entries.push(e);
        }
        let eof = entries.len() == total;
        Ok(ReplyBody::Dir(DirPage {
            dir_version: v,
            promise_ms: self.co.promise_end(t),
            eof,
            entries,
        }))
    }

    fn create(
        &self,
        client: &ClientKey,
        dir: FileId,
        mode: u32,
        flags: u32,
        name: &[u8],
    ) -> Result<ReplyBody, OpError> {
        let d = self.export.dir(dir)?;
        loop {
            match self.export.lookup(&d, name) {
                Ok((inode, md)) => {
                    if flags & CREATE_EXCLUSIVE != 0 {
                        return Err(OpError::Os(Errno::EEXIST));
                    }
                    match inode.kind {
                        FileKind::File => {}
                        FileKind::Dir => return Err(OpError::Os(Errno::EISDIR)),
                        FileKind::Symlink => return Err(OpError::Os(Errno::ELOOP)),
                        _ => return Err(OpError::Os(Errno::EINVAL)),
                    }
                    if flags & CREATE_TRUNCATE != 0 && md.size() != 0 {
                        let change = self.co.change(&[inode.id], Some(client));
                        inode.reopen(OFlag::O_WRONLY)?.set_len(0)?;
                        let md = inode.stat()?;
                        let v = self.bump_own(&md)?;
                        let promise_ms = change.finish(Some(inode.id));
                        return Ok(ReplyBody::Create {
                            attr: AttrReply {
                                attr: attr_of(&md, v),
                                promise_ms,
                            },
                            created: false,
                        });
                    }
                    return Ok(ReplyBody::Create {
                        attr: self.attr_reply(&inode, client)?,
                        created: false,
                    });
                }
                Err(OpError::Os(Errno::ENOENT)) => {}
                Err(e) => return Err(e),
            }
            let change = self.co.change(&[d.id], Some(client));
            match open_beneath(
                &d.path,
                name,
                OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY,
                Mode::from_bits_truncate(mode),
            ) {
                Ok(fd) => {
                    drop(File::from(fd));
                    self.bump_own(&d.stat()?)?;
                    let (inode, _) = self.export.lookup(&d, name)?;
                    change.finish(None);
                    return Ok(ReplyBody::Create {
                        attr: self.attr_reply(&inode, client)?,
                        created: true,
                    });
                }
                // Created by someone else meanwhile: open it as existing.
                Err(OpError::Os(Errno::EEXIST)) if flags & CREATE_EXCLUSIVE == 0 => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn remove(
        &self,
        client: &ClientKey,
        dir: FileId,
        name: &[u8],
        is_dir: bool,
    ) -> Result<ReplyBody, OpError> {
        let d = self.export.dir(dir)?;
        let (child, _) = self.export.lookup(&d, name)?;
        let change = self.co.change(&[d.id, child.id], Some(client));
        nix::unistd::unlinkat(
            d.path.as_fd(),
            OsStr::from_bytes(name),
            if is_dir {
                UnlinkatFlags::RemoveDir
            } else {
                UnlinkatFlags::NoRemoveDir
            },
        )?;
        self.bump_own(&d.stat()?)?;
        match child.stat() {
            Ok(md) if md.nlink() > 0 && !is_dir => {
                self.refresh_own(&md)?;
            }
            // The last name is gone: its version record goes (a log that
            // only grows otherwise). The id stays in the table, so that a
            // client that has the file open reads on, as on a local file
            // system, until the table drops it.
            _ => self.versions.forget(child.id),
        }
        change.finish(None);
        Ok(ReplyBody::Empty)
    }

    fn rename(
        &self,
        client: &ClientKey,
        from_dir: FileId,
        to_dir: FileId,
        flags: u32,
        from: &[u8],
        to: &[u8],
    ) -> Result<ReplyBody, OpError> {
        let fd = self.export.dir(from_dir)?;
        let td = self.export.dir(to_dir)?;
        let (moved, _) = self.export.lookup(&fd, from)?;
        let replaced = match self.export.lookup(&td, to) {
            Ok((r, _)) => Some(r),
            Err(OpError::Os(Errno::ENOENT)) => None,
            Err(e) => return Err(e),
        };
        let mut files = vec![fd.id, td.id, moved.id];
        if let Some(r) = &replaced {
            files.push(r.id);
        }
        let change = self.co.change(&files, Some(client));
        let rflags = if flags & RENAME_NOREPLACE != 0 {
            RenameFlags::RENAME_NOREPLACE
        } else {
            RenameFlags::empty()
        };
        nix::fcntl::renameat2(
            fd.path.as_fd(),
            OsStr::from_bytes(from),
            td.path.as_fd(),
            OsStr::from_bytes(to),
            rflags,
        )?;
        self.bump_own(&fd.stat()?)?;
        if td.id != fd.id {
            self.bump_own(&td.stat()?)?;
        }
        self.refresh_own(&moved.stat()?)?;
        if let Some(r) = replaced
            && r.id != moved.id
        {
            match r.stat() {
                Ok(md) if md.nlink() > 0 && r.kind != FileKind::Dir => {
                    self.refresh_own(&md)?;
                }
                _ => self.versions.forget(r.id),
            }
        }
        change.finish(None);
        Ok(ReplyBody::Empty)
    }
}
