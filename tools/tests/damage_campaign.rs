//! Damage campaign: bit flips in copies of a populated cache, aimed at
//! every on-disk structure (superblock copies, checkpoint slots, log
//! blocks, region headers, data blocks) and anywhere at random. For every
//! trial: fsck runs to the end without panicking (and the store's loader
//! under it never panics); the store either refuses the image with an
//! error or opens it, and then every byte it serves is the byte that was
//! written there, under the coherency data it was written with: a miss is
//! fine, wrong data never is.
//!
//! 1000 trials by default (a few seconds); `RINGCACHE_DAMAGE_TRIALS=N` runs
//! more, `RINGCACHE_DAMAGE_SEED=S` replays one trial (the failure message
//! names its seed).

mod common;

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;

use common::*;
use ringcache::io::sim::{SimEngine, SimFaults};
use ringcache::store::{Segment, Store, StoreConfig};
use ringcache_ondisk::BLOCK_BYTES_U64;

/// What was written: (volume, key) -> (aux, size, cached bytes from 0).
type Oracle = BTreeMap<(Vec<u8>, Vec<u8>), (Vec<u8>, u64, Vec<u8>)>;

fn oracle() -> Oracle {
    let mut o = Oracle::new();
    o.insert(
        (b"vol1".to_vec(), b"alpha".to_vec()),
        (Vec::new(), 40_000, pattern(1, 40_000)),
    );
    o.insert(
        (b"vol1".to_vec(), BETA_KEY.to_vec()),
        (b"v1".to_vec(), 8192, pattern(2, 8192)),
    );
    o.insert(
        (b"vol2".to_vec(), b"gamma".to_vec()),
        (b"\x01\x02".to_vec(), 100_000, pattern(3, 65_536)),
    );
    o.insert(
        (b"vol1".to_vec(), b"delta".to_vec()),
        (Vec::new(), 4096, pattern(4, 4096)),
    );
    o
}

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Byte ranges of each structure in `image` that hold something.
fn targets(image: &[u8]) -> Vec<(&'static str, Vec<(u64, u64)>)> {
    let l = load_image(image);
    let g = l.sb.geometry;
    let nonzero_blocks = |from: u64, to: u64| -> Vec<(u64, u64)> {
        (from / BLOCK_BYTES_U64..to / BLOCK_BYTES_U64)
            .map(|b| b * BLOCK_BYTES_U64)
            .filter(|&o| {
                image[o as usize..(o + BLOCK_BYTES_U64) as usize]
                    .iter()
                    .any(|&x| x != 0)
            })
            .map(|o| (o, o + BLOCK_BYTES_U64))
            .collect()
    };
    let ckpt_end = g.ckpt_slot_offset(1) + g.ckpt_slot_bytes;
    let log_end = g.metalog_offset + g.metalog_bytes;
    let regions_end = g.region_offset(g.region_count - 1) + g.region_bytes;
    let headers: Vec<(u64, u64)> = (0..g.region_count)
        .map(|r| g.region_offset(r))
        .filter(|&o| {
            image[o as usize..(o + BLOCK_BYTES_U64) as usize]
                .iter()
                .any(|&x| x != 0)
        })
        .map(|o| (o, o + BLOCK_BYTES_U64))
        .collect();
    let data: Vec<(u64, u64)> = nonzero_blocks(g.region_offset(0), regions_end)
        .into_iter()
        .filter(|(o, _)| !headers.iter().any(|(h, _)| h == o))
        .collect();
    vec![
        ("superblock", vec![(0, 2 * BLOCK_BYTES_U64)]),
        ("checkpoint", nonzero_blocks(g.ckpt_offset, ckpt_end)),
        ("metadata log", nonzero_blocks(g.metalog_offset, log_end)),
        ("region header", headers),
        ("data block", data),
        ("anywhere", vec![(0, image.len() as u64)]),
    ]
}

#[derive(Default)]
struct Tally {
    /// Per structure: (trials, refused).
    by_target: BTreeMap<&'static str, (u64, u64)>,
    skipped: u64,
    refused: u64,
    served: u64,
    objects_read: u64,
    bytes_verified: u64,
    misses: u64,
}

/// One trial; `Err` says what went wrong (the caller adds the seed).
fn trial(
    image: &[u8],
    targets: &[(&'static str, Vec<(u64, u64)>)],
    file: &mut tempfile::NamedTempFile,
    seed: u64,
    t: &mut Tally,
) -> Result<(), String> {
    let mut x = seed;
    let (what, ranges) = &targets[(splitmix(&mut x) % targets.len() as u64) as usize];
    if ranges.is_empty() {
        t.skipped += 1;
        return Ok(());
    }
    t.by_target.entry(what).or_default().0 += 1;
    let (from, to) = ranges[(splitmix(&mut x) % ranges.len() as u64) as usize];
    let mut damaged = image.to_vec();
    let flips = 1 + splitmix(&mut x) % 3;
    let mut at = Vec::new();
    for _ in 0..flips {
        let off = from + splitmix(&mut x) % (to - from);
        let bit = (splitmix(&mut x) % 8) as u8;
        damaged[off as usize] ^= 1 << bit;
        at.push((off, bit));
    }
    let ctx = || format!("{what}, bits flipped at {at:?}");
    // fsck over the damaged image, from a file as a user runs it.
    file.as_file_mut()
        .seek(SeekFrom::Start(0))
        .map_err(|e| e.to_string())?;
    file.as_file_mut()
        .write_all(&damaged)
        .map_err(|e| e.to_string())?;
    let dev = ringcache_tools::device::Device::open(file.path()).map_err(|e| format!("{e:?}"))?;
    let report = ringcache_tools::fsck::run("damaged", &dev, false);
    drop(dev);
    if let Some(f) = &report.failure
        && f.contains("bug in ringcache")
    {
        return Err(format!("{}: fsck: {f}", ctx()));
    }
    // The store over it: refuses, or serves only what was written.
    let sim = Arc::new(SimEngine::from_image(damaged, SimFaults::default()));
    let store = match Store::open(sim, StoreConfig::default()) {
        Ok(s) => s,
        Err(e) => {
            if e.to_string().is_empty() {
                return Err(format!("{}: refused without a reason", ctx()));
            }
            t.refused += 1;
            t.by_target.entry(what).or_default().1 += 1;
            return Ok(());
        }
    };
    t.served += 1;
    let vols: BTreeMap<Vec<u8>, _> = store.volumes().into_iter().map(|(id, k)| (k, id)).collect();
    for ((vkey, key), (aux, size, bytes)) in oracle() {
        let Some(&v) = vols.get(&vkey) else { continue };
        let Some(info) = store
            .lookup(v, &key)
            .map_err(|e| format!("{}: lookup: {e}", ctx()))?
        else {
            continue;
        };
        if info.aux != aux || info.size != size {
            return Err(format!(
                "{}: {key:?} came back with aux {:?} size {} (written: {aux:?}, {size})",
                ctx(),
                info.aux,
                info.size
            ));
        }
        t.objects_read += 1;
        let segs = match store.read(info.id, 0, size) {
            Ok(s) => s,
            Err(_) => {
                t.misses += 1;
                continue;
            }
        };
        for s in segs {
            match s {
                Segment::Data { offset, data } => {
                    let o = offset as usize;
                    let want = bytes.get(o..o + data.len());
                    if want != Some(&data[..]) {
                        return Err(format!(
                            "{}: {key:?} served {} bytes at {offset} that were not written there",
                            ctx(),
                            data.len()
                        ));
                    }
                    t.bytes_verified += data.len() as u64;
                }
                Segment::Hole { .. } => t.misses += 1,
            }
        }
    }
    drop(store);
    Ok(())
}

#[test]
fn bit_flips_anywhere_never_crash_fsck_or_serve_wrong_bytes() {
    let trials: u64 = std::env::var("RINGCACHE_DAMAGE_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let only: Option<u64> = std::env::var("RINGCACHE_DAMAGE_SEED")
        .ok()
        .and_then(|v| v.parse().ok());
    // Both shapes a cache is found in: closed cleanly, and killed a second
    // after its last write (the log durable through its last block).
    let images = [clean_image(), durable_image()];
    let targets: Vec<_> = images.iter().map(|i| targets(i)).collect();
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    let mut t = Tally::default();
    let seeds: Vec<u64> = match only {
        Some(s) => vec![s],
        None => (0..trials).map(|i| 0xDA3A_6E00_0000 + i).collect(),
    };
    for &seed in &seeds {
        let i = (seed % 2) as usize;
        if let Err(e) = trial(&images[i], &targets[i], &mut file, seed, &mut t) {
            panic!("trial seed {seed} (RINGCACHE_DAMAGE_SEED={seed} replays it): {e}");
        }
    }
    eprintln!(
        "damage: {} trials: {} refused, {} served ({} objects read, {} bytes verified, {} misses)",
        seeds.len(),
        t.refused,
        t.served,
        t.objects_read,
        t.bytes_verified,
        t.misses
    );
    for (what, (n, refused)) in &t.by_target {
        eprintln!("  {what:<14} {n:>5} trials, {refused:>4} refused");
    }
    assert_eq!(t.refused + t.served + t.skipped, seeds.len() as u64);
    if only.is_none() {
        assert!(
            t.served > 0 && t.bytes_verified > 0,
            "the campaign read nothing back"
        );
        assert_eq!(
            t.by_target.len(),
            6,
            "every structure was hit: {:?}",
            t.by_target
        );
    }
}
