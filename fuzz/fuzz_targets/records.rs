//! RecordIter on hostile bytes (a log block's payload or a checkpoint's):
//! every accepted record must re-encode to itself, the iterator must stop
//! after its first error, and check_geometry / check_disjoint must cope
//! with whatever was accepted, against a geometry that ends near 2^64 too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcache_fuzz::{
    Input, MODE_RESEAL, check_records, geometry, geometry_near_top, records_template,
    reseal_extents,
};

fuzz_target!(|data: &[u8]| {
    let input = Input::split(data);
    let mut bytes = input.bytes(&records_template());
    if input.has(MODE_RESEAL) {
        reseal_extents(&mut bytes);
    }
    check_records(&bytes, &[geometry(), geometry_near_top()]);
});
