//! `target=daemon`: a job file run through a real `ringcached` and the
//! client library. Reads are of data the bench put there itself (every one
//! a hit), writes are answered Ok, the report names the daemon as the
//! engine and counts what the daemon's store counted; with no daemon on
//! the socket the run fails at once, saying where it looked.

mod common;

use common::daemon::{DaemonProc, write_config};
use ringcache_tools::bench::{BenchError, JobFile, RunOptions, Target, run};

fn options(socket: &std::path::Path) -> RunOptions {
    RunOptions {
        target: Some(Target::Daemon),
        socket: Some(socket.to_path_buf()),
        ..Default::default()
    }
}

#[test]
fn reads_and_writes_through_the_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "");
    let d = DaemonProc::start(dir.path(), &config);
    let f = JobFile::parse(
        "[ringcache]\ntarget=daemon\n\
         [global]\nsize=2m\nbs=4k\n\
         [reads]\nrw=randread\niodepth=8\nnumjobs=2\n\
         [writes]\nstonewall\nrw=randwrite\niodepth=4\nsize=1m\n",
    )
    .expect("parses");
    assert_eq!(f.target, Target::Daemon);
    let report = run(&f, &options(&d.socket)).expect("runs through the daemon");
    assert_eq!(report.target, Target::Daemon);
    let reads: Vec<_> = report.jobs.iter().filter(|j| j.name == "reads").collect();
    assert_eq!(
        reads.len(),
        2,
        "one entry per clone without group_reporting"
    );
    for j in &reads {
        assert_eq!(j.engine, "daemon");
        assert_eq!(j.read.ios, 512, "size / bs reads per clone: {j:?}");
        assert_eq!(j.misses, 0, "every read finds the data the bench wrote");
        assert!(j.prefill.is_some(), "the objects were filled first");
        assert!(j.read.lat.percentiles.iter().all(|&(_, ns)| ns > 0));
    }
    let writes = report
        .jobs
        .iter()
        .find(|j| j.name == "writes")
        .expect("writes");
    assert_eq!(writes.write.ios, 256);
    assert_eq!(writes.read.ios, 0);
    assert!(
        writes.store.write_bytes >= 256 * 4096,
        "the daemon's store counted the writes: {:?}",
        writes.store
    );
    // A second run finds the objects cached and does not fill them again;
    // this time the job file names the socket.
    let f = JobFile::parse(&format!(
        "[ringcache]\ntarget=daemon\nsocket={}\n\
         [global]\nsize=2m\nbs=4k\n\
         [reads]\nrw=randread\niodepth=8\nnumjobs=2\n",
        d.socket.display()
    ))
    .expect("parses");
    assert!(f.warnings.is_empty(), "{:?}", f.warnings);
    let again = run(&f, &RunOptions::default()).expect("second run");
    let first = again
        .jobs
        .iter()
        .find(|j| j.name == "reads")
        .expect("reads");
    assert_eq!(first.prefill, None, "already cached: no prefill");
    assert_eq!(first.misses, 0);
}

#[test]
fn no_daemon_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("nobody.sock");
    let f = JobFile::parse("[j]\nsize=1m\nrw=randread\n").expect("parses");
    let e = run(&f, &options(&socket)).expect_err("nothing listens");
    assert!(matches!(e, BenchError::Daemon { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("ringcached") && text.contains(&socket.display().to_string()),
        "{text}"
    );
}

#[test]
fn jobs_larger_than_the_daemons_cache_are_refused_up_front() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A 64 MiB cache; two clones of 48 MiB do not fit.
    let config = write_config(dir.path(), "");
    let d = DaemonProc::start(dir.path(), &config);
    let f = JobFile::parse("[big]\nsize=48m\nrw=randwrite\nbs=4k\nnumjobs=2\nruntime=1\n")
        .expect("parses");
    let writes = |d: &DaemonProc| {
        d.client()
            .stats()
            .expect("stats")
            .into_iter()
            .find(|(k, _)| k == "store.write_bytes")
            .map(|(_, v)| v)
            .expect("store.write_bytes")
    };
    let before = writes(&d);
    let e = run(&f, &options(&d.socket)).expect_err("does not fit");
    let text = e.to_string();
    assert!(
        text.contains("96 MiB") && text.contains("size=") && text.contains("larger cache"),
        "{text}"
    );
    assert_eq!(writes(&d), before, "refused before anything was written");
    // One clone fits and runs.
    let f = JobFile::parse("[fits]\nsize=16m\nrw=randread\nbs=4k\nruntime=1\ntime_based\n")
        .expect("parses");
    run(&f, &options(&d.socket)).expect("a job that fits runs");
}
