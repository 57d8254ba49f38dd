//! Changes by other local processes: an inotify watch on every directory
//! of the export. A change gets a new data version and breaks every
//! client's promise on the file (or on the directory whose entries
//! changed); a queue overflow is a whole-server break and makes every
//! version suspect.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent};
use nix::sys::stat::Mode;

use crate::wire::{BreakReason, FileId};

use super::Server;
use super::ServerError;
use super::export::{id_of, open_beneath};
use super::state::Fingerprint;

struct Watcher {
    srv: Arc<Server>,
    inotify: Inotify,
    /// Watch descriptor → the directory's `O_PATH` descriptor.
    dirs: HashMap<i32, File>,
    warned_full: bool,
}

fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_ONLYDIR
}

/// Watches the whole export (before the server listens, so that nothing
/// a client could be promised goes unwatched) and starts the thread that
/// reads the events.
pub fn start(srv: Arc<Server>) -> Result<(), ServerError> {
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC).map_err(ServerError::Inotify)?;
    let mut w = Watcher {
        srv,
        inotify,
        dirs: HashMap::new(),
        warned_full: false,
    };
    let root = w
        .srv
        .export
        .root
        .path
        .try_clone()
        .map_err(|e| ServerError::Inotify(Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
    w.watch_tree(root);
    tracing::info!(dirs = w.dirs.len(), "watching the export for local changes");
    std::thread::Builder::new()
        .name("ringfs-watch".into())
        .spawn(move || w.run())
        .map_err(|e| ServerError::Inotify(Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
    Ok(())
}

impl Watcher {
    /// Adds watches on `top` and every directory beneath it (mount points
    /// are not crossed).
    fn watch_tree(&mut self, top: File) {
        let mut stack = vec![top];
        while let Some(dir) = stack.pop() {
            let path = format!("/proc/self/fd/{}", dir.as_raw_fd());
            match self.inotify.add_watch(path.as_str(), mask()) {
                Ok(wd) => {
                    let raw = wd.as_raw();
                    // Subdirectories first listed, then remembered.
                    let subdirs = list_subdirs(&dir);
                    self.dirs.insert(raw, dir);
                    for name in subdirs {
                        let Some(d) = self.dirs.get(&raw) else { break };
                        if let Ok(fd) = open_beneath(
                            d,
                            &name,
                            OFlag::O_PATH | OFlag::O_DIRECTORY,
                            Mode::empty(),
                        ) {
                            stack.push(File::from(fd));
                        }
                    }
                }
                Err(Errno::ENOSPC) => {
                    if !self.warned_full {
                        tracing::error!(
                            "inotify watch limit reached (fs.inotify.max_user_watches): \
                             local changes in some directories are found only when files are next looked at"
                        );
                        self.warned_full = true;
                    }
                }
                Err(e) => tracing::warn!("inotify watch: {e}"),
            }
        }
    }

    fn run(mut self) {
        loop {
            let events = match self.inotify.read_events() {
                Ok(ev) => ev,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!("inotify: {e}; local changes are no longer seen");
                    // Nothing is watched any more: clients must not trust
                    // what they hold.
                    self.srv.versions.suspect_all();
                    self.srv.co.break_all(BreakReason::Overflow);
                    return;
                }
            };
            self.handle(events);
        }
    }

    fn handle(&mut self, events: Vec<InotifyEvent>) {
        let mut changed: HashSet<FileId> = HashSet::new();
        let mut new_dirs: Vec<File> = Vec::new();
        for ev in events {
            if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                tracing::warn!("inotify queue overflow: whole-server break");
                self.srv.versions.suspect_all();
                self.srv.co.break_all(BreakReason::Overflow);
                continue;
            }
            let wd = ev.wd.as_raw();
            if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
                self.dirs.remove(&wd);
                continue;
            }
            let Some(dir) = self.dirs.get(&wd) else {
                continue;
            };
            let entry_change = ev.mask.intersects(
                AddWatchFlags::IN_CREATE
                    | AddWatchFlags::IN_DELETE
                    | AddWatchFlags::IN_MOVED_FROM
                    | AddWatchFlags::IN_MOVED_TO,
            );
            if entry_change || ev.name.is_none() {
                // The directory itself: its entries or attributes.
                if let Some(id) = self.local_change_of(dir) {
                    changed.insert(id);
                }
            }
            let Some(name) = ev.name.as_ref() else {
                continue;
            };
            let name = std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str());
            if ev
                .mask
                .intersects(AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM)
            {
                continue;
            }
            let Ok(fd) = open_beneath(dir, name, OFlag::O_PATH, Mode::empty()) else {
                continue;
            };
            let child = File::from(fd);
            if let Some(id) = self.local_change_of(&child) {
                changed.insert(id);
            }
            if ev.mask.contains(AddWatchFlags::IN_ISDIR)
                && ev
                    .mask
                    .intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
            {
                new_dirs.push(child);
            }
        }
        for d in new_dirs {
            self.watch_tree(d);
        }
        if !changed.is_empty() {
            let files: Vec<FileId> = changed.into_iter().collect();
            tracing::debug!(n = files.len(), "local changes: breaking promises");
            self.srv.co.break_local(&files);
        }
    }

    /// The file's id if the event is a change by someone else than the
    /// server (its data version is then bumped).
    fn local_change_of(&self, f: &File) -> Option<FileId> {
        let md = f.metadata().ok()?;
        let id = id_of(&md);
        if self.srv.co.is_changing(&id) {
            // The server is changing it: the change's own break and
            // version cover whatever this event saw.
            return None;
        }
        match self.srv.versions.local_event(id, Fingerprint::of(&md)) {
            Ok(Some(_)) => Some(id),
            Ok(None) => None,
            Err(e) => {
                tracing::error!("data version log: {e}");
                Some(id)
            }
        }
    }
}

fn list_subdirs(dir: &File) -> Vec<Vec<u8>> {
    let Ok(fd) = nix::fcntl::openat(
        std::os::fd::AsFd::as_fd(dir),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return Vec::new();
    };
    let Ok(mut d) = nix::dir::Dir::from_fd(fd) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in d.iter().flatten() {
        let name = e.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let is_dir = match e.file_type() {
            Some(nix::dir::Type::Directory) => true,
            Some(_) => false,
            None => true, // opened with O_DIRECTORY below: a non-directory fails
        };
        if is_dir {
            out.push(name.to_vec());
        }
    }
    out
}
