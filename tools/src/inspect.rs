//! `ringcache inspect`: what an offline cache holds, as the store would
//! recover it.
//!
//! Every view is built from `store::load` over the mapped device (the index
//! exactly as recovery rebuilds it, nothing written) plus the `ondisk`
//! parsers for the few header fields the index does not keep. Each view is
//! a serde struct: `--json` prints it as is, otherwise it is rendered as
//! text. docs/TOOLS.md documents the JSON schema of each view; a field
//! added here must be added there.
//!
//! One file for every view, larger than the others: the views' structs,
//! then the functions that build them, then those that render them, each
//! part in the order docs/TOOLS.md lists the views, whose schema it must
//! match field for field.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Result, anyhow, bail};
use ringcache::store::Loaded;
use ringcache::store::{ObjectId, ObjectView};
use ringcache_ondisk::record::OBJECT_FLAG_DIRTY;
use ringcache_ondisk::{BLOCK_BYTES_U64, CheckpointHeader, RegionHeader};
use serde::Serialize;
use zerocopy::FromBytes;

use crate::device::Device;
use crate::text;

/// `inspect DEV`: the summary.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub format_version: u32,
    pub tag: String,
    pub uuid: String,
    pub created_unix_secs: u64,
    pub created_utc: String,
    /// Size the cache was formatted for.
    pub device_bytes: u64,
    /// Size of the device now (may be larger).
    pub actual_device_bytes: u64,
    pub superblock_seq: u64,
    pub region_bytes: u64,
    pub region_count: u32,
    pub regions_in_use: u32,
    pub regions_free: u32,
    pub volumes: u64,
    pub objects: u64,
    pub dirty_objects: u64,
    pub extents: u64,
    pub bytes_cached: u64,
    pub last_checkpoint: Option<CheckpointSummary>,
    pub log_blocks_replayed: u64,
    pub log_records_replayed: u64,
    pub log_stop: String,
    pub clean_shutdown: bool,
    pub damage: Vec<String>,
}

/// The checkpoint recovery started from.
#[derive(Debug, Serialize)]
pub struct CheckpointSummary {
    pub slot: usize,
    pub seq: u64,
    pub log_seq: u64,
    pub created_unix_secs: u64,
    pub created_utc: String,
}

/// One row of `inspect DEV volumes`.
#[derive(Debug, Serialize)]
pub struct VolumeRow {
    pub id: u32,
    pub key: String,
    pub key_hex: String,
    pub objects: u64,
    pub extents: u64,
    pub bytes_cached: u64,
}

/// One row of `inspect DEV objects`, and the head of `inspect DEV object`.
#[derive(Debug, Serialize)]
pub struct ObjectRow {
    pub id: u64,
    pub volume_id: u32,
    /// The volume's key (as the command line takes it), `null` if the
    /// object names a volume the index does not hold.
    pub volume: Option<String>,
    pub key: String,
    pub key_hex: String,
    pub size: u64,
    pub data_gen: u64,
    pub dirty: bool,
    pub extents: u64,
    pub bytes_cached: u64,
    /// The cookie layer's record of its volume's coherency data, not a
    /// netfs file.
    pub internal: bool,
}

/// `inspect DEV object VOLUME KEY`.
#[derive(Debug, Serialize)]
pub struct ObjectDetail {
    #[serde(flatten)]
    pub row: ObjectRow,
    pub flags: u32,
    pub aux_hex: String,
    pub aux_len: usize,
    pub extent_list: Vec<ExtentRow>,
}

/// One extent of an object.
#[derive(Debug, Serialize)]
pub struct ExtentRow {
    pub logical_offset: u64,
    pub length: u32,
    pub region: u32,
    pub region_offset: u32,
    pub device_offset: u64,
}

/// What a region's header block says.
#[derive(Debug, Serialize)]
pub struct HeaderState {
    /// `valid`, `empty` (never written: all zero) or `invalid`.
    pub status: &'static str,
    /// The header's region_seq when valid.
    pub seq: Option<u64>,
    /// Why the header does not parse, when invalid.
    pub error: Option<String>,
}

/// One row of `inspect DEV regions`.
#[derive(Debug, Serialize)]
pub struct RegionRow {
    pub index: u32,
    pub seq: u64,
    /// `in-use` (holds live extents) or `free`.
    pub state: &'static str,
    pub live_bytes: u64,
    pub extents: u64,
    pub objects: u64,
    pub header: HeaderState,
}

/// The raw fields of a region header, whatever their validity.
#[derive(Debug, Serialize)]
pub struct RawRegionHeader {
    pub magic: String,
    pub format_version: u32,
    pub region_index: u32,
    pub region_seq: u64,
    pub uuid: String,
    pub crc: String,
}

/// One extent held in a region.
#[derive(Debug, Serialize)]
pub struct RegionExtent {
    pub region_offset: u32,
    pub length: u32,
    pub object_id: u64,
    pub volume: Option<String>,
    pub key: String,
    pub logical_offset: u64,
}

/// `inspect DEV region N`.
#[derive(Debug, Serialize)]
pub struct RegionDetail {
    #[serde(flatten)]
    pub row: RegionRow,
    pub device_offset: u64,
    pub region_bytes: u64,
    pub raw_header: RawRegionHeader,
    pub extent_list: Vec<RegionExtent>,
}

fn volume_key(loaded: &Loaded, id: u32) -> Option<String> {
    loaded.index().volume_key(id).map(text::key_text)
}

fn object_bytes(o: &ObjectView<'_>) -> u64 {
    o.extents().map(|e| u64::from(e.len)).sum()
}

/// The summary view.
pub fn summary(dev: &Device, loaded: &Loaded) -> Summary {
    let sb = &loaded.sb;
    let g = sb.geometry;
    let ix = loaded.index();
    let in_use = ix.regions().filter(|r| r.live_bytes() > 0).count() as u32;
    let last_checkpoint = loaded.ckpt_slot.and_then(|slot| {
        let head = dev.bytes(g.ckpt_slot_offset(slot), BLOCK_BYTES_U64)?;
        let info = CheckpointHeader::parse(head, &sb.uuid, g.ckpt_slot_bytes).ok()?;
        Some(CheckpointSummary {
            slot,
            seq: info.ckpt_seq,
            log_seq: info.log_seq,
            created_unix_secs: info.created_unix_secs,
            created_utc: text::utc(info.created_unix_secs),
        })
    });
    let r = &loaded.report;
    let mut damage = Vec::new();
    damage.extend(
        r.superblock_errors
            .iter()
            .map(|e| format!("superblock {e}")),
    );
    damage.extend(
        r.checkpoint_errors
            .iter()
            .map(|e| format!("checkpoint {e}")),
    );
    if let Some(why) = &r.reset {
        damage.push(format!("index reset to empty: {why}"));
    }
    if let Some(loss) = &r.log_loss {
        damage.push(loss.describe());
    }
    for region in &r.dropped_regions {
        damage.push(format!(
            "region {region}: header does not carry the region_seq of its extents; their data dropped"
        ));
    }
    Summary {
        format_version: sb.version as u32,
        tag: sb.tag.clone(),
        uuid: text::uuid(&sb.uuid),
        created_unix_secs: sb.created_unix_secs,
        created_utc: text::utc(sb.created_unix_secs),
        device_bytes: g.device_bytes,
        actual_device_bytes: dev.len(),
        superblock_seq: sb.sb_seq,
        region_bytes: g.region_bytes,
        region_count: g.region_count,
        regions_in_use: in_use,
        regions_free: g.region_count - in_use,
        volumes: ix.volumes().count() as u64,
        objects: ix.object_count() as u64,
        dirty_objects: r.dirty_objects,
        extents: ix.objects().map(|o| o.extent_count() as u64).sum(),
        bytes_cached: ix.objects().map(|o| object_bytes(&o)).sum(),
        last_checkpoint,
        log_blocks_replayed: r.log_blocks_replayed,
        log_records_replayed: r.log_records_replayed,
        log_stop: r.log_stop.clone(),
        clean_shutdown: r.clean_shutdown,
        damage,
    }
}

/// The volumes view.
pub fn volumes(loaded: &Loaded) -> Vec<VolumeRow> {
    let mut per: BTreeMap<u32, (u64, u64, u64)> = BTreeMap::new();
    for o in loaded.index().objects() {
        let e = per.entry(o.volume()).or_default();
        e.0 += 1;
        e.1 += o.extent_count() as u64;
        e.2 += object_bytes(&o);
    }
    loaded
        .index()
        .volumes()
        .map(|(id, key)| {
            let (objects, extents, bytes_cached) = per.get(&id).copied().unwrap_or_default();
            VolumeRow {
                id,
                key: text::key_text(key),
                key_hex: text::hex(key),
                objects,
                extents,
                bytes_cached,
            }
        })
        .collect()
}

fn object_row(loaded: &Loaded, o: &ObjectView<'_>) -> ObjectRow {
    ObjectRow {
        id: o.id(),
        volume_id: o.volume(),
        volume: volume_key(loaded, o.volume()),
        key: text::key_text(o.key()),
        key_hex: text::hex(o.key()),
        size: o.size(),
        data_gen: o.data_gen(),
        dirty: o.flags() & OBJECT_FLAG_DIRTY != 0,
        extents: o.extent_count() as u64,
        bytes_cached: object_bytes(o),
        internal: o.key() == ringcache::cookie::VOLUME_COHERENCY_KEY,
    }
}

fn find_volume(loaded: &Loaded, key_arg: &str) -> Result<u32> {
    let key = text::parse_key(key_arg).map_err(|e| anyhow!("volume key {e}"))?;
    loaded
        .index()
        .volume_id(&key)
        .ok_or_else(|| anyhow!("no volume with key {key_arg:?} in this cache"))
}

/// The objects view, of one volume or of all.
pub fn objects(loaded: &Loaded, volume: Option<&str>) -> Result<Vec<ObjectRow>> {
    let only = volume.map(|v| find_volume(loaded, v)).transpose()?;
    Ok(loaded
        .index()
        .objects()
        .filter(|o| only.is_none_or(|v| o.volume() == v))
        .map(|o| object_row(loaded, &o))
        .collect())
}

/// The view of one object, named by its volume's key and its own key.
pub fn object(loaded: &Loaded, volume: &str, key_arg: &str) -> Result<ObjectDetail> {
    let vid = find_volume(loaded, volume)?;
    let key = text::parse_key(key_arg).map_err(|e| anyhow!("object key {e}"))?;
    let ix = loaded.index();
    let Some(o) = ix.object_by_key(vid, &key) else {
        bail!("no object with key {key_arg:?} in volume {volume:?}");
    };
    let extent_list = o
        .extents()
        .map(|e| ExtentRow {
            logical_offset: e.offset,
            length: e.len,
            region: e.region,
            region_offset: e.region_off,
            device_offset: ix.device_offset(e.region, e.region_off),
        })
        .collect();
    Ok(ObjectDetail {
        row: object_row(loaded, &o),
        flags: o.flags(),
        aux_hex: text::hex(o.aux()),
        aux_len: o.aux().len(),
        extent_list,
    })
}

/// Parse the header block of region `index`.
pub fn header_state(dev: &Device, loaded: &Loaded, index: u32) -> HeaderState {
    let g = loaded.sb.geometry;
    let bytes = dev.bytes_clamped(g.region_offset(index), BLOCK_BYTES_U64);
    match RegionHeader::parse(bytes, index, &loaded.sb.uuid) {
        Ok(seq) => HeaderState {
            status: "valid",
            seq: Some(seq),
            error: None,
        },
        Err(_) if bytes.iter().take(64).all(|&b| b == 0) && bytes.len() >= 64 => HeaderState {
            status: "empty",
            seq: None,
            error: None,
        },
        Err(e) => HeaderState {
            status: "invalid",
            seq: None,
            error: Some(e.to_string()),
        },
    }
}

fn region_row(dev: &Device, loaded: &Loaded, index: u32, extents: u64, objects: u64) -> RegionRow {
    let (seq, live_bytes) = loaded
        .index()
        .region(index)
        .map(|r| (r.seq(), r.live_bytes()))
        .unwrap_or_default();
    RegionRow {
        index,
        seq,
        state: if live_bytes > 0 { "in-use" } else { "free" },
        live_bytes,
        extents,
        objects,
        header: header_state(dev, loaded, index),
    }
}

/// Every live extent, by region: (region_offset, length, object, logical offset).
fn extents_by_region(loaded: &Loaded) -> BTreeMap<u32, Vec<(u32, u32, ObjectId, u64)>> {
    let mut by: BTreeMap<u32, Vec<(u32, u32, ObjectId, u64)>> = BTreeMap::new();
    for o in loaded.index().objects() {
        for e in o.extents() {
            by.entry(e.region)
                .or_default()
                .push((e.region_off, e.len, o.id(), e.offset));
        }
    }
    for v in by.values_mut() {
        v.sort_unstable();
    }
    by
}

fn distinct_objects(v: &[(u32, u32, ObjectId, u64)]) -> u64 {
    let mut ids: Vec<ObjectId> = v.iter().map(|x| x.2).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.len() as u64
}

/// The regions view.
pub fn regions(dev: &Device, loaded: &Loaded) -> Vec<RegionRow> {
    let by = extents_by_region(loaded);
    (0..loaded.sb.geometry.region_count)
        .map(|i| {
            let v = by.get(&i).map(Vec::as_slice).unwrap_or(&[]);
            region_row(dev, loaded, i, v.len() as u64, distinct_objects(v))
        })
        .collect()
}

/// The view of region `index`.
pub fn region(dev: &Device, loaded: &Loaded, index: u32) -> Result<RegionDetail> {
    let g = loaded.sb.geometry;
    if index >= g.region_count {
        bail!(
            "no region {index}: this cache has regions 0..{}",
            g.region_count
        );
    }
    let by = extents_by_region(loaded);
    let v = by.get(&index).map(Vec::as_slice).unwrap_or(&[]);
    let bytes = dev.bytes_clamped(g.region_offset(index), BLOCK_BYTES_U64);
    let raw = RegionHeader::read_from_prefix(bytes).ok().map(|(h, _)| h);
    let raw_header = match raw {
        Some(h) => RawRegionHeader {
            magic: String::from_utf8_lossy(&h.magic.get().to_le_bytes())
                .chars()
                .map(|c| if c.is_ascii_graphic() { c } else { '.' })
                .collect(),
            format_version: h.format_version.get(),
            region_index: h.region_index.get(),
            region_seq: h.region_seq.get(),
            uuid: text::uuid(&h.uuid),
            crc: format!("{:#010x}", h.crc.get()),
        },
        None => bail!("region {index}: header block lies past the end of the device"),
    };
    let extent_list = v
        .iter()
        .map(|&(region_offset, length, object_id, logical_offset)| {
            let o = loaded.index().object(object_id);
            RegionExtent {
                region_offset,
                length,
                object_id,
                volume: o.and_then(|o| volume_key(loaded, o.volume())),
                key: o.map(|o| text::key_text(o.key())).unwrap_or_default(),
                logical_offset,
            }
        })
        .collect();
    Ok(RegionDetail {
        row: region_row(dev, loaded, index, v.len() as u64, distinct_objects(v)),
        device_offset: g.region_offset(index),
        region_bytes: g.region_bytes,
        raw_header,
        extent_list,
    })
}

// ------------------------------------------------------------------ text

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".into(), |v| v.to_string())
}

/// The summary as text.
pub fn render_summary(s: &Summary) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "format version   {}", s.format_version);
    let _ = writeln!(w, "tag              {:?}", s.tag);
    let _ = writeln!(w, "uuid             {}", s.uuid);
    let _ = writeln!(w, "created          {}", s.created_utc);
    let _ = writeln!(w, "device size      {}", text::bytes(s.device_bytes));
    if s.actual_device_bytes != s.device_bytes {
        let _ = writeln!(
            w,
            "  (device is {}; the rest is unused)",
            text::bytes(s.actual_device_bytes)
        );
    }
    let _ = writeln!(
        w,
        "regions          {} x {}: {} in use, {} free",
        s.region_count,
        text::bytes(s.region_bytes),
        s.regions_in_use,
        s.regions_free
    );
    let _ = writeln!(w, "volumes          {}", s.volumes);
    let _ = writeln!(
        w,
        "objects          {} ({} dirty)",
        s.objects, s.dirty_objects
    );
    let _ = writeln!(w, "extents          {}", s.extents);
    let _ = writeln!(w, "bytes cached     {}", text::bytes(s.bytes_cached));
    match &s.last_checkpoint {
        Some(c) => {
            let _ = writeln!(
                w,
                "last checkpoint  slot {}, seq {}, written {}, log from block {}",
                c.slot, c.seq, c.created_utc, c.log_seq
            );
        }
        None => {
            let _ = writeln!(w, "last checkpoint  none valid");
        }
    }
    let _ = writeln!(
        w,
        "log replayed     {} blocks, {} records (stopped at {})",
        s.log_blocks_replayed, s.log_records_replayed, s.log_stop
    );
    let _ = writeln!(
        w,
        "shutdown         {}",
        if s.clean_shutdown { "clean" } else { "unclean" }
    );
    if s.damage.is_empty() {
        let _ = writeln!(
            w,
            "damage           none found by recovery (run fsck to verify data)"
        );
    } else {
        let _ = writeln!(w, "damage");
        for d in &s.damage {
            let _ = writeln!(w, "  {d}");
        }
    }
    out
}

/// The volumes view as text.
pub fn render_volumes(rows: &[VolumeRow]) -> String {
    let mut out = format!(
        "{:>6} {:>8} {:>8} {:>14}  key\n",
        "id", "objects", "extents", "bytes"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:>6} {:>8} {:>8} {:>14}  {}",
            r.id, r.objects, r.extents, r.bytes_cached, r.key
        );
    }
    out
}

/// The objects view as text.
pub fn render_objects(rows: &[ObjectRow]) -> String {
    let mut out = format!(
        "{:>8} {:>14} {:>6} {:>5} {:>7} {:>14}  volume / key\n",
        "id", "size", "gen", "dirty", "extents", "bytes"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:>8} {:>14} {:>6} {:>5} {:>7} {:>14}  {} / {}",
            r.id,
            r.size,
            r.data_gen,
            if r.dirty { "yes" } else { "no" },
            r.extents,
            r.bytes_cached,
            opt(&r.volume),
            r.key
        );
        if r.internal {
            out.pop();
            out.push_str("  (internal: the volume's coherency data)\n");
        }
    }
    out
}

/// One object as text.
pub fn render_object(d: &ObjectDetail) -> String {
    let r = &d.row;
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "object           {}", r.id);
    let _ = writeln!(
        w,
        "volume           {} (id {})",
        opt(&r.volume),
        r.volume_id
    );
    let _ = writeln!(w, "key              {}", r.key);
    let _ = writeln!(w, "key hex          {}", r.key_hex);
    let _ = writeln!(w, "size             {}", text::bytes(r.size));
    let _ = writeln!(w, "data generation  {}", r.data_gen);
    let _ = writeln!(w, "dirty            {}", if r.dirty { "yes" } else { "no" });
    let _ = writeln!(w, "coherency data   {} bytes: {}", d.aux_len, d.aux_hex);
    let _ = writeln!(
        w,
        "cached           {} in {} extents",
        text::bytes(r.bytes_cached),
        r.extents
    );
    if !d.extent_list.is_empty() {
        let _ = writeln!(
            w,
            "{:>16} {:>10} {:>8} {:>12} {:>16}",
            "logical offset", "length", "region", "region off", "device off"
        );
        for e in &d.extent_list {
            let _ = writeln!(
                w,
                "{:>16} {:>10} {:>8} {:>12} {:>16}",
                e.logical_offset, e.length, e.region, e.region_offset, e.device_offset
            );
        }
    }
    out
}

fn header_text(h: &HeaderState) -> String {
    match (h.status, h.seq, &h.error) {
        ("valid", Some(seq), _) => format!("valid (seq {seq})"),
        (_, _, Some(e)) => format!("invalid: {e}"),
        (status, _, _) => status.to_string(),
    }
}

/// The regions view as text.
pub fn render_regions(rows: &[RegionRow]) -> String {
    let mut out = format!(
        "{:>7} {:>10} {:>7} {:>12} {:>8} {:>8}  header\n",
        "region", "seq", "state", "live bytes", "extents", "objects"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:>7} {:>10} {:>7} {:>12} {:>8} {:>8}  {}",
            r.index,
            r.seq,
            r.state,
            r.live_bytes,
            r.extents,
            r.objects,
            header_text(&r.header)
        );
    }
    out
}

/// One region as text.
pub fn render_region(d: &RegionDetail) -> String {
    let r = &d.row;
    let h = &d.raw_header;
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "region           {}", r.index);
    let _ = writeln!(w, "device offset    {}", d.device_offset);
    let _ = writeln!(w, "size             {}", text::bytes(d.region_bytes));
    let _ = writeln!(w, "state            {}", r.state);
    let _ = writeln!(w, "index seq        {}", r.seq);
    let _ = writeln!(w, "live bytes       {}", r.live_bytes);
    let _ = writeln!(w, "header           {}", header_text(&r.header));
    let _ = writeln!(w, "  magic          {}", h.magic);
    let _ = writeln!(w, "  format version {}", h.format_version);
    let _ = writeln!(w, "  region index   {}", h.region_index);
    let _ = writeln!(w, "  region seq     {}", h.region_seq);
    let _ = writeln!(w, "  uuid           {}", h.uuid);
    let _ = writeln!(w, "  crc            {}", h.crc);
    let _ = writeln!(w, "extents          {} of {} objects", r.extents, r.objects);
    if !d.extent_list.is_empty() {
        let _ = writeln!(
            w,
            "{:>12} {:>10} {:>8} {:>16}  volume / key",
            "region off", "length", "object", "logical offset"
        );
        for e in &d.extent_list {
            let _ = writeln!(
                w,
                "{:>12} {:>10} {:>8} {:>16}  {} / {}",
                e.region_offset,
                e.length,
                e.object_id,
                e.logical_offset,
                opt(&e.volume),
                e.key
            );
        }
    }
    out
}
