//! Helpers of the mount tests: a real `ringfs mount` process (in a network
//! namespace through `nsenter --net`, so the mount itself is in the test's
//! mount namespace and visible to it), a real `ringcached`, the C test
//! programs, and clean-up that unmounts even when a test fails.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[path = "../../../tests/common/ringcached_bin.rs"]
pub mod ringcached_bin;

/// Whether /dev/fuse can be used; prints why not (a failure under CI).
pub fn fuse_or_skip() -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) => true,
        Err(e) => {
            if super::in_ci() {
                panic!("CI=true: /dev/fuse cannot be opened: {e}");
            }
            eprintln!("skipped: /dev/fuse cannot be opened: {e}");
            false
        }
    }
}

/// Whether `path` is a mount point now.
pub fn is_mounted(path: &Path) -> bool {
    let Ok(canon) = path.canonicalize() else {
        // A dead FUSE mount cannot be resolved (ENOTCONN): look by name.
        return mountinfo_has(path);
    };
    mountinfo_has(&canon)
}

fn mountinfo_has(path: &Path) -> bool {
    let want = path.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|s| {
            s.lines()
                .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
        })
        .unwrap_or(false)
}

/// A running `ringfs mount`, unmounted (and killed if need be) on drop.
pub struct MountProc {
    pub child: Option<Child>,
    pub dir: PathBuf,
    /// Its stderr, for failure messages.
    pub log: PathBuf,
}

impl MountProc {
    /// Mounts `addr` on `dir` with `args` (cache options), in network
    /// namespace `netns` if given; returns once it is mounted.
    pub fn start(addr: SocketAddr, dir: &Path, args: &[&str], netns: Option<&str>) -> MountProc {
        std::fs::create_dir_all(dir).expect("mkdir the mount point");
        let dir = dir.canonicalize().expect("mount point path");
        let bin = env!("CARGO_BIN_EXE_ringfs");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg("--").arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let log = dir.with_extension("log");
        let err = std::fs::File::create(&log).expect("log file");
        cmd.arg("mount")
            .arg(addr.to_string())
            .arg(&dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            );
        let mut child = cmd.spawn().expect("spawn ringfs mount");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut m = MountProc {
            child: Some(child),
            dir,
            log,
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.starts_with("mounted ") => m,
            other => {
                let why = std::fs::read_to_string(&m.log).unwrap_or_default();
                m.stop();
                panic!("ringfs mount did not mount ({other:?}): {why}");
            }
        }
    }

    /// SIGTERM, and waits for the process to unmount and exit; returns its
    /// exit status's success.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        let ok = loop {
            match child.try_wait() {
                Ok(Some(st)) => break st.success(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break false;
                }
            }
        };
        // Reported before the clean-up below hides it.
        let unmounted = !is_mounted(&self.dir);
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        ok && unmounted
    }

    /// kill -9 (the mount is left dead: ENOTCONN until unmounted).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for MountProc {
    fn drop(&mut self) {
        self.stop();
        if is_mounted(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// A real `ringcached` on its embedded default in `dir`, killed on drop.
pub struct CacheProc {
    pub child: Option<Child>,
    pub dir: PathBuf,
}

impl CacheProc {
    pub fn start(dir: &Path) -> CacheProc {
        std::fs::create_dir_all(dir).expect("mkdir");
        let mut child = Command::new(ringcached_bin::path())
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .spawn()
            .expect("spawn ringcached");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("ringcached's ready line");
        assert!(line.starts_with("ringcached: serving"), "{line:?}");
        CacheProc {
            child: Some(child),
            dir: dir.to_path_buf(),
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("ringcache-data/ringcached.sock")
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for CacheProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Compiles one of `tests/progs/*.c` into `out_dir`; returns the binary.
pub fn c_prog(name: &str, out_dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/progs")
        .join(format!("{name}.c"));
    let bin = out_dir.join(name);
    let st = Command::new("cc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("running cc (a C compiler is needed by the mount tests)");
    assert!(st.success(), "cc {} failed", src.display());
    bin
}

/// The server's counter `name` (Stats op).
pub fn server_stat(c: &ringfs::client::Client, name: &str) -> u64 {
    c.stats()
        .expect("stats")
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no counter {name}"))
}

/// Reads `len` bytes at `off` with O_DIRECT (past the kernel's page
/// cache, so the read reaches the mount).
pub fn read_direct(path: &Path, off: u64, len: usize) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    // An aligned buffer without unsafe: over-allocate, use an aligned
    // window.
    let mut buf = vec![0u8; len + 4096];
    let skew = buf.as_ptr().align_offset(4096);
    let win = buf.get_mut(skew..skew + len).expect("window");
    let mut got = 0;
    while got < len {
        let n = f.read_at(&mut win[got..], off + got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(win[..got].to_vec())
}
