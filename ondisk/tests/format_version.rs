//! The format version: 1 is the only version this build reads; any other
//! number is an `UnknownVersion` naming the structure and the newest
//! version known, never a panic or a guess.

use ringcache_ondisk::{FormatError, FormatVersion};

#[test]
fn version_one_is_current() {
    assert_eq!(FormatVersion::CURRENT, FormatVersion::V1);
    assert_eq!(FormatVersion::CURRENT as u32, 1);
    assert_eq!(FormatVersion::parse("x", 1), Ok(FormatVersion::V1));
    assert_eq!(FormatVersion::try_from(1u32), Ok(FormatVersion::V1));
}

#[test]
fn other_numbers_are_unknown() {
    for v in [0u32, 2, 3, 0x0100_0000, u32::MAX] {
        assert_eq!(
            FormatVersion::parse("region header", v),
            Err(FormatError::UnknownVersion {
                what: "region header",
                version: v,
                newest: 1
            })
        );
        assert!(matches!(
            FormatVersion::try_from(v),
            Err(FormatError::UnknownVersion { what: "format", .. })
        ));
    }
}
