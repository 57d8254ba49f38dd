//! fio's text output (`--output-format=normal`): the job headers, per
//! entry its IOPS, bandwidth, clat line and percentile table in fio's
//! units, the store's counters, then each group's run status.

use std::fmt::Write as _;

use super::{DirReport, JobReport, LatStats, Report};
use crate::bench::units::{fmt_bytes_bin, fmt_bytes_dec, fmt_count};

impl Report {
    /// fio's text output.
    pub fn to_normal(&self) -> String {
        let mut o = String::new();
        let mut headed = Vec::new();
        for j in &self.jobs {
            if headed.contains(&(&j.name, j.groupid)) {
                continue;
            }
            headed.push((&j.name, j.groupid));
            let _ = writeln!(
                o,
                "{}: (g={}): rw={}, bs={}B, size={}, iodepth={}, engine={}, target={}",
                j.name,
                j.groupid,
                j.rw.fio_name(),
                j.bs,
                fmt_bytes_bin(j.size as f64),
                j.iodepth,
                j.engine,
                self.target
            );
        }
        let _ = writeln!(o, "ringcache-bench-{}", env!("CARGO_PKG_VERSION"));
        for j in &self.jobs {
            let _ = writeln!(
                o,
                "{}: (groupid={}, jobs={}): err= 0: elapsed={}msec",
                j.name,
                j.groupid,
                j.clones,
                j.elapsed.as_millis()
            );
            for (dir, d) in [("read", &j.read), ("write", &j.write)] {
                if d.ios == 0 {
                    continue;
                }
                write_dir(&mut o, dir, d);
            }
            if j.misses > 0 {
                let _ = writeln!(
                    o,
                    "  misses: {} reads found no cached data (left out of the figures above)",
                    j.misses
                );
            }
            if let Some(p) = j.prefill {
                let _ = writeln!(o, "  prefill (untimed): {}msec", p.as_millis());
            }
            let st = &j.store;
            let _ = writeln!(
                o,
                "  store: checkpoints={}, flushes={}, log_blocks={}, regions_evicted={} ({}), checksum_errors={}, io_errors={}",
                st.checkpoints,
                st.flushes,
                st.log_blocks_written,
                st.regions_evicted,
                fmt_bytes_bin(st.bytes_evicted as f64),
                st.checksum_errors,
                st.io_errors
            );
        }
        let groups = self.jobs.iter().map(|j| j.groupid).max().unwrap_or(0);
        for g in 0..=groups {
            let members: Vec<&JobReport> = self.jobs.iter().filter(|j| j.groupid == g).collect();
            if members.is_empty() {
                continue;
            }
            let _ = writeln!(o, "\nRun status group {g} (all jobs):");
            for (label, pick) in [
                (
                    "READ",
                    (|j: &JobReport| &j.read) as fn(&JobReport) -> &DirReport,
                ),
                ("WRITE", |j: &JobReport| &j.write),
            ] {
                let dirs: Vec<&DirReport> = members
                    .iter()
                    .map(|j| pick(j))
                    .filter(|d| d.ios > 0)
                    .collect();
                if dirs.is_empty() {
                    continue;
                }
                let bytes: u64 = dirs.iter().map(|d| d.bytes).sum();
                let run_max = dirs.iter().map(|d| d.runtime).max().unwrap_or_default();
                let run_min = dirs.iter().map(|d| d.runtime).min().unwrap_or_default();
                let agg = if run_max.is_zero() {
                    0.0
                } else {
                    bytes as f64 / run_max.as_secs_f64()
                };
                let bw_min = dirs.iter().map(|d| d.bw_bytes()).fold(f64::MAX, f64::min);
                let bw_max = dirs.iter().map(|d| d.bw_bytes()).fold(0.0, f64::max);
                let _ = writeln!(
                    o,
                    "{label:>7}: bw={}/s ({}/s), {}/s-{}/s ({}/s-{}/s), io={} ({}), run={}-{}msec",
                    fmt_bytes_bin(agg),
                    fmt_bytes_dec(agg),
                    fmt_bytes_bin(bw_min),
                    fmt_bytes_bin(bw_max),
                    fmt_bytes_dec(bw_min),
                    fmt_bytes_dec(bw_max),
                    fmt_bytes_bin(bytes as f64),
                    fmt_bytes_dec(bytes as f64),
                    run_min.as_millis(),
                    run_max.as_millis()
                );
            }
        }
        for n in &self.notes {
            let _ = writeln!(o, "note: {n}");
        }
        o
    }
}

fn write_dir(o: &mut String, dir: &str, d: &DirReport) {
    let _ = writeln!(
        o,
        "  {dir}: IOPS={}, BW={}/s ({}/s)({}/{}msec)",
        fmt_count(d.iops()),
        fmt_bytes_bin(d.bw_bytes()),
        fmt_bytes_dec(d.bw_bytes()),
        fmt_bytes_bin(d.bytes as f64),
        d.runtime.as_millis()
    );
    let l = &d.lat;
    let (unit, div) = lat_unit(l);
    let _ = writeln!(
        o,
        "    clat ({unit}): min={:.0}, max={:.0}, avg={:.2}, stdev={:.2}",
        l.min_ns as f64 / div,
        l.max_ns as f64 / div,
        l.mean_ns / div,
        l.stddev_ns / div
    );
    let (unit, div) = percentile_unit(l);
    let _ = writeln!(o, "    clat percentiles ({unit}):");
    let vals: Vec<String> = l
        .percentiles
        .iter()
        .map(|&(_, v)| format!("{:.0}", v as f64 / div))
        .collect();
    let width = vals.iter().map(String::len).max().unwrap_or(1).max(5);
    let cells: Vec<String> = l
        .percentiles
        .iter()
        .zip(&vals)
        .map(|(&(p, _), v)| format!("{p:>5.2}th=[{v:>width$}]"))
        .collect();
    for (i, row) in cells.chunks(4).enumerate() {
        let last = (i + 1) * 4 >= cells.len();
        let _ = writeln!(
            o,
            "     | {}{}",
            row.join(", "),
            if last { "" } else { "," }
        );
    }
}

/// fio's unit for the clat line: step from ns to us, and from us to ms,
/// only while min > 2000, max > 99999 and stdev > 1000 in the current unit.
fn lat_unit(l: &LatStats) -> (&'static str, f64) {
    let mut units = [("nsec", 1.0), ("usec", 1e3), ("msec", 1e6)].into_iter();
    let mut pick = ("nsec", 1.0);
    for (name, div) in units.by_ref() {
        pick = (name, div);
        let (min, max, dev) = (
            l.min_ns as f64 / div,
            l.max_ns as f64 / div,
            l.stddev_ns / div,
        );
        if !(min > 2000.0 && max > 99_999.0 && dev > 1000.0) {
            break;
        }
    }
    pick
}

/// fio's unit for the percentile table: usec when the smallest percentile
/// is over 2 us and the largest over 99999 ns, msec when they are over
/// 2 ms and 99999999 ns.
fn percentile_unit(l: &LatStats) -> (&'static str, f64) {
    let minv = l.percentiles.first().map_or(0, |p| p.1);
    let maxv = l.percentiles.last().map_or(0, |p| p.1);
    if minv > 2_000_000 && maxv > 99_999_999 {
        ("msec", 1e6)
    } else if minv > 2_000 && maxv > 99_999 {
        ("usec", 1e3)
    } else {
        ("nsec", 1.0)
    }
}
