//! `--sweep`: the same job file (`benches/jobs/randread-sweep.fio`) at each
//! queue depth under fio, `ringcache bench` on the embedded store and
//! `ringcache bench` through the daemon, alternating fio and ringcache;
//! IOPS and p99 with ratios to fio, then the plot.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::Opts;
use crate::daemon::DaemonRun;
use crate::fio::fio_job;
use crate::measure::median;
use crate::plot::plot;

/// The sweep's job file at queue depth `qd`: `benches/jobs/randread-sweep.fio`
/// with its `iodepth=` and `runtime=` lines set.
fn sweep_job(qd: u32, seconds: u64) -> String {
    include_str!("../jobs/randread-sweep.fio")
        .lines()
        .map(|l| {
            if l.starts_with("iodepth=") {
                format!("iodepth={qd}")
            } else if l.starts_with("runtime=") {
                format!("runtime={seconds}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// (IOPS, p99 µs) of `ringcache bench` running `job`.
fn rc_job(job: &str, file: &Path, socket: Option<&Path>) -> Result<(f64, f64)> {
    use ringcache_tools::bench::{JobFile, RunOptions, Target, run};
    let f = JobFile::parse(job)?;
    let opts = RunOptions {
        filename: Some(file.to_path_buf()),
        target: Some(if socket.is_some() {
            Target::Daemon
        } else {
            Target::Embedded
        }),
        socket: socket.map(Path::to_path_buf),
        ..Default::default()
    };
    let report = run(&f, &opts)?;
    let j = report.jobs.first().context("no job in the report")?;
    if j.misses > 0 {
        bail!("{} reads of cached data missed", j.misses);
    }
    let secs = j.read.runtime.as_secs_f64().max(1e-9);
    let p99 = j
        .read
        .lat
        .percentiles
        .iter()
        .find(|(p, _)| (*p - 99.0).abs() < 1e-9)
        .map(|&(_, ns)| ns as f64 / 1000.0)
        .context("no p99 in the report")?;
    Ok((j.read.ios as f64 / secs, p99))
}

/// Per depth and side, the runs' (IOPS, p99 µs).
type Runs = Vec<Vec<(f64, f64)>>;

fn medians(runs: &Runs) -> Vec<(f64, f64)> {
    runs.iter()
        .map(|r| {
            let mut iops: Vec<f64> = r.iter().map(|x| x.0).collect();
            let mut p99: Vec<f64> = r.iter().map(|x| x.1).collect();
            (median(&mut iops), median(&mut p99))
        })
        .collect()
}

/// fio, the embedded store and the daemon at each queue depth of `depths`.
pub(crate) fn sweep(o: &Opts, file: &Path, depths: &[u32]) -> Result<()> {
    let jobs: Vec<(String, PathBuf)> = depths
        .iter()
        .map(|&qd| {
            let text = sweep_job(qd, o.seconds);
            let path = o.dir.join(format!("ringcache-vs-fio-qd{qd}.fio"));
            std::fs::write(&path, &text).map(|()| (text, path))
        })
        .collect::<std::io::Result<_>>()?;
    let n = depths.len();
    let (mut fio_e, mut emb, mut fio_d, mut dae): (Runs, Runs, Runs, Runs) = (
        vec![Vec::new(); n],
        vec![Vec::new(); n],
        vec![Vec::new(); n],
        vec![Vec::new(); n],
    );
    for rep in 0..o.reps {
        for (i, (text, path)) in jobs.iter().enumerate() {
            fio_e[i].push(fio_job(file, path)?);
            emb[i].push(rc_job(text, file, None)?);
            eprintln!(
                "rep {rep} qd {}: fio {:.0} IOPS, embedded {:.0} IOPS",
                depths[i], fio_e[i][rep].0, emb[i][rep].0
            );
        }
    }
    // The daemon formats the file as its own cache, so it comes second.
    let d = DaemonRun::start(file, &o.dir)?;
    for rep in 0..o.reps {
        for (i, (text, path)) in jobs.iter().enumerate() {
            fio_d[i].push(fio_job(file, path)?);
            dae[i].push(rc_job(text, file, Some(&d.socket))?);
            eprintln!(
                "rep {rep} qd {}: fio {:.0} IOPS, daemon {:.0} IOPS",
                depths[i], fio_d[i][rep].0, dae[i][rep].0
            );
        }
    }
    d.stop()?;
    for (_, path) in &jobs {
        let _ = std::fs::remove_file(path);
    }
    // fio's figure per depth: the median over both phases.
    let fio: Runs = fio_e
        .into_iter()
        .zip(fio_d)
        .map(|(mut a, b)| {
            a.extend(b);
            a
        })
        .collect();
    let (fio, emb, dae) = (medians(&fio), medians(&emb), medians(&dae));
    println!(
        "{:>7} {:>11} {:>11} {:>6} {:>11} {:>6}   {:>9} {:>9} {:>9}",
        "iodepth",
        "fio IOPS",
        "embedded",
        "ratio",
        "daemon",
        "ratio",
        "fio p99",
        "emb p99",
        "dmn p99"
    );
    let mut min_ratio = f64::INFINITY;
    for (i, qd) in depths.iter().enumerate() {
        let (f, e, d) = (fio[i], emb[i], dae[i]);
        min_ratio = min_ratio.min(e.0 / f.0);
        println!(
            "{qd:>7} {:>11.0} {:>11.0} {:>6.2} {:>11.0} {:>6.2}   {:>7.0}us {:>7.0}us {:>7.0}us",
            f.0,
            e.0,
            e.0 / f.0,
            d.0,
            d.0 / f.0,
            f.1,
            e.1,
            d.1
        );
    }
    plot(&o.plot, depths, &fio, &emb, &dae)?;
    println!("plot: {}", o.plot.display());
    println!("ratio {min_ratio:.2}");
    Ok(())
}
