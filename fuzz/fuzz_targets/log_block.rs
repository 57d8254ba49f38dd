//! metalog::parse_block on hostile bytes; the payload of an accepted block
//! goes through the record iterator with every property check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcache_fuzz::{
    Input, MODE_RESEAL, UUID, check_records, geometry, geometry_near_top, records_template,
    reseal_log_block,
};
use ringcache_ondisk::metalog::{self, LOG_PAYLOAD_MAX};

fuzz_target!(|data: &[u8]| {
    let input = Input::split(data);
    let mut template = vec![0u8; 4096];
    assert!(metalog::encode_block(
        &mut template,
        1000,
        UUID,
        10,
        &records_template()
    ));
    let mut bytes = input.bytes(&template);
    if input.has(MODE_RESEAL) {
        reseal_log_block(&mut bytes);
    }
    let uuid = input.uuid(&bytes, 24);
    if let Ok(block) = metalog::parse_block(&bytes, &uuid) {
        assert!(block.payload.len() <= LOG_PAYLOAD_MAX);
        check_records(block.payload, &[geometry(), geometry_near_top()]);
    }
});
