//! The two superblock copies: which one recovery uses, what is wrong with
//! the other, and, when neither is usable, whether the device is a
//! ringcache cache at all and whether it was truncated.

use ringcache_ondisk::superblock::{SUPERBLOCK_MAGIC, SUPERBLOCK_OFFSETS, SuperblockInfo};
use ringcache_ondisk::{BLOCK_BYTES_U64, Superblock};

use super::report::{Report, Severity, structure};
use crate::device::Device;
use crate::text;

const COPY_NAMES: [&str; 2] = ["copy A", "copy B"];

/// Both copies; returns the one recovery uses, if any.
pub(super) fn check_superblocks(dev: &Device, rep: &mut Report) -> Option<SuperblockInfo> {
    let bytes = SUPERBLOCK_OFFSETS.map(|off| dev.bytes_clamped(off, BLOCK_BYTES_U64));
    rep.checked.superblock_copies = 2;
    match Superblock::pick(bytes[0], bytes[1], dev.len()) {
        Ok((sb, errs)) => {
            for (i, e) in errs.iter().enumerate() {
                if let Some(e) = e {
                    let note = if sb.clean {
                        ""
                    } else {
                        " (a crash during a superblock write also leaves this; the other copy is used)"
                    };
                    rep.add(
                        Severity::Error,
                        structure::SUPERBLOCK,
                        COPY_NAMES[i],
                        Some(SUPERBLOCK_OFFSETS[i]),
                        format!("{e}{note}"),
                    );
                }
            }
            // The copy pick took: the one that parses to what it returned.
            let used = (0..2)
                .find(|&i| Superblock::parse(bytes[i], dev.len()).ok().as_ref() == Some(&sb))
                .unwrap_or(0);
            let other = 1 - used;
            rep.add(
                Severity::Info,
                structure::SUPERBLOCK,
                COPY_NAMES[used],
                Some(SUPERBLOCK_OFFSETS[used]),
                format!(
                    "in use: sb_seq {}, format version {}, tag {:?}, uuid {}, {} shutdown{}",
                    sb.sb_seq,
                    sb.version as u32,
                    sb.tag,
                    text::uuid(&sb.uuid),
                    if sb.clean { "clean" } else { "unclean" },
                    if errs[other].is_none() {
                        ""
                    } else {
                        "; the other copy is damaged"
                    }
                ),
            );
            Some(sb)
        }
        Err(errs) => {
            let magic = SUPERBLOCK_MAGIC.to_le_bytes();
            let ours = bytes.iter().any(|b| b.get(..8) == Some(&magic[..]));
            if !ours {
                rep.failure = Some(format!(
                    "not a ringcache cache: neither superblock copy has the ringcache magic ({}; {})",
                    errs[0], errs[1]
                ));
                return None;
            }
            for (i, e) in errs.iter().enumerate() {
                rep.add(
                    Severity::Error,
                    structure::SUPERBLOCK,
                    COPY_NAMES[i],
                    Some(SUPERBLOCK_OFFSETS[i]),
                    e.to_string(),
                );
            }
            // A superblock that is fine but for the device being shorter
            // than it says is a truncated device: say so plainly.
            let formatted = bytes
                .iter()
                .filter_map(|b| Superblock::parse(b, u64::MAX).ok())
                .map(|sb| sb.geometry.device_bytes)
                .max();
            let truncated = if let Some(formatted) = formatted.filter(|&f| f > dev.len()) {
                Some(format!("the cache was formatted for {formatted}"))
            } else if dev.len() < 2 * BLOCK_BYTES_U64 {
                Some("shorter than the two superblock copies".to_string())
            } else {
                None
            };
            if let Some(why) = truncated {
                rep.add(
                    Severity::Error,
                    structure::DEVICE,
                    "device",
                    Some(dev.len()),
                    format!("truncated: the device is {} bytes, {why}", dev.len()),
                );
            }
            rep.add(
                Severity::Error,
                structure::DEVICE,
                "device",
                None,
                "no usable superblock: nothing else can be checked (the daemon would refuse this cache)",
            );
            None
        }
    }
}
