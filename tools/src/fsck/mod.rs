//! `ringcache fsck`: verify every checksum of an offline cache and the
//! consistency of the index recovery rebuilds from it.
//!
//! Read-only: the device is mapped under a shared lock and nothing is ever
//! written. Every structure is parsed with the `ondisk` parsers and the
//! index is the one `store::load` rebuilds, so fsck judges the device
//! exactly as the daemon's recovery would read it.
//!
//! Severities: `error` is damage (exit 1): something the cache wrote is not
//! as written, or the index contradicts itself. `warning` is unexpected but
//! loses nothing. `info` is what a healthy cache may show, such as a torn
//! last log block after an unclean shutdown or a checkpoint slot never
//! written. fsck cannot tell which writes were flushed before a crash, so a
//! data block whose crc fails is an error even though a crash can leave
//! such blocks in the unflushed tail (see docs/TOOLS.md).

//!
//! One module per on-disk structure, in the order fsck checks them:
//! [`superblock`], [`checkpoint`], [`metalog`], [`region`] (headers),
//! [`index`] (what recovery rebuilt) and [`data`] (every block's crc);
//! [`report`] holds what they find.

mod checkpoint;
mod data;
mod index;
mod metalog;
mod region;
mod report;
mod superblock;

use ringcache::store::StoreError;

use crate::device::Device;

pub use report::{Checked, Finding, Report, Severity, structure};

/// Whether `bytes` were never written (all zero).
fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// Check the device. `progress`: draw a progress bar of the data scan on
/// stderr.
pub fn run(name: &str, dev: &Device, progress: bool) -> Report {
    let mut rep = Report::new(name, dev.len());
    let Some(sb) = superblock::check_superblocks(dev, &mut rep) else {
        return rep.finish();
    };
    rep.clean_shutdown = Some(sb.clean);

    // The index as recovery rebuilds it. The loader is the store's own; a
    // panic in it on a hostile image is a bug there: reported, not a crash
    // of fsck.
    let loaded = match crate::guard::catch(|| ringcache::store::load(dev)) {
        Ok(Ok(l)) => l,
        Ok(Err(StoreError::Corrupt(e))) => {
            rep.add(
                Severity::Error,
                structure::DEVICE,
                "recovery",
                None,
                format!("recovery refuses the cache: {e}"),
            );
            return rep.finish();
        }
        Ok(Err(e)) => {
            rep.failure = Some(format!("recovery cannot load the cache: {e}"));
            return rep.finish();
        }
        Err(why) => {
            rep.failure = Some(format!(
                "the store's loader failed on this image ({why}); this is a bug in ringcache, \
                 whatever the image holds"
            ));
            return rep.finish();
        }
    };

    let log_seq = checkpoint::check_checkpoints(dev, &sb, &loaded, &mut rep);
    match log_seq {
        Some(log_seq) => metalog::check_log(dev, &sb, log_seq, &mut rep),
        None => rep.add(
            Severity::Info,
            structure::METADATA_LOG,
            "log",
            Some(sb.geometry.metalog_offset),
            "not checked: there is no valid checkpoint to replay it from",
        ),
    }
    if let Some(why) = &loaded.report.reset {
        rep.add(
            Severity::Error,
            structure::INDEX,
            "index",
            None,
            format!("recovery resets the cache to empty: {why}"),
        );
    }
    region::check_region_headers(dev, &sb, &loaded, &mut rep);
    index::check_index(&loaded, &mut rep);
    data::check_data(dev, &loaded, progress, &mut rep);
    rep.finish()
}
