//! The fio job-file parser: good files resolve to the options fio would
//! use (globals inherited and overridden, fio's size suffixes including
//! its KiB = 1000 compatibility rule, time units, stonewall groups), and
//! every bad value is an error that names the option and its line, so a
//! typo in a job file never turns into a silently different benchmark.

use std::time::Duration;

use ringcache::io::EngineKind;
use ringcache_tools::bench::{BenchError, JobFile, RwMode, Target};

fn parse(text: &str) -> JobFile {
    JobFile::parse(text).unwrap_or_else(|e| panic!("parse failed: {e}\n{text}"))
}

/// The error text for `text`, which must not parse.
fn err(text: &str) -> String {
    match JobFile::parse(text) {
        Ok(f) => panic!("parsed, but should not have: {f:?}\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// A one-job file whose job section has `line` as its third line (line 4
/// of the file).
fn with_option(line: &str) -> String {
    format!("[global]\nsize=1m\n[job]\n{line}\n")
}

/// Assert that the error for option `line` names the option and line 4.
fn assert_bad(line: &str, option: &str) {
    let e = err(&with_option(line));
    assert!(
        e.contains("line 4") && e.contains(option),
        "error for {line:?} should name line 4 and {option:?}: {e}"
    );
}

#[test]
fn a_full_job_resolves_every_option() {
    let f = parse(
        "; a comment\n\
         # another\n\
         [global]\n\
         ioengine=io_uring\n\
         direct=1\n\
         filename=cache.img   ; inline comment\n\
         size=64m\n\
         bs=4k\n\
         runtime=10\n\
         time_based\n\
         ramp_time=500ms\n\
         group_reporting\n\
         \n\
         [randread-qd32]\n\
         rw=randread\n\
         iodepth=32\n\
         numjobs=2\n",
    );
    assert_eq!(f.target, Target::Embedded);
    assert!(f.warnings.is_empty(), "{:?}", f.warnings);
    assert_eq!(f.jobs.len(), 1);
    let j = &f.jobs[0];
    assert_eq!(j.name, "randread-qd32");
    assert_eq!(j.line, 14);
    assert_eq!(j.rw, RwMode::RandRead);
    assert_eq!(j.bs, 4096);
    assert_eq!(j.size, 64 << 20);
    assert_eq!(j.iodepth, 32);
    assert_eq!(j.numjobs, 2);
    assert_eq!(j.runtime, Some(Duration::from_secs(10)));
    assert!(j.time_based);
    assert_eq!(j.ramp_time, Duration::from_millis(500));
    assert_eq!(
        j.filename.as_deref(),
        Some(std::path::Path::new("cache.img"))
    );
    assert_eq!(j.engine, EngineKind::Uring);
    assert!(j.group_reporting);
    assert_eq!(
        j.options,
        vec![
            ("rw".to_string(), "randread".to_string()),
            ("iodepth".to_string(), "32".to_string()),
            ("numjobs".to_string(), "2".to_string()),
        ]
    );
    assert_eq!(f.global_options.len(), 9);
}

#[test]
fn fio_defaults_apply() {
    let f = parse("[j]\nsize=1m\n");
    let j = &f.jobs[0];
    assert_eq!(j.rw, RwMode::Read);
    assert_eq!(j.bs, 4096);
    assert_eq!(j.iodepth, 1);
    assert_eq!(j.numjobs, 1);
    assert_eq!(j.rwmixread, 50);
    assert_eq!(j.runtime, None);
    assert!(!j.time_based);
    assert_eq!(j.ramp_time, Duration::ZERO);
    assert_eq!(j.filename, None);
    assert_eq!(j.engine, EngineKind::Auto);
}

#[test]
fn job_options_override_globals_and_later_globals_add() {
    let f = parse(
        "[global]\nsize=1m\nbs=8k\n\
         [a]\nbs=16k\n\
         [global]\nrw=randwrite\n\
         [b]\n",
    );
    assert_eq!(f.jobs[0].bs, 16 << 10);
    assert_eq!(
        f.jobs[0].rw,
        RwMode::Read,
        "a [global] after a job does not reach back"
    );
    assert_eq!(f.jobs[1].bs, 8 << 10);
    assert_eq!(f.jobs[1].rw, RwMode::RandWrite);
}

#[test]
fn sizes_read_as_fio_reads_them() {
    let size = |v: &str| parse(&format!("[j]\nbs=4k\nsize={v}\n")).jobs[0].size;
    assert_eq!(size("4096"), 4096);
    assert_eq!(size("8k"), 8192);
    assert_eq!(size("8K"), 8192);
    assert_eq!(size("8kb"), 8192);
    assert_eq!(size("3m"), 3 << 20);
    assert_eq!(size("2g"), 2 << 30);
    assert_eq!(size("1t"), 1 << 40);
    assert_eq!(size("0x4000"), 16384);
    // fio's default kb_base=1024 reads IEC suffixes as powers of 1000.
    assert_eq!(size("8KiB"), 8000);
    assert_eq!(size("1MiB"), 1_000_000);
    // (bs=4k would be 4000 bytes there, not a multiple of the block.)
    let kb1000 = |v: &str| parse(&format!("[j]\nkb_base=1000\nbs=4096\nsize={v}\n")).jobs[0].size;
    assert_eq!(kb1000("8k"), 8000);
    assert_eq!(kb1000("8KiB"), 8192);
}

#[test]
fn times_and_modes() {
    let j = |body: &str| parse(&format!("[j]\nsize=1m\n{body}\n")).jobs[0].clone();
    assert_eq!(j("runtime=2m").runtime, Some(Duration::from_secs(120)));
    assert_eq!(j("runtime=0").runtime, None, "fio: 0 means no limit");
    assert_eq!(j("timeout=5").runtime, Some(Duration::from_secs(5)));
    assert_eq!(j("ramp_time=250ms").ramp_time, Duration::from_millis(250));
    assert_eq!(j("rw=write").rw, RwMode::Write);
    assert_eq!(j("rw=randwrite").rw, RwMode::RandWrite);
    assert_eq!(j("readwrite=rw").rw, RwMode::ReadWrite);
    assert_eq!(j("rw=randrw\nrwmixread=70").rwmixread, 70);
    assert_eq!(j("rw=randrw\nrwmixwrite=30").rwmixread, 70);
    assert_eq!(j("blocksize=64k").bs, 65536);
    assert_eq!(j("name=renamed").name, "renamed");
    assert!(j("time_based=1\nruntime=1").time_based);
    assert!(!j("time_based=0").time_based);
    assert_eq!(j("ioengine=psync").engine, EngineKind::Psync);
}

#[test]
fn stonewall_starts_a_new_group() {
    let f = parse(
        "[global]\nsize=1m\n\
         [a]\n[b]\n\
         [c]\nstonewall\n\
         [d]\nwait_for_previous\n",
    );
    let groups: Vec<usize> = f.jobs.iter().map(|j| j.group).collect();
    assert_eq!(groups, vec![0, 0, 1, 2]);
}

#[test]
fn ringcache_section_sets_the_target_and_is_no_job() {
    let f = parse("[ringcache]\ntarget=daemon\n[j]\nsize=1m\n");
    assert_eq!(f.target, Target::Daemon);
    assert_eq!(f.jobs.len(), 1);
    let f = parse("[ringcache]\ntarget=embedded\n[j]\nsize=1m\n");
    assert_eq!(f.target, Target::Embedded);
}

#[test]
fn environment_variables_expand() {
    // Use a variable the environment already has (setting one is unsafe
    // in edition 2024, with other tests running in parallel threads); not
    // one with ':' in it, which filename= refuses.
    let (name, value) = std::env::vars()
        .find(|(k, v)| {
            !v.is_empty()
                && !v.contains([':', ';', '#'])
                && v.trim() == v
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .expect("some environment variable");
    let f = parse(&format!("[j]\nsize=1m\nfilename=${{{name}}}/x\n"));
    assert_eq!(
        f.jobs[0].filename.as_deref(),
        Some(std::path::Path::new(&format!("{value}/x")))
    );
    assert!(f.warnings.is_empty(), "{:?}", f.warnings);
}

#[test]
fn each_bad_value_names_its_option_and_line() {
    assert_bad("bs=4q", "bs");
    assert_bad("bs=512", "bs");
    assert_bad("bs=6k", "bs");
    assert_bad("bs=0", "bs");
    assert_bad("bs=4k,8k", "bs");
    assert_bad("bs=4k-8k", "bs");
    assert_bad("bs=", "bs");
    assert_bad("size=0", "size");
    assert_bad("size=1.5g", "size");
    assert_bad("size=50%", "size");
    assert_bad("size=lots", "size");
    assert_bad("size=99999999999p", "size");
    assert_bad("iodepth=0", "iodepth");
    assert_bad("iodepth=abc", "iodepth");
    assert_bad("iodepth=100000", "iodepth");
    assert_bad("numjobs=0", "numjobs");
    assert_bad("numjobs=1000", "numjobs");
    assert_bad("rwmixread=101", "rwmixread");
    assert_bad("rwmixwrite=-1", "rwmixwrite");
    assert_bad("rw=trim", "rw");
    assert_bad("rw=sideways", "rw");
    assert_bad("rw=randread:8", "rw");
    assert_bad("readwrite=nope", "readwrite");
    assert_bad("runtime=10y", "runtime");
    assert_bad("runtime=1.5", "runtime");
    assert_bad("ramp_time=soon", "ramp_time");
    assert_bad("time_based=yes", "time_based");
    assert_bad("group_reporting=2", "group_reporting");
    assert_bad("stonewall=maybe", "stonewall");
    assert_bad("direct=on", "direct");
    assert_bad("filename=a.img:b.img", "filename");
    assert_bad("filename", "filename");
    assert_bad("kb_base=512", "kb_base");
}

#[test]
fn a_bad_value_in_global_names_the_global_line() {
    let e = err("[global]\nsize=1m\nbs=3k\n[j]\n");
    assert!(e.contains("line 3") && e.contains("bs"), "{e}");
}

#[test]
fn a_bad_target_names_target_and_line() {
    let e = err("[ringcache]\ntarget=cloud\n[j]\nsize=1m\n");
    assert!(e.contains("line 2") && e.contains("target"), "{e}");
}

#[test]
fn bad_syntax_names_the_line() {
    let e = err("size=1m\n[j]\n");
    assert!(e.contains("line 1") && e.contains("outside"), "{e}");
    let e = err("[j]\nsize=1m\n[unclosed\n");
    assert!(e.contains("line 3") && e.contains("']'"), "{e}");
    let e = err("[j]\nsize=1m\n[ ]\n");
    assert!(e.contains("line 3") && e.contains("empty section"), "{e}");
    let e = err("[j]\n=4k\n");
    assert!(e.contains("line 2") && e.contains("no option name"), "{e}");
}

#[test]
fn jobs_that_cannot_run_name_the_job() {
    let e = err("[global]\nbs=4k\n[nosize]\nrw=read\n");
    assert!(
        e.contains("\"nosize\"") && e.contains("line 3") && e.contains("size"),
        "{e}"
    );
    let e = err("[small]\nsize=4k\nbs=8k\n");
    assert!(
        e.contains("\"small\"") && e.contains("bs") && e.contains("larger than size"),
        "{e}"
    );
    let e = err("[forever]\nsize=1m\ntime_based\n");
    assert!(e.contains("\"forever\"") && e.contains("runtime"), "{e}");
}

#[test]
fn a_file_without_jobs_is_refused() {
    assert!(matches!(JobFile::parse(""), Err(BenchError::NoJobs)));
    assert!(matches!(
        JobFile::parse("[global]\nsize=1m\n[ringcache]\ntarget=embedded\n"),
        Err(BenchError::NoJobs)
    ));
}
