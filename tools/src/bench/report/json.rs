//! fio's JSON (`--output-format=json`): fio's field names, order and
//! units for what ringcache measures, and a `ringcache` object per job for
//! what fio has no field for (docs/BENCH.md lists them all).

use std::fmt::Write as _;

use ringcache::store::StoreStats;

use super::{DirReport, LatStats, Report};
use crate::text::civil_date;

impl Report {
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
