//! The metadata log: every block from the loaded checkpoint's log_seq on,
//! and its records, until replay stops; then whether what stopped it is
//! the normal end of the log, a torn last write, or damage with intact
//! blocks after it (which replay loses).

use ringcache_ondisk::metalog::parse_block;
use ringcache_ondisk::superblock::SuperblockInfo;
use ringcache_ondisk::{BLOCK_BYTES_U64, FormatError, RecordIter};

use super::is_zero;
use super::report::{Report, Severity, structure};
use crate::device::Device;

/// Every log block from the checkpoint's log_seq until replay stops, and
/// what stopped it.
pub(super) fn check_log(dev: &Device, sb: &SuperblockInfo, log_seq: u64, rep: &mut Report) {
    let g = sb.geometry;
    let n = g.metalog_blocks();
    let mut expected = log_seq;
    for _ in 0..n {
        let off = g.metalog_block_offset(expected);
        let at = At {
            seq: expected,
            ring: n,
            off,
        };
        let bytes = dev.bytes_clamped(off, BLOCK_BYTES_U64);
        match parse_block(bytes, &sb.uuid) {
            Ok(b) if b.seq == expected => {
                rep.checked.log_blocks += 1;
                let mut count = 0u64;
                for (i, rec) in RecordIter::new(b.payload).enumerate() {
                    if let Err(e) = rec.and_then(|r| r.check_geometry(&g)) {
                        at.add(
                            rep,
                            Severity::Error,
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
                    at.add(
                        rep,
                        Severity::Error,
                        format!(
                            "header says {} records, the block holds {count}",
                            b.record_count
                        ),
                    );
                }
                expected += 1;
            }
            Ok(b) if b.seq > expected => {
                at.add(
                    rep,
                    Severity::Error,
                    format!(
                        "block seq {} is where block {expected} belongs: the log was overwritten after a newer \
                         checkpoint that is now unreadable",
                        b.seq
                    ),
                );
                return;
            }
            Ok(b) if expected <= sb.durable_log_seq => {
                at.add(
                    rep,
                    Severity::Error,
                    format!(
                        "block seq {} from an earlier lap of the ring is where block {expected} belongs, \
                         which a flush had made durable (the superblock says the log was durable through \
                         seq {}): replay stops here and rolls back records acknowledged as durable",
                        b.seq, sb.durable_log_seq
                    ),
                );
                return;
            }
            Ok(b) => {
                at.add(
                    rep,
                    Severity::Info,
                    format!(
                        "end of log after {} blocks: block seq {} there is from an earlier lap of the ring",
                        expected - log_seq,
                        b.seq
                    ),
                );
                return;
            }
            Err(e) => {
                log_stop_on_invalid(dev, sb, log_seq, &at, &e, rep);
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
    at: &At,
    e: &FormatError,
    rep: &mut Report,
) {
    let g = sb.geometry;
    let n = g.metalog_blocks();
    let (expected, off) = (at.seq, at.off);
    let bytes = dev.bytes_clamped(off, BLOCK_BYTES_U64);
    // A block at or below the superblock's durable_log_seq was made durable
    // by a completed flush: whatever it looks like now, it is damage.
    let durable = expected <= sb.durable_log_seq;
    if is_zero(bytes) && !durable {
        at.add(
            rep,
            Severity::Info,
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
    if durable {
        at.add(
            rep,
            Severity::Error,
            format!(
                "{}; a flush had made this block durable (the superblock says the log was durable \
                 through seq {}), so this is damage, not a torn write: replay stops here and loses \
                 records acknowledged as durable: this block's{}",
                if is_zero(bytes) {
                    "the block is zeros".to_string()
                } else {
                    e.to_string()
                },
                sb.durable_log_seq,
                if following > 0 {
                    format!(
                        " and those of blocks {}..={} after it (it loses them)",
                        expected + 1,
                        expected + following
                    )
                } else {
                    String::new()
                }
            ),
        );
    } else if following > 0 {
        let note = if sb.clean {
            ""
        } else {
            " (a crash in the middle of a multi-block log write can also leave this)"
        };
        at.add(
            rep,
            Severity::Error,
            format!(
                "{e}; blocks {}..={} after it are valid, but replay stops here and loses them{note}",
                expected + 1,
                expected + following
            ),
        );
    } else if sb.clean {
        at.add(
            rep,
            Severity::Warning,
            format!(
                "end of log after {} blocks at a block that does not parse ({e}); replay needs nothing \
                 from it, but a clean shutdown does not leave one",
                expected - log_seq
            ),
        );
    } else {
        at.add(
            rep,
            Severity::Info,
            format!(
                "end of log after {} blocks at a torn last block ({e}), as an unclean shutdown leaves",
                expected - log_seq
            ),
        );
    }
}

/// Where in the log a finding is: the block of the ring (of `ring` blocks,
/// at byte `off`) where log block `seq` belongs.
struct At {
    seq: u64,
    ring: u64,
    off: u64,
}

impl At {
    fn add(&self, rep: &mut Report, severity: Severity, message: impl Into<String>) {
        rep.add(
            severity,
            structure::METADATA_LOG,
            format!(
                "block seq {} (ring position {})",
                self.seq,
                self.seq % self.ring
            ),
            Some(self.off),
            message,
        );
    }
}
