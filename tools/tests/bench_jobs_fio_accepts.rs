//! Every job file shipped under `benches/jobs/` is accepted by fio itself
//! (`fio --parse-only`) and by our parser without a warning, so the same
//! file runs under both tools and their numbers sit side by side. Where
//! fio is not installed the fio half prints why and passes, except with
//! `CI` set, where a skip would hide that it never ran.

use std::path::PathBuf;
use std::process::Command;

use ringcache_tools::bench::JobFile;

fn job_files() -> Vec<PathBuf> {
    // The workspace's benches/, where the job files live (this package is tools/).
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../benches/jobs");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("benches/jobs")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "fio"))
        .collect();
    v.sort();
    for want in [
        "randread-qd1.fio",
        "randread-qd32.fio",
        "seqfill.fio",
        "randrw.fio",
    ] {
        assert!(
            v.iter().any(|p| p.ends_with(want)),
            "benches/jobs/{want} is missing"
        );
    }
    v
}

#[test]
fn our_parser_accepts_every_job_file_without_warnings() {
    for p in job_files() {
        let text = std::fs::read_to_string(&p).expect("read job file");
        let f = JobFile::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(f.warnings.is_empty(), "{}: {:?}", p.display(), f.warnings);
        assert!(
            f.jobs.iter().all(|j| j.filename.is_none()),
            "{}: the file comes from --filename, for fio and ringcache alike",
            p.display()
        );
    }
}

#[test]
fn fio_accepts_every_job_file() {
    let version = Command::new("fio").arg("--version").output();
    if !version.as_ref().is_ok_and(|o| o.status.success()) {
        let reason = "fio is not installed: skipping the fio --parse-only check";
        if std::env::var_os("CI").is_some() {
            panic!("{reason} (CI is set, so this fails instead of skipping)");
        }
        eprintln!("{reason}");
        return;
    }
    for p in job_files() {
        let out = Command::new("fio")
            .arg("--parse-only")
            .arg(&p)
            .output()
            .expect("run fio");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !stderr.contains("Bad option"),
            "fio rejects {}: {stderr}",
            p.display()
        );
    }
}
