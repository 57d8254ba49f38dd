//! The inode table of a mount: FUSE node ids, the server's file ids, what
//! is known of each file (attributes, the promise on them, its cookie in
//! the cache) and the kernel's lookup counts.
//!
//! A node id is the server's inode number where that is free (so `stat`
//! and `readdir` agree), 1 for the export's root, and a number above
//! 2^62 for a file that reuses an inode number still known under another
//! generation: the kernel must never take a new file for an old one.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use ringcache::client::CookieHandle;

use crate::wire::{Attr, FileId, FileKind};

/// The FUSE root.
pub const ROOT: u64 = 1;
const ALT_BASE: u64 = 1 << 62;

/// What the client knows of one file.
#[derive(Debug)]
pub struct Node {
    pub id: FileId,
    pub attr: Attr,
    /// The kernel's lookups not yet forgotten.
    pub nlookup: u64,
    /// Files open on it.
    pub opens: u32,
    /// The promise on `attr` (already shortened by the margin), if any.
    pub promise_until: Option<Instant>,
    /// The client's whole-server break count when the promise was asked
    /// for: a server break since voids it.
    pub promise_sb: u64,
    /// Breaks of this file so far: a reply to a request sent before the
    /// last one installs no promise.
    pub breaks: u64,
    /// The cookie in the cache: (connection generation, handle).
    pub cookie: Option<(u64, CookieHandle)>,
    /// The cookie is in use (UseCookie sent, not undone).
    pub in_use: bool,
    /// The data version the kernel's page cache may hold pages of; `None`
    /// once it was told to drop them, or when unknown.
    pub kernel_version: Option<u64>,
    /// For a directory: names the kernel looked up in it (each gets an
    /// `inval_entry` when the directory's promise is broken).
    pub names: HashSet<Vec<u8>>,
}

impl Node {
    fn new(attr: Attr) -> Node {
        Node {
            id: attr.id,
            attr,
            nlookup: 0,
            opens: 0,
            promise_until: None,
            promise_sb: 0,
            breaks: 0,
            cookie: None,
            in_use: false,
            kernel_version: None,
            names: HashSet::new(),
        }
    }

    /// Whether the promise holds at `now`, with `server_breaks` the
    /// client's current whole-server break count.
    pub fn promised(&self, now: Instant, server_breaks: u64) -> bool {
        self.promise_sb == server_breaks && self.promise_until.is_some_and(|t| now < t)
    }

    pub fn is_file(&self) -> bool {
        self.attr.kind == FileKind::File
    }
}

/// Taken before a request whose reply may carry a promise: the reply
/// installs it only if no break came in between.
#[derive(Debug, Clone, Copy)]
pub struct Snap {
    /// The file's break count (`u64::MAX`: a file not known yet, then
    /// `all_breaks` decides).
    pub breaks: u64,
    pub all_breaks: u64,
    pub server_breaks: u64,
    pub sent: Instant,
}

/// The table.
#[derive(Default)]
pub struct Table {
    nodes: HashMap<u64, Node>,
    by_id: HashMap<FileId, u64>,
    by_cookie: HashMap<(u64, u32), u64>,
    next_alt: u64,
}

impl Table {
    /// A table holding the export's root.
    pub fn new(root: Attr) -> Table {
        let mut t = Table {
            next_alt: ALT_BASE,
            ..Table::default()
        };
        let mut n = Node::new(root);
        // The root is never forgotten.
        n.nlookup = 1;
        t.by_id.insert(root.id, ROOT);
        t.nodes.insert(ROOT, n);
        t
    }

    pub fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    pub fn get_mut(&mut self, ino: u64) -> Option<&mut Node> {
        self.nodes.get_mut(&ino)
    }

    pub fn ino_of(&self, id: FileId) -> Option<u64> {
        self.by_id.get(&id).copied()
    }

    pub fn ino_of_cookie(&self, gen_: u64, handle: u32) -> Option<u64> {
        self.by_cookie.get(&(gen_, handle)).copied()
    }

    pub fn inos(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// The node of `attr.id`, made if new; returns its id. Attributes are
    /// the caller's to update.
    pub fn intern(&mut self, attr: Attr) -> u64 {
        if let Some(&ino) = self.by_id.get(&attr.id) {
            return ino;
        }
        let want = attr.id.ino;
        let ino = if want > ROOT && want < ALT_BASE && !self.nodes.contains_key(&want) {
            want
        } else {
            self.next_alt += 1;
            self.next_alt
        };
        self.by_id.insert(attr.id, ino);
        self.nodes.insert(ino, Node::new(attr));
        ino
    }

    /// Records the cookie of `ino`.
    pub fn set_cookie(&mut self, ino: u64, gen_: u64, handle: CookieHandle) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            if let Some((g, h)) = n.cookie.take() {
                self.by_cookie.remove(&(g, h.0));
            }
            n.cookie = Some((gen_, handle));
            n.in_use = false;
            self.by_cookie.insert((gen_, handle.0), ino);
        }
    }

    /// Forgets the cookie of `ino` (its connection is gone, or it was
    /// relinquished); returns it.
    pub fn take_cookie(&mut self, ino: u64) -> Option<(u64, CookieHandle)> {
        let n = self.nodes.get_mut(&ino)?;
        let c = n.cookie.take()?;
        n.in_use = false;
        self.by_cookie.remove(&(c.0, c.1.0));
        Some(c)
    }

    /// The kernel forgot `n` lookups of `ino`: returns the node if it is
    /// now unreferenced (removed from the table), for its cookie to be
    /// relinquished.
    pub fn forget(&mut self, ino: u64, n: u64) -> Option<Node> {
        let node = self.nodes.get_mut(&ino)?;
        node.nlookup = node.nlookup.saturating_sub(n);
        if ino == ROOT || node.nlookup > 0 || node.opens > 0 {
            return None;
        }
        let node = self.nodes.remove(&ino)?;
        self.by_id.remove(&node.id);
        if let Some((g, h)) = node.cookie {
            self.by_cookie.remove(&(g, h.0));
        }
        Some(node)
    }

    /// Every node's cookie, taken (at unmount).
    pub fn take_all_cookies(&mut self) -> Vec<(u64, CookieHandle)> {
        self.by_cookie.clear();
        self.nodes
            .values_mut()
            .filter_map(|n| {
                n.in_use = false;
                n.cookie.take()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Time;

    fn attr(ino: u64, gen_: u64) -> Attr {
        Attr {
            id: FileId { ino, gen_ },
            kind: FileKind::File,
            mode: 0o644,
            nlink: 1,
            uid: 0,
            gid: 0,
            blksize: 4096,
            size: 0,
            blocks: 0,
            rdev: 0,
            atime: Time::default(),
            mtime: Time::default(),
            ctime: Time::default(),
            data_version: 1,
        }
    }

    #[test]
    fn node_ids_follow_inode_numbers_unless_reused() {
        let mut t = Table::new(attr(2, 0));
        assert_eq!(t.ino_of(FileId { ino: 2, gen_: 0 }), Some(ROOT));
        let a = t.intern(attr(12, 7));
        assert_eq!(a, 12);
        assert_eq!(t.intern(attr(12, 7)), 12, "the same file, the same node");
        // The inode number reused by a new file while the old is known.
        let b = t.intern(attr(12, 8));
        assert!(b > ALT_BASE, "a new file never takes an old file's node id");
        // Inode number 1 is the FUSE root's.
        let c = t.intern(attr(1, 0));
        assert_ne!(c, ROOT);
    }

    #[test]
    fn forget_removes_only_unreferenced_nodes() {
        let mut t = Table::new(attr(2, 0));
        let a = t.intern(attr(12, 7));
        t.get_mut(a).expect("node").nlookup = 2;
        t.set_cookie(a, 1, CookieHandle(5));
        assert_eq!(t.ino_of_cookie(1, 5), Some(a));
        assert!(t.forget(a, 1).is_none());
        t.get_mut(a).expect("node").opens = 1;
        assert!(t.forget(a, 1).is_none(), "open files stay");
        t.get_mut(a).expect("node").opens = 0;
        let gone = t.forget(a, 0).expect("removed");
        assert_eq!(gone.cookie, Some((1, CookieHandle(5))));
        assert_eq!(t.ino_of_cookie(1, 5), None);
        assert_eq!(t.ino_of(FileId { ino: 12, gen_: 7 }), None);
        assert!(t.forget(ROOT, 10).is_none(), "the root is never forgotten");
    }
}
