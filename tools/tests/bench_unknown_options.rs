//! Options `ringcache bench` does not understand are warnings that name
//! the option, its section and its line, never silently dropped: a fio job
//! file using `verify=` or `norandommap` must not look as if it ran the
//! same benchmark as under fio. Options it understands but does not honour
//! (direct=0, an engine it lacks) are warned about the same way; an
//! option in `[global]` is reported once, not once per job.

use ringcache_tools::bench::JobFile;

fn parse(text: &str) -> JobFile {
    JobFile::parse(text).unwrap_or_else(|e| panic!("parse failed: {e}"))
}

#[test]
fn unknown_job_option_is_named_with_its_line() {
    let f = parse("[j]\nsize=1m\nverify=crc32c\n");
    assert_eq!(f.warnings.len(), 1, "{:?}", f.warnings);
    let w = &f.warnings[0];
    assert_eq!(
        (w.line, w.option.as_str(), w.section.as_str()),
        (3, "verify", "j")
    );
    let text = w.to_string();
    assert!(
        text.contains("line 3") && text.contains("verify") && text.contains("unknown"),
        "{text}"
    );
    assert_eq!(f.jobs[0].size, 1 << 20, "the rest of the job still parses");
}

#[test]
fn unknown_flag_without_value_is_named() {
    let f = parse("[j]\nsize=1m\nnorandommap\n");
    assert_eq!(f.warnings.len(), 1);
    assert_eq!(
        (f.warnings[0].line, f.warnings[0].option.as_str()),
        (3, "norandommap")
    );
}

#[test]
fn unknown_global_option_is_reported_once() {
    let f = parse("[global]\nsize=1m\nend_fsync=1\n[a]\n[b]\n[c]\n");
    assert_eq!(f.jobs.len(), 3);
    assert_eq!(f.warnings.len(), 1, "{:?}", f.warnings);
    let w = &f.warnings[0];
    assert_eq!(
        (w.line, w.option.as_str(), w.section.as_str()),
        (3, "end_fsync", "global")
    );
}

#[test]
fn unknown_ringcache_option_is_named() {
    let f = parse("[ringcache]\ntarget=embedded\nshards=4\n[j]\nsize=1m\n");
    assert_eq!(f.warnings.len(), 1);
    let w = &f.warnings[0];
    assert_eq!(
        (w.line, w.option.as_str(), w.section.as_str()),
        (3, "shards", "ringcache")
    );
}

#[test]
fn known_options_that_are_not_honoured_are_warned() {
    let f = parse("[global]\nsize=1m\ndirect=0\nioengine=libaio\n[a]\n[b]\n");
    let opts: Vec<(usize, &str)> = f
        .warnings
        .iter()
        .map(|w| (w.line, w.option.as_str()))
        .collect();
    assert_eq!(
        opts,
        vec![(3, "direct"), (4, "ioengine")],
        "{:?}",
        f.warnings
    );
    assert!(f.warnings[0].message.contains("O_DIRECT"));
    assert!(f.warnings[1].message.contains("libaio"));
}

#[test]
fn unset_environment_variable_is_warned() {
    let f = parse("[j]\nsize=1m\nfilename=x${RINGCACHE_BENCH_TEST_SURELY_UNSET}.img\n");
    assert_eq!(f.warnings.len(), 1, "{:?}", f.warnings);
    assert_eq!(f.warnings[0].line, 3);
    assert!(
        f.warnings[0]
            .message
            .contains("RINGCACHE_BENCH_TEST_SURELY_UNSET")
    );
    assert_eq!(
        f.jobs[0].filename.as_deref(),
        Some(std::path::Path::new("x.img"))
    );
}

#[test]
fn a_clean_file_has_no_warnings() {
    let f = parse(
        "[global]\nioengine=io_uring\ndirect=1\nsize=1m\nthread\n\
         [j]\nrw=randrw\nrwmixread=70\ndescription=mixed\n",
    );
    assert!(f.warnings.is_empty(), "{:?}", f.warnings);
}
