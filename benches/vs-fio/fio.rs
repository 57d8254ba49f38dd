//! The fio side: fio run on the raw file with the io_uring engine and
//! O_DIRECT, its JSON output read back (fio may print notes before it).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::FILL_BYTES;

/// Run fio on `file` with `args` and parse its JSON output.
pub(crate) fn fio_json(file: &Path, args: &[&std::ffi::OsStr]) -> Result<serde_json::Value> {
    let out = Command::new("fio")
        .arg(format!("--filename={}", file.display()))
        .arg("--output-format=json")
        .args(args)
        .output()
        .context("running fio (is it installed?)")?;
    if !out.status.success() {
        bail!("fio failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // fio may print notes before the JSON.
    let start = text.find('{').context("no JSON from fio")?;
    Ok(serde_json::from_str(&text[start..])?)
}

/// fio with `args` on `file`, as the job `vsfio` with io_uring and O_DIRECT.
pub(crate) fn fio(file: &Path, args: &[&str]) -> Result<serde_json::Value> {
    let mut all: Vec<&std::ffi::OsStr> = ["--name=vsfio", "--ioengine=io_uring", "--direct=1"]
        .iter()
        .map(std::ffi::OsStr::new)
        .collect();
    all.extend(args.iter().map(std::ffi::OsStr::new));
    fio_json(file, &all)
}

/// IOPS of 4 KiB random reads at queue depth `qd` for `seconds`, by
/// `jobs` jobs (each at that depth; their total).
pub(crate) fn fio_read_iops(file: &Path, qd: u32, seconds: u64, jobs: usize) -> Result<f64> {
    let v = fio(
        file,
        &[
            "--rw=randread",
            "--bs=4k",
            &format!("--iodepth={qd}"),
            &format!("--size={FILL_BYTES}"),
            &format!("--runtime={seconds}"),
            "--time_based",
            &format!("--numjobs={jobs}"),
            "--group_reporting",
        ],
    )?;
    v["jobs"][0]["read"]["iops"]
        .as_f64()
        .context("fio read iops")
}

/// MiB/s of a sequential fill with 1 MiB writes, 4 in flight (and its
/// writes' completion latency percentiles, printed on stderr beside the
/// store's).
pub(crate) fn fio_fill_mibps(file: &Path) -> Result<f64> {
    let v = fio(
        file,
        &[
            "--rw=write",
            "--bs=1M",
            "--iodepth=4",
            &format!("--size={FILL_BYTES}"),
            "--end_fsync=1",
        ],
    )?;
    let write = &v["jobs"][0]["write"];
    let bw = write["bw_bytes"].as_f64().context("fio write bw")?;
    let clat = &write["clat_ns"];
    let us = |q: &str| clat["percentile"][q].as_f64().unwrap_or(f64::NAN) / 1000.0;
    eprintln!(
        "fio fill: writes of 1 MiB, 4 in flight: p50 {:.0} us, p99 {:.0} us, p99.9 {:.0} us, max {:.0} us",
        us("50.000000"),
        us("99.000000"),
        us("99.900000"),
        clat["max"].as_f64().unwrap_or(f64::NAN) / 1000.0
    );
    Ok(bw / (1 << 20) as f64)
}

/// (IOPS, p99 µs) of a fio run of `job` on `file`.
pub(crate) fn fio_job(file: &Path, job: &Path) -> Result<(f64, f64)> {
    let v = fio_json(file, &[job.as_os_str()])?;
    let read = &v["jobs"][0]["read"];
    let iops = read["iops"].as_f64().context("fio read iops")?;
    let p99 = read["clat_ns"]["percentile"]["99.000000"]
        .as_f64()
        .context("fio read p99")?;
    Ok((iops, p99 / 1000.0))
}
