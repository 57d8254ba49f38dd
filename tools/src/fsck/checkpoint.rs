//! The two checkpoint slots: each header, its payload's crc and every
//! record in it, the counts the header claims, and which slot recovery
//! loaded (whose log_seq is where the metadata log check starts).

use ringcache::store::Loaded;
use ringcache_ondisk::checkpoint::{CheckpointInfo, check_payload};
use ringcache_ondisk::superblock::SuperblockInfo;
use ringcache_ondisk::{BLOCK_BYTES_U64, CheckpointHeader, FormatError, Record, RecordIter};

use super::is_zero;
use super::report::{Report, Severity, structure};
use crate::device::Device;
use crate::text;

/// Both checkpoint slots; returns the log_seq of the one recovery loaded.
pub(super) fn check_checkpoints(
    dev: &Device,
    sb: &SuperblockInfo,
    loaded: &Loaded,
    rep: &mut Report,
) -> Option<u64> {
    let g = sb.geometry;
    let mut loaded_log_seq = None;
    for slot in 0..2 {
        rep.checked.checkpoint_slots += 1;
        let off = g.ckpt_slot_offset(slot);
        let loc = format!("slot {slot}");
        let head = dev.bytes_clamped(off, BLOCK_BYTES_U64);
        let info = match CheckpointHeader::parse(head, &sb.uuid, g.ckpt_slot_bytes) {
            Ok(info) => info,
            Err(FormatError::BadMagic { found: 0, .. }) if is_zero(head) => {
                rep.add(
                    Severity::Info,
                    structure::CHECKPOINT,
                    loc,
                    Some(off),
                    "empty (never written since format)",
                );
                continue;
            }
            Err(e) => {
                rep.add(
                    Severity::Error,
                    structure::CHECKPOINT,
                    loc,
                    Some(off),
                    format!("header: {e}{}", fallback_note(sb, loaded, slot)),
                );
                continue;
            }
        };
        match check_slot_payload(dev, sb, off, &info, rep) {
            Err(why) => {
                rep.add(
                    Severity::Error,
                    structure::CHECKPOINT,
                    loc,
                    Some(off + BLOCK_BYTES_U64),
                    format!(
                        "checkpoint seq {}: {why}{}",
                        info.ckpt_seq,
                        fallback_note(sb, loaded, slot)
                    ),
                );
            }
            Ok(records) => {
                let used = loaded.ckpt_slot == Some(slot);
                if used {
                    loaded_log_seq = Some(info.log_seq);
                }
                rep.add(
                    Severity::Info,
                    structure::CHECKPOINT,
                    loc,
                    Some(off),
                    format!(
                        "checkpoint seq {} written {}: {} records ({} volumes, {} objects, {} extents), log from block {}{}",
                        info.ckpt_seq,
                        text::utc(info.created_unix_secs),
                        records,
                        info.volume_count,
                        info.object_count,
                        info.extent_count,
                        info.log_seq,
                        if used {
                            "; recovery loads this one"
                        } else {
                            "; older, not used"
                        }
                    ),
                );
            }
        }
    }
    if loaded.ckpt_slot.is_some() && loaded_log_seq.is_none() {
        // Recovery loaded a slot this pass rejected: the two disagree.
        rep.add(
            Severity::Error,
            structure::CHECKPOINT,
            format!("slot {}", loaded.ckpt_slot.unwrap_or(0)),
            None,
            "recovery loaded a checkpoint that fsck rejects",
        );
    }
    loaded_log_seq
}

/// What recovery does about a damaged checkpoint in `slot`.
fn fallback_note(sb: &SuperblockInfo, loaded: &Loaded, slot: usize) -> String {
    let crash = if sb.clean {
        ""
    } else {
        " (a crash during a checkpoint write also leaves this)"
    };
    match loaded.ckpt_slot {
        Some(other) if other != slot => format!(
            "; recovery loads slot {other} instead, with what the log holds after it{crash}"
        ),
        _ => format!("; recovery has no checkpoint to load{crash}"),
    }
}

/// Payload crc, then every record: it parses, names locations inside the
/// device, and the counts match the header. Returns the record count.
fn check_slot_payload(
    dev: &Device,
    sb: &SuperblockInfo,
    slot_off: u64,
    info: &CheckpointInfo,
    rep: &mut Report,
) -> Result<u64, String> {
    let g = sb.geometry;
    let payload = dev
        .bytes(slot_off + BLOCK_BYTES_U64, info.payload_bytes)
        .ok_or("payload runs past the end of the device")?;
    check_payload(info, payload).map_err(|e| e.to_string())?;
    let (mut volumes, mut objects, mut extents, mut records) = (0u64, 0u64, 0u64, 0u64);
    let mut regions_seen = vec![false; g.region_count as usize];
    for (i, rec) in RecordIter::new(payload).enumerate() {
        let rec = rec
            .and_then(|r| r.check_geometry(&g).map(|()| r))
            .map_err(|e| format!("record {i}: {e}"))?;
        records += 1;
        match rec {
            Record::Volume { .. } => volumes += 1,
            Record::Object { .. } => objects += 1,
            Record::Region { region_index, .. } => {
                if let Some(seen) = regions_seen.get_mut(region_index as usize) {
                    *seen = true;
                }
            }
            Record::CkptExtent { region_index, .. } => {
                extents += 1;
                if !regions_seen
                    .get(region_index as usize)
                    .copied()
                    .unwrap_or(false)
                {
                    return Err(format!(
                        "record {i}: extent in region {region_index} before that region's Region record"
                    ));
                }
            }
            other => {
                rep.add(
                    Severity::Warning,
                    structure::CHECKPOINT,
                    format!("checkpoint seq {} record {i}", info.ckpt_seq),
                    None,
                    format!(
                        "a {:?} record, which only the metadata log holds",
                        other.kind()
                    ),
                );
            }
        }
    }
    rep.checked.checkpoint_records += records;
    for (what, header, found) in [
        ("volume", info.volume_count, volumes),
        ("object", info.object_count, objects),
        ("extent", info.extent_count, extents),
    ] {
        if header != found {
            return Err(format!(
                "header says {header} {what} records, the payload holds {found}"
            ));
        }
    }
    Ok(records)
}
