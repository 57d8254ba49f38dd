//! Choosing between the two superblock copies: the valid copy with the
//! highest sb_seq wins; a damaged copy loses to a good one whatever its
//! sb_seq, and its error is reported for fsck; two valid copies of
//! different caches (foreign uuid) make the newer win and the other be
//! reported as foreign; with neither copy valid, both errors come back.

mod common;

use common::*;
use ringcache_ondisk::{FormatError, Superblock};

fn copy(sb_seq: u64) -> Vec<u8> {
    let mut info = sb_info();
    info.sb_seq = sb_seq;
    sb_bytes(&info)
}

fn damaged(sb_seq: u64) -> Vec<u8> {
    let mut b = copy(sb_seq);
    b[200] ^= 0x10;
    b
}

#[test]
fn highest_sb_seq_wins() {
    let (info, errs) = Superblock::pick(&copy(4), &copy(5), DEVICE_BYTES).unwrap();
    assert_eq!(info.sb_seq, 5);
    assert_eq!(errs, [None, None]);
    let (info, errs) = Superblock::pick(&copy(9), &copy(8), DEVICE_BYTES).unwrap();
    assert_eq!(info.sb_seq, 9);
    assert_eq!(errs, [None, None]);
}

#[test]
fn equal_sb_seq_takes_copy_a() {
    let mut a = sb_info();
    a.tag = "a".into();
    let mut b = sb_info();
    b.tag = "b".into();
    let (info, _) = Superblock::pick(&sb_bytes(&a), &sb_bytes(&b), DEVICE_BYTES).unwrap();
    assert_eq!(info.tag, "a");
}

#[test]
fn a_damaged_newer_copy_loses_and_is_reported() {
    let (info, errs) = Superblock::pick(&copy(4), &damaged(5), DEVICE_BYTES).unwrap();
    assert_eq!(info.sb_seq, 4);
    assert!(errs[0].is_none());
    assert!(matches!(
        errs[1],
        Some(FormatError::BadChecksum {
            what: "superblock",
            ..
        })
    ));

    let (info, errs) = Superblock::pick(&damaged(7), &copy(6), DEVICE_BYTES).unwrap();
    assert_eq!(info.sb_seq, 6);
    assert!(matches!(errs[0], Some(FormatError::BadChecksum { .. })));
    assert!(errs[1].is_none());
}

#[test]
fn a_torn_copy_loses() {
    // A torn write leaves a prefix of the new copy: short read or zeros.
    let mut torn = copy(10);
    torn[2048..].fill(0);
    let (info, errs) = Superblock::pick(&torn, &copy(9), DEVICE_BYTES).unwrap();
    assert_eq!(info.sb_seq, 9);
    assert!(matches!(errs[0], Some(FormatError::BadChecksum { .. })));

    let (info, errs) = Superblock::pick(&copy(3), &copy(4)[..100], DEVICE_BYTES).unwrap();
    assert_eq!(info.sb_seq, 3);
    assert_eq!(
        errs[1],
        Some(FormatError::Truncated {
            what: "superblock",
            need: 4096,
            have: 100
        })
    );
}

#[test]
fn foreign_copy_is_reported() {
    let mut other = sb_info();
    other.uuid = OTHER_UUID;
    other.sb_seq = 100;
    let theirs = sb_bytes(&other);
    let foreign = Some(FormatError::ForeignUuid { what: "superblock" });

    let (info, errs) = Superblock::pick(&copy(5), &theirs, DEVICE_BYTES).unwrap();
    assert_eq!(info.uuid, OTHER_UUID, "the newer copy wins");
    assert_eq!(errs, [foreign.clone(), None]);

    let (info, errs) = Superblock::pick(&theirs, &copy(500), DEVICE_BYTES).unwrap();
    assert_eq!(info.uuid, UUID);
    assert_eq!(errs, [foreign, None]);
}

#[test]
fn neither_copy_valid() {
    let zeros = vec![0u8; 4096];
    let errs = Superblock::pick(&damaged(1), &zeros, DEVICE_BYTES).unwrap_err();
    assert!(matches!(errs[0], FormatError::BadChecksum { .. }));
    assert!(matches!(errs[1], FormatError::BadMagic { found: 0, .. }));

    let errs = Superblock::pick(&[], &[], DEVICE_BYTES).unwrap_err();
    assert!(matches!(errs[0], FormatError::Truncated { have: 0, .. }));
    assert!(matches!(errs[1], FormatError::Truncated { have: 0, .. }));
}

#[test]
fn a_truncated_device_invalidates_both_copies() {
    let errs = Superblock::pick(&copy(1), &copy(2), DEVICE_BYTES / 2).unwrap_err();
    for e in errs {
        assert!(matches!(e, FormatError::PastDevice { .. }), "{e:?}");
    }
}
