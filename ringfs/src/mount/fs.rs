//! The FUSE side: each kernel request mapped onto [`Core`] and the
//! server. Handlers run on several session threads at once; none of them
//! sends a notification to the kernel (the notification thread does).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};

use super::core::{Core, FsResult, Shown, errno_of};
use crate::wire::{
    self, Attr, AttrReply, CREATE_EXCLUSIVE, CREATE_TRUNCATE, Entry, FileKind, RENAME_NOREPLACE,
    SetAttr, Time, setattr,
};

/// Largest write the kernel sends (the server's data limit).
pub const MAX_WRITE: u32 = 1 << 20;

/// The file system handed to fuser.
pub struct RingFs {
    pub core: Arc<Core>,
    dirs: Mutex<HashMap<u64, Arc<Vec<Entry>>>>,
    next_fh: AtomicU64,
    read_only: bool,
}

impl RingFs {
    pub fn new(core: Arc<Core>, read_only: bool) -> RingFs {
        RingFs {
            core,
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            read_only,
        }
    }
}

fn time(t: Time) -> SystemTime {
    if t.sec >= 0 {
        UNIX_EPOCH + Duration::new(t.sec.unsigned_abs(), t.nsec.min(999_999_999))
    } else {
        UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs())
            + Duration::from_nanos(u64::from(t.nsec.min(999_999_999)))
    }
}

fn to_time(t: SystemTime) -> Time {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Time {
            sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nsec: d.subsec_nanos(),
        },
        Err(e) => {
            let d = e.duration();
            Time {
                sec: -i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nsec: 0,
            }
        }
    }
}

fn kind(k: FileKind) -> FileType {
    match k {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::CharDev => FileType::CharDevice,
        FileKind::BlockDev => FileType::BlockDevice,
        FileKind::Socket => FileType::Socket,
    }
}

fn file_attr(ino: u64, a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: a.size,
        blocks: a.blocks,
        atime: time(a.atime),
        mtime: time(a.mtime),
        ctime: time(a.ctime),
        crtime: time(a.ctime),
        kind: kind(a.kind),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: u32::try_from(a.rdev).unwrap_or(0),
        blksize: a.blksize.max(512),
        flags: 0,
    }
}

fn reply_entry(reply: ReplyEntry, ino: u64, shown: Shown) {
    match shown.attr {
        Some(a) => reply.entry(&shown.ttl, &file_attr(ino, &a), Generation(a.id.gen_)),
        None => reply.error(Errno::EIO),
    }
}

fn name_bytes(name: &OsStr) -> &[u8] {
    name.as_bytes()
}

impl RingFs {
    /// A reply naming a new or looked-up file, under `parent`.
    fn entered(
        &self,
        parent: u64,
        name: &[u8],
        snap: &super::nodes::Snap,
        a: &AttrReply,
    ) -> (u64, Shown) {
        self.core.enter(parent, name, snap, a)
    }

    /// The parent's own attributes changed through this client.
    fn touched(&self, dir: u64) {
        if let Some(n) = self.core.table().get_mut(dir) {
            n.promise_until = None;
        }
    }

    fn forgot_name(&self, dir: u64, name: &[u8]) {
        if let Some(n) = self.core.table().get_mut(dir) {
            n.names.remove(name);
        }
    }

    fn writable(&self) -> FsResult<()> {
        if self.read_only {
            Err(Errno::from_i32(libc::EROFS))
        } else {
            Ok(())
        }
    }

    fn do_lookup(&self, parent: u64, name: &[u8]) -> FsResult<(u64, Shown)> {
        let (dir, _) = self.core.id_of(parent)?;
        let snap = self.core.snap(None);
        let a = self
            .core
            .server
            .lookup(dir, name)
            .map_err(|e| errno_of(&e))?;
        Ok(self.entered(parent, name, &snap, &a))
    }

    fn do_getattr(&self, ino: u64) -> FsResult<Shown> {
        if !self.core.promised(ino) {
            self.core.refresh(ino)?;
        }
        self.core.view(ino).ok_or(Errno::ESTALE)
    }

    fn do_open(&self, ino: u64, flags: OpenFlags) -> FsResult<FopenFlags> {
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY;
        if write {
            self.writable()?;
        }
        // Close-to-open: what an open sees is at least as new as the
        // server's version when it was opened.
        if !self.core.promised(ino) {
            self.core.refresh(ino)?;
        }
        let keep = {
            let mut t = self.core.table();
            let n = t.get_mut(ino).ok_or(Errno::ESTALE)?;
            n.opens += 1;
            let v = n.attr.data_version;
            let keep = n.kernel_version == Some(v);
            n.kernel_version = Some(v);
            keep
        };
        // Starts the cookie's use (acquiring it first if need be).
        let _ = self.core.cookie(ino);
        // The page cache is kept only under a valid promise, for the
        // version it holds.
        if keep && self.core.promised(ino) {
            Ok(FopenFlags::FOPEN_KEEP_CACHE)
        } else {
            Ok(FopenFlags::empty())
        }
    }

    fn do_release(&self, ino: u64) {
        let (unuse, gone) = {
            let mut t = self.core.table();
            let Some(n) = t.get_mut(ino) else { return };
            n.opens = n.opens.saturating_sub(1);
            let mut unuse = None;
            if n.opens == 0 && n.in_use {
                n.in_use = false;
                unuse = n.cookie;
            }
            (unuse, t.forget(ino, 0))
        };
        self.cookie_done(unuse, gone.and_then(|n| n.cookie));
    }

    /// Ends a cookie's use and relinquishes a forgotten node's cookie, on
    /// the connection they belong to.
    fn cookie_done(
        &self,
        unuse: Option<(u64, ringcache::client::CookieHandle)>,
        relinquish: Option<(u64, ringcache::client::CookieHandle)>,
    ) {
        let Some(cache) = &self.core.cache else {
            return;
        };
        let Some(conn) = cache.live() else { return };
        if let Some((g, h)) = unuse
            && g == conn.gen_
            && let Err(e) = conn.client.unuse_cookie(h)
        {
            cache.failed(&conn, &e);
        }
        if let Some((g, h)) = relinquish
            && g == conn.gen_
            && let Err(e) = conn.client.relinquish_cookie(h, false)
        {
            cache.failed(&conn, &e);
        }
    }

    fn do_setattr(&self, ino: u64, set: SetAttr) -> FsResult<Shown> {
        self.writable()?;
        let (id, _) = self.core.id_of(ino)?;
        let cookie = if set.mask & setattr::SIZE != 0 {
            self.core.cookie(ino)
        } else {
            None
        };
        let token = cookie
            .as_ref()
            .and_then(|(conn, h)| conn.client.begin_fetch(*h).ok());
        let snap = self.core.snap(Some(ino));
        let a = self
            .core
            .server
            .setattr(id, set)
            .map_err(|e| errno_of(&e))?;
        self.core.learn(ino, &snap, &a, true);
        if let (Some((conn, h)), Some(token)) = (cookie, token) {
            self.core
                .cache_own_change(&conn, h, &token, &snap, &a, None);
        }
        self.core.view(ino).ok_or(Errno::ESTALE)
    }

    fn do_create(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: i32,
    ) -> FsResult<(u64, Shown, FopenFlags)> {
        self.writable()?;
        let (dir, _) = self.core.id_of(parent)?;
        let mut f = 0;
        if flags & libc::O_EXCL != 0 {
            f |= CREATE_EXCLUSIVE;
        }
        if flags & libc::O_TRUNC != 0 {
            f |= CREATE_TRUNCATE;
        }
        let snap = self.core.snap(None);
        let (a, created) = self
            .core
            .server
            .create(dir, name, mode & 0o7777, f)
            .map_err(|e| errno_of(&e))?;
        self.touched(parent);
        let (ino, shown) = self.entered(parent, name, &snap, &a);
        if !created && f & CREATE_TRUNCATE != 0 {
            // Truncated here: what the cache holds is of the old version.
            self.core.forget_cached_promise(a.attr.id);
        }
        let open = self.do_open(ino, OpenFlags(flags))?;
        Ok((ino, shown, open))
    }

    fn entry_op(
        &self,
        parent: u64,
        name: &[u8],
        op: impl FnOnce(wire::FileId) -> Result<AttrReply, crate::client::ClientError>,
    ) -> FsResult<(u64, Shown)> {
        self.writable()?;
        let (dir, _) = self.core.id_of(parent)?;
        let snap = self.core.snap(None);
        let a = op(dir).map_err(|e| errno_of(&e))?;
        self.touched(parent);
        Ok(self.entered(parent, name, &snap, &a))
    }

    /// Unlink or rmdir: the name goes from the parent's looked-up names.
    fn remove(
        &self,
        parent: u64,
        name: &[u8],
        reply: ReplyEmpty,
        op: impl FnOnce(wire::FileId, &[u8]) -> Result<(), crate::client::ClientError>,
    ) {
        let r = self.writable().and_then(|()| {
            let (dir, _) = self.core.id_of(parent)?;
            op(dir, name).map_err(|e| errno_of(&e))
        });
        match r {
            Ok(()) => {
                self.touched(parent);
                self.forgot_name(parent, name);
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn do_opendir(&self, ino: u64) -> FsResult<u64> {
        let (id, k) = self.core.id_of(ino)?;
        if k != FileKind::Dir {
            return Err(Errno::ENOTDIR);
        }
        let entries = self.core.server.readdir(id).map_err(|e| errno_of(&e))?;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, Arc::new(entries));
        Ok(fh)
    }
}

fn attr_reply(reply: ReplyAttr, ino: u64, r: FsResult<Shown>) {
    match r {
        Ok(Shown { attr: Some(a), ttl }) => reply.attr(&ttl, &file_attr(ino, &a)),
        Ok(_) => reply.error(Errno::EIO),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for RingFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // No writeback cache and no auto_inval_data: fuser asks for
        // neither. Writes go through at most 1 MiB at a time.
        let _ = config.set_max_write(MAX_WRITE);
        // Direct I/O requests of one file in flight together (fio's
        // iodepth reaches the mount); the handlers are concurrent.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_ASYNC_DIO);
        // Asynchronous requests (readahead, direct I/O) the kernel keeps
        // in flight: enough for an iodepth of 32 and readahead beside it.
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.do_lookup(parent.0, name_bytes(name)) {
            Ok((ino, shown)) => reply_entry(reply, ino, shown),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let gone = self.core.table().forget(ino.0, nlookup);
        self.cookie_done(None, gone.and_then(|n| n.cookie));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        attr_reply(reply, ino.0, self.do_getattr(ino.0));
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut set = SetAttr::default();
        if let Some(m) = mode {
            set.mask |= setattr::MODE;
            set.mode = m & 0o7777;
        }
        if let Some(u) = uid {
            set.mask |= setattr::UID;
            set.uid = u;
        }
        if let Some(g) = gid {
            set.mask |= setattr::GID;
            set.gid = g;
        }
        if let Some(s) = size {
            set.mask |= setattr::SIZE;
            set.size = s;
        }
        match atime {
            Some(TimeOrNow::Now) => set.mask |= setattr::ATIME_NOW,
            Some(TimeOrNow::SpecificTime(t)) => {
                set.mask |= setattr::ATIME;
                set.atime = to_time(t);
            }
            None => {}
        }
        match mtime {
            Some(TimeOrNow::Now) => set.mask |= setattr::MTIME_NOW,
            Some(TimeOrNow::SpecificTime(t)) => {
                set.mask |= setattr::MTIME;
                set.mtime = to_time(t);
            }
            None => {}
        }
        let r = if set.mask == 0 {
            self.do_getattr(ino.0)
        } else {
            self.do_setattr(ino.0, set)
        };
        attr_reply(reply, ino.0, r);
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let r = self
            .core
            .id_of(ino.0)
            .and_then(|(id, _)| self.core.server.readlink(id).map_err(|e| errno_of(&e)));
        match r {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let name = name_bytes(name);
        let server = &self.core.server;
        match self.entry_op(parent.0, name, |dir| server.mkdir(dir, name, mode & 0o7777)) {
            Ok((ino, shown)) => reply_entry(reply, ino, shown),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let server = &self.core.server;
        self.remove(parent.0, name_bytes(name), reply, |dir, n| {
            server.unlink(dir, n)
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let server = &self.core.server;
        self.remove(parent.0, name_bytes(name), reply, |dir, n| {
            server.rmdir(dir, n)
        });
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let name = name_bytes(link_name);
        let target = target.as_os_str().as_bytes();
        let server = &self.core.server;
        match self.entry_op(parent.0, name, |dir| server.symlink(dir, name, target)) {
            Ok((ino, shown)) => reply_entry(reply, ino, shown),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::EINVAL);
        }
        let f = if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            RENAME_NOREPLACE
        } else {
            0
        };
        let (from, to) = (name_bytes(name), name_bytes(newname));
        let r = self.writable().and_then(|()| {
            let (a, _) = self.core.id_of(parent.0)?;
            let (b, _) = self.core.id_of(newparent.0)?;
            self.core
                .server
                .rename(a, from, b, to, f)
                .map_err(|e| errno_of(&e))
        });
        match r {
            Ok(()) => {
                self.touched(parent.0);
                self.touched(newparent.0);
                self.forgot_name(parent.0, from);
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let name = name_bytes(newname);
        let r = self.core.id_of(ino.0).and_then(|(id, _)| {
            let server = &self.core.server;
            self.entry_op(newparent.0, name, |dir| server.link(id, dir, name))
        });
        match r {
            Ok((ino, shown)) => reply_entry(reply, ino, shown),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.do_open(ino.0, flags) {
            Ok(f) => reply.opened(FileHandle(0), f),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.core.read_then(
            ino.0,
            offset,
            size,
            Box::new(move |r| match r {
                Ok(d) => reply.data(&d),
                Err(e) => reply.error(e),
            }),
        );
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let r = self
            .writable()
            .and_then(|()| self.core.write(ino.0, offset, data));
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Writes went through already.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.do_release(ino.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.core.id_of(ino.0).and_then(|(id, _)| {
            self.core
                .server
                .fsync(id, datasync)
                .map_err(|e| errno_of(&e))
        });
        if let Err(e) = r {
            return reply.error(e);
        }
        // The cache's durability request: what it holds of the file
        // survives a crash of the daemon from here on.
        if let Some(cache) = &self.core.cache
            && let Some(conn) = cache.live()
            && let Err(e) = conn.client.flush_cache()
        {
            cache.failed(&conn, &e);
        }
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.do_opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = self
            .dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh.0)
            .cloned();
        let Some(entries) = entries else {
            return reply.error(Errno::EBADF);
        };
        let dots = [
            (ino.0, FileType::Directory, OsStr::new(".")),
            (ino.0, FileType::Directory, OsStr::new("..")),
        ];
        let all = dots.into_iter().chain(
            entries
                .iter()
                .map(|e| (e.ino, kind(e.kind), OsStr::from_bytes(&e.name))),
        );
        for (i, (n, k, name)) in all.enumerate().skip(offset as usize) {
            if reply.add(INodeNo(n), i as u64 + 1, k, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.core.server.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namemax, s.frsize,
            ),
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.do_create(parent.0, name_bytes(name), mode, flags) {
            Ok((ino, shown, open)) => match shown.attr {
                Some(a) => reply.created(
                    &shown.ttl,
                    &file_attr(ino, &a),
                    Generation(a.id.gen_),
                    FileHandle(0),
                    open,
                ),
                None => reply.error(Errno::EIO),
            },
            Err(e) => reply.error(e),
        }
    }

    // What ringfs does not have, answered without fuser's warnings: the
    // kernel and the tools fall back (no xattrs, no ioctls, no
    // fallocate, local locks, read/write instead of copy_file_range).

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        reply.error(Errno::from_i32(libc::EOPNOTSUPP));
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(Errno::from_i32(libc::EOPNOTSUPP));
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::from_i32(libc::EOPNOTSUPP));
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::from_i32(libc::EOPNOTSUPP));
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::from_i32(libc::EOPNOTSUPP));
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }
}
