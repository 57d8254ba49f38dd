//! `record::check_disjoint`: the extents of one object may touch but never
//! overlap; an overlap is reported with the object and the logical offset
//! of the later extent, whatever order the extents come in.

use ringcache_ondisk::FormatError;
use ringcache_ondisk::record::check_disjoint;

#[test]
fn disjoint_in_any_order() {
    let mut e = [(8192, 4096), (0, 4096), (4096, 4096), (1 << 40, 1)];
    assert_eq!(check_disjoint(1, &mut e), Ok(()));
    assert_eq!(check_disjoint(1, &mut []), Ok(()));
    assert_eq!(check_disjoint(1, &mut [(5, 5)]), Ok(()));
}

#[test]
fn overlap_is_reported_at_the_later_extent() {
    let mut e = [(0, 8192), (4096, 4096)];
    assert_eq!(
        check_disjoint(42, &mut e),
        Err(FormatError::OverlappingExtents {
            object_id: 42,
            offset: 4096
        })
    );
    // Same extents, other order.
    let mut e = [(4096, 4096), (0, 8192)];
    assert_eq!(
        check_disjoint(42, &mut e),
        Err(FormatError::OverlappingExtents {
            object_id: 42,
            offset: 4096
        })
    );
}

#[test]
fn overlap_by_a_single_byte() {
    let mut e = [(0, 4097), (4096, 4096)];
    assert!(matches!(
        check_disjoint(1, &mut e),
        Err(FormatError::OverlappingExtents { offset: 4096, .. })
    ));
}

#[test]
fn duplicate_and_contained_extents() {
    let mut e = [(4096, 4096), (4096, 4096)];
    assert!(matches!(
        check_disjoint(1, &mut e),
        Err(FormatError::OverlappingExtents { offset: 4096, .. })
    ));
    let mut e = [(0, 1 << 20), (8192, 4096), (1 << 21, 4096)];
    assert!(matches!(
        check_disjoint(1, &mut e),
        Err(FormatError::OverlappingExtents { offset: 8192, .. })
    ));
}

#[test]
fn ends_near_u64_max_do_not_overflow() {
    let top = u64::MAX - 4095;
    let mut e = [(top, u64::MAX), (top - 4096, 4096)];
    assert_eq!(check_disjoint(1, &mut e), Ok(()));
    let mut e = [(top, 4096), (top - 4096, 8192)];
    assert!(matches!(
        check_disjoint(1, &mut e),
        Err(FormatError::OverlappingExtents { offset, .. }) if offset == top
    ));
}
