//! CheckpointHeader::parse on hostile bytes with a slot size taken from the
//! input; an accepted header's payload must fit the slot, and
//! check_payload runs on what follows the header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcache_fuzz::{Input, MODE_RESEAL, UUID, reseal_header};
use ringcache_ondisk::checkpoint::{CheckpointInfo, check_payload};
use ringcache_ondisk::{BLOCK_BYTES_U64, CheckpointHeader};
use zerocopy::IntoBytes;

fuzz_target!(|data: &[u8]| {
    let input = Input::split(data);
    let info = CheckpointInfo {
        ckpt_seq: 3,
        log_seq: 100,
        next_object_id: 10,
        next_region_seq: 4,
        next_volume_id: 2,
        payload_bytes: 64,
        payload_crc: 0,
        volume_count: 1,
        object_count: 1,
        extent_count: 1,
        created_unix_secs: 1,
    };
    let template = CheckpointHeader::new(&info, UUID);
    let mut bytes = input.bytes(template.as_bytes());
    if input.has(MODE_RESEAL) {
        reseal_header(&mut bytes, 128);
    }
    let uuid = input.uuid(&bytes, 16);
    let slot_bytes = input.num;
    if let Ok(parsed) = CheckpointHeader::parse(&bytes, &uuid, slot_bytes) {
        assert!(parsed.payload_bytes <= slot_bytes.saturating_sub(BLOCK_BYTES_U64));
        let _ = check_payload(&parsed, bytes.get(128..).unwrap_or(&[]));
    }
});
