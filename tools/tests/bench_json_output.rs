//! A tiny real run (a few MiB, runtime 1 s) on a temp file, printed as
//! `--output-format=json`, parses as JSON and carries fio's field names
//! with sane values, so scripts that read fio's JSON read ours: the
//! figures agree with each other (iops with total_ios and runtime, bw with
//! bw_bytes, io_bytes with total_ios x bs) and the latency percentiles are
//! fio's list, in order, between min and max.

use ringcache_tools::bench::{JobFile, OutputFormat, RunOptions, run};
use serde_json::Value;

const FIO_PERCENTILE_KEYS: [&str; 17] = [
    "1.000000",
    "5.000000",
    "10.000000",
    "20.000000",
    "30.000000",
    "40.000000",
    "50.000000",
    "60.000000",
    "70.000000",
    "80.000000",
    "90.000000",
    "95.000000",
    "99.000000",
    "99.500000",
    "99.900000",
    "99.950000",
    "99.990000",
];

fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not an unsigned integer: {v}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Check one direction that did I/O.
fn check_dir(d: &Value, bs: u64, what: &str) {
    let ios = u(&d["total_ios"]);
    assert!(ios > 0, "{what}: no I/O");
    assert_eq!(u(&d["io_bytes"]), ios * bs, "{what}: io_bytes");
    assert_eq!(u(&d["io_kbytes"]), ios * bs / 1024, "{what}: io_kbytes");
    let runtime_ms = u(&d["runtime"]);
    assert!(
        (900..=3000).contains(&runtime_ms),
        "{what}: runtime {runtime_ms} ms for a 1 s job"
    );
    let iops = f(&d["iops"]);
    let expect = ios as f64 * 1000.0 / runtime_ms as f64;
    assert!(
        (iops - expect).abs() / expect < 0.01,
        "{what}: iops {iops} vs {ios} I/Os in {runtime_ms} ms"
    );
    let bw_bytes = u(&d["bw_bytes"]);
    assert!(
        (bw_bytes as f64 - iops * bs as f64).abs() / (bw_bytes as f64) < 0.01,
        "{what}: bw_bytes {bw_bytes} vs iops x bs"
    );
    assert_eq!(u(&d["bw"]), bw_bytes / 1024, "{what}: bw is KiB/s");
    assert_eq!(
        u(&d["slat_ns"]["N"]),
        0,
        "{what}: slat is not measured apart"
    );

    let c = &d["clat_ns"];
    assert_eq!(u(&c["N"]), ios, "{what}: clat samples");
    let (min, max, mean) = (u(&c["min"]), u(&c["max"]), f(&c["mean"]));
    assert!(min > 0 && min <= max, "{what}: min {min} max {max}");
    assert!(
        min as f64 <= mean && mean <= max as f64,
        "{what}: mean {mean}"
    );
    assert!(f(&c["stddev"]) >= 0.0);
    let p = c["percentile"].as_object().expect("percentile object");
    let keys: Vec<&str> = p.keys().map(String::as_str).collect();
    let mut want = FIO_PERCENTILE_KEYS.to_vec();
    let mut got = keys.clone();
    want.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, want, "{what}: percentile keys");
    let mut prev = 0;
    for k in FIO_PERCENTILE_KEYS {
        let v = u(&p[k]);
        assert!(v >= prev && v >= min && v <= max, "{what}: p{k} = {v}");
        prev = v;
    }
    assert_eq!(u(&d["lat_ns"]["N"]), ios);
}

fn check_idle(d: &Value, what: &str) {
    for k in ["io_bytes", "total_ios", "runtime", "bw", "bw_bytes"] {
        assert_eq!(u(&d[k]), 0, "{what}.{k}");
    }
    assert_eq!(f(&d["iops"]), 0.0);
    assert_eq!(u(&d["clat_ns"]["N"]), 0);
}

#[test]
fn tiny_run_prints_fio_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("bench.img");
    let text = format!(
        "[global]\n\
         filename={}\n\
         size=4m\n\
         bs=4k\n\
         runtime=1\n\
         time_based\n\
         [reader]\n\
         rw=randread\n\
         iodepth=4\n\
         [writer]\n\
         stonewall\n\
         rw=randwrite\n\
         bs=8k\n\
         iodepth=2\n",
        cache.display()
    );
    let file = JobFile::parse(&text).expect("parse");
    assert!(file.warnings.is_empty(), "{:?}", file.warnings);
    let report = run(&file, &RunOptions::default()).expect("run");
    let json = report.render(OutputFormat::Json);
    let v: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}:\n{json}"));

    assert!(v["fio version"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(u(&v["timestamp"]) > 0);
    assert_eq!(u(&v["timestamp_ms"]) / 1000, u(&v["timestamp"]));
    assert!(v["time"].as_str().is_some());
    assert_eq!(v["global options"]["size"], "4m");

    let jobs = v["jobs"].as_array().expect("jobs array");
    assert_eq!(jobs.len(), 2);
    let (r, w) = (&jobs[0], &jobs[1]);
    assert_eq!(r["jobname"], "reader");
    assert_eq!(u(&r["groupid"]), 0);
    assert_eq!(u(&r["error"]), 0);
    assert_eq!(r["job options"]["rw"], "randread");
    check_dir(&r["read"], 4096, "reader.read");
    check_idle(&r["write"], "reader.write");
    check_idle(&r["trim"], "reader.trim");
    assert_eq!(
        u(&r["ringcache"]["read_misses"]),
        0,
        "prefilled data must hit"
    );
    assert!(
        r["ringcache"]["prefill_ms"].is_u64(),
        "a read job is prefilled"
    );

    assert_eq!(w["jobname"], "writer");
    assert_eq!(u(&w["groupid"]), 1, "stonewall starts group 1");
    check_dir(&w["write"], 8192, "writer.write");
    check_idle(&w["read"], "writer.read");
    assert!(
        w["ringcache"]["prefill_ms"].is_null(),
        "a write job is not prefilled"
    );

    // The text form carries the same figures.
    let normal = report.render(OutputFormat::Normal);
    assert!(normal.contains("reader: (groupid=0, jobs=1)"), "{normal}");
    assert!(normal.contains("read: IOPS="), "{normal}");
    assert!(normal.contains("write: IOPS="), "{normal}");
    assert!(normal.contains("clat percentiles"), "{normal}");
    assert!(normal.contains("99.99th=["), "{normal}");
    assert!(
        normal.contains("Run status group 1 (all jobs):"),
        "{normal}"
    );
}
