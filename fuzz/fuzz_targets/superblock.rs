//! Superblock::parse and Superblock::pick on hostile bytes, against a
//! device size taken from the input. A geometry that parses must validate,
//! survive a re-encode, and bound every record's check_geometry.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcache_fuzz::{Input, MODE_RESEAL, check_records, probe_geometry, reseal_header, sb_info};
use ringcache_ondisk::Superblock;
use zerocopy::IntoBytes;

fuzz_target!(|data: &[u8]| {
    let input = Input::split(data);
    let good = Superblock::new(&sb_info());
    let mut bytes = input.bytes(good.as_bytes());
    if input.has(MODE_RESEAL) {
        reseal_header(&mut bytes, 4096);
    }
    let actual = input.num;
    if let Ok(info) = Superblock::parse(&bytes, actual) {
        assert_eq!(info.geometry.validate(actual), Ok(()));
        let again = Superblock::parse(Superblock::new(&info).as_bytes(), actual)
            .expect("a re-encoded superblock parses");
        assert_eq!(again.geometry, info.geometry);
        assert_eq!((again.sb_seq, again.uuid), (info.sb_seq, info.uuid));
        // Records checked against a hostile but valid geometry.
        probe_geometry(&info.geometry);
        check_records(&ringcache_fuzz::records_template(), &[info.geometry]);
    }
    let _ = Superblock::pick(&bytes, good.as_bytes(), actual);
    let _ = Superblock::pick(good.as_bytes(), &bytes, actual);
});
