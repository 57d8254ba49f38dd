//! The daemon's metrics in the Prometheus text format (version 0.0.4):
//! a latency histogram per request op and the counters of `Stats`, under
//! the prefix `ringcache_`.
//!
//! The histograms are atomics made at startup, one per opcode in a fixed
//! array: timing a request is two clock reads and two relaxed atomic adds,
//! with no allocation, no lock and no lookup by name. A scrape snapshots
//! them and the counters and hands the snapshot to `prometheus-client`'s
//! text encoder (names, HELP and TYPE lines, label escaping, `le` bounds
//! written as other Prometheus clients write them). `prometheus-client`'s
//! own `Histogram` is not used on the hot path: it takes a lock per
//! observation, and every connection's reads would share it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use super::server::Daemon;
use crate::proto::Op;

/// The `Content-Type` of the metrics text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the latency buckets in nanoseconds: 5 µs to 1 s in
/// 1-2-5 steps, which spans a cached read on a fast device (a few µs of
/// daemon time) to a flush of a slow one. Slower requests land in the
/// `+Inf` bucket only.
pub(super) const BUCKET_BOUNDS_NS: [u64; 17] = [
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    50_000_000,
    100_000_000,
    200_000_000,
    500_000_000,
    1_000_000_000,
];

/// Buckets of one histogram: the bounded ones and the one above them.
const BUCKETS: usize = BUCKET_BOUNDS_NS.len() + 1;
/// Histograms, indexed by opcode (slot 0 is never used).
const OP_SLOTS: usize = Op::ALL.len() + 1;

/// What a counter is, for its TYPE line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StatKind {
    /// Only ever grows (exported with the suffix `_total`).
    Counter,
    /// A current value: goes up and down.
    Gauge,
}

/// One of the daemon's counters: its `Stats` name (`group.name`), value,
/// kind and what it counts (the metric's HELP).
#[derive(Debug, Clone)]
pub(super) struct Stat {
    pub(super) name: String,
    pub(super) value: u64,
    pub(super) kind: StatKind,
    pub(super) help: &'static str,
}

/// The latency of one op: observations per bucket (not cumulative) and
/// their sum. Aligned so that two ops' counts never share a cache line.
#[repr(align(64))]
#[derive(Default)]
struct OpHistogram {
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

/// Request latency by op: from the request read off the socket to its
/// reply handed to the socket writer.
pub(super) struct OpLatency {
    ops: [OpHistogram; OP_SLOTS],
}

impl Default for OpLatency {
    fn default() -> Self {
        OpLatency {
            ops: std::array::from_fn(|_| OpHistogram::default()),
        }
    }
}

impl OpLatency {
    /// A request of `op` that arrived at `started` is answered now.
    pub(super) fn observe(&self, op: Op, started: Instant) {
        self.observe_until(op, started, Instant::now());
    }

    /// A request of `op` that arrived at `started` was answered at `now`
    /// (one clock read for a batch of replies).
    pub(super) fn observe_until(&self, op: Op, started: Instant, now: Instant) {
        let ns = u64::try_from(now.saturating_duration_since(started).as_nanos());
        self.observe_ns(op, ns.unwrap_or(u64::MAX));
    }

    fn observe_ns(&self, op: Op, ns: u64) {
        let Some(h) = self.ops.get(op as usize) else {
            return;
        };
        // The first bucket whose bound is at least `ns` (Prometheus
        // buckets hold observations less than or equal to their bound).
        let i = BUCKET_BOUNDS_NS.partition_point(|&bound| bound < ns);
        if let Some(b) = h.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        h.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Every op's histogram as it is now. The count is the sum of the
    /// buckets read, so `_count` and the `+Inf` bucket always agree.
    fn snapshot(&self) -> Vec<OpSnapshot> {
        Op::ALL
            .iter()
            .filter_map(|&op| {
                let h = self.ops.get(op as usize)?;
                let mut buckets = [(f64::INFINITY, 0u64); BUCKETS];
                let mut count = 0u64;
                for (i, (slot, n)) in buckets.iter_mut().zip(&h.buckets).enumerate() {
                    let n = n.load(Ordering::Relaxed);
                    if let Some(&bound) = BUCKET_BOUNDS_NS.get(i) {
                        slot.0 = bound as f64 / 1e9;
                    }
                    slot.1 = n;
                    count += n;
                }
                Some(OpSnapshot {
                    op: op.name(),
                    buckets,
                    count,
                    sum_seconds: h.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
                })
            })
            .collect()
    }
}

/// One op's histogram at a scrape.
#[derive(Debug)]
struct OpSnapshot {
    op: &'static str,
    /// (upper bound in seconds, observations in the bucket, not
    /// cumulative); the last bound is infinity.
    buckets: [(f64, u64); BUCKETS],
    count: u64,
    sum_seconds: f64,
}

/// What one scrape encodes.
#[derive(Debug)]
struct Scrape {
    stats: Vec<Stat>,
    latency: Vec<OpSnapshot>,
}

/// HELP of the latency histograms.
const LATENCY_HELP: &str = "Time from a request read off the socket to its reply handed to the \
                            socket writer (in-process sessions: from the call to its answer), by op";

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for s in &self.stats {
            let name = metric_name(&s.name);
            match s.kind {
                StatKind::Counter => {
                    let c = ConstCounter::new(s.value);
                    c.encode(encoder.encode_descriptor(&name, s.help, None, c.metric_type())?)?;
                }
                StatKind::Gauge => {
                    let g = ConstGauge::new(s.value);
                    g.encode(encoder.encode_descriptor(&name, s.help, None, g.metric_type())?)?;
                }
            }
        }
        let mut histograms = encoder.encode_descriptor(
            "request_duration",
            LATENCY_HELP,
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for h in &self.latency {
            let labels = [("op", h.op)];
            histograms
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &h.buckets, None)?;
        }
        Ok(())
    }
}

/// A `Stats` name as a Prometheus metric name (the prefix `ringcache_`
/// is the registry's): every byte that may not appear in one, the dot of
/// `group.name` included, becomes `_`.
pub(super) fn metric_name(stat: &str) -> String {
    stat.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The metrics text of `stats` and `latency`.
fn encode(stats: Vec<Stat>, latency: &OpLatency) -> String {
    let mut registry = Registry::with_prefix("ringcache");
    registry.register_collector(Box::new(Scrape {
        stats,
        latency: latency.snapshot(),
    }));
    let mut text = String::new();
    // Writing to a String cannot fail; the encoder has no other error.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry) {
        tracing::error!(error = %e, "encoding the metrics");
    }
    text
}

impl Daemon {
    /// The daemon's metrics in the Prometheus text format (version 0.0.4).
    pub fn metrics_text(&self) -> String {
        encode(self.stats(), &self.latency)
    }
}

/// Kind and HELP of the cookie layer's counters (`fscache.*`).
pub(super) fn fscache_meaning(name: &str) -> (StatKind, &'static str) {
    use StatKind::{Counter, Gauge};
    match name {
        "cookies" => (Gauge, "Cookies acquired and not yet dropped"),
        "volumes" => (Gauge, "Volumes acquired and not yet relinquished"),
        "acquires" => (Counter, "Cookies acquired"),
        "acquire_waits" => (
            Counter,
            "Acquires that waited for an old cookie of the same key to be dropped",
        ),
        "lookups" => (Counter, "Object lookups (first uses of a cookie)"),
        "lookups_positive" => (
            Counter,
            "Lookups that found the object with the same coherency data",
        ),
        "lookups_negative" => (
            Counter,
            "Lookups that found nothing usable (the object is created)",
        ),
        "lookups_failed" => (Counter, "Lookups that failed"),
        "lru_expired" => (Counter, "Unused cookies discarded after lru_timeout"),
        "lru_removed" => (Counter, "LRU discards cancelled by a new use"),
        "lru_dropped" => (Counter, "LRU discards carried out"),
        "invalidations" => (Counter, "Cookies invalidated"),
        "resizes" => (Counter, "Cookies resized"),
        "relinquishes" => (Counter, "Cookies relinquished"),
        "relinquishes_retired" => (Counter, "Cookies relinquished with retire (object deleted)"),
        "relinquishes_dropped" => (
            Counter,
            "Relinquished cookies dropped with their object kept",
        ),
        "withdrawals" => (Counter, "Cookies withdrawn with the cache"),
        "nospace" => (Counter, "Writes that found no space"),
        "culled" => (
            Counter,
            "Unused cookies discarded early under space pressure",
        ),
        "reads" => (Counter, "Reads through the cookie layer"),
        "read_bytes" => (
            Counter,
            "Bytes of cached data read through the cookie layer",
        ),
        "read_nodata" => (Counter, "Reads that found nothing to return"),
        "writes" => (Counter, "Writes through the cookie layer"),
        "write_bytes" => (Counter, "Bytes written through the cookie layer"),
        "writes_dropped" => (Counter, "Writes not cached (cookie not bound, no space)"),
        "stale" => (
            Counter,
            "Operations that straddled an invalidation (answered Stale)",
        ),
        "prepare_to_write" => (
            Counter,
            "Objects marked as modified locally (prepare_to_write)",
        ),
        _ => (Counter, "A counter of the cookie layer"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn stat(name: &str, value: u64, kind: StatKind) -> Stat {
        Stat {
            name: name.into(),
            value,
            kind,
            help: "what it counts",
        }
    }

    /// The value of the sample `name` (with its labels, as written).
    fn samples(text: &str) -> HashMap<String, String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (k, v) = l.rsplit_once(' ').expect("a sample is `name value`");
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    #[test]
    fn observations_land_in_the_first_bucket_at_least_as_large() {
        let l = OpLatency::default();
        for ns in [
            0,
            5_000,
            5_001,
            999_999_999,
            1_000_000_000,
            1_000_000_001,
            u64::MAX / 2,
        ] {
            l.observe_ns(Op::Read, ns);
        }
        l.observe_ns(Op::Write, 7_000);
        let snap = l.snapshot();
        let read = snap.iter().find(|s| s.op == "read").unwrap();
        let counts: Vec<u64> = read.buckets.iter().map(|b| b.1).collect();
        let mut want = vec![0u64; BUCKETS];
        want[0] = 2; // 0 and 5 µs: le 5e-6
        want[1] = 1; // 5.001 µs: le 1e-5
        want[BUCKETS - 2] = 2; // just under and at 1 s
        want[BUCKETS - 1] = 2; // above 1 s: +Inf only
        assert_eq!(counts, want);
        assert_eq!(read.count, 7);
        assert_eq!(read.buckets[0].0, 5e-6);
        assert_eq!(read.buckets[BUCKETS - 2].0, 1.0);
        assert!(read.buckets[BUCKETS - 1].0.is_infinite());
        let write = snap.iter().find(|s| s.op == "write").unwrap();
        assert_eq!((write.count, write.sum_seconds), (1, 7e-6));
        assert_eq!(snap.len(), Op::ALL.len(), "every op, used or not");
    }

    #[test]
    fn text_has_help_type_and_cumulative_buckets() {
        let l = OpLatency::default();
        l.observe_ns(Op::AcquireCookie, 30_000);
        l.observe_ns(Op::AcquireCookie, 3_000_000);
        let text = encode(
            vec![
                stat("fscache.acquires", 3, StatKind::Counter),
                stat("space.regions_free", 12, StatKind::Gauge),
            ],
            &l,
        );
        for line in [
            "# HELP ringcache_fscache_acquires_total what it counts",
            "# TYPE ringcache_fscache_acquires_total counter",
            "# TYPE ringcache_space_regions_free gauge",
            "# TYPE ringcache_request_duration_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        let s = samples(&text);
        let get = |k: &str| s.get(k).map(String::as_str);
        assert_eq!(get("ringcache_fscache_acquires_total"), Some("3"));
        assert_eq!(get("ringcache_space_regions_free"), Some("12"));
        let h = "ringcache_request_duration_seconds";
        assert_eq!(
            get(&format!("{h}_count{{op=\"acquire_cookie\"}}")),
            Some("2")
        );
        assert_eq!(
            get(&format!("{h}_sum{{op=\"acquire_cookie\"}}")),
            Some("0.00303")
        );
        for (le, n) in [
            ("2e-05", "0"),
            ("5e-05", "1"),
            ("0.002", "1"),
            ("0.005", "2"),
            ("+Inf", "2"),
        ] {
            let k = format!("{h}_bucket{{op=\"acquire_cookie\",le=\"{le}\"}}");
            assert_eq!(get(&k), Some(n), "{k} in\n{text}");
        }
        // Ops never used are there too, at zero.
        assert_eq!(get(&format!("{h}_count{{op=\"flush\"}}")), Some("0"));
        // One bucket line per bound and +Inf, then _sum and _count, per op.
        let lines = text.lines().filter(|l| l.starts_with(h)).count();
        assert_eq!(lines, Op::ALL.len() * (BUCKETS + 2));
    }

    #[test]
    fn names_are_valid_prometheus_names() {
        assert_eq!(metric_name("store.read_bytes"), "store_read_bytes");
        assert_eq!(metric_name("a.b-c d/é"), "a_b_c_d__");
    }

    #[test]
    fn every_cookie_layer_counter_has_its_own_help() {
        let stats = crate::cookie::FscacheStats::default();
        for (name, _) in stats.snapshot() {
            assert_ne!(
                fscache_meaning(name).1,
                fscache_meaning("no such counter").1,
                "{name}"
            );
        }
        assert_eq!(fscache_meaning("cookies").0, StatKind::Gauge);
    }
}
