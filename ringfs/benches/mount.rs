//! `cargo bench -p ringfs --bench mount`: fio on a real `ringfs mount`
//! (FUSE, embedded cache) beside fio on the cache's own device file, in
//! the same run. Needs root, /dev/fuse and fio.
//!
//! Workloads: 4 KiB random reads at iodepth 1 and 32 and 1 MiB sequential
//! reads, with direct I/O (past the kernel's page cache) and buffered
//! (page cache dropped before each run). Columns:
//! - `raw`: fio on a file as large, fully written, next to the cache file
//!   (the device ringcache stores on; the cache file itself is sparse
//!   where nothing was stored, and holes read faster than data),
//! - `cold`: the mount with `--no-cache` (every read from the server),
//! - `warm`: the mount with the file cached by ringcache (read once
//!   before), so reads are served by the store,
//! - `null`: a FUSE file system of one file that answers every read from
//!   memory, mounted by this process through `fuser` with the mount's
//!   settings (threads, asynchronous direct I/O, background requests):
//!   the most any `fuser`-based client gets from this kernel and machine.
//!
//! Options: `--dir DIR` (where the files go; default the temp directory),
//! `--size-mib N` (the file, 512), `--seconds S` per run (4), `--reps N`
//! (1; repetitions alternate raw, cold and warm), `--threads N` (the
//! mount's FUSE threads; the mount's default), `--only TEXT` (only the
//! workloads whose name contains it, e.g. `qd32 direct`). The last line is
//! `ratio <warm / raw for 4 KiB random reads at iodepth 32, direct>`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

struct Opts {
    dir: PathBuf,
    size_mib: u64,
    seconds: u64,
    reps: usize,
    threads: Option<String>,
    /// Only the workloads whose name contains this.
    only: Option<String>,
}

fn opts() -> Opts {
    let mut o = Opts {
        dir: std::env::temp_dir(),
        size_mib: 512,
        seconds: 4,
        reps: 1,
        threads: None,
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--dir" => o.dir = PathBuf::from(val()),
            "--size-mib" => o.size_mib = val().parse().expect("--size-mib N"),
            "--seconds" => o.seconds = val().parse().expect("--seconds S"),
            "--reps" => o.reps = val().parse().expect("--reps N"),
            "--threads" => o.threads = Some(val()),
            "--only" => o.only = Some(val()),
            "--bench" => {}
            other => panic!("unknown option {other}"),
        }
    }
    o
}

/// A child killed when dropped (after SIGTERM, for a mount to unmount).
struct Proc(Child, Option<PathBuf>);

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..500 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        if let Some(m) = &self.1 {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

fn first_line(c: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(c.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("a line");
    line
}

fn serve(export: &Path, state: &Path) -> (Proc, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ringfs"))
        .arg("serve")
        .arg(export)
        .args(["--listen", "127.0.0.1:0", "--state"])
        .arg(state)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("spawn ringfs serve");
    let line = first_line(&mut c);
    let addr = line
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("server said {line:?}"))
        .to_string();
    (Proc(c, None), addr)
}

fn mount(addr: &str, dir: &Path, args: &[&str]) -> Proc {
    std::fs::create_dir_all(dir).expect("mkdir");
    let mut c = Command::new(env!("CARGO_BIN_EXE_ringfs"))
        .arg("mount")
        .arg(addr)
        .arg(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("spawn ringfs mount");
    let line = first_line(&mut c);
    assert!(line.starts_with("mounted"), "mount said {line:?}");
    Proc(c, Some(dir.to_path_buf()))
}

/// The `null` column: one regular file, `data`, whose every read is
/// answered from a buffer in memory, with the FUSE settings of `ringfs
/// mount` (its `init` and thread count).
struct NullFs {
    size: u64,
    pattern: Vec<u8>,
}

impl NullFs {
    fn attr(&self, ino: u64) -> fuser::FileAttr {
        let dir = ino == 1;
        fuser::FileAttr {
            ino: fuser::INodeNo(ino),
            size: if dir { 0 } else { self.size },
            blocks: self.size / 512,
            atime: SystemTime::UNIX_EPOCH,
            mtime: SystemTime::UNIX_EPOCH,
            ctime: SystemTime::UNIX_EPOCH,
            crtime: SystemTime::UNIX_EPOCH,
            kind: if dir {
                fuser::FileType::Directory
            } else {
                fuser::FileType::RegularFile
            },
            perm: if dir { 0o755 } else { 0o644 },
            nlink: if dir { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
}

const TTL: Duration = Duration::from_secs(1);

impl fuser::Filesystem for NullFs {
    fn init(
        &mut self,
        _req: &fuser::Request,
        config: &mut fuser::KernelConfig,
    ) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_ASYNC_DIO);
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        Ok(())
    }

    fn lookup(
        &self,
        _req: &fuser::Request,
        parent: fuser::INodeNo,
        name: &std::ffi::OsStr,
        reply: fuser::ReplyEntry,
    ) {
        if parent.0 == 1 && name == "data" {
            reply.entry(&TTL, &self.attr(2), fuser::Generation(0));
        } else {
            reply.error(fuser::Errno::ENOENT);
        }
    }

    fn getattr(
        &self,
        _req: &fuser::Request,
        ino: fuser::INodeNo,
        _fh: Option<fuser::FileHandle>,
        reply: fuser::ReplyAttr,
    ) {
        match ino.0 {
            1 | 2 => reply.attr(&TTL, &self.attr(ino.0)),
            _ => reply.error(fuser::Errno::ENOENT),
        }
    }

    fn open(
        &self,
        _req: &fuser::Request,
        _ino: fuser::INodeNo,
        _flags: fuser::OpenFlags,
        reply: fuser::ReplyOpen,
    ) {
        reply.opened(fuser::FileHandle(0), fuser::FopenFlags::empty());
    }

    fn read(
        &self,
        _req: &fuser::Request,
        _ino: fuser::INodeNo,
        _fh: fuser::FileHandle,
        offset: u64,
        size: u32,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: fuser::ReplyData,
    ) {
        let n = (size as u64).min(self.size.saturating_sub(offset));
        let n = (n as usize).min(self.pattern.len());
        reply.data(&self.pattern[..n]);
    }
}

/// Mounts [`NullFs`] on `dir` in a thread of this process; unmounted
/// when the returned guard drops.
fn mount_null(dir: &Path, size: u64, threads: usize) -> NullMount {
    std::fs::create_dir_all(dir).expect("mkdir");
    let mut pattern = vec![0u8; 1 << 20];
    for (i, b) in pattern.iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    let mut fc = fuser::Config::default();
    fc.mount_options = vec![
        fuser::MountOption::FSName("nullfs".into()),
        fuser::MountOption::DefaultPermissions,
    ];
    fc.n_threads = Some(threads);
    let mut session = fuser::Session::new(NullFs { size, pattern }, dir, &fc).expect("mount null");
    let unmounter = session.unmount_callable();
    let thread = std::thread::spawn(move || {
        let _ = session.run();
    });
    NullMount(Some(unmounter), Some(thread), dir.to_path_buf())
}

struct NullMount(
    Option<fuser::SessionUnmounter>,
    Option<std::thread::JoinHandle<()>>,
    PathBuf,
);

impl Drop for NullMount {
    fn drop(&mut self) {
        if let Some(mut u) = self.0.take() {
            let _ = u.unmount();
        }
        if let Some(t) = self.1.take() {
            let _ = t.join();
        }
        let _ = Command::new("umount").arg("-l").arg(&self.2).status();
    }
}

fn drop_caches() {
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

#[derive(Clone, Copy)]
struct Job {
    name: &'static str,
    rw: &'static str,
    bs: &'static str,
    depth: u32,
    direct: bool,
}

const JOBS: [Job; 6] = [
    Job {
        name: "4k randread qd1 direct",
        rw: "randread",
        bs: "4k",
        depth: 1,
        direct: true,
    },
    Job {
        name: "4k randread qd32 direct",
        rw: "randread",
        bs: "4k",
        depth: 32,
        direct: true,
    },
    Job {
        name: "1m read qd4 direct",
        rw: "read",
        bs: "1m",
        depth: 4,
        direct: true,
    },
    Job {
        name: "4k randread qd1 buffered",
        rw: "randread",
        bs: "4k",
        depth: 1,
        direct: false,
    },
    Job {
        name: "4k randread qd32 buffered",
        rw: "randread",
        bs: "4k",
        depth: 32,
        direct: false,
    },
    Job {
        name: "1m read buffered",
        rw: "read",
        bs: "1m",
        depth: 1,
        direct: false,
    },
];

/// fio's (IOPS, MiB/s) for `job` on `file` of `size` bytes.
fn fio(job: &Job, file: &Path, size: u64, seconds: u64) -> (f64, f64) {
    if !job.direct {
        drop_caches();
    }
    let out = Command::new("fio")
        .arg(format!("--name={}", job.rw))
        .arg(format!("--filename={}", file.display()))
        .arg(format!("--rw={}", job.rw))
        .arg(format!("--bs={}", job.bs))
        .arg(format!("--iodepth={}", job.depth))
        .arg("--ioengine=libaio")
        .arg(format!("--direct={}", u8::from(job.direct)))
        .arg(format!("--size={size}"))
        .arg(format!("--runtime={seconds}"))
        .arg("--time_based=1")
        .arg("--norandommap=1")
        .arg("--randrepeat=0")
        .arg("--output-format=json")
        .output()
        .expect("run fio");
    assert!(
        out.status.success(),
        "fio failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("fio's JSON");
    let read = &v["jobs"][0]["read"];
    let iops = read["iops"].as_f64().unwrap_or(0.0);
    let bw = read["bw_bytes"].as_f64().unwrap_or(0.0) / f64::from(1u32 << 20);
    (iops, bw)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let o = opts();
    if Command::new("fio").arg("--version").output().is_err() {
        eprintln!("skipped: no fio");
        return;
    }
    let tmp = tempfile::tempdir_in(&o.dir).expect("tempdir");
    let export = tmp.path().join("export");
    std::fs::create_dir(&export).expect("mkdir");
    let size = o.size_mib << 20;
    // The file served, and the raw baseline beside the cache file: both
    // random-ish bytes, written once.
    let raw_file = tmp.path().join("raw.dat");
    for path in [export.join("data"), raw_file.clone()] {
        use std::io::Write;
        let mut f = std::fs::File::create(&path).expect("create");
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..o.size_mib {
            for c in buf.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
            }
            f.write_all(&buf).expect("write");
        }
        f.sync_all().expect("sync");
    }
    let (_srv, addr) = serve(&export, &tmp.path().join("state"));
    let img = tmp.path().join("cache.img");
    let img_arg = img.display().to_string();
    let cache_size = format!("{}M", (o.size_mib * 3).max(1024));
    let warm_dir = tmp.path().join("warm");
    let cold_dir = tmp.path().join("cold");
    let mut warm_args = vec!["--cache-device", &img_arg, "--cache-size", &cache_size];
    let mut cold_args = vec!["--no-cache"];
    if let Some(t) = &o.threads {
        warm_args.extend(["--threads", t.as_str()]);
        cold_args.extend(["--threads", t.as_str()]);
    }
    let warm = mount(&addr, &warm_dir, &warm_args);
    let cold = mount(&addr, &cold_dir, &cold_args);
    let null_dir = tmp.path().join("null");
    let null_threads = o
        .threads
        .as_deref()
        .map_or(16, |t| t.parse().expect("--threads N"));
    let null = mount_null(&null_dir, size, null_threads);
    // Warm the cache: one sequential pass through the cached mount.
    {
        let t = std::time::Instant::now();
        let n = std::fs::read(warm_dir.join("data"))
            .expect("first read")
            .len();
        assert_eq!(n as u64, size);
        println!(
            "first read through the empty cache: {:.0} MiB/s",
            o.size_mib as f64 / t.elapsed().as_secs_f64()
        );
    }
    println!(
        "file {} MiB, {} s per run, {} rep(s); raw = fio on {} (beside the cache file)",
        o.size_mib,
        o.seconds,
        o.reps,
        raw_file.display()
    );
    println!(
        "{:<26} {:>12} {:>12} {:>12} {:>12} {:>10} {:>10} {:>10}",
        "workload", "raw", "cold", "warm", "null", "warm/raw", "warm/cold", "warm/null"
    );
    let mut headline = 0.0;
    for job in JOBS {
        if o.only
            .as_ref()
            .is_some_and(|w| !job.name.contains(w.as_str()))
        {
            continue;
        }
        let (mut raw, mut c, mut w, mut nl) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..o.reps {
            raw.push(fio(&job, &raw_file, size, o.seconds));
            c.push(fio(&job, &cold_dir.join("data"), size, o.seconds));
            w.push(fio(&job, &warm_dir.join("data"), size, o.seconds));
            nl.push(fio(&job, &null_dir.join("data"), size, o.seconds));
        }
        let pick = |v: &[(f64, f64)]| {
            let mut x: Vec<f64> = v
                .iter()
                .map(|&(iops, bw)| if job.bs == "4k" { iops } else { bw })
                .collect();
            median(&mut x)
        };
        let (r, cl, wm, n) = (pick(&raw), pick(&c), pick(&w), pick(&nl));
        let unit = if job.bs == "4k" { "IOPS" } else { "MiB/s" };
        println!(
            "{:<26} {:>7.0} {unit:<5}{:>7.0} {unit:<5}{:>7.0} {unit:<5}{:>7.0} {unit:<5}{:>9.2} {:>10.2} {:>10.2}",
            job.name,
            r,
            cl,
            wm,
            n,
            wm / r,
            wm / cl,
            wm / n
        );
        if job.name == "4k randread qd32 direct" {
            headline = wm / r;
        }
    }
    drop(warm);
    drop(cold);
    drop(null);
    println!("ratio {headline:.2}");
}
