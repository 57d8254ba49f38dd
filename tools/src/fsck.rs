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

use std::collections::BTreeMap;

use indicatif::{ProgressBar, ProgressStyle};
use ringcache::store::{Loaded, StoreError};
use ringcache_ondisk::checkpoint::{CheckpointInfo, check_payload};
use ringcache_ondisk::metalog::parse_block;
use ringcache_ondisk::record::check_disjoint;
use ringcache_ondisk::superblock::{SUPERBLOCK_MAGIC, SUPERBLOCK_OFFSETS, SuperblockInfo};
use ringcache_ondisk::{
    BLOCK_BYTES_U64, CheckpointHeader, FormatError, Record, RecordIter, RegionHeader, Superblock,
    block_crc,
};
use serde::Serialize;

use crate::device::Device;
use crate::text;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Normal for a healthy cache; reported so the picture is complete.
    Info,
    /// Unexpected, but nothing is lost.
    Warning,
    /// Damage: fsck exits 1.
    Error,
}

impl Severity {
    fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// The kinds of structure a finding is about (the `structure` field).
pub mod structure {
    pub const DEVICE: &str = "device";
    pub const SUPERBLOCK: &str = "superblock";
    pub const CHECKPOINT: &str = "checkpoint";
    pub const METADATA_LOG: &str = "metadata-log";
    pub const REGION_HEADER: &str = "region-header";
    pub const DATA_BLOCK: &str = "data-block";
    pub const INDEX: &str = "index";
}

/// One thing fsck found.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// Which kind of structure: one of [`structure`].
    pub structure: &'static str,
    /// Which one, in words (e.g. `copy A`, `slot 1`, `block seq 12`).
    pub location: String,
    /// Byte offset on the device of the structure, where there is one.
    pub device_offset: Option<u64>,
    pub message: String,
}

/// How much was checked.
#[derive(Debug, Default, Serialize)]
pub struct Checked {
    pub superblock_copies: u32,
    pub checkpoint_slots: u32,
    pub checkpoint_records: u64,
    pub log_blocks: u64,
    pub log_records: u64,
    pub region_headers: u64,
    pub objects: u64,
    pub extents: u64,
    pub data_blocks: u64,
    pub data_bytes: u64,
}

/// Everything fsck has to say (`fsck --json` prints this).
#[derive(Debug, Serialize)]
pub struct Report {
    pub device: String,
    pub device_bytes: u64,
    /// The superblock's clean flag; `null` when no superblock is usable.
    pub clean_shutdown: Option<bool>,
    pub checked: Checked,
    pub findings: Vec<Finding>,
    pub errors: u64,
    pub warnings: u64,
    pub infos: u64,
    /// `clean`, `damaged` or `failed`.
    pub result: &'static str,
    pub exit_code: i32,
    /// Why fsck could not run to the end (exit code 2).
    pub failure: Option<String>,
}

impl Report {
    /// A report for a device that could not even be opened.
    pub fn failed(device: &str, why: String) -> Report {
        Report {
            device: device.to_string(),
            device_bytes: 0,
            clean_shutdown: None,
            checked: Checked::default(),
            findings: Vec::new(),
            errors: 0,
            warnings: 0,
            infos: 0,
            result: "failed",
            exit_code: 2,
            failure: Some(why),
        }
    }

    fn finish(mut self) -> Report {
        let count = |s| self.findings.iter().filter(|f| f.severity == s).count() as u64;
        self.errors = count(Severity::Error);
        self.warnings = count(Severity::Warning);
        self.infos = count(Severity::Info);
        (self.result, self.exit_code) = if self.failure.is_some() {
            ("failed", 2)
        } else if self.errors > 0 {
            ("damaged", 1)
        } else {
            ("clean", 0)
        };
        self
    }

    fn add(
        &mut self,
        severity: Severity,
        structure: &'static str,
        location: impl Into<String>,
        device_offset: Option<u64>,
        message: impl Into<String>,
    ) {
        self.findings.push(Finding {
            severity,
            structure,
            location: location.into(),
            device_offset,
            message: message.into(),
        });
    }

    /// The report as text for people.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let c = &self.checked;
        let _ = writeln!(
            out,
            "fsck {} ({})",
            self.device,
            text::bytes(self.device_bytes)
        );
        let _ = write!(
            out,
            "{}",
            if self.failure.is_some() && c.superblock_copies == 0 {
                String::new()
            } else {
                format!(
                    "checked: {} superblock copies, {} checkpoint slots ({} records), {} log blocks ({} records), \
             {} region headers, {} objects, {} extents, {} data blocks ({})\n",
                    c.superblock_copies,
                    c.checkpoint_slots,
                    c.checkpoint_records,
                    c.log_blocks,
                    c.log_records,
                    c.region_headers,
                    c.objects,
                    c.extents,
                    c.data_blocks,
                    text::bytes(c.data_bytes)
                )
            }
        );
        if let Some(clean) = self.clean_shutdown {
            let _ = writeln!(
                out,
                "last shutdown: {}",
                if clean { "clean" } else { "unclean" }
            );
        }
        for f in &self.findings {
            let at = f
                .device_offset
                .map(|o| format!(" (byte {o})"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{:<8} {:<14} {}{}: {}",
                f.severity.name(),
                f.structure,
                f.location,
                at,
                f.message
            );
        }
        if let Some(why) = &self.failure {
            let _ = writeln!(out, "fsck could not finish: {why}");
        }
        let _ = writeln!(
            out,
            "result: {} ({} errors, {} warnings, {} info)",
            self.result, self.errors, self.warnings, self.infos
        );
        out
    }
}

const COPY_NAMES: [&str; 2] = ["copy A", "copy B"];

fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// Check the device. `progress`: draw a progress bar of the data scan on
/// stderr.
pub fn run(name: &str, dev: &Device, progress: bool) -> Report {
    let mut rep = Report {
        device: name.to_string(),
        device_bytes: dev.len(),
        clean_shutdown: None,
        checked: Checked::default(),
        findings: Vec::new(),
        errors: 0,
        warnings: 0,
        infos: 0,
        result: "clean",
        exit_code: 0,
        failure: None,
    };
    let Some(sb) = check_superblocks(dev, &mut rep) else {
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

    let log_seq = check_checkpoints(dev, &sb, &loaded, &mut rep);
    match log_seq {
        Some(log_seq) => check_log(dev, &sb, log_seq, &mut rep),
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
    check_region_headers(dev, &sb, &loaded, &mut rep);
    check_index(&loaded, &mut rep);
    check_data(dev, &loaded, progress, &mut rep);
    rep.finish()
}

/// Both copies; returns the one recovery uses, if any.
fn check_superblocks(dev: &Device, rep: &mut Report) -> Option<SuperblockInfo> {
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
            if let Some(formatted) = formatted.filter(|&f| f > dev.len()) {
                rep.add(
                    Severity::Error,
                    structure::DEVICE,
                    "device",
                    Some(dev.len()),
                    format!(
                        "truncated: the device is {} bytes, the cache was formatted for {formatted}",
                        dev.len()
                    ),
                );
            } else if dev.len() < 2 * BLOCK_BYTES_U64 {
                rep.add(
                    Severity::Error,
                    structure::DEVICE,
                    "device",
                    Some(dev.len()),
                    format!(
                        "truncated: the device is {} bytes, shorter than the two superblock copies",
                        dev.len()
                    ),
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

/// Both checkpoint slots; returns the log_seq of the one recovery loaded.
fn check_checkpoints(
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

/// Every log block from the checkpoint's log_seq until replay stops, and
/// what stopped it.
fn check_log(dev: &Device, sb: &SuperblockInfo, log_seq: u64, rep: &mut Report) {
    let g = sb.geometry;
    let n = g.metalog_blocks();
    let loc = |seq: u64| format!("block seq {seq} (ring position {})", seq % n);
    let mut expected = log_seq;
    for _ in 0..n {
        let off = g.metalog_block_offset(expected);
        let bytes = dev.bytes_clamped(off, BLOCK_BYTES_U64);
        match parse_block(bytes, &sb.uuid) {
            Ok(b) if b.seq == expected => {
                rep.checked.log_blocks += 1;
                let mut count = 0u64;
                for (i, rec) in RecordIter::new(b.payload).enumerate() {
                    if let Err(e) = rec.and_then(|r| r.check_geometry(&g)) {
                        rep.add(
                            Severity::Error,
                            structure::METADATA_LOG,
                            loc(expected),
                            Some(off),
                            format!(
                                "the block verifies but its record {i} does not: {e}; \
                                 replay stops before this block and loses its records and every later block's"
                            ),
                        );
                        return;
                    }
                    count += 1;
                }
                rep.checked.log_records += count;
                if count != u64::from(b.record_count) {
                    rep.add(
                        Severity::Error,
                        structure::METADATA_LOG,
                        loc(expected),
                        Some(off),
                        format!(
                            "header says {} records, the block holds {count}",
                            b.record_count
                        ),
                    );
                }
                expected += 1;
            }
            Ok(b) if b.seq > expected => {
                rep.add(
                    Severity::Error,
                    structure::METADATA_LOG,
                    loc(expected),
                    Some(off),
                    format!(
                        "block seq {} is where block {expected} belongs: the log was overwritten after a newer \
                         checkpoint that is now unreadable",
                        b.seq
                    ),
                );
                return;
            }
            Ok(b) => {
                rep.add(
                    Severity::Info,
                    structure::METADATA_LOG,
                    loc(expected),
                    Some(off),
                    format!(
                        "end of log after {} blocks: block seq {} there is from an earlier lap of the ring",
                        expected - log_seq,
                        b.seq
                    ),
                );
                return;
            }
            Err(e) => {
                log_stop_on_invalid(dev, sb, log_seq, expected, off, &e, rep);
                return;
            }
        }
    }
    rep.add(
        Severity::Warning,
        structure::METADATA_LOG,
        "log",
        Some(g.metalog_offset),
        "every block of the ring is in sequence from the checkpoint: the log never ends",
    );
}

/// Replay stops at an invalid block: the end of the log, a torn last write,
/// or damage with intact blocks after it.
fn log_stop_on_invalid(
    dev: &Device,
    sb: &SuperblockInfo,
    log_seq: u64,
    expected: u64,
    off: u64,
    e: &FormatError,
    rep: &mut Report,
) {
    let g = sb.geometry;
    let n = g.metalog_blocks();
    let loc = format!("block seq {expected} (ring position {})", expected % n);
    let bytes = dev.bytes_clamped(off, BLOCK_BYTES_U64);
    if is_zero(bytes) {
        rep.add(
            Severity::Info,
            structure::METADATA_LOG,
            loc,
            Some(off),
            format!(
                "end of log after {} blocks: the next block was never written",
                expected - log_seq
            ),
        );
        return;
    }
    // Blocks in sequence after the invalid one mean it was not the end.
    let mut following = 0u64;
    while following + 1 < n {
        let seq = expected + following + 1;
        let b = dev.bytes_clamped(g.metalog_block_offset(seq), BLOCK_BYTES_U64);
        match parse_block(b, &sb.uuid) {
            Ok(b) if b.seq == seq => following += 1,
            _ => break,
        }
    }
    if following > 0 {
        let note = if sb.clean {
            ""
        } else {
            " (a crash in the middle of a multi-block log write can also leave this)"
        };
        rep.add(
            Severity::Error,
            structure::METADATA_LOG,
            loc,
            Some(off),
            format!(
                "{e}; blocks {}..={} after it are valid, but replay stops here and loses them{note}",
                expected + 1,
                expected + following
            ),
        );
    } else if sb.clean {
        rep.add(
            Severity::Warning,
            structure::METADATA_LOG,
            loc,
            Some(off),
            format!(
                "end of log after {} blocks at a block that does not parse ({e}); replay needs nothing \
                 from it, but a clean shutdown does not leave one",
                expected - log_seq
            ),
        );
    } else {
        rep.add(
            Severity::Info,
            structure::METADATA_LOG,
            loc,
            Some(off),
            format!(
                "end of log after {} blocks at a torn last block ({e}), as an unclean shutdown leaves",
                expected - log_seq
            ),
        );
    }
}

/// The header of every region that holds live extents, and of every region
/// whose extents recovery dropped because of its header.
fn check_region_headers(dev: &Device, sb: &SuperblockInfo, loaded: &Loaded, rep: &mut Report) {
    let g = sb.geometry;
    let ix = &loaded.ix;
    let dropped = &loaded.report.dropped_regions;
    for (r, region) in ix.regions.iter().enumerate() {
        let r = r as u32;
        let was_dropped = dropped.contains(&r);
        if region.live_bytes == 0 && !was_dropped {
            continue;
        }
        rep.checked.region_headers += 1;
        let off = g.region_offset(r);
        let loc = format!("region {r}");
        let bytes = dev.bytes_clamped(off, BLOCK_BYTES_U64);
        match RegionHeader::parse(bytes, r, &sb.uuid) {
            Ok(seq) if seq == region.seq && !was_dropped => {}
            Ok(seq) if seq > region.seq && !sb.clean => rep.add(
                Severity::Info,
                structure::REGION_HEADER,
                loc,
                Some(off),
                format!(
                    "region_seq {seq} is newer than the {} its extents name: the region was reused after the \
                     last durable metadata, as an unclean shutdown can leave; its old extents are dropped",
                    region.seq
                ),
            ),
            Ok(seq) => rep.add(
                Severity::Error,
                structure::REGION_HEADER,
                loc,
                Some(off),
                format!(
                    "region_seq {seq} but its extents were written under {}; recovery drops them",
                    region.seq
                ),
            ),
            Err(e) => rep.add(
                Severity::Error,
                structure::REGION_HEADER,
                loc,
                Some(off),
                format!("{e}; recovery drops the extents held in this region"),
            ),
        }
    }
}

fn object_name(loaded: &Loaded, id: u64) -> String {
    match loaded.ix.objects.get(&id) {
        Some(o) => format!(
            "object {id} ({} / {})",
            loaded
                .ix
                .volumes
                .get(&o.volume)
                .map(|k| text::key_text(k))
                .unwrap_or_else(|| format!("volume {}", o.volume)),
            text::key_text(&o.key)
        ),
        None => format!("object {id}"),
    }
}

/// The index recovery rebuilt: disjoint extents inside their object and
/// region, live bytes per region that add up, volumes that exist.
fn check_index(loaded: &Loaded, rep: &mut Report) {
    let ix = &loaded.ix;
    let g = ix.geometry;
    let mut live: BTreeMap<u32, u64> = BTreeMap::new();
    let mut extent_total = 0u64;
    for (&id, o) in &ix.objects {
        rep.checked.objects += 1;
        let mut pairs: Vec<(u64, u64)> = Vec::with_capacity(o.extents.len());
        if !ix.volumes.contains_key(&o.volume) {
            rep.add(
                Severity::Error,
                structure::INDEX,
                object_name(loaded, id),
                None,
                format!("names volume {}, which does not exist", o.volume),
            );
        }
        for (logical, e) in o.extents.iter() {
            extent_total += 1;
            let len = u64::from(e.len);
            pairs.push((logical, len));
            *live.entry(e.region).or_default() += len;
            let end = logical.saturating_add(len);
            let mut bad = Vec::new();
            if end > o.size {
                bad.push(format!("ends at {end}, past the object size {}", o.size));
            }
            if e.region >= g.region_count {
                bad.push(format!("names region {}, which does not exist", e.region));
            }
            if !u64::from(e.region_off).is_multiple_of(BLOCK_BYTES_U64)
                || u64::from(e.region_off) < BLOCK_BYTES_U64
                || u64::from(e.region_off) + len > g.region_bytes
            {
                bad.push(format!(
                    "region offset {} length {len} is not inside the region's data blocks",
                    e.region_off
                ));
            }
            if !logical.is_multiple_of(BLOCK_BYTES_U64) {
                bad.push(format!(
                    "logical offset {logical} is not a multiple of 4096"
                ));
            }
            for why in bad {
                rep.add(
                    Severity::Error,
                    structure::INDEX,
                    format!("{} extent at {logical}", object_name(loaded, id)),
                    None,
                    why,
                );
            }
        }
        if let Err(e) = check_disjoint(id, &mut pairs) {
            rep.add(
                Severity::Error,
                structure::INDEX,
                object_name(loaded, id),
                None,
                e.to_string(),
            );
        }
    }
    rep.checked.extents = extent_total;
    if extent_total != ix.extent_count {
        rep.add(
            Severity::Error,
            structure::INDEX,
            "index",
            None,
            format!(
                "the index counts {} extents, its objects hold {extent_total}",
                ix.extent_count
            ),
        );
    }
    for (r, region) in ix.regions.iter().enumerate() {
        let sum = live.get(&(r as u32)).copied().unwrap_or(0);
        if sum != region.live_bytes {
            rep.add(
                Severity::Error,
                structure::INDEX,
                format!("region {r}"),
                Some(g.region_offset(r as u32)),
                format!(
                    "live_bytes is {}, its extents add up to {sum}",
                    region.live_bytes
                ),
            );
        }
    }
}

/// Read every data block of every live extent and check its crc.
fn check_data(dev: &Device, loaded: &Loaded, progress: bool, rep: &mut Report) {
    let ix = &loaded.ix;
    let g = ix.geometry;
    let total: u64 = ix
        .objects
        .values()
        .flat_map(|o| o.extents.iter())
        .map(|(_, e)| u64::from(e.len))
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
    for (&id, o) in &ix.objects {
        for (logical, e) in o.extents.iter() {
            let blocks = u64::from(e.len).div_ceil(BLOCK_BYTES_U64);
            let first = u64::from(e.region_off) / BLOCK_BYTES_U64;
            let crcs = ix.regions.get(e.region as usize).map(|r| r.crcs.as_slice());
            let mut bad: Vec<u64> = Vec::new();
            for i in 0..blocks {
                let block_no = first + i;
                let off = g.region_offset(e.region) + block_no * BLOCK_BYTES_U64;
                let want = crcs.and_then(|c| c.get(block_no as usize)).copied();
                let ok = match (dev.bytes(off, BLOCK_BYTES_U64), want) {
                    (Some(block), Some(want)) => {
                        block_crc(id, o.data_gen, logical / BLOCK_BYTES_U64 + i, block) == want
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
