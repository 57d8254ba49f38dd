//! `vs-fio`: ringcache's embedded store beside fio, on the same file, in
//! the same run.
//!
//! Workloads: a sequential fill with 1 MiB writes (4 MiB in flight: fio
//! iodepth=4, ringcache four writer threads), and
//! 4 KiB random reads of cached data at queue depth 1 and 32. fio runs with
//! the io_uring engine and O_DIRECT on the raw file; ringcache formats the
//! same file as a cache, fills one object and reads it back through the
//! store (index lookup, crc32c check of every block). The machine is noisy,
//! so fio and ringcache run in alternation, `--reps` times each, and the
//! medians are compared. The last line is `ratio <min over workloads>`.
//!
//! It also reports the index's memory per cached extent (1M extents built
//! in an index, counted by a tracking allocator).
//!
//! Run: `cargo bench --bench vs-fio -- [--dir DIR] [--reps N] [--seconds S]
//! [--target embedded|daemon] [--threads N]`.
//!
//! `--threads N` runs the read workloads with N readers, each with its own
//! queue at the workload's depth: fio with N jobs (`--numjobs`, reported as
//! a group), the store with N threads and a read queue each, the daemon
//! with N connections on N threads. Fill is unchanged.
//!
//! `--mixed` instead runs the embedded store's 4 KiB random reads at queue
//! depth 32 while one writer fills another object with 4 KiB writes,
//! against the same reads alone (`mixed.rs`); its last line is `ratio
//! <reads with the writer / reads alone>`, and it prints the writer's
//! latency percentiles.
//!
//! `--sweep 1,4,16,32,64` instead runs `benches/jobs/randread-sweep.fio`
//! (4 KiB random reads) at each queue depth under fio, `ringcache bench` on the embedded store and
//! `ringcache bench` through `ringcached` (the library behind the
//! command), alternating fio and ringcache, and prints IOPS and p99
//! completion latency of all three with ratios to fio, then plots both
//! against the queue depth (`--plot FILE`, SVG; default
//! `target/vs-fio.svg`). Its last line is `ratio <min over depths of the
//! embedded store's IOPS ratio>`.

mod daemon;
mod embedded;
mod fio;
#[cfg(feature = "foyer")]
#[path = "foyer.rs"]
mod foyer_side;
mod index_memory;
mod measure;
mod mixed;
mod plot;
#[path = "../../tests/common/ringcached_bin.rs"]
mod ringcached_bin;
mod sweep;
mod workloads;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

const FILE_BYTES: u64 = 2 << 30;
const FILL_BYTES: u64 = 1 << 30;
const FILL_BS: usize = 1 << 20;

struct Opts {
    dir: PathBuf,
    reps: usize,
    seconds: u64,
    /// `embedded` (the store in this process) or `daemon` (ringcached
    /// through the client library).
    target: String,
    /// Queue depths of the sweep (`--sweep`): fio, embedded and daemon at
    /// each, from the same job files.
    sweep: Option<Vec<u32>>,
    /// Where the sweep's plot goes.
    plot: PathBuf,
    /// Add foyer as a third column (needs `--features foyer`).
    with_foyer: bool,
    /// Readers in the read workloads (`--threads N`), each with its own
    /// queue: fio jobs, store threads with their own read queues, or
    /// daemon connections on threads of their own.
    threads: usize,
    /// `--mixed`: the embedded store's reads while a writer fills, against
    /// reads alone (no fio).
    mixed: bool,
}

fn parse_args() -> Result<Opts> {
    let mut o = Opts {
        dir: std::env::temp_dir(),
        reps: 3,
        seconds: 5,
        target: "embedded".into(),
        sweep: None,
        plot: PathBuf::from("target/vs-fio.svg"),
        with_foyer: false,
        threads: 1,
        mixed: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => o.dir = PathBuf::from(args.next().context("--dir needs a path")?),
            "--reps" => o.reps = args.next().context("--reps needs N")?.parse()?,
            "--seconds" => o.seconds = args.next().context("--seconds needs S")?.parse()?,
            "--target" => {
                o.target = args.next().context("--target needs embedded or daemon")?;
                if o.target != "embedded" && o.target != "daemon" {
                    bail!("--target is embedded or daemon, not {:?}", o.target);
                }
            }
            "--sweep" => {
                let list = args
                    .next()
                    .context("--sweep needs depths, e.g. 1,4,16,32,64")?;
                let depths = list
                    .split(',')
                    .map(|d| d.trim().parse::<u32>())
                    .collect::<Result<Vec<_>, _>>()
                    .context("--sweep takes queue depths separated by commas")?;
                if depths.is_empty() || depths.contains(&0) {
                    bail!("--sweep depths must be at least 1");
                }
                o.sweep = Some(depths);
            }
            "--threads" => {
                o.threads = args.next().context("--threads needs N")?.parse()?;
                if o.threads == 0 {
                    bail!("--threads must be at least 1");
                }
            }
            "--mixed" => o.mixed = true,
            "--plot" => o.plot = PathBuf::from(args.next().context("--plot needs a path")?),
            "--with-foyer" => {
                if cfg!(not(feature = "foyer")) {
                    bail!(
                        "--with-foyer needs foyer built in: cargo bench --features foyer --bench vs-fio -- --with-foyer"
                    );
                }
                o.with_foyer = true;
            }
            "--bench" => {} // passed by cargo bench
            other => bail!(
                "unknown argument {other:?} (--dir DIR, --reps N, --seconds S, --target T, --threads N, --sweep D,D,.., --mixed, --plot FILE, --with-foyer)"
            ),
        }
    }
    Ok(o)
}

fn main() -> Result<()> {
    let o = parse_args()?;
    let file = o.dir.join("ringcache-vs-fio.img");
    ringcache::util::create_backing_file(&file, FILE_BYTES)?;
    if o.mixed {
        return mixed::mixed(&o, &file);
    }
    // Allocate every block of the file once, so neither side pays for
    // allocating writes or reads holes.
    fio::fio(
        &file,
        &[
            "--rw=write",
            "--bs=1M",
            "--iodepth=8",
            &format!("--size={FILE_BYTES}"),
        ],
    )?;

    if let Some(depths) = o.sweep.clone() {
        let r = sweep::sweep(&o, &file, &depths);
        let _ = std::fs::remove_file(&file);
        return r;
    }
    workloads::compare(&o, &file)
}
