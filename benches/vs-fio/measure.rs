//! How a run is measured and summed up: its figure with the CPU time and
//! peak memory it cost ([`Sample`]), in this process or in a child (fio),
//! and the medians over the runs of each side ([`Sides`]).

use anyhow::Result;

/// The median of `v` (the upper one of an even count).
pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A histogram of latencies in microseconds, up to 60 s (record with
/// `saturating_record`: an auto-resizing histogram clamps those at its
/// first bound instead).
pub(crate) fn latency_us() -> Result<hdrhistogram::Histogram<u64>> {
    Ok(hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

/// `p50 .. us, p99 .. us, p99.9 .. us, max .. us` of a [`latency_us`].
pub(crate) fn percentiles_us(h: &hdrhistogram::Histogram<u64>) -> String {
    format!(
        "p50 {} us, p99 {} us, p99.9 {} us, max {} us",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    )
}

/// One run: its figure (MiB/s or IOPS), CPU seconds per GiB moved, and
/// peak resident memory in MiB (0 where not measured).
#[derive(Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) value: f64,
    cpu_s_per_gib: f64,
    peak_mib: f64,
}

impl Sample {
    pub(crate) fn plain(value: f64) -> Sample {
        Sample {
            value,
            cpu_s_per_gib: 0.0,
            peak_mib: 0.0,
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Side {
    Fio,
    Rc,
    Foyer,
}

/// The runs of one workload, per side.
#[derive(Default)]
pub(crate) struct Sides {
    pub(crate) fio: Vec<Sample>,
    pub(crate) rc: Vec<Sample>,
    pub(crate) foyer: Vec<Sample>,
}

impl Sides {
    fn of(&self, s: Side) -> &[Sample] {
        match s {
            Side::Fio => &self.fio,
            Side::Rc => &self.rc,
            Side::Foyer => &self.foyer,
        }
    }

    pub(crate) fn median(&self, s: Side) -> f64 {
        let mut v: Vec<f64> = self.of(s).iter().map(|x| x.value).collect();
        if v.is_empty() {
            f64::NAN
        } else {
            median(&mut v)
        }
    }

    /// Median CPU seconds per GiB and peak MiB.
    pub(crate) fn cost(&self, s: Side) -> (f64, f64) {
        let mut cpu: Vec<f64> = self.of(s).iter().map(|x| x.cpu_s_per_gib).collect();
        let mut peak: Vec<f64> = self.of(s).iter().map(|x| x.peak_mib).collect();
        if cpu.is_empty() {
            return (f64::NAN, f64::NAN);
        }
        (median(&mut cpu), median(&mut peak))
    }
}

/// CPU seconds (user + system) this process has used.
fn self_cpu_secs() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF)
        .map(|u| {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or(0.0)
}

/// Run `f` in this process and measure it: CPU per GiB (of `gib(value)`)
/// and the peak resident memory (the high-water mark is reset first).
pub(crate) fn in_process(
    f: impl FnOnce() -> Result<f64>,
    gib: impl Fn(f64) -> f64,
) -> Result<Sample> {
    // "5" resets VmHWM, the peak RSS (Linux 4.0 and later).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let cpu0 = self_cpu_secs();
    let value = f()?;
    let cpu = self_cpu_secs() - cpu0;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    Ok(Sample {
        value,
        cpu_s_per_gib: cpu / gib(value).max(1e-9),
        peak_mib: peak_kib / 1024.0,
    })
}

/// Run `f`, which runs a child process (fio), and measure the child: CPU
/// per GiB and its peak resident memory.
pub(crate) fn in_child(
    f: impl FnOnce() -> Result<f64>,
    gib: impl Fn(f64) -> f64,
) -> Result<Sample> {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = || {
        getrusage(UsageWho::RUSAGE_CHILDREN).map(|u| {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            (t(u.user_time()) + t(u.system_time()), u.max_rss() as f64)
        })
    };
    let (cpu0, _) = usage()?;
    let value = f()?;
    let (cpu1, max_rss_kib) = usage()?;
    Ok(Sample {
        value,
        cpu_s_per_gib: (cpu1 - cpu0) / gib(value).max(1e-9),
        // The largest child so far: the fio runs are alike.
        peak_mib: max_rss_kib / 1024.0,
    })
}
