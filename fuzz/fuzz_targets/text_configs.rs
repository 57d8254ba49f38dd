//! The two text formats users write: the daemon's configuration
//! (`daemon::Config::parse`) and `ringcache bench` job files
//! (`JobFile::parse`), on hostile text (any bytes, read as UTF-8 with
//! replacement). Either gives a value or an error naming the line, never
//! a panic; a configuration accepted once parses the same again.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use ringcache::daemon::Config;
use ringcache_tools::bench::jobfile::JobFile;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(c) = Config::parse(&text, Path::new("/base")) {
        assert_eq!(Config::parse(&text, Path::new("/base")).ok(), Some(c));
    }
    let _ = JobFile::parse(&text);
});
