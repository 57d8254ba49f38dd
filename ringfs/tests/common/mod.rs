//! Helpers of the ringfs tests: a real `ringfs serve` process, clients.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ringfs::client::{Client, ClientConfig, new_client_id};

pub mod mount;
pub mod netns;

/// A running `ringfs serve`, killed when dropped.
pub struct ServerProc {
    pub child: Child,
    pub addr: SocketAddr,
    pub epoch: u64,
    pub export: PathBuf,
    pub state: PathBuf,
    pub args: Vec<String>,
    /// `ip netns exec NS` prefix, if any.
    pub netns: Option<String>,
}

impl ServerProc {
    /// Starts a server of `export` with state in `state` on a free
    /// loopback port.
    pub fn start(export: &Path, state: &Path, args: &[&str]) -> ServerProc {
        Self::spawn(export, state, "127.0.0.1:0", args, None)
    }

    pub fn spawn(
        export: &Path,
        state: &Path,
        listen: &str,
        args: &[&str],
        netns: Option<&str>,
    ) -> ServerProc {
        let bin = env!("CARGO_BIN_EXE_ringfs");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, bin]);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("serve")
            .arg(export)
            .arg("--listen")
            .arg(listen)
            .arg("--state")
            .arg(state)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            );
        let mut child = cmd.spawn().expect("spawn ringfs serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        // "listening on ADDR epoch N"
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some("listening"), "server said: {line:?}");
        words.next();
        let addr: SocketAddr = words.next().expect("addr").parse().expect("an address");
        words.next();
        let epoch: u64 = words.next().expect("epoch").parse().expect("a number");
        ServerProc {
            child,
            addr,
            epoch,
            export: export.to_path_buf(),
            state: state.to_path_buf(),
            args: args.iter().map(|s| s.to_string()).collect(),
            netns: netns.map(str::to_string),
        }
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts again on the same port, after a kill.
    pub fn restart(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let listen = if self.netns.is_some() {
            format!("0.0.0.0:{}", self.addr.port())
        } else {
            self.addr.to_string()
        };
        let mut tries = 0;
        loop {
            // The port may linger for a moment after the kill.
            let next = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                ServerProc::spawn(
                    &self.export,
                    &self.state,
                    &listen,
                    &args,
                    self.netns.as_deref(),
                )
            }));
            match next {
                Ok(mut p) => {
                    std::mem::swap(&mut self.child, &mut p.child);
                    self.epoch = p.epoch;
                    // `p` now holds the old, dead child.
                    return;
                }
                Err(_) if tries < 20 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => std::panic::resume_unwind(e),
            }
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn config(name: &str) -> ClientConfig {
    let mut c = ClientConfig::new(name, new_client_id());
    c.connect_timeout = Duration::from_secs(10);
    c.request_timeout = Duration::from_secs(30);
    c
}

pub fn client(addr: SocketAddr, name: &str) -> Client {
    Client::connect(addr, config(name)).expect("connect")
}

/// An export and a state directory in one temporary directory.
pub struct Dirs {
    pub tmp: tempfile::TempDir,
    pub export: PathBuf,
    pub state: PathBuf,
}

pub fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().expect("tempdir");
    let export = tmp.path().join("export");
    let state = tmp.path().join("state");
    std::fs::create_dir(&export).expect("mkdir export");
    Dirs { tmp, export, state }
}

/// Whether the test must fail rather than skip when it cannot run.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Every operation through `a`, with `b` (another client) checking what
/// `a` did is visible to it. Used on loopback and across namespaces.
pub fn exercise_every_op(a: &Client, b: &Client) {
    use ringfs::wire::{
        CREATE_EXCLUSIVE, CREATE_TRUNCATE, FileKind, RENAME_NOREPLACE, SetAttr, setattr,
    };
    let root = a.root();
    assert_eq!(b.root(), root);

    // create, write, read, getattr
    let (f, created) = a
        .create(root, b"file.txt", 0o640, CREATE_EXCLUSIVE)
        .expect("create");
    assert!(created);
    assert_eq!(f.attr.kind, FileKind::File);
    assert_eq!(f.attr.mode, 0o640);
    let exclusive_again = a.create(root, b"file.txt", 0o640, CREATE_EXCLUSIVE);
    assert_eq!(exclusive_again.expect_err("exists").errno(), Some(17));
    let w = a.write(f.attr.id, 0, b"hello, world").expect("write");
    assert_eq!(w.attr.size, 12);
    assert_ne!(w.attr.data_version, f.attr.data_version);
    let (ra, data) = b.read(f.attr.id, 0, 100).expect("read");
    assert_eq!(data, b"hello, world");
    assert_eq!(ra.attr.data_version, w.attr.data_version);
    assert!(ra.promise_ms > 0, "a read carries a promise");
    let (_, tail) = b.read(f.attr.id, 7, 100).expect("read at an offset");
    assert_eq!(tail, b"world");
    let (_, past) = b.read(f.attr.id, 1000, 10).expect("read past the end");
    assert!(past.is_empty());
    let g = b.getattr(f.attr.id).expect("getattr");
    assert_eq!(g.attr.size, 12);
    assert!(g.promise_ms > 0);

    // lookup
    let l = b.lookup(root, b"file.txt").expect("lookup");
    assert_eq!(l.attr.id, f.attr.id);
    assert_eq!(
        b.lookup(root, b"nothing").expect_err("ENOENT").errno(),
        Some(2)
    );

    // a rewrite of the same size within one timestamp tick still changes the version
    let v1 = a
        .write(f.attr.id, 0, b"HELLO")
        .expect("rewrite")
        .attr
        .data_version;
    let v2 = a
        .write(f.attr.id, 0, b"HELLO")
        .expect("rewrite")
        .attr
        .data_version;
    assert_ne!(v1, v2);

    // append
    let (at, ap) = a.append(f.attr.id, b"!").expect("append");
    assert_eq!(at, 12);
    assert_eq!(ap.attr.size, 13);

    // setattr: mode, times, size (truncate and extend)
    let s = a
        .setattr(
            f.attr.id,
            SetAttr {
                mask: setattr::MODE | setattr::MTIME | setattr::ATIME,
                mode: 0o600,
                mtime: ringfs::wire::Time {
                    sec: 1_000_000,
                    nsec: 5,
                },
                atime: ringfs::wire::Time {
                    sec: 2_000_000,
                    nsec: 0,
                },
                ..SetAttr::default()
            },
        )
        .expect("setattr");
    assert_eq!(s.attr.mode, 0o600);
    assert_eq!(s.attr.mtime.sec, 1_000_000);
    assert_eq!(s.attr.atime.sec, 2_000_000);
    let t = a
        .setattr(
            f.attr.id,
            SetAttr {
                mask: setattr::SIZE,
                size: 5,
                ..SetAttr::default()
            },
        )
        .expect("truncate");
    assert_eq!(t.attr.size, 5);
    assert_ne!(t.attr.data_version, s.attr.data_version);
    let (_, d) = b.read(f.attr.id, 0, 100).expect("read");
    assert_eq!(d, b"HELLO");
    let own = a
        .setattr(
            f.attr.id,
            SetAttr {
                mask: setattr::UID | setattr::GID,
                uid: 0,
                gid: 0,
                ..SetAttr::default()
            },
        )
        .expect("chown");
    assert_eq!((own.attr.uid, own.attr.gid), (0, 0));

    // create with truncate
    let (tr, created) = a
        .create(root, b"file.txt", 0o600, CREATE_TRUNCATE)
        .expect("truncate");
    assert!(!created);
    assert_eq!(tr.attr.size, 0);
    a.write(f.attr.id, 0, b"content").expect("write");

    // mkdir, readdir (resumable), rmdir
    let d = a.mkdir(root, b"dir", 0o755).expect("mkdir");
    assert_eq!(d.attr.kind, FileKind::Dir);
    for i in 0..50 {
        let name = format!("f{i:03}");
        a.create(d.attr.id, name.as_bytes(), 0o644, 0)
            .expect("create in dir");
    }
    let mut seen = Vec::new();
    let mut cursor = Vec::new();
    loop {
        let page = b.readdir_page(d.attr.id, &cursor, 7).expect("readdir page");
        assert!(page.entries.len() <= 7);
        seen.extend(page.entries.iter().map(|e| e.name.clone()));
        if page.eof {
            break;
        }
        cursor = page.entries.last().expect("a page").name.clone();
    }
    assert_eq!(seen.len(), 50);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    let all = b.readdir(root).expect("readdir");
    let names: Vec<&[u8]> = all.iter().map(|e| e.name.as_slice()).collect();
    assert!(names.contains(&b"dir".as_slice()) && names.contains(&b"file.txt".as_slice()));
    assert_eq!(
        a.rmdir(root, b"dir").expect_err("not empty").errno(),
        Some(39)
    );
    for i in 0..50 {
        a.unlink(d.attr.id, format!("f{i:03}").as_bytes())
            .expect("unlink");
    }
    a.rmdir(root, b"dir").expect("rmdir");
    assert_eq!(b.lookup(root, b"dir").expect_err("gone").errno(), Some(2));

    // symlink, readlink (never followed by the server)
    let sl = a.symlink(root, b"link", b"/etc/passwd").expect("symlink");
    assert_eq!(sl.attr.kind, FileKind::Symlink);
    assert_eq!(b.readlink(sl.attr.id).expect("readlink"), b"/etc/passwd");
    let l = b.lookup(root, b"link").expect("lookup a symlink");
    assert_eq!(l.attr.kind, FileKind::Symlink);
    assert!(
        b.read(sl.attr.id, 0, 10).is_err(),
        "a symlink is not read through"
    );

    // link
    let h = a.link(f.attr.id, root, b"hard").expect("link");
    assert_eq!(h.attr.nlink, 2);
    assert_eq!(b.lookup(root, b"hard").expect("lookup").attr.id, f.attr.id);

    // rename: the id survives; with replace (the editors' atomic save); noreplace
    let (tmp, _) = a
        .create(root, b".file.txt.swp", 0o644, CREATE_EXCLUSIVE)
        .expect("tmp");
    a.write(tmp.attr.id, 0, b"new content").expect("write tmp");
    assert_eq!(
        a.rename(root, b".file.txt.swp", root, b"hard", RENAME_NOREPLACE)
            .expect_err("exists")
            .errno(),
        Some(17)
    );
    a.rename(root, b".file.txt.swp", root, b"file.txt", 0)
        .expect("atomic save");
    let after = b.lookup(root, b"file.txt").expect("lookup");
    assert_eq!(after.attr.id, tmp.attr.id, "the renamed file keeps its id");
    let (_, d) = b.read(after.attr.id, 0, 100).expect("read");
    assert_eq!(d, b"new content");
    // The replaced file lives on under its other name.
    let old = b.lookup(root, b"hard").expect("lookup");
    assert_eq!(old.attr.id, f.attr.id);
    assert_eq!(old.attr.nlink, 1);

    // fsync, statfs
    a.fsync(after.attr.id, false).expect("fsync");
    a.fsync(after.attr.id, true).expect("fdatasync");
    a.fsync(root, false).expect("fsync a directory");
    let st = b.statfs().expect("statfs");
    assert!(st.blocks > 0 && st.bsize > 0);

    // large data: 1 MiB writes and reads
    let big: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    let (bf, _) = a.create(root, b"big", 0o644, 0).expect("create big");
    a.write(bf.attr.id, 0, &big).expect("write 1 MiB");
    a.write(bf.attr.id, 1 << 20, &big).expect("write 1 MiB");
    let (_, back) = b.read(bf.attr.id, 1 << 20, 1 << 20).expect("read 1 MiB");
    assert!(back == big);

    // cleanup by unlink
    for n in [b"big".as_slice(), b"hard", b"file.txt", b"link"] {
        a.unlink(root, n).expect("unlink");
    }
    assert!(b.readdir(root).expect("readdir").is_empty());
}
