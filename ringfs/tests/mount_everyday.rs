//! A real `ringfs mount` (FUSE, embedded cache) on loopback: everyday use
//! through the kernel (files, directories, links, modes, truncation),
//! `cp -a` of a tree, a tar round trip, `rsync`, `git clone` and `git status`
//! inside the mount, an editor-style atomic save by a second mount seen
//! by the first, and the error without a cache daemon. Without /dev/fuse
//! the tests print why and skip; under CI=true they fail.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::mount::{MountProc, fuse_or_skip};
use common::{ServerProc, dirs};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn embedded(tmp: &Path, name: &str) -> Vec<String> {
    vec![
        "--cache-device".into(),
        tmp.join(format!("{name}.img")).display().to_string(),
        "--cache-size".into(),
        "256M".into(),
    ]
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A small source tree with a symlink, a hard link, modes and times.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("src/deep/deeper")).expect("mkdir");
    for i in 0..40 {
        let body: String = (0..(i * 97))
            .map(|j| char::from(b'a' + (j % 26) as u8))
            .collect();
        std::fs::write(root.join(format!("src/file{i}.txt")), body).expect("write");
    }
    std::fs::write(root.join("src/deep/deeper/big.bin"), vec![7u8; 3 << 20]).expect("write");
    std::fs::write(root.join("run.sh"), "#!/bin/sh\necho hi\n").expect("write");
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    std::os::unix::fs::symlink("src/file1.txt", root.join("link")).expect("symlink");
    std::fs::hard_link(root.join("src/file2.txt"), root.join("hard")).expect("link");
}

#[test]
fn files_and_directories_through_the_kernel() {
    if !fuse_or_skip() {
        return;
    }
    let d = dirs();
    let srv = ServerProc::start(&d.export, &d.state, &[]);
    let a = embedded(d.tmp.path(), "a");
    let m = MountProc::start(srv.addr, &d.tmp.path().join("mnt"), &args(&a), None);

    std::fs::write(m.path("hello.txt"), b"hello").expect("write");
    assert_eq!(std::fs::read(m.path("hello.txt")).expect("read"), b"hello");
    assert_eq!(
        std::fs::read(d.export.join("hello.txt")).expect("on the server"),
        b"hello"
    );
    std::fs::create_dir(m.path("dir")).expect("mkdir");
    std::fs::rename(m.path("hello.txt"), m.path("dir/moved.txt")).expect("rename");
    assert!(!m.path("hello.txt").exists());
    assert_eq!(
        std::fs::read(m.path("dir/moved.txt")).expect("read"),
        b"hello"
    );
    std::fs::set_permissions(
        m.path("dir/moved.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    assert_eq!(
        std::fs::metadata(d.export.join("dir/moved.txt"))
            .expect("stat")
            .mode()
            & 0o777,
        0o600
    );
    std::os::unix::fs::symlink("moved.txt", m.path("dir/sym")).expect("symlink");
    assert_eq!(
        std::fs::read_link(m.path("dir/sym")).expect("readlink"),
        Path::new("moved.txt")
    );
    std::fs::hard_link(m.path("dir/moved.txt"), m.path("dir/hard")).expect("link");
    assert_eq!(
        std::fs::metadata(m.path("dir/hard")).expect("stat").nlink(),
        2
    );
    // Truncate and extend.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.path("dir/moved.txt"))
        .expect("open");
    f.set_len(2).expect("truncate");
    assert_eq!(std::fs::read(m.path("dir/moved.txt")).expect("read"), b"he");
    f.set_len(10_000).expect("extend");
    drop(f);
    let back = std::fs::read(m.path("dir/moved.txt")).expect("read");
    assert_eq!(back.len(), 10_000);
    assert_eq!(&back[..2], b"he");
    assert!(back[2..].iter().all(|&b| b == 0));
    // A large file written and read back through the cache.
    let big: Vec<u8> = (0..(5u32 << 20) + 123).map(|i| (i % 251) as u8).collect();
    std::fs::write(m.path("big.bin"), &big).expect("write big");
    assert_eq!(std::fs::read(m.path("big.bin")).expect("read big"), big);
    assert_eq!(
        std::fs::read(d.export.join("big.bin")).expect("server"),
        big
    );
    let mut names: Vec<String> = std::fs::read_dir(m.path("dir"))
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["hard", "moved.txt", "sym"]);
    std::fs::remove_file(m.path("dir/sym")).expect("unlink");
    std::fs::remove_file(m.path("dir/hard")).expect("unlink");
    std::fs::remove_file(m.path("dir/moved.txt")).expect("unlink");
    std::fs::remove_dir(m.path("dir")).expect("rmdir");
    assert!(!d.export.join("dir").exists());
    let statfs = nix::sys::statvfs::statvfs(&m.dir).expect("statfs");
    assert!(statfs.blocks() > 0);
    drop(m);
}

#[test]
fn cp_tar_rsync_and_git_on_the_mount() {
    if !fuse_or_skip() {
        return;
    }
    let d = dirs();
    let srv = ServerProc::start(&d.export, &d.state, &[]);
    let a = embedded(d.tmp.path(), "a");
    let m = MountProc::start(srv.addr, &d.tmp.path().join("mnt"), &args(&a), None);
    let tree = d.tmp.path().join("tree");
    make_tree(&tree);

    // cp -a in and out, identical (contents, modes, links).
    run(Command::new("cp").arg("-a").arg(&tree).arg(m.path("copy")));
    run(Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(&tree)
        .arg(m.path("copy")));
    let out = d.tmp.path().join("out");
    run(Command::new("cp").arg("-a").arg(m.path("copy")).arg(&out));
    run(Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(&tree)
        .arg(&out));
    assert_eq!(
        std::fs::metadata(out.join("run.sh")).expect("stat").mode() & 0o777,
        0o755
    );
    assert_eq!(
        std::fs::metadata(m.path("copy/hard"))
            .expect("stat")
            .nlink(),
        2,
        "cp -a keeps the hard link"
    );

    // A tar round trip through the mount.
    let tarball = d.tmp.path().join("t.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&tarball)
        .arg("-C")
        .arg(&tree)
        .arg("."));
    std::fs::create_dir(m.path("untar")).expect("mkdir");
    run(Command::new("tar")
        .arg("-xf")
        .arg(&tarball)
        .arg("-C")
        .arg(m.path("untar")));
    let tar2 = d.tmp.path().join("t2.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&tar2)
        .arg("-C")
        .arg(m.path("untar"))
        .arg("."));
    let back = d.tmp.path().join("back");
    std::fs::create_dir(&back).expect("mkdir");
    run(Command::new("tar")
        .arg("-xf")
        .arg(&tar2)
        .arg("-C")
        .arg(&back));
    run(Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(&tree)
        .arg(&back));

    // rsync in, a change, rsync again (its temporary file and rename).
    run(Command::new("rsync")
        .arg("-a")
        .arg(format!("{}/", tree.display()))
        .arg(m.path("rs")));
    run(Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(&tree)
        .arg(m.path("rs")));
    std::fs::write(tree.join("src/file3.txt"), "changed by the second rsync\n").expect("write");
    run(Command::new("rsync")
        .arg("-a")
        .arg("--delete")
        .arg(format!("{}/", tree.display()))
        .arg(m.path("rs")));
    run(Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(&tree)
        .arg(m.path("rs")));

    // git: a repository made here, cloned into the mount; status is clean
    // and fsck finds nothing; a commit inside the mount works.
    let repo = d.tmp.path().join("repo");
    run(Command::new("cp").arg("-a").arg(&tree).arg(&repo));
    let git = |dir: &Path, a: &[&str]| {
        run(Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(["-c", "safe.directory=*", "-c", "init.defaultBranch=main"])
            .args(a))
    };
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    run(Command::new("git")
        .args(["-c", "safe.directory=*", "clone", "-q"])
        .arg(&repo)
        .arg(m.path("clone")));
    let clone = m.path("clone");
    assert_eq!(git(&clone, &["status", "--porcelain"]), "", "a clean clone");
    git(&clone, &["fsck", "--no-progress"]);
    std::fs::write(clone.join("new.txt"), "new\n").expect("write");
    git(&clone, &["add", "new.txt"]);
    git(&clone, &["commit", "-q", "-m", "second"]);
    assert_eq!(git(&clone, &["status", "--porcelain"]), "");
    let log = git(&clone, &["log", "--oneline"]);
    assert_eq!(log.lines().count(), 2, "{log}");
    drop(m);
}

#[test]
fn an_atomic_save_on_one_mount_is_seen_by_another() {
    if !fuse_or_skip() {
        return;
    }
    let d = dirs();
    let srv = ServerProc::start(&d.export, &d.state, &[]);
    let (a, b) = (embedded(d.tmp.path(), "a"), embedded(d.tmp.path(), "b"));
    let ma = MountProc::start(srv.addr, &d.tmp.path().join("a"), &args(&a), None);
    let mb = MountProc::start(srv.addr, &d.tmp.path().join("b"), &args(&b), None);
    std::fs::write(mb.path("doc.txt"), "version 0\n").expect("write");
    for i in 1..=20 {
        // A reads (and caches) the document, B saves a new version the
        // way editors do: a temporary file, fsync, rename over.
        let before = std::fs::read_to_string(ma.path("doc.txt")).expect("read on A");
        assert_eq!(before, format!("version {}\n", i - 1));
        let tmp = mb.path(".doc.txt.swp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).expect("create");
            writeln!(f, "version {i}").expect("write");
            f.sync_all().expect("fsync");
        }
        std::fs::rename(&tmp, mb.path("doc.txt")).expect("rename over");
        let t = Instant::now();
        loop {
            let now = std::fs::read_to_string(ma.path("doc.txt")).expect("read on A");
            if now == format!("version {i}\n") {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(1),
                "A still reads {now:?} 1 s after B's save {i}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    drop((ma, mb));
}

#[test]
fn without_a_cache_daemon_the_mount_says_what_to_do() {
    let d = dirs();
    let srv = ServerProc::start(&d.export, &d.state, &[]);
    let mnt = d.tmp.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let out = Command::new(env!("CARGO_BIN_EXE_ringfs"))
        .arg("mount")
        .arg(srv.addr.to_string())
        .arg(&mnt)
        .arg("--cache-socket")
        .arg(d.tmp.path().join("no-daemon.sock"))
        .output()
        .expect("spawn");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no ringcached answers"), "{err}");
    assert!(err.contains("--cache-device"), "{err}");
    assert!(!common::mount::is_mounted(&mnt), "nothing left mounted");
}

#[test]
fn with_the_server_gone_cached_data_is_served_and_the_rest_fails_clearly() {
    if !fuse_or_skip() {
        return;
    }
    let d = dirs();
    std::fs::write(d.export.join("cached"), vec![5u8; 1 << 20]).expect("write");
    std::fs::write(d.export.join("other"), vec![6u8; 1 << 20]).expect("write");
    let mut srv = ServerProc::start(&d.export, &d.state, &[]);
    let mut a = embedded(d.tmp.path(), "a");
    a.extend(["--timeout-secs".to_string(), "2".to_string()]);
    let m = MountProc::start(srv.addr, &d.tmp.path().join("mnt"), &args(&a), None);
    let direct = |name: &str| common::mount::read_direct(&m.path(name), 0, 1 << 20);
    assert_eq!(direct("cached").expect("read"), vec![5u8; 1 << 20]);
    // Seen, not read: its attributes are known, its data is not cached.
    assert_eq!(
        std::fs::metadata(m.path("other")).expect("stat").len(),
        1 << 20
    );

    srv.kill9();
    // Under the promise: still served, from the cache.
    assert_eq!(
        direct("cached").expect("cached data with the server gone"),
        vec![5u8; 1 << 20]
    );
    // The rest: ENOTCONN after the bounded wait, never ENOENT or zeros.
    let t = Instant::now();
    let e = direct("other").expect_err("uncached data without a server");
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN), "{e}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let e = std::fs::metadata(m.path("never-seen")).expect_err("a lookup without a server");
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN), "{e}");

    // The server back: the mount reconnects by itself.
    srv.restart();
    let t = Instant::now();
    loop {
        match direct("other") {
            Ok(v) => {
                assert_eq!(v, vec![6u8; 1 << 20]);
                break;
            }
            Err(e) => assert!(
                t.elapsed() < Duration::from_secs(15),
                "still failing after the restart: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(m);
}
