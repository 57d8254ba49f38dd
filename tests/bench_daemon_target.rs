//! `target=daemon` (benchmarking a running ringcached through its socket)
//! is part of the job-file syntax already but not implemented: it must
//! parse, then fail with an error that says so plainly, before touching
//! any file, rather than quietly benchmarking the embedded store instead.

use ringcache::bench::{BenchError, JobFile, RunOptions, Target, run};

#[test]
fn daemon_target_is_not_available_yet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("never-created.img");
    let f = JobFile::parse(&format!(
        "[ringcache]\ntarget=daemon\n[j]\nsize=1m\nfilename={}\n",
        cache.display()
    ))
    .expect("target=daemon parses");
    assert_eq!(f.target, Target::Daemon);
    let e = run(&f, &RunOptions::default()).expect_err("daemon target cannot run yet");
    assert!(matches!(e, BenchError::NotAvailable(_)), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("target=daemon") && text.contains("not available yet"),
        "{text}"
    );
    assert!(
        !cache.exists(),
        "nothing may be created for a target that is not there"
    );
}

#[test]
fn command_line_target_overrides_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("never-created.img");
    let f =
        JobFile::parse(&format!("[j]\nsize=1m\nfilename={}\n", cache.display())).expect("parses");
    let opts = RunOptions {
        target: Some(Target::Daemon),
        ..Default::default()
    };
    let e = run(&f, &opts).expect_err("daemon target cannot run yet");
    assert!(e.to_string().contains("not available yet"), "{e}");
    assert!(!cache.exists());
}
