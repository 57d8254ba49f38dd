//! What a run measured, printed as fio prints it: text, or JSON with fio's
//! field names (`docs/BENCH.md` lists them).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use ringcache::store::StoreStats;

use super::jobfile::{RwMode, Target};
use super::units::{fmt_bytes_bin, fmt_bytes_dec, fmt_count};
use crate::text::civil_date;

/// The percentiles fio reports by default (its `percentile_list`).
pub const FIO_PERCENTILES: [f64; 17] = [
    1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95,
    99.99,
];

/// `--output-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// fio's human-readable text.
    #[default]
    Normal,
    /// fio's JSON.
    Json,
}

impl std::str::FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<OutputFormat, String> {
        match s {
            "normal" => Ok(OutputFormat::Normal),
            "json" => Ok(OutputFormat::Json),
            other => Err(format!("unknown output format {other:?} (normal, json)")),
        }
    }
}

/// Completion latency of one direction, in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatStats {
    /// Samples (fio's `N`).
    pub n: u64,
    pub min_ns: u64,
    pub max_ns: u64,
    pub mean_ns: f64,
    /// Sample standard deviation.
    pub stddev_ns: f64,
    /// (percent, ns) for each of [`FIO_PERCENTILES`]; empty without samples.
    pub percentiles: Vec<(f64, u64)>,
}

/// One direction (read or write) of one job entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DirReport {
    /// I/Os counted (after ramp_time; misses excluded).
    pub ios: u64,
    pub bytes: u64,
    /// From the end of ramp_time to the last counted completion.
    pub runtime: Duration,
    pub lat: LatStats,
}

impl DirReport {
    /// Bytes per second over the runtime.
    pub fn bw_bytes(&self) -> f64 {
        let s = self.runtime.as_secs_f64();
        if s > 0.0 { self.bytes as f64 / s } else { 0.0 }
    }

    /// I/Os per second over the runtime.
    pub fn iops(&self) -> f64 {
        let s = self.runtime.as_secs_f64();
        if s > 0.0 { self.ios as f64 / s } else { 0.0 }
    }
}

/// One entry of `jobs[]`: a job clone, or a whole job with group_reporting.
#[derive(Debug, Clone, PartialEq)]
pub struct JobReport {
    pub name: String,
    pub groupid: usize,
    /// Clones this entry covers (fio's `jobs=` in the text header).
    pub clones: u32,
    pub rw: RwMode,
    pub bs: u64,
    pub size: u64,
    pub iodepth: u32,
    pub read: DirReport,
    pub write: DirReport,
    /// Reads that found no cached data, not counted in `read`.
    pub misses: u64,
    /// Wall time of the job's group, ramp_time included.
    pub elapsed: Duration,
    /// How long the untimed prefill took (`None`: none was needed).
    pub prefill: Option<Duration>,
    /// I/O engine underneath the store ("uring" or "psync").
    pub engine: &'static str,
    /// The job section's options as written.
    pub options: Vec<(String, String)>,
    /// What the store counted on this job's cache while the job's group
    /// ran (shared by the jobs of a group on the same file): checkpoints,
    /// flushes, evictions, checksum errors.
    pub store: StoreStats,
}

/// The outcome of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub jobs: Vec<JobReport>,
    pub global_options: Vec<(String, String)>,
    pub started_unix_ms: u64,
    pub target: Target,
    /// Things the user should know (a cache too small for the jobs, ...).
    pub notes: Vec<String>,
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

impl Report {
    /// Render in `format`.
    pub fn render(&self, format: OutputFormat) -> String {
        match format {
            OutputFormat::Normal => self.to_normal(),
            OutputFormat::Json => self.to_fio_json(),
        }
    }

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

    /// fio's `--output-format=json`: the same field names and units for
    /// what ringcache measures.
    pub fn to_fio_json(&self) -> String {
        let secs = self.started_unix_ms / 1000;
        let kv = |opts: &[(String, String)]| {
            J::Obj(
                opts.iter()
                    .map(|(k, v)| (k.clone(), J::Str(v.clone())))
                    .collect(),
            )
        };
        let jobs = self
            .jobs
            .iter()
            .map(|j| {
                J::obj(vec![
                    ("jobname", J::Str(j.name.clone())),
                    ("groupid", J::U(j.groupid as u64)),
                    ("error", J::U(0)),
                    ("elapsed", J::U(j.elapsed.as_secs())),
                    ("job options", kv(&j.options)),
                    ("read", dir_json(&j.read)),
                    ("write", dir_json(&j.write)),
                    ("trim", dir_json(&DirReport::default())),
                    (
                        "ringcache",
                        J::obj(vec![
                            ("target", J::Str(self.target.to_string())),
                            ("engine", J::Str(j.engine.to_string())),
                            ("jobs", J::U(u64::from(j.clones))),
                            ("rw", J::Str(j.rw.fio_name().to_string())),
                            ("bs", J::U(j.bs)),
                            ("size", J::U(j.size)),
                            ("iodepth", J::U(u64::from(j.iodepth))),
                            ("read_misses", J::U(j.misses)),
                            (
                                "prefill_ms",
                                j.prefill.map_or(J::Null, |p| J::U(p.as_millis() as u64)),
                            ),
                            ("store", store_json(&j.store)),
                        ]),
                    ),
                ])
            })
            .collect();
        let root = J::obj(vec![
            (
                "fio version",
                J::Str(format!("ringcache-bench-{}", env!("CARGO_PKG_VERSION"))),
            ),
            ("timestamp", J::U(secs)),
            ("timestamp_ms", J::U(self.started_unix_ms)),
            ("time", J::Str(ctime_utc(secs))),
            ("global options", kv(&self.global_options)),
            ("jobs", J::Arr(jobs)),
            (
                "notes",
                J::Arr(self.notes.iter().map(|n| J::Str(n.clone())).collect()),
            ),
        ]);
        let mut out = String::new();
        root.write(&mut out, 0);
        out.push('\n');
        out
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

fn lat_json(l: &LatStats, with_percentiles: bool) -> J {
    let mut fields = vec![
        ("min", J::U(l.min_ns)),
        ("max", J::U(l.max_ns)),
        ("mean", J::F(l.mean_ns)),
        ("stddev", J::F(l.stddev_ns)),
        ("N", J::U(l.n)),
    ];
    if with_percentiles && l.n > 0 {
        fields.push((
            "percentile",
            J::Obj(
                l.percentiles
                    .iter()
                    .map(|&(p, v)| (format!("{p:.6}"), J::U(v)))
                    .collect(),
            ),
        ));
    }
    J::obj(fields)
}

fn dir_json(d: &DirReport) -> J {
    J::obj(vec![
        ("io_bytes", J::U(d.bytes)),
        ("io_kbytes", J::U(d.bytes / 1024)),
        ("bw_bytes", J::U(d.bw_bytes() as u64)),
        ("bw", J::U((d.bw_bytes() / 1024.0) as u64)),
        ("iops", J::F(d.iops())),
        ("runtime", J::U(d.runtime.as_millis() as u64)),
        ("total_ios", J::U(d.ios)),
        ("short_ios", J::U(0)),
        ("drop_ios", J::U(0)),
        // Not measured apart from clat (fio prints this too when it does
        // not measure submission latency).
        ("slat_ns", lat_json(&LatStats::default(), false)),
        ("clat_ns", lat_json(&d.lat, true)),
        // Submission is inside clat, so total latency is the same figure.
        ("lat_ns", lat_json(&d.lat, false)),
    ])
}

fn store_json(s: &StoreStats) -> J {
    J::obj(vec![
        ("checkpoints", J::U(s.checkpoints)),
        ("flushes", J::U(s.flushes)),
        ("log_blocks_written", J::U(s.log_blocks_written)),
        ("regions_evicted", J::U(s.regions_evicted)),
        ("bytes_evicted", J::U(s.bytes_evicted)),
        ("objects_culled", J::U(s.objects_culled)),
        ("checksum_errors", J::U(s.checksum_errors)),
        ("read_races", J::U(s.read_races)),
        ("io_errors", J::U(s.io_errors)),
        ("nospace_events", J::U(s.nospace_events)),
        ("stale_writes", J::U(s.stale_writes)),
    ])
}

/// A JSON value that keeps its keys in the order given (fio's order).
enum J {
    Null,
    U(u64),
    F(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    fn obj(fields: Vec<(&str, J)>) -> J {
        J::Obj(
            fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    fn write(&self, o: &mut String, indent: usize) {
        let pad = |o: &mut String, n: usize| o.extend(std::iter::repeat_n(' ', n));
        match self {
            J::Null => o.push_str("null"),
            J::U(v) => {
                let _ = write!(o, "{v}");
            }
            J::F(v) => {
                let _ = write!(o, "{:.6}", if v.is_finite() { *v } else { 0.0 });
            }
            J::Str(s) => o.push_str(&quote(s)),
            J::Arr(items) => {
                if items.is_empty() {
                    o.push_str("[]");
                    return;
                }
                o.push_str("[\n");
                for (i, v) in items.iter().enumerate() {
                    pad(o, indent + 2);
                    v.write(o, indent + 2);
                    o.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
                }
                pad(o, indent);
                o.push(']');
            }
            J::Obj(fields) => {
                if fields.is_empty() {
                    o.push_str("{}");
                    return;
                }
                o.push_str("{\n");
                for (i, (k, v)) in fields.iter().enumerate() {
                    pad(o, indent + 2);
                    o.push_str(&quote(k));
                    o.push_str(" : ");
                    v.write(o, indent + 2);
                    o.push_str(if i + 1 < fields.len() { ",\n" } else { "\n" });
                }
                pad(o, indent);
                o.push('}');
            }
        }
    }
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// `Mon Nov 23 12:11:07 2026`, as fio's "time" (fio uses local time; this
/// is UTC, to need no time zone database).
fn ctime_utc(unix_secs: u64) -> String {
    let days = unix_secs / 86_400;
    let rem = unix_secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // 1970-01-01 was a Thursday.
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let (year, month, day) = civil_date(days);
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(month - 1) as usize];
    format!("{weekday} {mon} {day:>2} {h:02}:{m:02}:{s:02} {year}")
}

/// Now, in milliseconds since the epoch (the report's start time).
pub(super) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctime_matches_known_dates() {
        assert_eq!(ctime_utc(0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(ctime_utc(951_782_400), "Tue Feb 29 00:00:00 2000");
        assert_eq!(ctime_utc(1_795_435_867), "Mon Nov 23 12:11:07 2026");
    }
}
