//! `cargo bench -p ringfs --bench serve`: a real `ringfs serve` over
//! loopback TCP beside fio reading the exported file directly, in the
//! same run (both buffered, through the page cache: what the server
//! itself reads through), and break delivery latency with 1, 10 and 100
//! clients holding promises on the changed file.
//!
//! Options: `--dir DIR` (where the test file goes; default the temp
//! directory), `--size-mib N` (256), `--seconds S` per read run (3),
//! `--rounds N` breaks per client count (50), `--no-fio`.
//!
//! The last line is `ratio <the smaller of the two read ratios>`.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringfs::client::{Client, ClientConfig, Event, new_client_id};
use ringfs::wire::FileId;

struct Opts {
    dir: PathBuf,
    size_mib: u64,
    seconds: f64,
    rounds: usize,
    fio: bool,
}

fn opts() -> Opts {
    let mut o = Opts {
        dir: std::env::temp_dir(),
        size_mib: 256,
        seconds: 3.0,
        rounds: 50,
        fio: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--dir" => o.dir = PathBuf::from(val()),
            "--size-mib" => o.size_mib = val().parse().expect("--size-mib N"),
            "--seconds" => o.seconds = val().parse().expect("--seconds S"),
            "--rounds" => o.rounds = val().parse().expect("--rounds N"),
            "--no-fio" => o.fio = false,
            "--bench" => {}
            other => panic!("unknown option {other}"),
        }
    }
    o
}

struct Server(Child, SocketAddr);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(export: &Path, state: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringfs"))
        .arg("serve")
        .arg(export)
        .args(["--listen", "127.0.0.1:0", "--state"])
        .arg(state)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("spawn ringfs serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let addr = line
        .split_whitespace()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .expect("an address");
    Server(child, addr)
}

fn connect(addr: SocketAddr, name: &str, cfg: impl FnOnce(&mut ClientConfig)) -> Client {
    let mut c = ClientConfig::new(name, new_client_id());
    cfg(&mut c);
    Client::connect(addr, c).expect("connect")
}

/// Reads through the server for `secs`; returns bytes per second.
fn ringfs_read(c: &Client, f: FileId, size: u64, bs: u32, random: bool, secs: f64) -> f64 {
    let blocks = size / u64::from(bs);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut moved = 0u64;
    let mut i = 0u64;
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < secs {
        let b = if random {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % blocks
        } else {
            i % blocks
        };
        i += 1;
        let (_, data) = c.read(f, b * u64::from(bs), bs).expect("read");
        moved += data.len() as u64;
    }
    moved as f64 / t.elapsed().as_secs_f64()
}

/// fio on the file itself: bytes per second.
fn fio_read(path: &Path, bs: &str, rw: &str, secs: f64) -> Option<f64> {
    let out = Command::new("fio")
        .args([
            "--name=direct",
            &format!("--filename={}", path.display()),
            &format!("--rw={rw}"),
            &format!("--bs={bs}"),
            "--ioengine=psync",
            "--iodepth=1",
            "--time_based",
            &format!("--runtime={}ms", (secs * 1000.0) as u64),
            "--output-format=json",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("fio failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["jobs"][0]["read"]["bw_bytes"].as_f64()
}

fn main() {
    let o = opts();
    let tmp = tempfile::tempdir_in(&o.dir).expect("tempdir");
    let export = tmp.path().join("export");
    std::fs::create_dir(&export).expect("mkdir");
    let size = o.size_mib << 20;
    let file = export.join("data");
    {
        let mut f = std::fs::File::create(&file).expect("create");
        let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8).collect();
        for _ in 0..o.size_mib {
            f.write_all(&chunk).expect("write");
        }
        f.sync_all().expect("sync");
    }
    let srv = serve(&export, &tmp.path().join("state"));
    let c = connect(srv.1, "bench", |_| {});
    let f = c.lookup(c.root(), b"data").expect("lookup").attr.id;
    // Warm the page cache for both sides.
    ringfs_read(&c, f, size, 1 << 20, false, 0.5);

    println!("# ringfs serve over loopback TCP vs fio on the file (psync, QD1, buffered)");
    let mut ratios = Vec::new();
    for (label, bs, fio_bs, random) in [
        ("1 MiB sequential read", 1u32 << 20, "1m", false),
        ("4 KiB random read", 4096, "4k", true),
    ] {
        let ours = ringfs_read(&c, f, size, bs, random, o.seconds);
        let theirs = if o.fio {
            fio_read(
                &file,
                fio_bs,
                if random { "randread" } else { "read" },
                o.seconds,
            )
        } else {
            None
        };
        let unit = |b: f64| {
            if random {
                format!("{:.0} IOPS", b / f64::from(bs))
            } else {
                format!("{:.0} MiB/s", b / f64::from(1u32 << 20))
            }
        };
        match theirs {
            Some(t) => {
                let r = ours / t;
                ratios.push(r);
                println!(
                    "{label}: fio {}, ringfs {}, ratio {r:.2}",
                    unit(t),
                    unit(ours)
                );
            }
            None => println!("{label}: ringfs {} (no fio)", unit(ours)),
        }
    }

    println!("# break delivery latency: one write, N clients holding promises");
    let writer = connect(srv.1, "writer", |_| {});
    for n in [1usize, 10, 100] {
        let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let holders: Vec<Client> = (0..n)
            .map(|i| {
                let arrivals = arrivals.clone();
                connect(srv.1, &format!("holder{i}"), move |cfg| {
                    cfg.on_event = Some(Arc::new(move |e: &Event| {
                        if matches!(e, Event::Break { .. }) {
                            arrivals.lock().expect("lock").push(Instant::now());
                        }
                    }));
                })
            })
            .collect();
        let mut hist = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
        let mut write_us = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
        for round in 0..o.rounds {
            for h in &holders {
                h.read(f, 0, 16).expect("take a promise");
            }
            arrivals.lock().expect("lock").clear();
            let t = Instant::now();
            writer
                .write(f, 0, &(round as u64).to_le_bytes())
                .expect("write");
            let done = t.elapsed();
            let got = arrivals.lock().expect("lock").clone();
            assert_eq!(
                got.len(),
                n,
                "every holder got its break before the write returned"
            );
            for a in got {
                hist.record(a.duration_since(t).as_micros() as u64)
                    .expect("record");
            }
            write_us.record(done.as_micros() as u64).expect("record");
        }
        println!(
            "{n} holders: break p50 {} us, p99 {} us; the write returned after p50 {} us, p99 {} us",
            hist.value_at_quantile(0.5),
            hist.value_at_quantile(0.99),
            write_us.value_at_quantile(0.5),
            write_us.value_at_quantile(0.99)
        );
        drop(holders);
    }
    let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    if min.is_finite() {
        println!("ratio {min:.2}");
    }
    std::thread::sleep(Duration::from_millis(10));
}
