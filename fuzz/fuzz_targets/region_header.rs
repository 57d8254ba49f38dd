//! RegionHeader::parse on hostile bytes, read as the header of the region
//! whose index the input names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcache_fuzz::{Input, MODE_RESEAL, UUID, reseal_header};
use ringcache_ondisk::RegionHeader;
use zerocopy::IntoBytes;

fuzz_target!(|data: &[u8]| {
    let input = Input::split(data);
    let template = RegionHeader::new(3, 77, UUID);
    let mut bytes = input.bytes(template.as_bytes());
    if input.has(MODE_RESEAL) {
        reseal_header(&mut bytes, 64);
    }
    let uuid = input.uuid(&bytes, 24);
    let expected_index = input.num as u32;
    if let Ok(seq) = RegionHeader::parse(&bytes, expected_index, &uuid) {
        let again = RegionHeader::new(expected_index, seq, uuid);
        assert_eq!(
            RegionHeader::parse(again.as_bytes(), expected_index, &uuid),
            Ok(seq)
        );
    }
});
