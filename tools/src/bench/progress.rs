//! The threads of a group, and the progress line drawn beside them.
//!
//! Both targets run a group the same way: [`scope_with_progress`] opens a
//! thread scope, starts the progress line's thread when asked, runs the
//! caller's workers in it and stops the line once they are joined (each
//! with [`join`], so that a panic is an error). The line reads the jobs'
//! [`Live`] counters twice a second.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

use super::BenchError;
use super::jobfile::Job;
use super::stats::Dir;
use super::units::{fmt_bytes_bin, fmt_count};

/// Live counters of one job, for the progress line.
#[derive(Default)]
pub(super) struct Live {
    read_ios: AtomicU64,
    read_bytes: AtomicU64,
    write_ios: AtomicU64,
    write_bytes: AtomicU64,
}

impl Live {
    /// `ios` more I/Os of `dir` done, `bytes` in all.
    pub(super) fn add(&self, dir: Dir, ios: u64, bytes: u64) {
        let (i, b) = match dir {
            Dir::Read => (&self.read_ios, &self.read_bytes),
            Dir::Write => (&self.write_ios, &self.write_bytes),
        };
        i.fetch_add(ios, Ordering::Relaxed);
        b.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// A worker's outcome once joined; a worker that panicked is
/// [`BenchError::Panicked`].
pub(super) fn join<T>(h: ScopedJoinHandle<'_, Result<T, BenchError>>) -> Result<T, BenchError> {
    h.join().unwrap_or(Err(BenchError::Panicked))
}

/// Run `body` in a thread scope; with `show`, the progress line of `jobs`
/// (whose live counters are `lives`, from `start`) runs beside it and is
/// stopped and cleared when `body` returns, which is after `body` has
/// joined its workers.
pub(super) fn scope_with_progress<'env, T>(
    show: bool,
    jobs: &[&'env Job],
    lives: &'env [Live],
    start: Instant,
    body: impl for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> T,
) -> T {
    // Shared with the line's thread by ownership: what that thread borrows
    // must outlive the caller's scope.
    let done = Arc::new(AtomicBool::new(false));
    std::thread::scope(|s| {
        let monitor = show.then(|| {
            let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
            let total = jobs
                .iter()
                .filter_map(|j| j.runtime.map(|r| r + j.ramp_time))
                .max();
            let done = Arc::clone(&done);
            s.spawn(move || show_progress(&names, lives, &done, start, total))
        });
        let out = body(s);
        done.store(true, Ordering::Relaxed);
        if let Some(m) = monitor {
            m.thread().unpark();
            let _ = m.join();
        }
        out
    })
}

/// The progress line: elapsed time and the rates of the last half second.
fn show_progress(
    names: &[&str],
    lives: &[Live],
    done: &AtomicBool,
    start: Instant,
    total: Option<Duration>,
) {
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg}") {
        bar.set_style(style);
    }
    let sum = |f: fn(&Live) -> &AtomicU64| -> u64 {
        lives.iter().map(|l| f(l).load(Ordering::Relaxed)).sum()
    };
    let mut prev = (0u64, 0u64, 0u64, 0u64);
    let mut prev_t = Instant::now();
    let label = names.join(", ");
    let tick = Duration::from_millis(500);
    while !done.load(Ordering::Relaxed) {
        std::thread::park_timeout(tick);
        let now = Instant::now();
        let dt = (now - prev_t).as_secs_f64().max(1e-3);
        let cur = (
            sum(|l| &l.read_ios),
            sum(|l| &l.read_bytes),
            sum(|l| &l.write_ios),
            sum(|l| &l.write_bytes),
        );
        let rate = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / dt;
        let when = match total {
            Some(t) => format!(
                "{:.0}s/{:.0}s",
                (now - start).as_secs_f64(),
                t.as_secs_f64()
            ),
            None => format!("{:.0}s", (now - start).as_secs_f64()),
        };
        bar.set_message(format!(
            "[{label}] {when}  read {} IOPS {}/s  write {} IOPS {}/s",
            fmt_count(rate(cur.0, prev.0)),
            fmt_bytes_bin(rate(cur.1, prev.1)),
            fmt_count(rate(cur.2, prev.2)),
            fmt_bytes_bin(rate(cur.3, prev.3)),
        ));
        bar.tick();
        prev = cur;
        prev_t = now;
    }
    bar.finish_and_clear();
}
