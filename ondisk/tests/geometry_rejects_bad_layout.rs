//! A superblock whose layout is impossible is refused, one error per
//! reason: offsets and sizes that are not whole blocks, region sizes and
//! counts out of range, a checkpoint slot or a log too small to work,
//! sizes that overflow, areas that overlap (slots over the superblocks, the
//! log over the slots, regions over the log), regions past the end of the
//! formatted size, and a device shorter than the superblock says (truncated).
//! Each case is checked on `Geometry::validate` and again through
//! `Superblock::parse` of a superblock with a good crc.

mod common;

use common::*;
use ringcache_ondisk::superblock::Geometry;
use ringcache_ondisk::{FormatError, Superblock};

/// Check that `g` is refused with `want` by validate and by parse.
fn refused(g: Geometry, actual_device_bytes: u64, want: FormatError) {
    assert_eq!(g.validate(actual_device_bytes), Err(want.clone()), "{g:?}");
    let b = sb_bytes_with(g);
    assert_eq!(
        Superblock::parse(&b, actual_device_bytes),
        Err(want),
        "parse {g:?}"
    );
}

fn out_of_range(field: &'static str, value: u64, why: &'static str) -> FormatError {
    FormatError::OutOfRange {
        what: "superblock",
        field,
        value,
        why,
    }
}

#[test]
fn the_base_layout_is_valid() {
    let g = geometry();
    assert_eq!(g.validate(DEVICE_BYTES), Ok(()));
    assert_eq!(g.ckpt_offset, 8192);
    assert_eq!(g.metalog_offset, 8192 + 2 * g.ckpt_slot_bytes);
    assert!(g.regions_offset >= g.metalog_offset + g.metalog_bytes);
}

#[test]
fn offsets_and_sizes_must_be_whole_blocks() {
    let base = geometry();
    // (field, damage it and return its new value)
    type Damage = fn(&mut Geometry) -> u64;
    let cases: [(&str, Damage); 6] = [
        ("region_bytes", |g| {
            g.region_bytes += 1;
            g.region_bytes
        }),
        ("regions_offset", |g| {
            g.regions_offset += 512;
            g.regions_offset
        }),
        ("ckpt_offset", |g| {
            g.ckpt_offset += 1;
            g.ckpt_offset
        }),
        ("ckpt_slot_bytes", |g| {
            g.ckpt_slot_bytes -= 4095;
            g.ckpt_slot_bytes
        }),
        ("metalog_offset", |g| {
            g.metalog_offset += 2048;
            g.metalog_offset
        }),
        ("metalog_bytes", |g| {
            g.metalog_bytes += 100;
            g.metalog_bytes
        }),
    ];
    for (field, damage) in cases {
        let mut g = base;
        let value = damage(&mut g);
        refused(
            g,
            DEVICE_BYTES,
            out_of_range(field, value, "not a multiple of 4096"),
        );
    }
}

#[test]
fn region_bytes_out_of_range() {
    for region_bytes in [0, 4096, (64 << 10) - 4096, (1 << 30) + 4096, 1 << 40] {
        let mut g = geometry();
        g.region_bytes = region_bytes;
        refused(
            g,
            DEVICE_BYTES,
            out_of_range("region_bytes", region_bytes, "must be 64 KiB ..= 1 GiB"),
        );
    }
}

#[test]
fn region_bytes_limits_are_inclusive() {
    let mut g = geometry();
    g.region_bytes = 64 << 10;
    assert_eq!(g.validate(DEVICE_BYTES), Ok(()));
    g.region_bytes = 1 << 30;
    g.region_count = 2;
    g.device_bytes = g.regions_offset + 2 * g.region_bytes;
    assert_eq!(g.validate(g.device_bytes), Ok(()));
}

#[test]
fn fewer_than_two_regions() {
    for region_count in [0, 1] {
        let mut g = geometry();
        g.region_count = region_count;
        refused(
            g,
            DEVICE_BYTES,
            out_of_range(
                "region_count",
                region_count.into(),
                "a cache needs at least 2 regions",
            ),
        );
    }
}

#[test]
fn checkpoint_slot_smaller_than_two_blocks() {
    for slot in [0, 4096] {
        let mut g = geometry();
        g.ckpt_slot_bytes = slot;
        refused(
            g,
            DEVICE_BYTES,
            out_of_range(
                "ckpt_slot_bytes",
                slot,
                "a checkpoint slot needs at least 2 blocks",
            ),
        );
    }
}

#[test]
fn metadata_log_smaller_than_four_blocks() {
    for log in [0, 4096, 12288] {
        let mut g = geometry();
        g.metalog_bytes = log;
        refused(
            g,
            DEVICE_BYTES,
            out_of_range(
                "metalog_bytes",
                log,
                "the metadata log needs at least 4 blocks",
            ),
        );
    }
}

#[test]
fn sizes_that_overflow() {
    let top = u64::MAX - 4095;

    let mut g = geometry();
    g.ckpt_slot_bytes = 1 << 63;
    refused(
        g,
        DEVICE_BYTES,
        out_of_range("ckpt_slot_bytes", 1 << 63, "overflows"),
    );

    let mut g = geometry();
    g.ckpt_offset = top;
    refused(
        g,
        DEVICE_BYTES,
        out_of_range("ckpt_offset", top, "overflows"),
    );

    let mut g = geometry();
    g.metalog_offset = top;
    refused(
        g,
        DEVICE_BYTES,
        out_of_range("metalog_bytes", g.metalog_bytes, "overflows"),
    );

    let mut g = geometry();
    g.regions_offset = top;
    refused(
        g,
        DEVICE_BYTES,
        out_of_range(
            "region_count",
            g.region_count.into(),
            "regions overflow the address space",
        ),
    );

    let mut g = geometry();
    g.region_count = u32::MAX;
    g.region_bytes = 1 << 30;
    // 2^32 regions of 1 GiB fit in u64 (2^62 bytes): this one is past the
    // device, not an overflow.
    refused(
        g,
        DEVICE_BYTES,
        FormatError::PastDevice {
            what: "regions",
            end: g.regions_offset + u64::from(u32::MAX) * (1 << 30),
            device_bytes: DEVICE_BYTES,
        },
    );
}

#[test]
fn checkpoint_slots_over_the_superblocks() {
    for ckpt_offset in [0, 4096] {
        let mut g = geometry();
        g.ckpt_offset = ckpt_offset;
        refused(
            g,
            DEVICE_BYTES,
            FormatError::Overlap {
                what: "checkpoint slots",
                other: "superblocks",
            },
        );
    }
}

#[test]
fn log_over_the_checkpoint_slots() {
    let mut g = geometry();
    // Ends one block into slot 1.
    g.metalog_offset = g.ckpt_offset + 2 * g.ckpt_slot_bytes - 4096;
    refused(
        g,
        DEVICE_BYTES,
        FormatError::Overlap {
            what: "metadata log",
            other: "checkpoint slots",
        },
    );
}

#[test]
fn regions_over_the_log() {
    let mut g = geometry();
    g.regions_offset = g.metalog_offset + g.metalog_bytes - 4096;
    refused(
        g,
        DEVICE_BYTES,
        FormatError::Overlap {
            what: "regions",
            other: "metadata log",
        },
    );
}

#[test]
fn areas_may_touch() {
    let mut g = geometry();
    g.regions_offset = g.metalog_offset + g.metalog_bytes;
    assert_eq!(g.validate(DEVICE_BYTES), Ok(()));
}

#[test]
fn regions_past_the_formatted_size() {
    let mut g = geometry();
    g.region_count += 1;
    let end = g.regions_offset + u64::from(g.region_count) * g.region_bytes;
    assert!(end > DEVICE_BYTES);
    refused(
        g,
        DEVICE_BYTES,
        FormatError::PastDevice {
            what: "regions",
            end,
            device_bytes: DEVICE_BYTES,
        },
    );
}

#[test]
fn device_shorter_than_formatted() {
    let g = geometry();
    for actual in [0, 4096, DEVICE_BYTES - 1] {
        refused(
            g,
            actual,
            FormatError::PastDevice {
                what: "superblock device_bytes (device truncated?)",
                end: DEVICE_BYTES,
                device_bytes: actual,
            },
        );
    }
}
