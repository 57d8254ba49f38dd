//! A job that is not time_based does exactly size / bs I/Os per clone and
//! stops, as fio does, and without group_reporting each clone is its own
//! entry in `jobs[]` (fio's layout). A second run on the same cache
//! reuses the fully cached object instead of prefilling it again, as fio
//! reuses a laid-out file.

use ringcache_tools::bench::{JobFile, RunOptions, run};

#[test]
fn each_clone_covers_size_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("bench.img");
    let text = format!(
        "[seq]\nfilename={}\nrw=read\nsize=2m\nbs=16k\niodepth=3\nnumjobs=2\n",
        cache.display()
    );
    let file = JobFile::parse(&text).expect("parse");
    let report = run(&file, &RunOptions::default()).expect("run");
    assert_eq!(report.jobs.len(), 2, "one entry per clone");
    for j in &report.jobs {
        assert_eq!(j.name, "seq");
        assert_eq!(j.clones, 1);
        assert_eq!(j.read.ios, (2 << 20) / (16 << 10));
        assert_eq!(j.read.bytes, 2 << 20);
        assert_eq!(j.misses, 0);
        assert_eq!(j.write.ios, 0);
        assert!(j.prefill.is_some(), "first run prefills");
    }

    let again = run(&file, &RunOptions::default()).expect("second run");
    assert!(
        again.jobs.iter().all(|j| j.prefill.is_none()),
        "the object was fully cached: no second prefill"
    );
    assert_eq!(again.jobs[0].read.ios, 128);
}

#[test]
fn random_writes_cover_size_once_with_group_reporting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("bench.img");
    let text = format!(
        "[rw]\nfilename={}\nrw=randwrite\nsize=1m\nbs=4k\niodepth=4\nnumjobs=2\ngroup_reporting\n",
        cache.display()
    );
    let file = JobFile::parse(&text).expect("parse");
    let report = run(&file, &RunOptions::default()).expect("run");
    assert_eq!(report.jobs.len(), 1, "group_reporting: one entry");
    let j = &report.jobs[0];
    assert_eq!(j.clones, 2);
    assert_eq!(j.write.ios, 2 * 256);
    assert_eq!(j.read.ios, 0);
}
