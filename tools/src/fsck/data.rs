//! The data blocks: every block of every live extent read back and its
//! crc checked against the one the index holds for it, with a progress bar
//! on a terminal (this is the part of fsck that takes time).

use indicatif::{ProgressBar, ProgressStyle};
use ringcache::store::Loaded;
use ringcache_ondisk::{BLOCK_BYTES_U64, block_crc};

use super::index::object_name;
use super::report::{Report, Severity, structure};
use crate::device::Device;

/// Read every data block of every live extent and check its crc.
pub(super) fn check_data(dev: &Device, loaded: &Loaded, progress: bool, rep: &mut Report) {
    let ix = loaded.index();
    let g = ix.geometry();
    let total: u64 = ix
        .objects()
        .flat_map(|o| o.extents())
        .map(|e| u64::from(e.len))
        .sum();
    let bar = if progress {
        let style = ProgressStyle::with_template(
            "checking data {bar:40.cyan/blue} {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        ProgressBar::new(total).with_style(style)
    } else {
        ProgressBar::hidden()
    };
    for o in ix.objects() {
        let id = o.id();
        for e in o.extents() {
            let logical = e.offset;
            let blocks = u64::from(e.len).div_ceil(BLOCK_BYTES_U64);
            let first = u64::from(e.region_off) / BLOCK_BYTES_U64;
            let crcs = ix.region(e.region).map(|r| r.crcs());
            let mut bad: Vec<u64> = Vec::new();
            for i in 0..blocks {
                let block_no = first + i;
                let off = g.region_offset(e.region) + block_no * BLOCK_BYTES_U64;
                let want = crcs.and_then(|c| c.get(block_no as usize)).copied();
                let ok = match (dev.bytes(off, BLOCK_BYTES_U64), want) {
                    (Some(block), Some(want)) => {
                        block_crc(id, o.data_gen(), logical / BLOCK_BYTES_U64 + i, block) == want
                    }
                    _ => false,
                };
                rep.checked.data_blocks += 1;
                if !ok {
                    bad.push(i);
                }
            }
            rep.checked.data_bytes += u64::from(e.len);
            bar.inc(u64::from(e.len));
            if let Some(&i) = bad.first() {
                let block_no = first + i;
                rep.add(
                    Severity::Error,
                    structure::DATA_BLOCK,
                    format!(
                        "region {} block {block_no}, {} logical block {}",
                        e.region,
                        object_name(loaded, id),
                        logical / BLOCK_BYTES_U64 + i
                    ),
                    Some(g.region_offset(e.region) + block_no * BLOCK_BYTES_U64),
                    format!(
                        "{} of the {blocks} blocks of the extent at {logical} (length {}) fail their crc{}; \
                         reads of them are misses",
                        bad.len(),
                        e.len,
                        if bad.len() > 1 {
                            format!(" (blocks {})", block_list(&bad, first))
                        } else {
                            String::new()
                        }
                    ),
                );
            }
        }
    }
    bar.finish_and_clear();
}

fn block_list(bad: &[u64], first: u64) -> String {
    let mut parts: Vec<String> = bad
        .iter()
        .take(8)
        .map(|i| (first + i).to_string())
        .collect();
    if bad.len() > 8 {
        parts.push("...".into());
    }
    parts.join(", ")
}
